"""What does the awareness loss cost? A LARFT step vs a GRPO-only step (lambda = 0), side by side.

Same model (the bundled default), same prompts, same seed, learning rate 0 (the optimizer still
does all its work, but the policy does not change): every step samples identical rollouts in
both variants, so the timed difference is the awareness pass alone. The first step of a process
carries one-time costs and is reported apart; the ratio uses the median of the later steps.
Each run is its own process (for its own peak RSS); variants alternate so machine noise hits
both alike. Writes benchmarks/results/step_overhead.json.

    .venv/bin/python benchmarks/step_overhead.py [--repeats 3] [--max_completion_length 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "step_overhead.json"


def worker(variant: str, rollouts: int, group: int, max_tokens: int, micro: int, steps: int, out: str) -> None:
    """One fresh run of one optimizer step; prints its step time and peak RSS as JSON."""
    from larft.cli import TrainArguments
    from larft.config import LARFTConfig
    from larft.train import train

    config = LARFTConfig(
        output_dir=out, max_steps=steps, num_generations=group, per_device_train_batch_size=micro,
        gradient_accumulation_steps=rollouts // micro,
        max_completion_length=max_tokens, learning_rate=0.0, report_to="none", save_strategy="no", seed=0,
        awareness_lambda_max=1.0 if variant == "larft" else 0.0, awareness_warmup_ratio=0.0,
    )
    train(TrainArguments(model="default", train_size=64, train_targets="16,32,48"), config)
    records = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT " + json.dumps({"first_step_seconds": records[0]["step_seconds"],
                                  "later_step_seconds": [r["step_seconds"] for r in records[1:]],
                                  "peak_rss_gb": peak_kb / 1024**2,
                                  "completion_words_mean": [r["completion_words_mean"] for r in records]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=64)
    parser.add_argument("--micro_batch", type=int, default=8, help="rollouts per micro-step (as in the demo)")
    parser.add_argument("--worker", choices=["larft", "grpo"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rollouts, args.group, args.max_completion_length, args.micro_batch, args.steps,
               args.out)
        return

    runs: dict[str, list[dict]] = {"larft": [], "grpo": []}
    for rep in range(args.repeats):
        for variant in ("grpo", "larft") if rep % 2 else ("larft", "grpo"):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, __file__, "--worker", variant, "--out", tmp, "--rollouts", str(args.rollouts),
                       "--group", str(args.group), "--max_completion_length", str(args.max_completion_length),
                       "--micro_batch", str(args.micro_batch), "--steps", str(args.steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                    raise SystemExit(f"{variant} worker failed (exit {proc.returncode})")
                line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
                runs[variant].append(json.loads(line[len("RESULT "):]))
                print(variant, runs[variant][-1], flush=True)

    larft = statistics.median(s for r in runs["larft"] for s in r["later_step_seconds"])
    grpo = statistics.median(s for r in runs["grpo"] for s in r["later_step_seconds"])
    first = {k: statistics.median(r["first_step_seconds"] for r in v) for k, v in runs.items()}
    result = {
        "what": "optimizer steps 2.. of fresh runs, bundled SmolLM2-135M-Instruct, fp32 CPU, lr 0: identical "
                "rollouts in both variants",
        "settings": {"rollouts_per_step": args.rollouts, "num_generations": args.group,
                     "max_completion_length": args.max_completion_length, "micro_batch": args.micro_batch,
                     "repeats": args.repeats, "steps": args.steps, "malloc_tuning": os.environ.get("LARFT_MALLOC_TUNING", "1") != "0"},
        "larft_step_seconds_median": larft,
        "grpo_step_seconds_median": grpo,
        "overhead_ratio": larft / grpo,
        "first_step_seconds_median": first,
        "first_step_overhead_ratio": first["larft"] / first["grpo"],
        "peak_rss_gb": {k: max(r["peak_rss_gb"] for r in v) for k, v in runs.items()},
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch_threads": None},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    import torch

    result["machine"]["torch_threads"] = torch.get_num_threads()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("larft_step_seconds_median", "grpo_step_seconds_median",
                                              "overhead_ratio", "first_step_overhead_ratio", "peak_rss_gb")}, indent=2))


if __name__ == "__main__":
    main()
