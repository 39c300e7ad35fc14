"""Eval outputs: results.json, report.md and plots for one run; `larft report` compares runs."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

from larft.eval.metrics import HEALTH_FLAGS, answer_health, lifebench_ls_by_length
from larft.eval.stats import overlap
from larft.errors import MissingFileError, UserError


def asked_length_axis(ax: Any, lengths: list[int]) -> None:
    """A log-scaled x axis whose ticks are the asked lengths themselves (16, 32, ..., 512), written
    plainly: matplotlib's own log ticks label 2x10^1, 3x10^1, ... on top of each other."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ticks = sorted(set(lengths))
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


#: the answer-health shares (`larft.eval.metrics.answer_health`) as the reports name them
HEALTH_LABELS = {"ends_on_sentence": "ends on sentence", "loops": "loops", "truncated": "cut at budget"}
#: the score shown beside the health figures of a bucket, per benchmark
_BUCKET_SCORES = ("LS", "S_l", "PM", "MAE")


# -- one run --------------------------------------------------------------------------------
def bench_health(bench: dict) -> dict | None:
    """A benchmark's answer health: its `metrics.health`, or, for results written before it was
    recorded, what its samples allow (`truncated` only: older samples carry no health flags and
    no texts; LIFEBench's LS per length beside it). None without samples."""
    m = bench.get("metrics", {})
    if m.get("health"):
        return m["health"]
    samples = bench.get("samples") or []
    if not samples or not any(k in samples[0] for k in HEALTH_FLAGS) or "target" not in samples[0]:
        return None
    health = answer_health(samples)
    if "per_control" in m:
        ls = lifebench_ls_by_length(m)
        for t, cell in health["per_length"].items():
            cell["LS"] = ls.get(int(t))
        health["LS"] = m.get("LS")
    return health


def summary_row(results: dict) -> dict[str, Any]:
    """The headline numbers of a run, flat (used by report.md and `larft report`)."""
    return {k: v for k, (v, _) in summary_with_cis(results).items()}


def summary_with_cis(results: dict) -> dict[str, tuple[Any, list[float] | None]]:
    """Headline figure -> (value, 95% bootstrap interval or None)."""
    row: dict[str, tuple[Any, list[float] | None]] = {}
    for name, bench in results["benchmarks"].items():
        m = bench["metrics"]
        ci = m.get("ci95") or {}
        if "per_control" in m:
            row[f"{name} LS"] = (m.get("LS"), ci.get("LS"))
            row[f"{name} LD%"] = (m.get("LD"), ci.get("LD"))
            for control, c in m["per_control"].items():
                row[f"{name} LS {control}"] = (c["LS"], ci.get(f"LS {control}"))
            if "refusals" in m:
                row[f"{name} refusal%"] = (100 * m["refusals"]["rate"], None)
        elif "S_l" in m:
            row[f"{name} S_l"] = (m["S_l"], ci.get("S_l"))
        elif "all" in m:
            for level in [k for k in m if k.startswith("level")] + ["all"]:
                row[f"{name} PM {level}"] = (m[level]["PM"], ci.get("PM") if level == "all" else None)
                row[f"{name} FM {level}"] = (m[level]["FM"], ci.get("FM") if level == "all" else None)
        elif "format_rate" in m:
            pct = lambda v: None if v is None else 100 * v  # noqa: E731
            pct_ci = lambda v: None if v is None else [100 * v[0], 100 * v[1]]  # noqa: E731
            row[f"{name} format%"] = (pct(m["format_rate"]), pct_ci(ci.get("format_rate")))
            row[f"{name} MAE parsed"] = (m["mae_parsed"], ci.get("mae_parsed"))
            row[f"{name} within10%"] = (pct(m["within10_rate"]), pct_ci(ci.get("within10_rate")))
        elif "MAE" in m:
            row[f"{name} MAE"] = (m["MAE"], ci.get("MAE"))
        elif "perplexity" in m:
            row[f"{name} perplexity"] = (m["perplexity"], None)
        health = bench_health(bench)
        if health:
            for key, label in HEALTH_LABELS.items():
                value = health.get(key)
                row[f"{name} {label}%"] = (None if value is None else 100 * value, None)
    return row



def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def health_lines(health: dict) -> list[str]:
    """The answer-health table of one benchmark: per bucket (target length, Ruler's target label
    or LenCtrl's level) and for all answers."""
    buckets_key = "per_level" if "per_level" in health else "per_length"
    buckets = health.get(buckets_key, {})
    score = next((k for k in _BUCKET_SCORES if any(k in c for c in buckets.values())), None)
    head = "level" if buckets_key == "per_level" else "target"
    lines = ["Answer health (share of answers, %): ends on a sentence end; loops (more than 30% of its word "
             "4-grams repeat an earlier one; judged on answers of >= 8 words); cut at its token budget.", "",
             f"| {head} | n | " + (f"{score} | " if score else "") + "ends on sentence | loops (judged) | cut at budget |",
             "|---" * (5 + bool(score)) + "|"]

    def row(label: str, c: dict, bold: bool = False) -> str:
        b = "**" if bold else ""
        cells = [f"{b}{label}{b}", str(c["n"])]
        if score:
            cells.append(_fmt(c.get(score)))
        loops = c.get("loops")
        cells += [_pct(c.get("ends_on_sentence")), "-" if loops is None else f"{_pct(loops)} ({c['loops_judged']})",
                  _pct(c.get("truncated"))]
        return "| " + " | ".join(cells) + " |"

    lines += [row(str(k), c) for k, c in buckets.items()]
    lines.append(row("all", health, bold=True))
    return lines


def _ci(interval: list[float] | None, digits: int = 1) -> str:
    return "" if not interval else f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _excluded_lines(bench: dict) -> list[str]:
    lines = []
    if bench.get("skipped_too_long"):
        lines += [f"Skipped (prompt + budget longer than the model's context window): "
                  f"{len(bench['skipped_too_long'])} prompts ({', '.join(bench['skipped_too_long'][:10])})", ""]
    if bench.get("budget_limited"):
        lines += [f"**Not scored: {len(bench['budget_limited'])} prompts whose target needs more new tokens than "
                  f"--max-new-tokens-cap** (they would score the cap, not the model): "
                  f"{', '.join(bench['budget_limited'][:10])}{' ...' if len(bench['budget_limited']) > 10 else ''}", ""]
    return lines


def markdown(results: dict) -> str:
    where = f"; {results['device']}, {results['dtype']}" if results.get("device") else ""
    lines = [f"# larft eval: `{results['model']}`", "", f"Versions: {results['versions']}{where}", "",
             "Intervals are 95% bootstrap intervals over prompts (seeded).", ""]
    for name, bench in results["benchmarks"].items():
        m = bench["metrics"]
        ci = m.get("ci95") or {}
        lines += [f"## {name}", "", f"Counter: `{bench['counter']}`; {bench.get('seconds', 0):.0f} s", ""]
        if (m.get("best_of") or 1) > 1:
            lines += [f"Best of {m['best_of']}: {m['best_of']} sampled answers per prompt, the one with the highest "
                      f"length reward scored; {_fmt(m.get('gen_tokens_per_prompt'))} tokens generated per prompt "
                      "(all samples).", ""]
        lines += _excluded_lines(bench)
        if "per_control" in m:
            lines += ["| control | LD (%) | LS [95% CI] | refusals |", "|---|---|---|---|"]
            refusals = m.get("refusals", {}).get("per_control", {})
            for control, c in m["per_control"].items():
                r = refusals.get(control, {})
                lines.append(f"| {control} | {_fmt(c['LD'])} | {_fmt(c['LS'])}{_ci(ci.get(f'LS {control}'))} | "
                             f"{r.get('n', 0)} ({_fmt(100 * r.get('rate', 0.0))}%) |")
            total = m.get("refusals", {})
            lines.append(f"| **mean** | {_fmt(m.get('LD'))} | **{_fmt(m.get('LS'))}**{_ci(ci.get('LS'))} | "
                         f"{total.get('n', 0)} ({_fmt(100 * total.get('rate', 0.0))}%) |")
            lengths = sorted({t for c in m["per_control"].values() for t in c["per_length"]}, key=int)
            lines += ["", "LS by target length:", "", "| control | " + " | ".join(map(str, lengths)) + " |",
                      "|---" * (len(lengths) + 1) + "|"]
            for control, c in m["per_control"].items():
                cells = [_fmt(c["per_length"].get(t, {}).get("LS")) for t in lengths]
                lines.append(f"| {control} | " + " | ".join(cells) + " |")
            if refusals:
                lines += ["", "Refusals (answers of <= 1 word, dropped from LD/LS as upstream) by target length:", "",
                          "| control | " + " | ".join(map(str, lengths)) + " |", "|---" * (len(lengths) + 1) + "|"]
                for control, r in refusals.items():
                    per = {str(k): v for k, v in r["per_length"].items()}
                    lines.append(f"| {control} | " + " | ".join(_fmt(per.get(str(t))) for t in lengths) + " |")
            lines += ["", f"Samples: {m['n']}; refusals dropped: {m['refusals_dropped']}; "
                          f"stopped at their score-neutral token cap (scored at the length reached, ~0 as "
                          f"an uncapped run-away would): {m.get('truncated', '-')}"]
        elif "S_l" in m:
            lines += [f"S_l = **{_fmt(m['S_l'])}**{_ci(ci.get('S_l'))} over {m['n']} prompts", "",
                      "| length | S_l |", "|---|---|"]
            lines += [f"| {t} | {_fmt(v)} |" for t, v in m["per_length"].items()]
        elif "all" in m:
            lines += ["| level | PM | FM | n |", "|---|---|---|---|"]
            lines += [f"| {k} | {_fmt(v['PM'])}{_ci(ci.get('PM')) if k == 'all' else ''} | "
                      f"{_fmt(v['FM'])}{_ci(ci.get('FM')) if k == 'all' else ''} | {v['n']} |"
                      for k, v in m.items() if k.startswith("level") or k == "all"]
        elif "format_rate" in m:
            lines += [f"Headline: MAE over parsed answers **{_fmt(m.get('mae_parsed'))}**{_ci(ci.get('mae_parsed'))} "
                      f"words, with **{_fmt(100 * m['format_rate'])}%** of answers in the format"
                      f"{_ci([100 * x for x in ci['format_rate']] if ci.get('format_rate') else None)}.", "",
                      "| metric | value | definition |", "|---|---|---|"]
            for key in ("n", "format_rate", "mae_parsed", "within10_rate", "exact_rate", "mae_all", "mae_reference",
                        "mae_own"):
                definition = m.get("definitions", {}).get(key, "")
                lines.append(f"| {key} | {_fmt(m.get(key), 3 if key.endswith('rate') else 1)}"
                             f"{_ci(ci.get(key), 3 if key.endswith('rate') else 1)} | {definition} |")
        elif "perplexity" in m:
            lines += [f"Perplexity on the shipped reference texts: **{_fmt(m['perplexity'], 2)}** ({m['tokens']} tokens)"]
        elif "MAE" in m:
            lines += [f"MAE = **{_fmt(m['MAE'], 2)}**{_ci(ci.get('MAE'), 2)} over {m['n']} prompts ({m.get('note', '')})"]
            for level, v in m.get("per_level", {}).items():
                lines.append(f"- {level}: MAE {_fmt(v['MAE'], 2)} (n={v['n']})")
        health = bench_health(bench)
        if health:
            lines += ["", *health_lines(health)]
        lines.append("")
    if results.get("lm_eval"):
        lines += ["## lm-evaluation-harness", "", "```", json.dumps(results["lm_eval"]["results"], indent=1)[:4000],
                  "```", ""]
    plots = [p for p in ("asked_vs_delivered.png", "ls_by_length.png", "counting_errors.png")]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _length_benches(results: dict) -> dict[str, list[dict]]:
    return {n: b["samples"] for n, b in results["benchmarks"].items()
            if b["samples"] and "target" in b["samples"][0] and "length" in b["samples"][0]}


def plot_run(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    benches = _length_benches(results)
    if benches:
        fig, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), 4.5), squeeze=False)
        for ax, (name, samples) in zip(axes[0], benches.items()):
            by_control = defaultdict(list)
            for x in samples:
                by_control[x["control"]].append(x)
            for control, xs in sorted(by_control.items()):
                ax.scatter([x["target"] for x in xs], [max(x["length"], 0.8) for x in xs], s=12, alpha=0.6, label=control)
            lo = min(x["target"] for x in samples) / 2
            hi = max(max(x["target"] for x in samples), max(x["length"] for x in samples)) * 2
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
            ax.set_xscale("log"), ax.set_yscale("log")
            ax.set_xlabel("asked length"), ax.set_ylabel("delivered length"), ax.set_title(name)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "asked_vs_delivered.png", dpi=110)
        plt.close(fig)
        written.append("asked_vs_delivered.png")
    life = {n: b["metrics"] for n, b in results["benchmarks"].items() if "per_control" in b["metrics"]}
    if life:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, m in life.items():
            for control, c in m["per_control"].items():
                ts = sorted(c["per_length"], key=int)
                ax.plot([int(t) for t in ts], [c["per_length"][t]["LS"] for t in ts], marker="o", label=f"{name} {control}")
        asked_length_axis(ax, [int(t) for m in life.values() for c in m["per_control"].values() for t in c["per_length"]])
        ax.set_xlabel("target length"), ax.set_ylabel("LS"), ax.set_ylim(0, 105)
        ax.legend(fontsize=8), ax.set_title("LIFEBench length score by target length")
        fig.tight_layout()
        fig.savefig(out / "ls_by_length.png", dpi=110)
        plt.close(fig)
        written.append("ls_by_length.png")
    counting = [b for b in results["benchmarks"].values() if "format_rate" in b["metrics"]]
    if counting:
        errors = [x["guess"] - x["truth"] for x in counting[0]["samples"] if x["guess"] is not None]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(errors or [0], bins=30)
        ax.set_xlabel("counted - true words"), ax.set_ylabel("texts")
        ax.set_title(f"counting probe: {len(errors)} parsed of {len(counting[0]['samples'])}")
        fig.tight_layout()
        fig.savefig(out / "counting_errors.png", dpi=110)
        plt.close(fig)
        written.append("counting_errors.png")
    return written


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["summary"] = summary_row(results)
    _write_atomic(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False, default=str))
    plot_run(results, out)
    _write_atomic(out / "report.md", markdown(results))


# -- several runs -----------------------------------------------------------------------------
def load_results(directory: str | os.PathLike) -> dict:
    path = Path(directory) / "results.json"
    if not path.is_file():
        raise MissingFileError(f"{path}: not found (is {directory} a `larft eval --out` folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def compare(dirs: list[str], out: str | os.PathLike, names: list[str] | None = None) -> Path:
    """One Markdown table of every run's headline numbers, and the overlaid plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {(names[i] if names else Path(d).name): load_results(d) for i, d in enumerate(dirs)}
    rows = {name: summary_with_cis(r) for name, r in runs.items()}
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    first = next(iter(rows.values()))
    lines = ["# larft report", "",
             f"Values with their 95% bootstrap interval. `~` marks a figure whose interval overlaps the first run's "
             f"({next(iter(rows))}): that difference is within sampling noise.", "",
             "| figure | " + " | ".join(rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for column in columns:
        cells = []
        for i, row in enumerate(rows.values()):
            value, interval = row.get(column, (None, None))
            mark = ""
            if i > 0 and overlap(interval, first.get(column, (None, None))[1]):
                mark = " ~"
            cells.append(f"{_fmt(value)}{_ci(interval)}{mark}")
        lines.append(f"| {column} | " + " | ".join(cells) + " |")
    lines += ["", "Models: " + "; ".join(f"{n} = `{r['model']}`" for n, r in runs.items())]
    lines += ["", "![asked vs delivered](asked_vs_delivered.png)", "", "![LS by length](ls_by_length.png)", ""]
    _write_atomic(out / "report.md", "\n".join(lines))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    all_targets = []
    for name, r in runs.items():
        samples = [x for s in _length_benches(r).values() for x in s]
        by_target = defaultdict(list)
        for x in samples:
            by_target[x["target"]].append(x["length"])
        ts = sorted(by_target)
        all_targets += ts
        ax.plot(ts, [max(median(by_target[t]), 0.8) for t in ts], marker="o", label=name)
    if all_targets:
        lo, hi = min(all_targets) / 2, max(all_targets) * 2
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("asked length"), ax.set_ylabel("median delivered")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "asked_vs_delivered.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    lengths: list[int] = []
    for name, r in runs.items():
        for bench, b in r["benchmarks"].items():
            if "per_control" not in b["metrics"]:
                continue
            per_length = defaultdict(list)
            for c in b["metrics"]["per_control"].values():
                for t, v in c["per_length"].items():
                    per_length[int(t)].append(v["LS"])
            ts = sorted(per_length)
            lengths += ts
            ax.plot(ts, [sum(per_length[t]) / len(per_length[t]) for t in ts], marker="o", label=f"{name} ({bench})")
    asked_length_axis(ax, lengths)
    ax.set_ylim(0, 105), ax.set_xlabel("target length"), ax.set_ylabel("LS (mean of controls)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ls_by_length.png", dpi=110)
    plt.close(fig)
    return out / "report.md"
