"""Evaluate any model (an HF id, a local folder, a larft output) on a small LIFEBench sample.

    .venv/bin/python examples/eval_any_model.py --model default --limit 12
    .venv/bin/python examples/eval_any_model.py --model Qwen/Qwen2.5-0.5B-Instruct --limit 90 --out /tmp/qwen

Benchmark data: $LARFT_BENCHMARKS (default: the shared/benchmarks folder beside the checkout).
Generations are cached in --out: rerunning the same command resumes instead of starting over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from larft import EvalSettings, run_eval
from larft.eval.runner import parse_filters


def ls_table(metrics: dict) -> str:
    """LIFEBench's length deviation (LD, %) and length score (LS, 0-100) per control, LS per asked
    length, and the macro means (replies of <= 1 word are refusals, dropped as upstream does)."""
    if not metrics["per_control"]:
        return f"no scored replies: all {metrics['refusals_dropped']} were refusals (<= 1 word)"
    lengths = sorted({t for c in metrics["per_control"].values() for t in c["per_length"]}, key=int)
    lines = [f"{'control':<10} {'LD (%)':>8} {'LS':>6} |" + "".join(f"{'LS@' + str(t):>8}" for t in lengths)]
    for control, m in metrics["per_control"].items():
        cells = "".join(f"{m['per_length'][t]['LS']:>8.1f}" if t in m["per_length"] else f"{'-':>8}" for t in lengths)
        lines.append(f"{control:<10} {m['LD']:>8.1f} {m['LS']:>6.1f} |{cells}")
    lines.append(f"{'mean':<10} {metrics['LD']:>8.1f} {metrics['LS']:>6.1f} |")
    if metrics["refusals_dropped"]:
        lines.append(f"({metrics['refusals_dropped']} refusal(s) of <= 1 word dropped)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (bundled SmolLM2-135M-Instruct), an HF id or a path")
    parser.add_argument("--limit", type=int, default=12, help="prompts to sample (seeded)")
    parser.add_argument("--filter", default="lang=en,max_length=64", help="e.g. lang=en,control=equal,max_length=64")
    parser.add_argument("--max_new_tokens_cap", type=int, default=512)
    parser.add_argument("--out", help="output folder (default: outputs/eval-<model name>)")
    args = parser.parse_args()

    out = args.out or f"outputs/eval-{Path(args.model).name}"
    settings = EvalSettings(limit=args.limit, filters=parse_filters(args.filter), max_new_tokens_cap=args.max_new_tokens_cap)
    results = run_eval(args.model, ["lifebench"], out, settings)
    bench = results["benchmarks"]["lifebench"]
    metrics = bench["metrics"]
    print(f"\nLIFEBench ({metrics['n']} prompts, {args.filter}) for {args.model}:\n")
    if metrics["n"] == 0:  # every prompt was too long for the context or needs more than the token cap
        print(metrics["note"])
    else:
        print(ls_table(metrics))
        if "ci95" in metrics and metrics["ci95"].get("LS"):
            lo, hi = metrics["ci95"]["LS"]
            print(f"LS mean 95% bootstrap interval: [{lo:.1f}, {hi:.1f}]")
    if bench.get("budget_limited"):
        print(f"({len(bench['budget_limited'])} prompt(s) need more than --max_new_tokens_cap new tokens: not scored)")
    print(f"\nfull results: {Path(out) / 'results.json'}, report: {Path(out) / 'report.md'}")


if __name__ == "__main__":
    main()
