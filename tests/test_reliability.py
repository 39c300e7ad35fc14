"""Bad input gets one clear error; interrupted work resumes; numerical faults stop cleanly."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import larft, prompt_rows, tiny_trainer
from larft.loader import MAX_TARGET

HERE = Path(__file__).parent


GOOD = {"prompt": "Describe tea.", "target": 20}
BAD_RECORDS = [
    ("malformed JSON", b'{"prompt": "x", "target": 3', ""),
    ("missing prompt", json.dumps({"target": 3}).encode(), "prompt"),
    ("missing target", json.dumps({"prompt": "x"}).encode(), "target"),
    ("target zero", json.dumps({"prompt": "x", "target": 0}).encode(), "target"),
    ("negative target", json.dumps({"prompt": "x", "target": -5}).encode(), "target"),
    ("non-integer target", json.dumps({"prompt": "x", "target": "ten"}).encode(), "target"),
    ("absurd target", json.dumps({"prompt": "x", "target": MAX_TARGET * 10}).encode(), "target"),
    ("range lo > hi", json.dumps({"prompt": "x", "constraint": "range", "target_range": [9, 3]}).encode(),
     "target_range"),
    ("unknown unit", json.dumps({"prompt": "x", "target": 3, "unit": "pages"}).encode(), "unit"),
    ("unknown constraint", json.dumps({"prompt": "x", "target": 3, "constraint": "roughly"}).encode(), "constraint"),
    ("empty prompt", json.dumps({"prompt": "", "target": 3}).encode(), "prompt"),
    ("non-UTF-8 bytes", b'{"prompt": "caf\xe9", "target": 3}', ""),
]


@pytest.mark.subprocess
@pytest.mark.parametrize("name, line, field", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_validate_names_file_line_and_field(tmp_path, name, line, field):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n")
    out = larft("data", "validate", str(path))
    assert out.returncode == 1, name
    expected = f"{path}:2: {field}:" if field else f"{path}:2:"
    assert expected in out.stdout, out.stdout
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.subprocess
def test_train_refuses_invalid_data_unless_skip_invalid(tmp_path, tiny_model_dir):
    path = tmp_path / "data.jsonl"
    rows = [dict(GOOD, target=n) for n in (5, 6, 7, 8)] + [{"prompt": "x", "target": -1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = ["--model", str(tiny_model_dir), "--train_file", str(path), "--max_steps", "1", "--num_generations", "2",
              "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--report_to", "none",
              "--save_strategy", "no"]
    out = larft("train", *common, "--output_dir", str(tmp_path / "a"))
    assert out.returncode == 2 and f"{path}:5: target: must be positive" in out.stderr
    assert "Traceback" not in out.stderr
    out = larft("train", *common, "--output_dir", str(tmp_path / "b"), "--skip_invalid", "true")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[larft] --skip_invalid: skipped 1 invalid record" in out.stderr and f"{path}:5" in out.stderr


@pytest.mark.subprocess
def test_other_bad_inputs_are_one_clear_error(tmp_path, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cases = []
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "wrong.parquet")
    cases.append((["data", "validate", str(tmp_path / "wrong.parquet")], 1, f"{tmp_path / 'wrong.parquet'}: columns: needs a 'prompt' or 'messages' column"))
    (tmp_path / "empty.jsonl").write_text("")
    cases.append((["data", "validate", str(tmp_path / "empty.jsonl")], 1, "file is empty"))
    cases.append((["data", "validate", str(tmp_path / "missing.jsonl")], 1, "file not found"))
    long_prompt = tmp_path / "long.jsonl"
    long_prompt.write_text(json.dumps({"prompt": "tea " * 400, "target": 10}) + "\n")
    cases.append((["train", "--model", str(tiny_model_dir), "--train_file", str(long_prompt), "--max_prompt_tokens",
                   "64", "--output_dir", str(tmp_path / "o1")], 2, f"{long_prompt}:1: prompt:"))
    cfg = tmp_path / "bad-key.yaml"
    cfg.write_text("max_step: 3\n")
    cases.append((["train", "--config", str(cfg)], 2, f"config file {cfg}: unknown key 'max_step'"))
    cfg2 = tmp_path / "bad-value.yaml"
    cfg2.write_text("max_steps: lots\n")
    cases.append((["train", "--config", str(cfg2)], 2, "max_steps"))
    cases.append((["train", "--config", str(tmp_path / "nope.yaml")], 2, "not found"))
    cases.append((["eval", "--model", str(tiny_model_dir), "--bench-file", str(tmp_path / "missing.jsonl"),
                   "--format", "longbench-write", "--out", str(tmp_path / "e")], 2, "missing.jsonl: file not found"))
    for args, code, message in cases:
        out = larft(*args)
        assert out.returncode == code, (args, out.stdout, out.stderr[-1500:])
        assert message in out.stdout + out.stderr, (args, out.stdout, out.stderr[-1500:])
        assert "Traceback" not in out.stdout + out.stderr


def _train_args(model_dir, out, steps=4):
    return ["--model", str(model_dir), "--output_dir", str(out), "--max_steps", str(steps), "--num_generations", "2",
            "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--train_size", "32",
            "--awareness_lambda_max", "0.5", "--report_to", "none", "--save_steps", "1", "--seed", "3"]


def _wait_for(path: Path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout
        time.sleep(0.1)


def _metrics(out: Path):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["hf", "ct2"])
def test_resume_after_sigkill_continues_steps_lambda_and_randomness(tmp_path, tiny_model_dir, backend):
    reference = tmp_path / "reference"
    engine = ["--rollout_backend", backend]
    assert larft("train", *_train_args(tiny_model_dir, reference), *engine).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(HERE / "slow_train.py"), *_train_args(tiny_model_dir, out), *engine],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(out / "checkpoint-2" / "trainer_state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()  # it really died mid-run
    resumed = larft("train", *_train_args(tiny_model_dir, out), *engine, "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got, want = _metrics(out), _metrics(reference)
    assert [r["step"] for r in got] == [1, 2, 3, 4]  # no duplicate, no missing step
    assert [r["awareness_lambda"] for r in got] == pytest.approx([r["awareness_lambda"] for r in want])
    # same optimizer, RNG and data position: the resumed steps sample and score what an uninterrupted run did
    assert [r["reward_mean"] for r in got] == pytest.approx([r["reward_mean"] for r in want], abs=1e-6)


@pytest.mark.subprocess
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    args = _train_args(tiny_model_dir, out, steps=50)
    args[args.index("--save_steps") + 1] = "100"
    proc = subprocess.Popen([sys.executable, str(HERE / "slow_train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(out / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    steps = [r["step"] for r in _metrics(out)]
    state = json.loads((out / f"checkpoint-{steps[-1]}" / "trainer_state.json").read_text())
    assert state["global_step"] == steps[-1] < 50


def test_nan_reward_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from larft.rewards import LengthReward

    length = LengthReward()

    def poisoned(prompts, completions, trainer_state, **columns):
        rewards = length(prompts, completions, **columns)
        return [float("nan")] + rewards[1:] if trainer_state.global_step == 2 else rewards

    rows = [{k: v for k, v in r.items() if k != "line"} for r in prompt_rows(16, seed=0)]
    out = tmp_path / "run"
    # the only reward function (length_reward=False): its NaN leaves rollout 0 with no reward at all
    trainer = tiny_trainer(tiny_model_dir, out, rows=rows, reward_funcs=[poisoned], length_reward=False, max_steps=5,
                           max_completion_length=8, save_strategy="steps", save_steps=1)
    with pytest.raises(FloatingPointError, match=r"no reward for rollout 0 at step 3: .*\(poisoned\)"):
        trainer.train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    AutoModelForCausalLM.from_pretrained(out / "checkpoint-2")  # intact


@pytest.mark.subprocess
def test_resume_keeps_the_held_out_split_and_trims_the_rollout_trace(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    args = _train_args(tiny_model_dir, out, steps=1) + ["--length_check_prompts", "4"]
    first = larft("train", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    run = json.loads((out / "larft_run.json").read_text())
    before = json.loads((out / "length_check.json").read_text())["before"]
    held_out = {r["prompt"] for r in before}
    assert run["train_rows"] == 28 and len(run["held_out"]) == 4
    with open(out / "rollouts.jsonl", "a") as f:  # a line of a step that never finished (killed mid-write)
        f.write(json.dumps({"step": 2, "prompt": "x"}) + "\n")
    args[args.index("--max_steps") + 1] = "2"
    resumed = larft("train", *args, "--resume", "true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = json.loads((out / "larft_run.json").read_text())
    assert again["train_rows"] == 28 and again["held_out"] == run["held_out"]  # the same split, restored
    check = json.loads((out / "length_check.json").read_text())
    assert check["before"] == before and len(check["after"]) == 4  # "before" is still the base model's
    trace = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in trace] == [1] * 4 + [2] * 4 and "x" not in {r["prompt"] for r in trace}
    assert not held_out & {r["prompt"] for r in trace}  # never trained on a held-out prompt


@pytest.mark.subprocess
def test_resume_from_checkpoint_points_to_resume(tmp_path, tiny_model_dir):
    out = larft("train", *_train_args(tiny_model_dir, tmp_path / "run", steps=1),
                "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-1"))
    assert out.returncode == 2 and "--resume true" in out.stderr and "Traceback" not in out.stderr


def test_paper_config_accepts_the_papers_2048_token_prompts():
    from larft.cli import parse_train_args

    train_args, config = parse_train_args(["--config", str(HERE.parent / "configs" / "paper.yaml")])
    assert train_args.max_prompt_tokens == 2048


def test_a_checkpoint_of_several_processes_is_complete_only_with_every_ranks_random_state(tmp_path):
    """Each rank writes its own rng_state_I.pth, unordered with the main process's trainer_state.json: a
    run killed between them must not resume from that checkpoint with a fresh random state on a rank."""
    from larft.run_setup import complete_checkpoints

    for step, ranks in ((1, (0, 1)), (2, (0,))):  # step 2: rank 1's state never written
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text('{"global_step": %d}' % step)
        for rank in ranks:
            (folder / f"rng_state_{rank}.pth").write_bytes(b"x")
    assert complete_checkpoints(tmp_path, processes=2) == [tmp_path / "checkpoint-1"]
    assert complete_checkpoints(tmp_path) == [tmp_path / "checkpoint-2", tmp_path / "checkpoint-1"]
