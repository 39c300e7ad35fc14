"""benchmarks/long_run.py: a curve is one training trajectory, even when a machine's checkpoints are lost."""

import json
from pathlib import Path

import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def long_run():
    return load_script("benchmarks/long_run.py")


def _checkpoint(out: Path, step: int) -> None:
    (out / f"checkpoint-{step}").mkdir(parents=True)
    (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def _run(*steps: int) -> dict:
    return {"curve": [{"steps": 0, "lifebench_ls": 50.0}] + [{"steps": s, "lifebench_ls": 60.0} for s in steps]}


def test_points_without_their_checkpoints_are_set_aside(long_run, tmp_path):
    data = _run(50)
    assert [p["steps"] for p in long_run.set_aside_lost_points(data, tmp_path / "larft")] == [50]
    assert [p["steps"] for p in data["curve"]] == [0]
    assert [p["steps"] for p in data["lost_curves"][0]["curve"]] == [50]


def test_an_older_checkpoint_does_not_continue_a_later_point(long_run, tmp_path):
    out = tmp_path / "larft"
    _checkpoint(out, 25)
    data = _run(50)
    assert long_run.set_aside_lost_points(data, out)
    assert [p["steps"] for p in data["curve"]] == [0]


@pytest.mark.parametrize("newest", [50, 55])
def test_a_run_that_can_continue_keeps_its_curve(long_run, tmp_path, newest):
    out = tmp_path / "larft"
    _checkpoint(out, 25)
    _checkpoint(out, newest)
    data = _run(50)
    assert long_run.set_aside_lost_points(data, out) == []
    assert [p["steps"] for p in data["curve"]] == [0, 50] and "lost_curves" not in data


def test_a_finished_run_keeps_its_curve(long_run, tmp_path):
    out = tmp_path / "larft"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"")
    data = _run(50, 100)
    assert long_run.set_aside_lost_points(data, out) == []


def test_a_run_finished_elsewhere_is_not_trained_again(long_run, tmp_path):
    data = {**_run(50, 100), "final": {"steps": 100, "lifebench_ls": 70.0}}
    assert long_run.set_aside_lost_points(data, tmp_path / "larft") == []
    assert [p["steps"] for p in data["curve"]] == [0, 50, 100]


def test_the_reference_line_defaults_to_the_experiments_best_of_8(long_run):
    expected = json.loads((ROOT / "benchmarks" / "results" / "experiment.json").read_text())["runs"]["best_of_8"]
    assert long_run.best_of_8_reference(None, None) == expected["lifebench_ls"]
    assert long_run.best_of_8_reference(None, 80.0) == 80.0
    assert long_run.best_of_8_reference(85.0, 80.0) == 85.0


def _eval(work: Path, tag: str, lengths: dict) -> None:
    rec = work / "eval" / tag / "lifebench"
    rec.mkdir(parents=True)
    samples = [{"id": i, "control": "equal", "target": 32, "length": n} for i, n in lengths.items()]
    (rec / "results.json").write_text(json.dumps({"benchmarks": {"lifebench": {"samples": samples}}}))


def test_larft_and_grpo_are_compared_at_every_step_both_reached(long_run, tmp_path):
    """Paired over the prompts both curves answered; a step only one run reached is not compared."""
    from larft.eval.metrics import lifebench_aggregate

    result = {"runs": {"larft": _run(50, 100), "grpo": _run(50)}}
    on_target = {f"p{i}": 32 for i in range(12)}
    _eval(tmp_path, "larft-50-curve", on_target)
    _eval(tmp_path, "grpo-50-curve", {i: 48 for i in on_target})  # every answer 50% too long
    _eval(tmp_path, "larft-100-curve", on_target)
    long_run.compare_runs(result, tmp_path)
    (point,) = result["larft_minus_grpo"]["curve"]
    too_long = lifebench_aggregate([("equal", 32, 48)])["LS"]
    assert point["steps"] == 50 and point["n"] == 12 and point["diff"] == pytest.approx(100.0 - too_long)
    assert too_long < 100.0 and point["ci"] == pytest.approx([100.0 - too_long] * 2)
    assert "final" not in result["larft_minus_grpo"]
    _eval(tmp_path, "larft-final", on_target)
    _eval(tmp_path, "grpo-final", on_target)
    long_run.compare_runs(result, tmp_path)
    assert result["larft_minus_grpo"]["final"]["diff"] == pytest.approx(0.0)


def test_the_last_curve_point_is_read_from_the_final_evaluation(long_run, tmp_path, monkeypatch):
    """The final model's answers to the curve's prompts, scored as `larft eval` scores them, and found by
    `evaluate` as the point's cached result: the final model is not evaluated a second time."""
    from larft.eval.metrics import lifebench_aggregate

    final = tmp_path / "eval" / "larft-final"
    samples = [{"id": f"p{i}", "lang": "en", "control": c, "target": 32, "length": 20 + 3 * i, "truncated": False}
               for i, c in enumerate(["equal", "at_most", "at_least"] * 8)]
    final.joinpath("lifebench").mkdir(parents=True)
    final.joinpath("lifebench", "results.json").write_text(json.dumps(
        {"settings": {"bootstrap": 200, "seed": 0}, "benchmarks": {"lifebench": {"samples": samples, "counter": "lifebench",
                                                                                 "metrics": {"LS": -1.0}}}}))
    curve_ids = [f"p{i}" for i in range(0, 24, 2)]
    point = tmp_path / "eval" / "larft-300-curve"
    long_run.curve_point_from_final(final, curve_ids, point)

    def no_second_eval(*args, **kwargs):
        raise AssertionError("the final model evaluated again")

    monkeypatch.setattr(long_run, "larft", no_second_eval)
    got = long_run.evaluate("model", point, tmp_path / "log", full=False, limit=12)
    kept = [x for x in samples if x["id"] in set(curve_ids)]
    assert got["lifebench_n"] == len(curve_ids) == 12
    assert got["lifebench_ls"] == pytest.approx(lifebench_aggregate(
        (x["control"], x["target"], x["length"]) for x in kept)["LS"])
    assert got["lifebench_ls_ci"][0] <= got["lifebench_ls"] <= got["lifebench_ls_ci"][1]
    with pytest.raises(SystemExit, match="lacks 1 curve prompt"):
        long_run.curve_point_from_final(final, [*curve_ids, "elsewhere"], tmp_path / "eval" / "other")


def test_earlier_checkpoints_on_every_prompt_are_recorded_and_paired(long_run, tmp_path, monkeypatch):
    """--full_at: each finished run's checkpoint evaluated on every prompt (no --limit), recorded as
    full_at and paired; an unfinished run is left alone and a missing checkpoint is named."""
    calls = []

    def fake_larft(*args, log):
        calls.append(args)
        out = Path(args[args.index("--out") + 1])
        run = out.parent.name.split("-")[0]
        _eval(out.parent.parent.parent, out.parent.name, {f"p{i}": 32 if run == "larft" else 40 for i in range(6)})
        metrics = {"LS": 90.0, "ci95": {"LS": [85.0, 95.0]}, "per_control": {"equal": {"LS": 90.0}}, "n": 6,
                   "refusals": {"rate": 0.0}}
        record = json.loads((out / "results.json").read_text())
        record["benchmarks"]["lifebench"]["metrics"] = metrics
        (out / "results.json").write_text(json.dumps(record))

    monkeypatch.setattr(long_run, "larft", fake_larft)
    monkeypatch.setattr(long_run, "git_commit", lambda: "abc")
    for run in ("larft", "grpo"):
        (tmp_path / "train" / run / "checkpoint-250").mkdir(parents=True)
        (tmp_path / "train" / run / "checkpoint-250" / "model.safetensors").write_text("")
    result = {"runs": {"larft": {**_run(250), "final": {}}, "grpo": {**_run(250), "final": {}}, "other": _run(50)}}
    long_run.evaluate_checkpoints_fully(result, tmp_path, [250], "none")
    assert len(calls) == 2 and all("--limit" not in c and "--system-prompt" in c for c in calls)
    assert [p["steps"] for p in result["runs"]["larft"]["full_at"]] == [250] and "full_at" not in result["runs"]["other"]
    long_run.evaluate_checkpoints_fully(result, tmp_path, [250], "none")  # cached: not evaluated again
    assert len(calls) == 2 and len(result["runs"]["grpo"]["full_at"]) == 1
    long_run.compare_runs(result, tmp_path)
    (late,) = result["larft_minus_grpo"]["full_at"]
    assert late["steps"] == 250 and late["n"] == 6 and late["diff"] > 0
    with pytest.raises(SystemExit, match="checkpoint-200: no model"):
        long_run.evaluate_checkpoints_fully(result, tmp_path, [200], "none")
