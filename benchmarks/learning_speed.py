"""Learning per CPU-hour: what each speed lever buys a training step, side by side.

Step cost (`--part steps`): the recipe's step (16 rollouts, 4 prompts x 4, two micro-batches of
8, targets 16..128 words, the recipe's budget) as it was (`today`: fp32, KL beta 0.001 with its
reference forward, TRL's padded micro-batches), each lever alone, and all of them (`fast`), for
GRPO-only and LARFT (lambda = 1 throughout, so every step pays the awareness pass). Learning
rate 0: the policy never changes, so every fp32 variant samples the same rollouts and the timed
difference is the lever alone. Each run is its own process; the first step (one-time costs) is
reported apart, ratios use the median of the later steps, with a per-part breakdown.
Writes benchmarks/results/learning_speed.json (resumable: finished runs are kept).

    .venv/bin/python benchmarks/learning_speed.py --part steps [--steps 4] [--variants today,fast]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import StepBreakdown, read_json, run_worker, write_json  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "learning_speed.json"

#: LARFTConfig fields of each variant; `today` is configs/recipe-cpu.yaml before the levers
VARIANTS = {
    "today": {"beta": 0.001, "trim_padding": False, "bf16": False},
    "beta0": {"beta": 0.0, "trim_padding": False, "bf16": False},
    "trim": {"beta": 0.001, "trim_padding": True, "bf16": False},
    "bf16": {"beta": 0.001, "trim_padding": False, "bf16": True},
    "fast": {"beta": 0.0, "trim_padding": True, "bf16": True},
    "fast-ct2": {"beta": 0.0, "trim_padding": True, "bf16": True, "rollout_backend": "ct2"},
}


def step_worker(method: str, variant: str, steps: int, max_new: int, out: str) -> None:
    """One fresh run of `steps` optimizer steps; prints step times, lengths and the breakdown as JSON."""
    import resource

    from larft.cli import TrainArguments
    from larft.config import LARFTConfig
    from larft.train import train

    breakdown = StepBreakdown()

    config = LARFTConfig(
        output_dir=out, max_steps=steps, num_generations=4, per_device_train_batch_size=8,
        gradient_accumulation_steps=2, max_completion_length=max_new, learning_rate=0.0, report_to="none",
        save_strategy="no", seed=0, temperature=0.7, top_p=0.8, entropy_coef=0.0, scale_rewards="batch",
        awareness_lambda_max=1.0 if method == "larft" else 0.0, awareness_warmup_ratio=0.0,
        length_check_prompts=0, **VARIANTS[variant],
    )
    train(TrainArguments(model="default", train_size=64, train_targets="16,32,64,128", train_constraints="equal",
                         train_styles="plain,requirement"), config, extra_callbacks=[breakdown.callback])
    records = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    print("RESULT " + json.dumps({
        "first_step_seconds": records[0]["step_seconds"],
        "later_step_seconds": [r["step_seconds"] for r in records[1:]],
        "completion_words_mean": [r["completion_words_mean"] for r in records],
        "truncated_rate": [r["truncated_rate"] for r in records],
        "reward_mean": [r.get("reward_mean") for r in records],
        "awareness_loss": [r.get("awareness_loss") for r in records],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "breakdown_later_steps": breakdown.later(),
    }))


def _load() -> dict:
    return read_json(RESULTS)


def _save(result: dict) -> None:
    write_json(RESULTS, result)


def step_costs(args: argparse.Namespace) -> None:
    import torch

    result = _load()
    runs = result.setdefault("step_runs", {})
    setup = {"rollouts": 16, "prompts": 4, "group": 4, "micro_batch": 8, "max_completion_length": args.max_new_tokens,
             "targets": "16,32,64,128 (equal)", "steps_per_run": args.steps, "learning_rate": 0.0,
             "threads": torch.get_num_threads()}
    if result.get("step_setup") not in (None, setup):
        runs.clear()  # another setup: its runs are not comparable
    result["step_setup"] = setup
    variants = args.variants.split(",")
    for key in (args.redo or "").split(","):
        runs.pop(key.strip(), None)
    for method in ("grpo", "larft"):  # variants alternate within a method: machine noise hits all alike
        for variant in variants:
            key = f"{method}-{variant}"
            if key in runs:
                continue
            runs[key] = run_worker(__file__, key, "--steps", str(args.steps), "--max_new_tokens", str(args.max_new_tokens))
            med = statistics.median(runs[key]["later_step_seconds"])
            print(f"{key:18s} median step {med:6.1f} s  breakdown "
                  + ", ".join(f"{k} {v:.1f}" for k, v in runs[key]["breakdown_later_steps"].items()), flush=True)
            _save(result)
    med = {k: statistics.median(v["later_step_seconds"]) for k, v in runs.items()}
    # bf16 (and ct2) rollouts are sampled with other numerics, so their lengths differ from fp32's at the
    # same seed: the time per written word of the later steps puts the variants on the same footing
    per_word = {k: sum(v["later_step_seconds"]) / (16 * sum(v["completion_words_mean"][1:])) for k, v in runs.items()}
    result["seconds_per_100_rollout_words"] = {k: 100 * v for k, v in per_word.items()}
    levers = {}
    for variant in variants:
        if variant == "today":
            continue
        levers[variant] = {m: med[f"{m}-today"] / med[f"{m}-{variant}"] for m in ("grpo", "larft")
                           if f"{m}-today" in med and f"{m}-{variant}" in med}
    result["step_seconds_median"] = med
    result["levers_step_speedup"] = levers
    result["levers_per_word_speedup"] = {
        variant: {m: per_word[f"{m}-today"] / per_word[f"{m}-{variant}"] for m in ("grpo", "larft")
                  if f"{m}-today" in per_word and f"{m}-{variant}" in per_word}
        for variant in variants if variant != "today"}
    best = min((v for v in variants if f"grpo-{v}" in med and f"larft-{v}" in med and v != "today"),
               key=lambda v: med[f"larft-{v}"], default=None)
    if best and "grpo-today" in med:
        result["fast_variant"] = best
        result["step_speedup_grpo"] = med["grpo-today"] / med[f"grpo-{best}"]
        result["step_speedup_larft"] = med["larft-today"] / med[f"larft-{best}"]
        result["larft_over_grpo_ratio"] = med[f"larft-{best}"] / med[f"grpo-{best}"]
        result["larft_over_grpo_ratio_today"] = med["larft-today"] / med["grpo-today"]
        result["steps_per_hour"] = {"today": 3600 / med["larft-today"], "fast": 3600 / med[f"larft-{best}"]}
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                         "torch": torch.__version__}
    result["command_steps"] = "python benchmarks/learning_speed.py " + " ".join(sys.argv[1:])
    _save(result)
    print(json.dumps({k: result.get(k) for k in ("levers_step_speedup", "step_speedup_grpo", "step_speedup_larft",
                                                  "larft_over_grpo_ratio", "steps_per_hour")}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["steps"], default="steps")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=192, help="the recipe's completion budget before the "
                        "score-neutral budgets (the same in every variant)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--redo", help="comma-separated runs to measure again (e.g. grpo-today,grpo-trim)")
    parser.add_argument("--worker")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        method, variant = args.worker.split("-", 1)
        step_worker(method, variant, args.steps, args.max_new_tokens, args.out)
        return
    step_costs(args)


if __name__ == "__main__":
    main()
