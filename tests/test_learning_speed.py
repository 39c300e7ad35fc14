"""benchmarks/learning_speed.py's `levers` summary: each lever's speedups and held-out effect from the parts run."""

from __future__ import annotations

from helpers import load_script


def test_levers_summary_reads_each_part_and_leaves_unmeasured_effects_none():
    bench = load_script("benchmarks/learning_speed.py")
    result = {
        "levers_step_speedup": {"bf16": {"grpo": 1.6, "larft": 1.3}, "fast-ct2": {"grpo": 1.8, "larft": 1.7}},
        "levers_per_word_speedup": {"bf16": {"grpo": 1.6, "larft": 1.3}, "fast-ct2": {"grpo": 1.7, "larft": 1.6}},
        "levers_over_recipe": {"fast-ct2-int8": {"grpo": {"step": 1.1, "per_word": 1.3},
                                                 "larft": {"step": 1.05, "per_word": 1.2}}},
    }
    summary = bench.lever_summary(result)
    assert summary["bf16"] == {"against": "today", "step_speedup": {"grpo": 1.6, "larft": 1.3},
                               "per_word_speedup": {"grpo": 1.6, "larft": 1.3}, "heldout_ls_gain": None,
                               "heldout_against": None}
    assert summary["fast-ct2-int8"]["against"] == "fast-ct2"
    assert summary["fast-ct2-int8"]["step_speedup"] == {"grpo": 1.1, "larft": 1.05}
    assert summary["fast-ct2"]["heldout_ls_gain"] is None  # the minutes part has not run
    assert summary["reuse"]["step_speedup"] is None and summary["reuse"]["against"] is None  # minutes only

    result["heldout_ls_at_minutes"] = {
        "today": {"15": {"mean": 55.0}, "30": {"mean": 58.0}},
        "fast": {"15": {"mean": 57.0}, "30": {"mean": 62.5}},
        "reuse": {"15": {"mean": 60.0}, "30": {"mean": 61.0}},
    }
    summary = bench.lever_summary(result)
    assert summary["fast-ct2"]["heldout_ls_gain"] == 4.5  # the recipe against today, at the last mark (30 min)
    assert summary["fast-ct2"]["heldout_against"] == "today"
    assert summary["reuse"]["heldout_ls_gain"] == -1.5  # reuse against the recipe
    assert summary["fast-ct2-int8"]["heldout_ls_gain"] is None  # its minutes variant has not run
