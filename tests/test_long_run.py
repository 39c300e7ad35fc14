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
