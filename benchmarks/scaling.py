"""1 vs 2 CPU processes on the same global batch: step time and reward curves side by side.

    .venv/bin/python benchmarks/scaling.py [--steps 3]

Both runs: the bundled model, same prompts and seed, 8 rollouts per optimizer step (2 prompts x 4);
one process with 2 threads vs 2 processes (accelerate, gloo) with 1 thread each. Writes
benchmarks/results/scaling.json: the step-time ratio and whether the logged reward curves match.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scaling.json"


def run(processes: int, steps: int, out: Path) -> dict:
    common = ["train", "--model", "default", "--output_dir", str(out), "--max_steps", str(steps),
              "--num_generations", "4", "--per_device_train_batch_size", str(8 // processes),
              "--max_completion_length", "32", "--train_size", "64", "--train_targets", "16,24",
              "--awareness_lambda_max", "1.0", "--report_to", "none", "--save_strategy", "no", "--seed", "0",
              "--learning_rate", "1e-5"]
    env = dict(os.environ, OMP_NUM_THREADS=str(2 // processes))
    if processes == 1:
        cmd = [sys.executable, "-m", "larft", *common]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", str(processes),
               "-m", "larft", *common]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{processes}-process run failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"wall_seconds": time.perf_counter() - t0, "step_seconds": [r["step_seconds"] for r in rows],
            "reward_mean": [r["reward_mean"] for r in rows], "awareness_loss": [r["awareness_loss"] for r in rows],
            "num_processes": rows[0]["num_processes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            results[f"{n}_process"] = run(n, args.steps, Path(tmp) / f"p{n}")
            print(n, results[f"{n}_process"], flush=True)
    one, two = results["1_process"], results["2_process"]
    later = lambda r: statistics.median(r["step_seconds"][1:] or r["step_seconds"])  # noqa: E731
    summary = {
        "what": "bundled SmolLM2-135M, 8 rollouts/step (2 prompts x 4), <= 32 new tokens, lambda_max 1, 2 CPU cores",
        "step_seconds_1_process": later(one),
        "step_seconds_2_processes": later(two),
        "step_time_ratio_2_over_1": later(two) / later(one),
        "reward_curves_equal": all(abs(a - b) < 1e-6 for a, b in zip(one["reward_mean"], two["reward_mean"])),
        "runs": results,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
