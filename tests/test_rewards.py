import pytest

from larft.rewards import (
    LengthReward, is_degenerate, is_refusal, length_deviation, length_score, refusal_length, repeated_trigram_share,
)


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.mark.parametrize(
    "n, target, expected",
    [(10, 10, 1.0), (5, 10, 0.5), (15, 10, 0.5), (20, 10, 0.0), (30, 10, 0.0), (0, 10, 0.0), (9, 12, 0.75)],
)
def test_equal_is_the_paper_reward(n, target, expected):
    assert length_score(words(n), target) == pytest.approx(expected)


def test_at_most_and_at_least():
    assert length_score(words(3), 10, constraint="at_most") == 1.0
    assert length_score(words(10), 10, constraint="at_most") == 1.0
    assert length_score(words(12), 10, constraint="at_most") == pytest.approx(0.8)
    assert length_score(words(25), 10, constraint="at_least") == 1.0
    assert length_score(words(6), 10, constraint="at_least") == pytest.approx(0.6)


def test_range_falls_off_from_the_nearest_bound():
    assert length_score(words(15), (10, 20), constraint="range") == 1.0
    assert length_score(words(8), (10, 20), constraint="range") == pytest.approx(0.8)
    assert length_score(words(25), (10, 20), constraint="range") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="lo > hi"):
        length_score(words(5), (20, 10), constraint="range")
    with pytest.raises(ValueError, match="range"):
        length_score(words(5), 10, constraint="range")


def test_a_target_must_be_positive_everywhere():
    # one rule (data files, training, eval): |L - c| / c needs c >= 1
    with pytest.raises(ValueError, match="positive"):
        length_score("", 0)
    with pytest.raises(ValueError, match="positive"):
        length_score("one", (0, 5), constraint="range")
    assert length_score("", 10) == 0.0


def test_refusal_floor_stops_empty_answers_winning_at_most():
    # without the floor an empty or one-word answer satisfies "at most 64 words"
    assert length_score("   ", 5, constraint="at_most") == 1.0
    assert length_score("", 64, constraint="at_most", refusal_floor=0.1) == 0.0
    assert length_score("Sure.", 64, constraint="at_most", refusal_floor=0.1) == 0.0
    assert refusal_length(64, "at_most", 0.1) == 7  # ceil(6.4)
    assert length_score(words(6), 64, constraint="at_most", refusal_floor=0.1) == 0.0
    assert length_score(words(7), 64, constraint="at_most", refusal_floor=0.1) == 1.0
    assert length_score(words(2), 16, constraint="at_most", refusal_floor=0.1) == 1.0  # max(2, ceil(1.6))
    assert length_score(words(1), 16, constraint="at_most", refusal_floor=0.1) == 0.0  # <= 1 word: a refusal
    # unless the target itself is that small
    assert refusal_length(1, "at_most", 0.1) == 1
    assert length_score("Yes.", 1, constraint="at_most", refusal_floor=0.1) == 1.0
    assert length_score(words(3), (2, 5), constraint="range", refusal_floor=0.5) == 1.0
    assert is_refusal(1, (2, 5), "range", 0.5) and not is_refusal(2, (2, 5), "range", 0.5)
    assert refusal_length(64, "at_most", 0.0) == 0  # floor off
    # the TRL reward function applies it by default
    reward = LengthReward()
    assert reward(prompts=["p", "p"], completions=["", words(30)], target=[64, 64],
                  constraint=["at_most", "at_most"]) == [0.0, 1.0]
    assert LengthReward(refusal_floor=0.0)(prompts=["p"], completions=[""], target=[64],
                                           constraint=["at_most"]) == [1.0]


def test_an_unclosed_reasoning_block_is_no_answer():
    cut = "<think>Let me plan a 20 word answer about tea and count"
    assert length_score(cut, 20) == 0.0  # the answer is empty (before: the reasoning words were counted)
    assert length_score(cut, 20, constraint="at_most", refusal_floor=0.1) == 0.0
    r1 = "<seed:think>plan plan plan</seed:think>" + words(10)
    assert length_score(r1, 10, reasoning=(("<seed:think>", "</seed:think>"),)) == 1.0


def test_cjk_and_chars_units():
    assert length_score("我爱北京天安门", 7) == 1.0
    assert length_score("我爱北京", 8) == pytest.approx(0.5)
    assert length_score("ab cd ef", 6, unit="chars") == 1.0
    assert length_score("ab cd ef", 3, unit="chars") == 0.0


def test_think_block_is_not_counted():
    assert length_score("<think>" + words(50) + "</think>" + words(10), 10) == 1.0


def test_unknown_constraint_and_negative_target():
    with pytest.raises(ValueError, match="unknown constraint"):
        length_score("a b", 2, constraint="about")
    with pytest.raises(ValueError, match="positive"):
        length_score("a b", -3)


def test_degenerate_guard():
    loop = "the cat sat " * 20
    assert repeated_trigram_share(loop) > 0.9
    assert is_degenerate(loop)
    assert repeated_trigram_share(words(30)) == 0.0
    assert length_score(loop, 60) == 1.0  # 60 words, on target: without the guard, a loop scores
    assert length_score(loop, 60, degenerate_guard=True) == 0.0


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
