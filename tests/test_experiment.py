"""benchmarks/experiment.py: its stages, the runs' training options and the results page,
checked without running anything (the experiment itself takes hours)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiment():
    spec = importlib.util.spec_from_file_location("experiment", ROOT / "benchmarks" / "experiment.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiment"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load((ROOT / "configs" / "experiment-cpu.yaml").read_text())


def test_stages_include_best_of_8_and_one_seed_of_each_baseline(experiment, cfg):
    stages = experiment.all_stages(cfg)
    assert stages[:2] == ["base", "best_of_8"]
    assert {"grpo-0", "grpo-1", "larft-0", "larft-1", "rft-0", "dpo-0"} <= set(stages)
    assert "rft-1" not in stages and "dpo-1" not in stages  # the first seed only
    assert experiment.inference_args(cfg, "best_of_8") == ["--best-of", "8", "--seed", str(cfg["seeds"][0]),
                                                           "--temperature", "0.7", "--top_p", "0.8",
                                                           "--backend", "ct2"]


def test_every_run_is_valid_larft_train_options(experiment, cfg, tmp_path):
    from larft.cli import parse_train_args

    for name in cfg["runs"]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**experiment.run_settings(cfg, name), "output_dir": str(tmp_path / name)}))
        train_args, config = parse_train_args(["--config", str(path)])
        assert train_args.method == cfg["runs"][name].get("method", "larft")
    assert "n_seeds" not in experiment.run_settings(cfg, "rft")  # the experiment's key, not a train option


def _run(ls, tokens, ci=None, seeds=None):
    run = {"lifebench_ls": ls, "gen_tokens_per_prompt": tokens, "lifebench_ls_ci": ci, "best_of": 8 if ci else 1}
    if seeds:
        run["seeds"] = seeds
    return run


def test_the_best_of_8_line_is_computed_from_the_numbers(experiment):
    assert "**pending** (no best_of_8 results yet)" in experiment.best_of_answer({"larft": _run(50, 60)})
    best = _run(48.0, 480.0, ci=[45.0, 51.0])
    line = experiment.best_of_answer({"larft": _run(55.0, 60.0), "best_of_8": best})
    assert "**yes**" in line and "+7.0" in line and "0.12 of its inference cost (1/8.0)" in line
    assert "**not clearly**" in experiment.best_of_answer({"larft": _run(50.0, 60.0), "best_of_8": best})
    assert "**no**" in experiment.best_of_answer({"larft": _run(40.0, 60.0), "best_of_8": best})


def test_gen_tokens_per_prompt_is_read_or_recomputed_for_older_results(experiment):
    assert experiment.gen_tokens_per_prompt({"metrics": {"gen_tokens_per_prompt": 12.5}}) == 12.5
    older = {"metrics": {}, "samples": [{"new_tokens": 10}, {"new_tokens": 30}]}
    assert experiment.gen_tokens_per_prompt(older) == 20
