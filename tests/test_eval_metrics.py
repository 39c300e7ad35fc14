import math

import pytest

from larft.eval.counters import lenctrl_count, lifebench_count, longbench_write_count, ruler_count
from larft.eval.metrics import (
    RULER_FM, RULER_PM, lifebench_aggregate, lifebench_ld, lifebench_ls, longbench_sl, mean_absolute_error,
    ruler_aggregate, ruler_hit,
)


def test_counters_follow_their_upstream_quirks():
    text = "Don't stop: a well-known fact, 42 times."
    assert lifebench_count(text) == 7  # don't and well-known are one word each, 42 counts
    assert longbench_write_count(text) == 8  # letters only: don / t, well / known; 42 does not count
    assert ruler_count(text) == 9  # \w+ runs: don / t, well / known, 42
    glued = "用GPT写 café 我们"
    assert lifebench_count(glued) == 4  # 4 CJK chars; GPT glued to CJK and café are not counted
    assert longbench_write_count(glued) == 4
    assert ruler_count(glued) == 3  # a CJK run is one \w+ word
    assert lifebench_count("  many   spaces\n\nhere ") == 3


def test_lenctrl_units():
    text = "One two three. Four five! Six?\n\nSecond paragraph here."
    assert lenctrl_count(text, "word") == 9
    assert lenctrl_count(text, "sentence") == 4
    assert lenctrl_count(text, "paragraph") == 2
    with pytest.raises(ValueError):
        lenctrl_count(text, "page")
    assert mean_absolute_error([(9, 10), (4, 2)]) == 1.5


def test_lifebench_ls_all_controls_fraction_form():
    assert lifebench_ld(150, 100) == pytest.approx(0.5)
    assert lifebench_ls(100, 100, "equal") == 100
    assert lifebench_ls(50, 100, "equal") == pytest.approx(100 * math.exp(-2.5))  # too short: k1 = 5
    assert lifebench_ls(150, 100, "equal") == pytest.approx(100 * math.exp(-1.0))  # too long: k2 = 2
    assert lifebench_ls(50, 100, "at_most") == 100
    assert lifebench_ls(150, 100, "at_most") == pytest.approx(100 * math.exp(-1.0))
    assert lifebench_ls(150, 100, "at_least") == 100
    assert lifebench_ls(50, 100, "at_least") == pytest.approx(100 * math.exp(-2.5))
    # the upstream percent-in-exp bug would give exp(-2 * 50) ~ 0 here; the fraction form does not
    assert lifebench_ls(150, 100, "equal") > 30


def test_lifebench_aggregate_drops_refusals_and_macro_averages_lengths():
    samples = [
        ("equal", 16, 16), ("equal", 16, 8),  # LS 100 and 100*e^-2.5, |LD| 0 and 50%
        ("equal", 32, 48),  # LS 100*e^-1, |LD| 50%
        ("equal", 32, 1), ("equal", 32, 0),  # refusals: dropped
        ("at_most", 16, 10),
    ]
    result = lifebench_aggregate(samples)
    assert result["refusals_dropped"] == 2
    equal = result["per_control"]["equal"]
    ls16 = (100 + 100 * math.exp(-2.5)) / 2
    assert equal["per_length"][16]["LS"] == pytest.approx(ls16)
    assert equal["per_length"][32]["n"] == 1
    assert equal["LS"] == pytest.approx((ls16 + 100 * math.exp(-1)) / 2)  # mean over lengths, not samples
    assert equal["LD"] == pytest.approx((25 + 50) / 2)
    assert result["per_control"]["at_most"]["LS"] == 100
    assert result["LS"] == pytest.approx((equal["LS"] + 100) / 2)


def test_longbench_sl_both_branches_and_empty():
    assert longbench_sl(1000, 1000) == 100
    assert longbench_sl(2000, 1000) == pytest.approx(100 * (1 - 1 / 3))
    assert longbench_sl(5000, 1000) == 0  # 4x too long
    assert longbench_sl(500, 1000) == pytest.approx(50)  # 1 - (2 - 1) / 2
    assert longbench_sl(250, 1000) == 0
    assert longbench_sl(0, 1000) == 0


def test_ruler_intervals_are_left_open():
    assert not ruler_hit(20, "30", RULER_PM) and ruler_hit(21, "30", RULER_PM) and ruler_hit(40, "30", RULER_PM)
    assert not ruler_hit(70, "80", RULER_PM) and ruler_hit(90, "80", RULER_PM) and ruler_hit(61, "80", RULER_FM)
    assert not ruler_hit(800, ">800", RULER_PM) and ruler_hit(801, ">800", RULER_PM)
    assert not ruler_hit(0, "10", RULER_PM)  # empty always misses
    agg = ruler_aggregate([("10", 15), ("80", 65), ("150", 150), ("150", 190)])
    assert agg["level0"] == {"PM": 50.0, "FM": 100.0, "n": 2}
    assert agg["level1"] == {"PM": 50.0, "FM": 100.0, "n": 2}
    assert agg["all"]["PM"] == 50.0 and agg["all"]["n"] == 4  # pooled (micro average)


def test_refusals_are_counted_per_control_and_length():
    from larft.eval.metrics import lifebench_aggregate

    agg = lifebench_aggregate([("at_most", 16, 0), ("at_most", 16, 10), ("at_most", 32, 1), ("equal", 16, 16)])
    r = agg["refusals"]
    assert r["n"] == 2 and r["rate"] == 0.5
    assert r["per_control"]["at_most"] == {"n": 2, "rate": 2 / 3, "per_length": {16: 1, 32: 1}}
    assert r["per_control"]["equal"]["n"] == 0
    assert agg["per_control"]["at_most"]["per_length"][16]["n"] == 1  # still dropped from LS, as upstream


def test_bootstrap_intervals_are_seeded_and_cover_the_estimate():
    from larft.eval.stats import bootstrap_cis, overlap

    values = list(range(100))
    mean = lambda xs: {"mean": sum(xs) / len(xs)}  # noqa: E731
    a = bootstrap_cis(values, mean, seed=1)["mean"]
    assert a == bootstrap_cis(values, mean, seed=1)["mean"]
    assert a[0] < 49.5 < a[1] and 40 < a[0] and a[1] < 60  # sd of the mean ~2.9: about +-5.7
    narrow = bootstrap_cis(values * 16, mean, seed=1)["mean"]
    assert narrow[1] - narrow[0] < (a[1] - a[0]) / 2
    assert overlap([1, 2], [1.5, 3]) and not overlap([1, 2], [2.5, 3]) and overlap(None, [1, 2]) is None
