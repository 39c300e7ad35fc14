"""The examples run as a user runs them (a subprocess), on the tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script, *args, env=None):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})}, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.subprocess
def test_train_python_api_example(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    stdout = _run("train_python_api.py", "--model", str(tiny_model_dir), "--max_steps", "1", "--output_dir", str(out))
    assert "trained 1 steps" in stdout
    line = next(line for line in stdout.splitlines() if line.startswith("step 1:"))
    assert "length " in line and "sentence " in line  # both rewards were computed
    assert (out / "model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "`length_reward` (weight 1)" in card and "`ends_with_a_sentence` (weight 0.5)" in card


@pytest.mark.subprocess
def test_eval_any_model_example(tiny_model_dir, tmp_path):
    from larft.eval import benchmarks as B

    try:
        data = B.benchmark_data_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "eval"
    # the tiny tokenizer spends ~4 tokens a word: 16-word prompts' score-neutral budgets (3x) fit a cap of 300
    stdout = _run("eval_any_model.py", "--model", str(tiny_model_dir), "--limit", "6", "--max_new_tokens_cap", "300",
                  "--filter", "lang=en,max_length=16",
                  "--out", str(out), env={"LARFT_BENCHMARKS": str(data)})
    bench = json.loads((out / "results.json").read_text())["benchmarks"]["lifebench"]
    metrics = bench["metrics"]
    assert f"LIFEBench ({metrics['n']} prompts" in stdout
    assert metrics["n"] + len(bench["skipped_too_long"]) == 6 and not bench["budget_limited"]
    if metrics["per_control"]:
        mean = next(line for line in stdout.splitlines() if line.startswith("mean "))
        assert mean.split()[1:3] == [f"{metrics['LD']:.1f}", f"{metrics['LS']:.1f}"]
        for control, m in metrics["per_control"].items():
            row = next(line for line in stdout.splitlines() if line.startswith(control + " "))
            assert row.split()[1:3] == [f"{m['LD']:.1f}", f"{m['LS']:.1f}"]
    else:
        assert "no scored replies" in stdout


def test_the_qwen_8gpu_config_parses_into_the_papers_settings():
    from larft.cli import parse_train_args

    train_args, config = parse_train_args(["--config", str(ROOT / "configs" / "qwen2.5-7b-8gpu.yaml")])
    assert train_args.model == "Qwen/Qwen2.5-7B-Instruct" and train_args.max_prompt_tokens == 2048
    # the paper's 512 completions per round and 128 per optimizer step on 8 GPUs, in micro-batches of 2 (the release's)
    assert (config.num_generations, config.per_device_train_batch_size, config.gradient_accumulation_steps,
            config.steps_per_generation) == (4, 2, 8, 32)
    assert 8 * config.per_device_train_batch_size * config.gradient_accumulation_steps == 128
    assert 8 * config.per_device_train_batch_size * config.steps_per_generation == 512
    assert train_args.dtype == "bfloat16"
    assert config.awareness_lambda_max == 0.01 and config.learning_rate == 1e-6 and config.use_vllm
