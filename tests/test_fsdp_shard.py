"""LARFTTrainer with its parameters sharded (FSDP2, DTensors) over 2 CPU processes on gloo.

`accelerate launch --config_file configs/accelerate/fsdp.yaml` with LARFT_CPU_FSDP=1 (`larft.cpu_fsdp`):
accelerate's own FSDP2 path shards the model, the Trainer saves sharded checkpoints and resumes
from them. tests/shard_run.py is `larft train` plus a probe on every rank after every step.

What is compared, and why it can be:
- killed and resumed vs uninterrupted (same seed, sampled rollouts): equal rewards, because each rank's
  RNG state, the sharded model and AdamW state (fp32, restored exactly from the distributed
  checkpoint), the scheduler and the data position are all restored;
- one process vs two sharded ones: equal up to float rounding (different batch shapes, reduction
  order). Sampling cannot be compared (a 1-process run draws every row from one RNG stream, each
  rank from its own), so these runs decode greedily (top_k 1): a group's two rollouts are then the
  same, its advantages 0, and the losses compared are the KL, entropy and awareness terms; from
  step 2 on they also depend on the sharded optimizer steps before.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(ROOT / "configs" / "accelerate" / "fsdp.yaml"), "--num_processes", "2", "--mixed_precision", "no"]

on_cpu = pytest.mark.skipif(torch.cuda.is_available(), reason="larft.cpu_fsdp shards on CPU processes only")


def _env(shard: bool = True) -> dict[str, str]:
    """This tree's larft first on the path; one thread per process (2 cores, 2 ranks)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                     os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    env.pop("LARFT_CPU_FSDP", None)
    if shard:
        env["LARFT_CPU_FSDP"] = "1"
    return env


def _args(model_dir, out, steps: int, *extra: str) -> list[str]:
    return ["--model", str(model_dir), "--output_dir", str(out), "--max_steps", str(steps), "--num_generations", "2",
            "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--train_size", "32",
            "--awareness_lambda_max", "0.5", "--report_to", "none", "--save_steps", "1", "--learning_rate", "1e-2",
            "--length_check_prompts", "0", "--seed", "3", "--bf16", "false", *extra]


def _sharded(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*LAUNCH, str(HERE / "shard_run.py"), *args], capture_output=True, text=True,
                          timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _probes(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "shards.jsonl").read_text().splitlines()]


def _rank_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the worker processes under the accelerate launcher (torchrun's agent runs in it)."""
    import psutil

    found = {}
    for child in psutil.Process(launcher).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            rank = child.environ().get("RANK")
            if rank is not None:
                found[int(rank)] = child.pid
    return found


@pytest.mark.distributed
@pytest.mark.subprocess
@on_cpu
def test_shard_run_killed_and_resumed_steps_as_an_uninterrupted_one(tmp_path, tiny_model_dir):
    """(a) 4 sharded steps: DTensor parameters (policy and reference model), half of them on each rank,
    a distributed checkpoint a step, generation on every rank, a whole model at the end. (b) the same run, `kill -9` on rank 1
    once a checkpoint exists, then `--resume true`: the same steps and rewards as (a)."""
    steps = 4
    reference = tmp_path / "reference"
    done = _sharded("--generate", *_args(tiny_model_dir, reference, steps, "--length_check_prompts", "2"))
    assert "runs this as MULTI_CPU" not in done.stderr  # larft's warning when the FSDP config is not applied

    probes = _probes(reference)
    trained = [p for p in probes if "step" in p]
    assert sorted((p["step"], p["rank"]) for p in trained) == [(s, r) for s in range(1, steps + 1) for r in (0, 1)]
    for step in range(1, steps + 1):
        ranks = [p for p in trained if p["step"] == step]
        assert all(p["dtensor"] and p["ref_dtensor"] and p["type"].startswith("FSDP") for p in ranks)
        assert sum(p["local_numel"] for p in ranks) == ranks[0]["numel"]  # each rank holds its shard only
        assert all(0 < p["local_numel"] < p["numel"] for p in ranks)
    # each rank generated its own number of tokens from the sharded model, and the length check's
    # generate_records its own prompts (1 and 2) and budgets (2 and 8): synced_gpus kept them in step
    generated = sorted((p["rank"], p["generated"], p["budget"], p["fsdp_managed"])
                       for p in probes if "generated" in p)
    assert generated == [(0, 3, [2], True), (1, 8, [8, 8], True)]

    for step in range(1, steps + 1):  # distributed checkpoints: both ranks' shards of model and optimizer
        checkpoint = reference / f"checkpoint-{step}"
        for part in ("pytorch_model_fsdp_0", "optimizer_0"):
            assert sorted(p.name for p in (checkpoint / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    # the final model is whole (FULL_STATE_DICT at the end) and is the last checkpoint's, merged
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(reference / f"checkpoint-{steps}" / "pytorch_model_fsdp_0", tmp_path / "merged.pt")
    merged, final = torch.load(tmp_path / "merged.pt"), load_file(reference / "model.safetensors")
    merged = merged.get("model", merged)
    assert final and set(final) <= set(merged)
    assert all(torch.equal(final[k], merged[k]) for k in final)
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert not all(torch.equal(final[k], base[k]) for k in final)  # it trained (learning rate > 0)

    # the before/after length check ran on every rank (a sharded forward is collective) and rank 0 wrote it
    check = json.loads((reference / "length_check.json").read_text())
    assert len(check["before"]) == len(check["after"]) == 2
    assert "Asked vs delivered length" in done.stdout

    want = _metrics(reference)
    assert [r["step"] for r in want] == list(range(1, steps + 1))
    assert all(r["num_processes"] == 2 and r["awareness_loss"] > 0 for r in want)
    assert want[-1]["awareness_lambda"] > 0

    # (b) killed: rank 1 gets SIGKILL after checkpoint-2 is complete; the launcher then stops rank 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([*LAUNCH, str(HERE / "shard_run.py"), "--pause", "0.5",
                             *_args(tiny_model_dir, out, steps, "--length_check_prompts", "2")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True)
    ranks: dict[int, int] = {}
    try:
        start = time.time()
        # the rank-1 RNG file is written by rank 1, not ordered with rank 0's trainer_state.json: wait for both
        while not all((out / "checkpoint-2" / f).exists() for f in ("trainer_state.json", "rng_state_1.pth")):
            assert proc.poll() is None and time.time() - start < 240
            time.sleep(0.05)
        ranks = _rank_pids(proc.pid)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        assert proc.wait(timeout=120) != 0
    finally:  # nothing of this run outlives the test (the ranks run in sessions of their own)
        for pid in [proc.pid, *ranks.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "model.safetensors").exists()  # it did not finish
    resumed = _sharded(*_args(tiny_model_dir, out, steps, "--length_check_prompts", "2"), "--resume", "true")
    assert "resuming from" in resumed.stderr
    got = _metrics(out)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert [r["reward_mean"] for r in got] == pytest.approx([r["reward_mean"] for r in want], abs=1e-6)
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-5, abs=1e-6)
    assert all(p["dtensor"] for p in _probes(out) if "step" in p)  # the resumed run is sharded too


@pytest.mark.distributed
@pytest.mark.subprocess
@on_cpu
def test_shard_run_losses_equal_one_process_run(tmp_path, tiny_model_dir):
    """(c) the same global batch (2 ranks x 4 rollouts vs 1 x 8), greedy rollouts: the same rewards
    and, up to float rounding, the same losses at every step."""
    steps = 3
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    _sharded(*_args(tiny_model_dir, sharded, steps, "--top_k", "1"))
    args = _args(tiny_model_dir, single, steps, "--top_k", "1", "--per_device_train_batch_size", "8")
    proc = subprocess.run([sys.executable, "-m", "larft", "train", *args], capture_output=True, text=True,
                          timeout=300, env=_env(shard=False))
    assert proc.returncode == 0, proc.stderr[-4000:]
    two, one = _metrics(sharded), _metrics(single)
    assert [r["num_processes"] for r in two] == [2] * steps and [r["num_processes"] for r in one] == [1] * steps
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, steps + 1))
    assert [r["reward_mean"] for r in two] == [r["reward_mean"] for r in one]
    for key in ("loss", "awareness_loss", "kl", "entropy"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4, abs=1e-6), key
    assert two[-1]["kl"] > 0 and two[-1]["awareness_lambda"] > 0  # the policy moved: step 1's update counts


def test_shard_shim_applies_only_when_asked_on_a_machine_without_accelerator(monkeypatch):
    from larft import cpu_fsdp

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.delenv(cpu_fsdp.ENV, raising=False)
    assert not cpu_fsdp.wanted()  # not asked
    monkeypatch.setenv(cpu_fsdp.ENV, "1")
    assert cpu_fsdp.wanted() is (not torch.cuda.is_available())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not cpu_fsdp.wanted()  # a GPU machine: accelerate's own FSDP, untouched
    monkeypatch.undo()
    monkeypatch.setenv(cpu_fsdp.ENV, "1")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert not cpu_fsdp.wanted()  # no FSDP config: nothing to shard
