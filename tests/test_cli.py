import json

import pytest

from helpers import larft


@pytest.mark.subprocess
def test_help():
    out = larft("--help")
    assert out.returncode == 0 and "train" in out.stdout and "data" in out.stdout


@pytest.mark.subprocess
def test_data_generate_then_validate(tmp_path):
    path = tmp_path / "p.jsonl"
    assert larft("data", "generate", "--out", str(path), "--n", "12", "--constraints", "equal,at_least").returncode == 0
    assert len(path.read_text().splitlines()) == 12
    out = larft("data", "validate", str(path))
    assert out.returncode == 0 and "12 valid row(s), 0 problem(s)" in out.stdout


@pytest.mark.subprocess
def test_validate_exits_non_zero_with_file_line_field_and_no_traceback(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "x", "target": 5}) + "\n" + json.dumps({"prompt": "x", "target": -1}) + "\n")
    out = larft("data", "validate", str(path))
    assert out.returncode == 1
    assert f"{path}:2: target: must be positive" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.subprocess
def test_train_refuses_invalid_data_and_bad_config_keys(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    out = larft("train", "--train_file", str(bad), "--output_dir", str(tmp_path / "o"))
    assert out.returncode == 2 and f"{bad}:1" in out.stderr and "Traceback" not in out.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: 2\nlearning_rat: 0.1\n")
    out = larft("train", "--config", str(cfg))
    assert out.returncode == 2 and "unknown key 'learning_rat'" in out.stderr and "Traceback" not in out.stderr
    out = larft("train", "--max_steps", "two")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_yaml_values_are_typed_like_command_line_values(tmp_path):
    from larft.cli import parse_train_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 1e-5\nmax_steps: 3\nawareness_lambda_max: 0.2\nbf16: false\nmodel: some/model\n")
    train_args, config = parse_train_args(["--config", str(cfg), "--max_steps", "5"])
    assert config.learning_rate == 1e-5 and isinstance(config.learning_rate, float)  # YAML reads 1e-5 as a string
    assert config.max_steps == 5  # the command line wins
    assert config.awareness_lambda_max == 0.2 and config.bf16 is False
    assert train_args.model == "some/model"


def test_shipped_configs_parse():
    from pathlib import Path

    from larft.cli import parse_train_args

    root = Path(__file__).resolve().parents[1] / "configs"
    _, demo = parse_train_args(["--config", str(root / "demo-cpu.yaml")])
    import torch

    from larft.config import cpu_has_native_bf16

    # unset: larft's default (CUDA, or a CPU with native bf16)
    assert demo.awareness_lambda_max > 0 and demo.bf16 is (torch.cuda.is_available() or cpu_has_native_bf16())
    assert demo.beta == 0.0 and not demo.mask_truncated_completions and demo.per_target_budget
    _, paper = parse_train_args(["--config", str(root / "paper.yaml")])
    assert paper.learning_rate == 1e-6 and paper.awareness_lambda_max == 0.01 and paper.num_generations == 4
    assert paper.beta == 0.001 and paper.entropy_coef == 0.01 and paper.temperature == 0.7 and paper.top_p == 0.8
    _, release = parse_train_args(["--config", str(root / "paper-release.yaml")])
    differs = {k for k in ("beta", "loss_type", "delta", "weight_decay", "awareness_prompt", "degenerate_guard",
                           "refusal_floor") if getattr(release, k) != getattr(paper, k)}
    assert differs == {"beta", "loss_type", "delta", "weight_decay", "awareness_prompt", "degenerate_guard",
                       "refusal_floor"}
    assert release.beta == 0.0 and release.awareness_prompt == "release" and release.delta == 3.0
    for key in ("learning_rate", "awareness_lambda_max", "num_generations", "temperature", "top_p", "entropy_coef"):
        assert getattr(release, key) == getattr(paper, key), key


def test_recipe_and_sweep_configs_hold_valid_training_settings():
    """The recipe, every sweep variant and every experiment run parse as `larft train` options."""
    from pathlib import Path

    import yaml

    from larft.cli import parse_train_args

    root = Path(__file__).resolve().parents[1] / "configs"
    research = Path(__file__).resolve().parents[1] / "research" / "configs"
    _, recipe = parse_train_args(["--config", str(root / "recipe-cpu.yaml")])
    assert recipe.entropy_coef == 0.0 and recipe.scale_rewards == "batch"
    sweep = yaml.safe_load((research / "sweep-cpu.yaml").read_text())
    for name, overrides in sweep["variants"].items():
        argv = []
        for key, value in {**sweep["base"], **(overrides or {})}.items():
            if key == "train_only_constraints":  # the sweep's own option: it writes a --train_file
                assert set(value.split(",")) <= {"equal", "at_most", "at_least", "range"}
                continue
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        parse_train_args(argv + ["--output_dir", "/tmp/unused"])


@pytest.mark.subprocess
def test_gpu_smoke_dry_run_plans_every_path_with_valid_options():
    """scripts/gpu-smoke.sh --dry-run: the GPU session's steps, each train command parsed, nothing run."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_smoke.py"), "--dry-run"], capture_output=True,
                          text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for step in ("dry-run-hf", "train-hf", "recipe-7b-zero3-settings", "recipe-7b-lora-settings",
                 "train-vllm-colocate", "eval-hf", "eval-vllm", "train-fsdp-2gpu"):
        assert f"[gpu-smoke] {step}:" in proc.stdout
    assert "9 steps planned, options valid" in proc.stdout
