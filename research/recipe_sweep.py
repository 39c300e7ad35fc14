"""Short training runs side by side, judged on held-out *validation* prompts (never the eval set).

    .venv/bin/python research/recipe_sweep.py --config research/configs/sweep-cpu.yaml [--only a,b]

Each variant is `larft train` with the sweep's base settings plus its overrides, holding out
`length_check_prompts` generated prompts (same topics/templates as training, never trained on)
and generating for them greedily before and after. From each run:
- validation: mean relative length error (capped at 10) and LIFEBench-style LS per constraint,
  before -> after, and the share of answers of <= 1 word;
- training: reward per (constraint, target) over thirds of the run, from `rollouts.jsonl`
  (recounted here from the logged text, independently of the trainer's own metrics), KL, s/step.
With `lifebench_validation:` in the config, each trained variant (and the base model, once) is
also scored on LIFEBench's own *auxiliary* tasks (`larft eval --bench lifebench-label` and/or
`lifebench-refactor`): LIFEBench-shaped prompts (long source texts, varied tasks) that share no task
with the evaluation set (`lifebench`, the lite file), so a recipe is chosen on prompts like the
eval's without looking at the eval. Our own held-out prompts alone chose a recipe (equal-only) that
did not carry over to LIFEBench (research/notes.md).
Writes research/results/<results:>.json (default recipe_sweep.json) and a reward plot in research/img/. Variants already finished
(in $LARFT_HOME/sweep/<name>) are read, not rerun. `--held-out-only` trains and checks on the held-out prompts
but leaves the LIFEBench-shaped validation (and the base model's) for a later run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

from larft.models import larft_home

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/_runs.py: helpers for scripts that drive runs
from _runs import drop_checkpoints, resume_args  # noqa: E402

RESULTS = ROOT / "research" / "results"  # <results:>.json (default recipe_sweep.json): one file per sweep


def sweep_dir(cfg: dict) -> Path:
    """`work_dir` (a relative one under $LARFT_HOME, so a resumed session finds it), else $LARFT_HOME/sweep."""
    if not cfg.get("work_dir"):
        return larft_home() / "sweep"
    return larft_home() / Path(os.path.expandvars(os.path.expanduser(cfg["work_dir"])))


def variant_settings(name: str, cfg: dict, work: Path) -> dict:
    """The `larft train` settings of one variant: the sweep's base, its overrides (less the sweep's own
    keys), its own output folder. Short runs keep no checkpoint unless the sweep sets save_steps."""
    settings = {"save_steps": 10**6, **cfg["base"], **(cfg["variants"][name] or {}), "output_dir": str(work / name)}
    only = settings.pop("train_only_constraints", None)
    settings.pop("pair_with", None)
    if only:
        settings = restricted_prompt_file(settings, only, work / f"{name}.prompts.jsonl")
    return settings


def run_variant(name: str, cfg: dict, work: Path) -> None:
    out = work / name
    check = out / "length_check.json"
    if check.exists() and "after" in json.loads(check.read_text()):
        return
    settings = variant_settings(name, cfg, work)
    path = work / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    resume = resume_args(out)
    wall = work / f"{name}.wall.json"  # the wall time of every call of this run, summed
    if not resume:
        if out.exists():
            shutil.rmtree(out)  # an interrupted run without a checkpoint starts over
        wall.unlink(missing_ok=True)
        reuse_before(settings, cfg, work, out)  # a resumed run kept its "before" in out/
    log = work / f"{name}.log"
    t0 = time.perf_counter()
    try:
        with open(log, "a" if resume else "w", encoding="utf-8") as f:
            proc = subprocess.run([sys.executable, "-m", "larft", "train", "--config", str(path), *resume], stdout=f,
                                  stderr=subprocess.STDOUT, cwd=ROOT)
    finally:
        earlier = json.loads(wall.read_text())["wall_minutes"] if wall.exists() else 0.0
        wall.write_text(json.dumps({"wall_minutes": earlier + (time.perf_counter() - t0) / 60}))
    if proc.returncode != 0:
        raise SystemExit(f"variant {name} failed (exit {proc.returncode}); see {log}")
    drop_checkpoints(out)


def lifebench_validation(model: str, cfg: dict, out: Path, run: bool = True) -> dict | None:
    """LS on LIFEBench's auxiliary tasks (the config's `lifebench_validation:` benches, filter and
    limit; greedy), cached in `out` together with the spec that produced it (a changed spec is
    evaluated again); None when the config has no such section, or nothing is cached and `run` is
    False (--report-only)."""
    spec = cfg.get("lifebench_validation")
    if not spec:
        return None
    results, spec_file = out / "results.json", out / "lifebench_validation.json"
    if results.exists() and (not spec_file.exists() or json.loads(spec_file.read_text()) != spec):
        shutil.rmtree(out)  # made with another spec
    if not results.exists():
        if not run:
            return None
        args = ["eval", "--model", model, "--out", str(out), "--device", "cpu",
                "--batch-size", str(spec.get("batch_size", 16)), "--max-new-tokens-cap", str(spec.get("max_new_tokens_cap", 512))]
        for bench in spec["bench"]:
            args += ["--bench", bench]
        if spec.get("filter"):
            args += ["--filter", str(spec["filter"])]
        if spec.get("limit"):
            args += ["--limit", str(spec["limit"])]
        out.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.log", "w", encoding="utf-8") as f:
            proc = subprocess.run([sys.executable, "-m", "larft", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"larft eval of {model} failed (exit {proc.returncode}); see {out.parent / out.name}.log")
        spec_file.write_text(json.dumps(spec))
    benches = json.loads(results.read_text())["benchmarks"]
    return lifebench_shaped_ls(benches)


def lifebench_shaped_ls(benches: dict) -> dict:
    """Per bench: LS with its interval and per control, and the number of prompts."""
    out = {}
    for name, b in benches.items():
        m = b["metrics"]
        out[name] = {"ls": m.get("LS"), "ls_ci": (m.get("ci95") or {}).get("LS"), "n": m.get("n"),
                     "ls_per_control": {c: v["LS"] for c, v in (m.get("per_control") or {}).items()}}
    return out


def restricted_prompt_file(settings: dict, only: str, path: Path) -> dict:
    """Train on some constraints only, validate on the same held-out prompts as every other
    variant: the base's generated prompt set, its training part filtered to `only`, its last
    `length_check_prompts` rows (the held-out ones) kept whole; written to a JSONL file that
    the run reads as --train_file."""
    from larft.data import generate_rows

    rows = generate_rows(settings["train_size"], targets=[int(t) for t in str(settings["train_targets"]).split(",")],
                         constraints=str(settings["train_constraints"]).split(","), seed=0,
                         styles=str(settings.get("train_styles", "plain")).split(","))
    n = settings["length_check_prompts"]
    keep = set(only.split(","))
    chosen = [r for r in rows[:-n] if r["constraint"] in keep] + rows[-n:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
    settings = {k: v for k, v in settings.items() if k not in ("train_size", "train_targets", "train_constraints",
                                                                "train_styles")}
    return {**settings, "train_file": str(path)}


def _held_out_prompts(settings: dict, work: Path) -> list[str] | None:
    """The user text of a run's held-out prompts, from its prompt file or its generated set."""
    from larft.data import generate_rows
    from larft.loader import normalize_record

    if settings.get("train_file"):
        rows = [json.loads(x) for x in Path(settings["train_file"]).read_text(encoding="utf-8").splitlines()]
    else:
        rows = generate_rows(settings["train_size"],
                             targets=[int(t) for t in str(settings["train_targets"]).split(",")],
                             constraints=str(settings["train_constraints"]).split(","), seed=0,
                             styles=str(settings.get("train_styles", "plain")).split(","))
    held = rows[-settings["length_check_prompts"]:]
    return [normalize_record(r, "-", i)[0]["prompt"][-1]["content"] for i, r in enumerate(held, 1)]


#: settings that decide the held-out prompts and the base model's greedy answers to them
_BEFORE_KEYS = ("model", "train_size", "train_targets", "train_constraints", "train_styles", "length_check_prompts",
                "max_completion_length", "train_file")


def reuse_before(settings: dict, cfg: dict, work: Path, out: Path) -> None:
    """The "before" half of the validation is the base model's greedy answers to the held-out
    prompts: identical for every variant that holds out the same prompts with the same budget.
    Copy it from a finished variant instead of generating it again (the length check loads a
    saved "before", as it does on --resume)."""
    key = {k: settings.get(k) for k in _BEFORE_KEYS}
    mine = _held_out_prompts(settings, work) if settings.get("train_file") else None
    for other in cfg["variants"]:
        done = work / other / "length_check.json"
        if not done.exists():
            continue
        other_settings = {**cfg["base"], **(cfg["variants"][other] or {})}
        same_prompts = mine is not None and not other_settings.get("train_only_constraints") and \
            [b["prompt"] for b in json.loads(done.read_text())["before"]] == mine and \
            other_settings.get("max_completion_length") == settings.get("max_completion_length")
        if same_prompts or {k: other_settings.get(k) for k in _BEFORE_KEYS} == key:
            out.mkdir(parents=True, exist_ok=True)
            before = json.loads(done.read_text())["before"]
            (out / "length_check.json").write_text(json.dumps({"before": before}, indent=2))
            return


def spearman(x: list[float], y: list[float]) -> float | None:
    """Rank correlation (average ranks for ties)."""
    if len(x) < 3:
        return None

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else None


def validation(results: list[dict]) -> dict:
    from larft.eval.metrics import lifebench_ls

    per: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r["delivered"] > 1 and r["constraint"] in ("equal", "at_most", "at_least"):
            per[r["constraint"]].append(lifebench_ls(r["delivered"], r["target"], r["constraint"]))
    equal = [r for r in results if r["constraint"] == "equal"]
    return {
        # does the answer's length follow the asked number at all? 1 = perfectly ordered, 0 = unrelated
        "target_length_spearman": spearman([r["target"] for r in results], [r["delivered"] for r in results]),
        "target_length_spearman_equal": spearman([r["target"] for r in equal], [r["delivered"] for r in equal]),
        "error": statistics.fmean(min(r["deviation"], 10.0) for r in results),
        "ls": statistics.fmean(statistics.fmean(v) for v in per.values()) if per else None,
        "ls_per_constraint": {c: statistics.fmean(v) for c, v in sorted(per.items())},
        "refusals": sum(r["delivered"] <= 1 for r in results) / len(results),
        "words_mean": statistics.fmean(r["delivered"] for r in results),
    }


def held_out_rows(results: list[dict]) -> list[dict]:
    """The held-out answers' lengths, kept in the results file: the paired difference needs them
    per prompt, and the run folders under $LARFT_HOME do not outlive their machine."""
    keys = ("prompt", "constraint", "target", "delivered", "deviation")
    return [{k: r[k] for k in keys} for r in results]


def paired_validation_difference(variants: dict, a: str, b: str) -> dict | None:
    """Held-out validation LS of variant `a` minus variant `b`, with a 95% bootstrap interval over the
    prompts both answered, resampled in pairs (strata: constraint x target): 48 prompts judge a
    variant loosely, and the pairing takes the prompts' own difficulty out. Reads each summary's
    `held_out_after` rows; None until both have them."""
    from larft.eval.stats import bootstrap_cis

    rows = []
    for variant in (a, b):
        after = (variants.get(variant) or {}).get("held_out_after")
        if not after:
            return None
        rows.append({r["prompt"]: r for r in after})
    pairs = [(rows[0][p], rows[1][p]) for p in sorted(set(rows[0]) & set(rows[1]))]

    def difference(items: list) -> dict:
        ls_a, ls_b = (validation([x[k] for x in items])["ls"] for k in (0, 1))
        return {"diff": None if ls_a is None or ls_b is None else ls_a - ls_b}

    ci = bootstrap_cis(pairs, difference, strata=lambda x: (x[0]["constraint"], x[0]["target"]))["diff"]
    return {"against": b, "diff": difference(pairs)["diff"], "ci": ci, "n": len(pairs)}


def pair_with_references(variants: dict, cfg: dict) -> None:
    """Each variant's held-out LS minus its reference's, paired over prompts: the sweep's `reference`
    (e.g. lam-0, GRPO only), or the variant's own `pair_with` (the GRPO-only run at its learning rate).
    A variant recorded before the rows were kept keeps its figure (its run folder may be gone)."""
    for name, s in variants.items():
        reference = (cfg["variants"].get(name) or {}).get("pair_with", cfg.get("reference"))
        if reference and name != reference:
            if (d := paired_validation_difference(variants, name, reference)) is not None:
                s["validation_ls_minus_reference"] = d


def training_trace(out: Path) -> dict:
    from larft.length import count_words
    from larft.rewards import length_score

    rows = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines() if x.strip()]
    last = max(r["step"] for r in rows)
    third = lambda step: min(2, (step - 1) * 3 // last)  # noqa: E731
    cells: dict[str, list[list[float]]] = defaultdict(lambda: [[], [], []])
    mismatches = 0
    for r in rows:
        recount = count_words(r["text"])
        mismatches += recount != r["length"]
        target = tuple(r["target"]) if isinstance(r["target"], list) else r["target"]
        reward = length_score(r["text"], target, constraint=r["constraint"])  # the plain paper reward, no guards
        cells[f"{r['constraint']} {r['target']}"][third(r["step"])].append(reward)
    table = {k: [statistics.fmean(v) if v else None for v in thirds] for k, thirds in sorted(cells.items())}
    by_step: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        by_step[r["step"]].append(next(v for k, v in r.items() if k.startswith("reward/")))
    return {"reward_by_cell_thirds": table, "length_recount_mismatches": mismatches, "rollouts": len(rows),
            "reward_by_step": {s: statistics.fmean(v) for s, v in sorted(by_step.items())}}


def summarize(name: str, cfg: dict, work: Path, run: bool = True) -> dict | None:
    out = work / name
    check = out / "length_check.json"
    if not check.exists() or "after" not in json.loads(check.read_text()):
        return None
    lc = json.loads(check.read_text())
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    wall = work / f"{name}.wall.json"
    return {
        "overrides": cfg["variants"][name] or {},
        "validation_before": validation(lc["before"]),
        "validation_after": validation(lc["after"]),
        "held_out_after": held_out_rows(lc["after"]),
        "lifebench_shaped_validation": lifebench_validation(str(out), cfg, out / "lifebench_validation", run),
        "train": training_trace(out),
        "own_count_error": own_count_error(metrics),
        "kl_last": metrics[-1].get("kl"),
        "step_seconds_median": statistics.median(m["step_seconds"] for m in metrics if m.get("step_seconds")),
        "steps": len(metrics),
        "train_minutes": sum(m.get("step_seconds") or 0 for m in metrics) / 60,
        "wall_minutes": json.loads(wall.read_text())["wall_minutes"] if wall.exists() else None,
    }


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in summary.items():
        steps = sorted(int(k) for k in s["train"]["reward_by_step"])
        values = [s["train"]["reward_by_step"][str(k)] if str(k) in s["train"]["reward_by_step"]
                  else s["train"]["reward_by_step"][k] for k in steps]
        window = 3
        smooth = [statistics.fmean(values[max(0, i - window + 1): i + 1]) for i in range(len(values))]
        ax.plot(steps, smooth, label=f"{name} (val LS {s['validation_before']['ls']:.0f}->{s['validation_after']['ls']:.0f})")
    ax.set_xlabel("step"), ax.set_ylabel("training reward (3-step mean)"), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def own_count_error(metrics: list[dict], k: int = 5) -> dict | None:
    """Does the model count its own rollouts? The trainer's `awareness_count_error` (teacher-forced
    |counted - true| / true, read at the count's positions of the label, 1 for a non-number; runs
    before `awareness.read_count` (2026-11-25) parsed the whole label: 1 while the tags were wrong),
    mean of the first and last k steps; None for a GRPO-only run (no counting examples). Fresh
    rollouts each step, so not in-sample."""
    values = [m["awareness_count_error"] for m in metrics if m.get("awareness_count_error") is not None]
    if not values:
        return None
    return {"first": statistics.fmean(values[:k]), "last": statistics.fmean(values[-k:]), "steps": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "research" / "configs" / "sweep-cpu.yaml"))
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--report-only", action="store_true", help="summarize finished variants, run nothing")
    parser.add_argument("--held-out-only", action="store_true",
                        help="train and run the held-out check, but not the LIFEBench-shaped validation (~35 min "
                             "a model on 2 cores); a later run without this flag fills it in from the cached runs")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    work = sweep_dir(cfg)
    names = args.only.split(",") if args.only else list(cfg["variants"])
    for name, overrides in cfg["variants"].items():
        if (overrides or {}).get("pair_with", name) not in cfg["variants"]:
            raise SystemExit(f"{args.config}: variants.{name}.pair_with: {overrides['pair_with']!r} is not a variant; "
                             f"variants: {list(cfg['variants'])}")
    for name in names:
        if name not in cfg["variants"]:
            raise SystemExit(f"unknown variant {name!r}; variants: {list(cfg['variants'])}")
        if not args.report_only:
            print(f"[sweep] {name}", flush=True)
            run_variant(name, cfg, work)
    run = not (args.report_only or args.held_out_only)  # run = may start LIFEBench-shaped validations
    summary = {n: s for n in names if (s := summarize(n, cfg, work, run)) is not None}
    name = cfg.get("results", "recipe_sweep")
    results = RESULTS / f"{name}.json"
    previous_file = json.loads(results.read_text()) if results.exists() else {}
    previous = previous_file.get("variants", {})
    previous.update(summary)
    pair_with_references(previous, cfg)
    base = previous_file.get("lifebench_shaped_validation_base")
    if cfg.get("lifebench_validation") and (not base or base.get("spec") != cfg["lifebench_validation"]
                                            or base.get("model") != cfg["base"]["model"]):
        scores = lifebench_validation(cfg["base"]["model"], cfg, work / "base-lifebench_validation", run)
        base = {"model": cfg["base"]["model"], "spec": cfg["lifebench_validation"], "scores": scores} if scores else None
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"config": cfg, "command": f"research/recipe_sweep.py --config {args.config}",
                                   "lifebench_shaped_validation_base": base, "variants": previous}, indent=2) + "\n")
    if previous:
        plot(previous, ROOT / "research" / "img" / ("sweep_reward.png" if name == "recipe_sweep" else f"{name}_reward.png"))
    for name, s in previous.items():
        b, a = s["validation_before"], s["validation_after"]
        per = ", ".join(f"{c} {b['ls_per_constraint'].get(c, 0):.0f}->{v:.0f}" for c, v in a["ls_per_constraint"].items())
        print(f"{name:>16}: val error {b['error']:.2f} -> {a['error']:.2f}, val LS {b['ls']:.1f} -> {a['ls']:.1f} "
              f"({per}), rank corr. target~length {b['target_length_spearman']:.2f} -> "
              f"{a['target_length_spearman']:.2f}, words {b['words_mean']:.0f} -> {a['words_mean']:.0f}, "
              f"refusals {a['refusals']:.2f}, {s['steps']} steps, {s['step_seconds_median']:.0f} s/step")
        if s.get("validation_ls_minus_reference"):
            d = s["validation_ls_minus_reference"]
            ci = "" if not d["ci"] else f" [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
            print(f"{'':>16}  val LS minus {d['against']}: {d['diff']:+.1f}{ci} (paired, n={d['n']})")
        if s.get("own_count_error"):
            print(f"{'':>16}  own-rollout count error {s['own_count_error']['first']:.2f} -> "
                  f"{s['own_count_error']['last']:.2f} (first / last 5 steps)")
        for bench, v in (s.get("lifebench_shaped_validation") or {}).items():
            before = ((base or {}).get("scores", {}).get(bench) or {}).get("ls")
            fmt = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
            print(f"{'':>16}  {bench}: LS {fmt(before)} -> {fmt(v['ls'])} (n={v['n']})")


if __name__ == "__main__":
    main()
