"""Answer health: the shared repetition function (eval loop metric and the reward's degenerate
guard), sentence-end detection, and the per-length health breakdown of `larft eval`."""

import json
import re
from collections import Counter

import pytest

from larft.eval import benchmarks as B
from larft.eval.metrics import answer_health, lifebench_aggregate
from larft.eval.report import bench_health, health_lines, markdown, summary_row
from larft.eval.tasks import LifeBench, LongBenchWrite
from larft.length import ends_on_sentence, is_looping, repetition_share
from larft.rewards import is_degenerate, length_score, repeated_trigram_share

LOOP = "The sun rises in the east and sets in the west. " * 6
NORMAL = ("Glaciers carve valleys slowly. Ice grinds the rock beneath it, plucking stones and dragging them "
          "downhill, until a narrow river valley becomes a broad U-shaped trough.")
SHORT = "Yes, yes, yes, yes."


# -- the shared function --------------------------------------------------------------------------
def test_repetition_share_counts_ngrams_that_repeat_an_earlier_one():
    assert repetition_share("a b c a b c", 3) == pytest.approx(1 / 4)  # abc bca cab abc: one repeat of four
    assert repetition_share("a b c a b c", 4) == pytest.approx(0.0)  # abca bcab cabc: all distinct
    assert repetition_share("One TWO one two", 2) == pytest.approx(1 / 3)  # lower-cased, punctuation ignored
    assert repetition_share("two words", 4) == 0.0  # fewer words than n: nothing to repeat
    assert repetition_share("", 4) == 0.0
    assert repetition_share("我们我们我们", 2) == pytest.approx(3 / 5)  # a CJK character is a word: 5 bigrams, 2 distinct
    with pytest.raises(ValueError):
        repetition_share("a b", 0)


def test_is_looping_on_a_loop_a_normal_answer_and_a_short_one():
    assert repetition_share(LOOP, 4) > 0.8 and is_looping(LOOP) is True
    assert repetition_share(NORMAL, 4) == 0.0 and is_looping(NORMAL) is False
    assert is_looping(SHORT) is None  # 4 words: too short to judge
    assert is_looping(SHORT, min_words=0) is False  # judged anyway: fewer words than a 4-gram never loops
    # at the threshold: 10 words, 7 4-grams; "a b c d" x 2 + "e f": 4-grams repeating = 1 of 7 (0.14)
    assert is_looping("a b c d a b c d e f") is False
    # "a b c d a b c d a b c d": 9 4-grams, 4 distinct -> 5/9 = 0.56 > 0.3
    assert is_looping("a b c d a b c d a b c d") is True


def _old_repeated_trigram_share(text: str) -> float:
    """The degenerate guard's share before it moved to larft.length (verbatim), for the regression test."""
    words = [w.lower() for w in re.compile(r"[\u4e00-\u9fff]|[a-zA-Z0-9'-]+").findall(text)]
    trigrams = list(zip(words, words[1:], words[2:]))
    if not trigrams:
        return 0.0
    return (len(trigrams) - len(Counter(trigrams))) / len(trigrams)


REGRESSION_TEXTS = [
    LOOP, NORMAL, SHORT, "", "two words", "the cat sat " * 20, "a b c a b c", "a b a b a b a b",
    "Don't stop, don't stop, don't stop, don't stop!", "我们爱我们爱我们爱我们爱", "x y z " * 2 + "q r s t u v",
    "one two three one two three four five six seven", " ".join(f"w{i}" for i in range(40)),
]


@pytest.mark.parametrize("text", REGRESSION_TEXTS)
def test_the_reward_guard_is_the_eval_loop_metric(text):
    old = _old_repeated_trigram_share(text)
    assert repeated_trigram_share(text) == old  # the share itself is unchanged
    assert is_degenerate(text) == bool(is_looping(text))  # one function, one setting: 4-grams, > 0.3, >= 8 words
    assert is_degenerate(text, threshold=0.5, n=3, min_words=0) == (old > 0.5)  # the guard's old setting, on request


def test_the_guard_now_catches_a_long_answer_that_loops_for_its_last_third():
    # 300 distinct words, then one sentence of 10 words said 15 times: trigram share ~0.29 (the old guard let it
    # score), 4-gram share ~0.32 (a loop to the eval)
    text = " ".join(f"w{i}" for i in range(300)) + " " + "the river keeps flowing past the old mill every day " * 15
    assert _old_repeated_trigram_share(text) < 0.5 and is_looping(text)
    assert is_degenerate(text)
    assert length_score(text, 450, degenerate_guard=True) == 0.0 < length_score(text, 450)


def test_the_guard_still_zeroes_a_looping_rollout():
    loop = "the cat sat " * 20
    assert length_score(loop, 60) == 1.0 and length_score(loop, 60, degenerate_guard=True) == 0.0
    assert length_score(NORMAL, 25, degenerate_guard=True) == length_score(NORMAL, 25)


# -- sentence ends ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "Done.", "Really?", "Stop!", "It trails off...", "It trails off\u2026", "Done.  \n\n", "**Done.**",
    "*Done.*", "He said \"no.\"", "He said \u201cno.\u201d", "(as above.)", "[sic.]", "Done.\n\n---",
    "Done.\n```", "It's 'fine.'", "\u6211\u4eec\u5230\u4e86\u3002", "\u597d\u3002\u300d", "\u771f\u7684\uff1f",
    "\u597d\uff01\uff09",
])
def test_ends_on_a_sentence(text):
    assert ends_on_sentence(text)


@pytest.mark.parametrize("text", [
    "", "   ", "and then the", "(see above)", "Steps:", "- item one\n- item two", "He said \"no\"",
    "**Bold heading**", "The year 2024", "a list;", "\u6211\u4eec\u5230\u4e86", "Dear Sir,",
])
def test_does_not_end_on_a_sentence(text):
    assert not ends_on_sentence(text)


# -- per-bucket aggregation --------------------------------------------------------------------------
def _sample(target, control="equal", ends=True, loops=False, truncated=False, length=None):
    return {"id": f"{target}-{control}", "control": control, "target": target, "length": length or target,
            "truncated": truncated, "ends_on_sentence": ends, "loops": loops}


def test_answer_health_per_length_bucket():
    samples = [_sample(16, ends=True, loops=None), _sample(16, ends=False, loops=None, truncated=True),
               _sample(32, ends=True, loops=True), _sample(32, ends=True, loops=False),
               _sample(32, ends=False, loops=False, truncated=True), _sample(64, ends=True, loops=False)]
    h = answer_health(samples)
    assert h["n"] == 6 and h["ends_on_sentence"] == pytest.approx(4 / 6)
    assert h["loops"] == pytest.approx(1 / 4) and h["loops_judged"] == 4  # the two short answers are not judged
    assert h["truncated"] == pytest.approx(2 / 6)
    assert list(h["per_length"]) == [16, 32, 64]
    assert h["per_length"][16] == {"n": 2, "ends_on_sentence": 0.5, "loops": None, "loops_judged": 0, "truncated": 0.5}
    assert h["per_length"][32]["loops"] == pytest.approx(1 / 3) and h["per_length"][32]["n"] == 3
    assert h["per_length"][64] == {"n": 1, "ends_on_sentence": 1.0, "loops": 0.0, "loops_judged": 1, "truncated": 0.0}


def test_answer_health_of_older_samples_is_what_they_carry():
    older = [{"target": 16, "truncated": True}, {"target": 16, "truncated": False}]
    h = answer_health(older)
    assert h["truncated"] == 0.5 and h["ends_on_sentence"] is None and h["loops"] is None


def test_lifebench_samples_carry_health_flags_and_the_metrics_a_breakdown_beside_ls():
    bench = LifeBench()
    items = [B.EvalItem(id=f"{t}-{c}", messages=[], target=t, control=c) for t in (16, 32) for c in ("equal", "at_most")]
    texts = {16: "Short and done, a tidy answer of sixteen words that stops where it should stop now.",
             32: LOOP}
    samples = [bench.sample(it, {"text": texts[it.target], "max_new_tokens": 99, "truncated": it.target == 32,
                                 "new_tokens": 10, "gen_tokens": 10}) for it in items]
    assert all(x["ends_on_sentence"] for x in samples)
    assert [x["loops"] for x in samples] == [False, False, True, True]
    metrics = lifebench_aggregate((x["control"], x["target"], x["length"]) for x in samples)
    h = bench.health(samples, metrics)
    for t in (16, 32):
        expected = sum(metrics["per_control"][c]["per_length"][t]["LS"] for c in ("equal", "at_most")) / 2
        assert h["per_length"][t]["LS"] == pytest.approx(expected)
    assert h["per_length"][32]["loops"] == 1.0 and h["per_length"][32]["truncated"] == 1.0
    assert h["per_length"][16]["loops"] == 0.0 and h["loops"] == 0.5 and h["LS"] == metrics["LS"]


def test_longbench_write_health_sits_beside_s_l():
    bench = LongBenchWrite()
    samples = [{"target": 100, "S_l": 80.0, "truncated": False, "ends_on_sentence": True, "loops": False}]
    h = bench.health(samples, {"S_l": 80.0, "per_length": {100: 80.0}})
    assert h["per_length"][100]["S_l"] == 80.0


def test_reports_show_health_and_older_results_still_load():
    samples = [_sample(16), _sample(16, ends=False, truncated=True), _sample(32, loops=True)]
    metrics = lifebench_aggregate((x["control"], x["target"], x["length"]) for x in samples)
    metrics.update(n=3, refusals_dropped=0, truncated=1, health=LifeBench().health(samples, metrics))
    results = {"model": "m", "versions": {}, "benchmarks": {"lifebench": {
        "metrics": metrics, "samples": samples, "counter": "lifebench"}}}
    results = json.loads(json.dumps(results))  # as read back from results.json: lengths are string keys
    text = markdown(results)
    assert "Answer health" in text and "| 16 | 2 | 100.0 | 50.0 | 0.0 (2) | 50.0 |" in text
    assert "| **all** | 3 |" in text
    row = summary_row(results)
    assert row["lifebench ends on sentence%"] == pytest.approx(200 / 3) and row["lifebench loops%"] == pytest.approx(100 / 3)

    # written before the flags: the truncated share from the samples, "-" for the rest, LS per length beside it
    del metrics["health"]
    older = {"metrics": metrics, "samples": [{k: v for k, v in x.items() if k not in ("ends_on_sentence", "loops")}
                                             for x in samples]}
    h = bench_health(json.loads(json.dumps(older)))
    assert h["truncated"] == pytest.approx(1 / 3) and h["ends_on_sentence"] is None and h["loops"] is None
    assert h["per_length"][16]["LS"] == 100.0
    assert "| **all** | 3 | 100.0 | - | - | 33.3 |" in "\n".join(health_lines(h))
    assert bench_health({"metrics": {}, "samples": [{"target": 16, "length": 3}]}) is None  # nothing to read

