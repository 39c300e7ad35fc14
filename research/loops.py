"""Where do the loops come from? The share of answers that loop, by asked length, for each way an
experiment's models answered: greedy (the eval), sampled (the GRPO rollouts, at the start and the
end of training), base model and trained ones.

    .venv/bin/python research/loops.py --records benchmarks/results/experiment/cpu-v5

It generates nothing: it reads an experiment's committed records (`benchmarks/experiment.py`):
each stage's LIFEBench results (greedy answers, or for a best-of-N stage the chosen sample, each with
its `loops` flag) and each trained run's rollout trace (every sampled rollout with its `loops` flag,
step and target). A loop is the eval's metric and the length reward's degenerate guard, one function
(`larft.length.is_looping`: more than 30% of the word 4-grams repeat, answers of >= 8 words). Rollouts
are sampled at the recipe's temperature / top_p with training budgets (2x the target), eval answers
greedy with eval budgets (3x, 1.5x for `at_least`). Writes research/results/loops.json and
research/img/loops.png.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _share(flags: list) -> dict:
    judged = [bool(f) for f in flags if f is not None]
    return {"loops": sum(judged) / len(judged) if judged else None, "judged": len(judged), "n": len(flags)}


def eval_loops(results: Path) -> dict[str, dict]:
    """Per asked length: the share of a stage's LIFEBench answers that loop."""
    samples = json.loads(results.read_text())["benchmarks"]["lifebench"]["samples"]
    by_length: dict[int, list] = defaultdict(list)
    for x in samples:
        if isinstance(x["target"], int):  # a range target has no single length to file it under
            by_length[x["target"]].append(x.get("loops"))
    return {str(t): _share(v) for t, v in sorted(by_length.items())}


def rollout_loops(trace: Path, first: int, last: int) -> dict[str, dict]:
    """Per target: the share of a run's sampled rollouts that loop, at steps first..last."""
    by_length: dict[int, list] = defaultdict(list)
    for line in trace.read_text().splitlines():
        r = json.loads(line)
        if first <= r["step"] <= last and "loops" in r and isinstance(r["target"], int):
            by_length[r["target"]].append(r["loops"])
    return {str(t): _share(v) for t, v in sorted(by_length.items())}


def study(records: Path, window: int = 5) -> dict:
    """Every series the records allow: `<stage> greedy` (or `<stage> best-of-N`), and for each trained
    run `<run> sampled, steps 1-5` and `<run> sampled, last 5 steps`."""
    series: dict[str, dict] = {}
    for stage in sorted(p for p in records.iterdir() if (p / "lifebench" / "results.json").exists()):
        results = stage / "lifebench" / "results.json"
        best_of = json.loads(results.read_text())["benchmarks"]["lifebench"]["metrics"].get("best_of", 1)
        series[f"{stage.name} " + ("greedy" if best_of == 1 else f"best-of-{best_of}")] = eval_loops(results)
        trace = stage / "rollouts.jsonl"
        if trace.exists():
            steps = [json.loads(line)["step"] for line in trace.read_text().splitlines()]
            end = max(steps)
            w = min(window, end // 2)  # two windows that never overlap
            series[f"{stage.name} sampled, steps 1-{w}"] = rollout_loops(trace, 1, w)
            series[f"{stage.name} sampled, steps {end - w + 1}-{end}"] = rollout_loops(trace, end - w + 1, end)
    return series


def plot(series: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from larft.eval.report import asked_length_axis

    fig, ax = plt.subplots(figsize=(8, 4.5))
    asked: list[int] = []
    for name, cells in series.items():
        pts = [(int(t), 100 * c["loops"]) for t, c in cells.items() if c["loops"] is not None]
        asked += [t for t, _ in pts]
        if pts:
            ax.plot(*zip(*sorted(pts)), marker="o", ls="--" if "sampled" in name else "-", label=name)
    asked_length_axis(ax, asked)
    ax.set_xlabel("asked length (words)"), ax.set_ylabel("% of answers that loop")
    ax.set_title("Loops by asked length: greedy eval answers (solid) and sampled rollouts (dashed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "experiment" / "cpu-v5"))
    parser.add_argument("--out", default=str(ROOT / "research" / "results" / "loops.json"))
    parser.add_argument("--plot", default=str(ROOT / "research" / "img" / "loops.png"))
    args = parser.parse_args()
    series = study(Path(args.records))
    records = Path(args.records).resolve()
    shown = str(records.relative_to(ROOT)) if records.is_relative_to(ROOT) else str(records)
    Path(args.out).write_text(json.dumps({"records": shown, "series": series}, indent=2) + "\n")
    plot(series, Path(args.plot))
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    for name, cells in series.items():
        print(f"{name:40s} " + "  ".join(f"{t}: {pct(c['loops'])}" for t, c in cells.items()))


if __name__ == "__main__":
    main()
