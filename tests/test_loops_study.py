"""research/loops.py: loop shares by asked length from an experiment's records (no generation)."""

import json

from helpers import load_script


def test_loop_shares_by_length_for_greedy_answers_and_sampled_rollouts(tmp_path):
    loops = load_script("research/loops.py")
    stage = tmp_path / "larft-0"
    (stage / "lifebench").mkdir(parents=True)
    samples = [{"target": 16, "loops": False}, {"target": 512, "loops": True}, {"target": 512, "loops": False},
               {"target": 512, "loops": None}]  # too short to judge: not counted
    (stage / "lifebench" / "results.json").write_text(json.dumps(
        {"benchmarks": {"lifebench": {"metrics": {"best_of": 1}, "samples": samples}}}))
    trace = [{"step": s, "target": 512, "loops": s < 3} for s in range(1, 11)]
    (stage / "rollouts.jsonl").write_text("\n".join(json.dumps(r) for r in trace) + "\n")
    series = loops.study(tmp_path, window=5)
    assert series["larft-0 greedy"]["512"] == {"loops": 0.5, "judged": 2, "n": 3}
    assert series["larft-0 greedy"]["16"]["loops"] == 0.0
    assert series["larft-0 sampled, steps 1-5"]["512"]["loops"] == 0.4  # steps 1, 2 of 1..5
    assert series["larft-0 sampled, steps 6-10"]["512"]["loops"] == 0.0
    loops.plot(series, tmp_path / "loops.png")
    assert (tmp_path / "loops.png").stat().st_size > 0
