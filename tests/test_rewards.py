import pytest

from larft.rewards import LengthReward, is_degenerate, length_deviation, length_reward, repeated_trigram_share


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.mark.parametrize(
    "n, target, expected",
    [(10, 10, 1.0), (5, 10, 0.5), (15, 10, 0.5), (20, 10, 0.0), (30, 10, 0.0), (0, 10, 0.0), (9, 12, 0.75)],
)
def test_equal_is_the_paper_reward(n, target, expected):
    assert length_reward(words(n), target) == pytest.approx(expected)


def test_at_most_and_at_least():
    assert length_reward(words(3), 10, constraint="at_most") == 1.0
    assert length_reward(words(10), 10, constraint="at_most") == 1.0
    assert length_reward(words(12), 10, constraint="at_most") == pytest.approx(0.8)
    assert length_reward(words(25), 10, constraint="at_least") == 1.0
    assert length_reward(words(6), 10, constraint="at_least") == pytest.approx(0.6)


def test_range_falls_off_from_the_nearest_bound():
    assert length_reward(words(15), (10, 20), constraint="range") == 1.0
    assert length_reward(words(8), (10, 20), constraint="range") == pytest.approx(0.8)
    assert length_reward(words(25), (10, 20), constraint="range") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="lo > hi"):
        length_reward(words(5), (20, 10), constraint="range")
    with pytest.raises(ValueError, match="range"):
        length_reward(words(5), 10, constraint="range")


def test_zero_target_and_empty_text():
    assert length_reward("", 0) == 1.0
    assert length_reward("one", 0) == 0.0
    assert length_reward("", 10) == 0.0
    assert length_reward("   ", 5, constraint="at_most") == 1.0


def test_cjk_and_chars_units():
    assert length_reward("我爱北京天安门", 7) == 1.0
    assert length_reward("我爱北京", 8) == pytest.approx(0.5)
    assert length_reward("ab cd ef", 6, unit="chars") == 1.0
    assert length_reward("ab cd ef", 3, unit="chars") == 0.0


def test_think_block_is_not_counted():
    assert length_reward("<think>" + words(50) + "</think>" + words(10), 10) == 1.0


def test_unknown_constraint_and_negative_target():
    with pytest.raises(ValueError, match="unknown constraint"):
        length_reward("a b", 2, constraint="about")
    with pytest.raises(ValueError, match=">= 0"):
        length_reward("a b", -3)


def test_degenerate_guard():
    loop = "the cat sat " * 20
    assert repeated_trigram_share(loop) > 0.9
    assert is_degenerate(loop)
    assert repeated_trigram_share(words(30)) == 0.0
    assert length_reward(loop, 60) == 1.0  # 60 words, on target: without the guard, a loop scores
    assert length_reward(loop, 60, degenerate_guard=True) == 0.0


def test_length_deviation():
    assert length_deviation(15, 10) == pytest.approx(0.5)
    assert length_deviation(5, 10, "at_most") == 0.0
    assert length_deviation(12, (5, 10), "range") == pytest.approx(0.2)


def test_trl_reward_function_reads_dataset_columns():
    reward = LengthReward(degenerate_guard=False)
    completions = [[{"role": "assistant", "content": words(10)}], [{"role": "assistant", "content": words(5)}], words(12)]
    out = reward(
        prompts=["p"] * 3,
        completions=completions,
        target=[10, None, None],
        reward_model=[None, {"ground_truth": 10, "style": "chat"}, None],
        target_range=[None, None, [8, 10]],
        constraint=["equal", "equal", "range"],
        unit=["words", "words", "words"],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
        completion_ids=[[1], [2], [3]],
    )
    assert out == pytest.approx([1.0, 0.5, 0.8])
