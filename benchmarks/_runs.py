"""Helpers for scripts that drive `larft train` runs (benchmarks/experiment.py, research/*.py).

Not part of the larft package: scripts import it by putting this folder on sys.path, e.g.
`sys.path.insert(0, str(ROOT / "benchmarks"))`, then `from _runs import resume_args`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from larft.run_setup import complete_checkpoints


def resume_args(output_dir: Path) -> list[str]:
    """`larft train` arguments that continue a run in output_dir: `--resume true` when it holds a
    complete checkpoint, else none (the caller starts the run over)."""
    return ["--resume", "true"] if output_dir.is_dir() and complete_checkpoints(output_dir) else []


def drop_checkpoints(output_dir: Path) -> None:
    """Remove the checkpoint-* folders of a finished run: its final model is kept, the optimizer
    states are not needed any more."""
    for old in output_dir.glob("checkpoint-*"):
        shutil.rmtree(old)


def read_json(path: Path) -> dict:
    """A results file, or {} when it does not exist yet (a benchmark's first stage)."""
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, data: dict) -> None:
    """Write a results file whole (a temporary file renamed): a kill never leaves half of one."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def timed(owner, name: str, bucket, times: dict) -> None:
    """Wrap `owner.name` so each call adds its seconds to `times[bucket]` (`bucket` may be a function of
    the call's arguments): the per-part breakdown of a training step."""
    import time

    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times[bucket(args) if callable(bucket) else bucket] += time.perf_counter() - start

    setattr(owner, name, wrapper)


class StepBreakdown:
    """Where a training step's seconds go: timers on generation, rewards, the policy and reference
    forwards, the awareness pass and the backward, read per optimizer step by a TrainerCallback
    (`callback`); `later()` is the mean breakdown of every step but the first (one-time costs)."""

    def __init__(self) -> None:
        import statistics
        from collections import defaultdict

        import accelerate
        import torch
        from transformers import TrainerCallback

        import larft.trainer as T

        self._mean = statistics.mean
        self.times: dict[str, float] = defaultdict(float)
        self.per_step: list[dict[str, float]] = []
        timed(T.LARFTTrainer, "_generate", "generation", self.times)
        timed(T.LARFTTrainer, "_calculate_rewards", "rewards", self.times)
        timed(T.LARFTTrainer, "_get_per_token_logps_and_entropies",
              lambda a: "policy forward" if torch.is_grad_enabled() else "reference forward", self.times)
        timed(T, "awareness_loss", "awareness forward", self.times)
        timed(T, "build_awareness_batch", "awareness batch", self.times)
        timed(accelerate.Accelerator, "backward", "backward", self.times)
        breakdown = self

        class Snap(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                breakdown.per_step.append(dict(breakdown.times))
                breakdown.times.clear()

        self.callback = Snap()

    def later(self) -> dict[str, float]:
        later = self.per_step[1:]
        return {k: self._mean(s.get(k, 0.0) for s in later) for k in sorted({k for s in later for k in s})}


def step_record(out: str, breakdown: StepBreakdown) -> dict:
    """A timing worker's figures from its run's metrics.jsonl: the first step apart (one-time costs),
    the later steps' seconds, rollout lengths and truncation per step, and the later steps' breakdown."""
    import json

    records = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {
        "first_step_seconds": records[0]["step_seconds"],
        "later_step_seconds": [r["step_seconds"] for r in records[1:]],
        "completion_words_mean": [r["completion_words_mean"] for r in records],
        "truncated_rate": [r["truncated_rate"] for r in records],
        "breakdown_later_steps": breakdown.later(),
        "records": records,
    }


def run_worker(script: str, name: str, *args: str) -> dict:
    """Run `script --worker NAME --out TMP ARGS...` in a fresh process (its own memory and one-time
    costs) and return the JSON it prints after `RESULT `; a failed worker stops the benchmark."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, script, "--worker", name, "--out", tmp, *args],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{name} worker failed (exit {proc.returncode})")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])
