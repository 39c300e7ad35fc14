"""The sections of docs/results.md that follow the experiment: learning per CPU-hour
(benchmarks/learning_speed.py) and the long run (benchmarks/long_run.py), each written from its
results file, so that either benchmark can refresh its figures without re-running the experiment."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG_RUN = ROOT / "benchmarks" / "results" / "long_run.json"
LEARNING_SPEED = ROOT / "benchmarks" / "results" / "learning_speed.json"

#: the sentence that ends the results page, after these sections
PAGE_END = "This page holds the current experiment only."
#: the headings these sections start with, in page order: the experiment's part ends before the first
HEADINGS = ("## Learning per CPU-hour", "## The long run")

#: what each step-cost variant of benchmarks/learning_speed.py changes, against `today`
STEP_LABELS = {
    "today": "the recipe before the levers: fp32, KL beta 0.001 (a reference forward), padded micro-batches",
    "beta0": "beta 0: no reference model",
    "trim": "micro-batches trimmed to their own longest completion",
    "bf16": "bf16 autocast (log-softmax and loss in fp32)",
    "fast": "the three together",
    "fast-ct2": "the three + CTranslate2 rollouts: **the recipe**",
}
#: a label for each minutes variant (their flags: benchmarks/learning_speed.py's MINUTE_VARIANTS)
MINUTE_LABELS = {"today": "recipe before the levers", "fast": "the recipe", "reuse": "the recipe, num_iterations 2",
                   "int8": "the recipe, int8 rollouts, importance-weighted", "lora": "the recipe, LoRA r16"}


def _ci(interval) -> str:
    return f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else ""


#: the answer-health shares of a run's LIFEBench answers (benchmarks/experiment.py's HEALTH_FIGURES), as worded here
HEALTH_WORDS = {"lifebench_ends_on_sentence": "ending on a sentence", "lifebench_loops": "looping",
                "lifebench_cut_at_budget": "cut at their budget"}


def health_text(figures: dict) -> str:
    """", answers ending on a sentence 93.2%, looping 1.0%, cut at their budget 2.5%" from a run's
    figures: the shares it has (none recorded: "")."""
    parts = [f"{words} {100 * figures[key]:.1f}%" for key, words in HEALTH_WORDS.items() if figures.get(key) is not None]
    return f", answers {', '.join(parts)}" if parts else ""


def learning_speed_lines(path: Path) -> list[str]:
    """The step cost of the recipe, lever by lever, and held-out LS after fixed training minutes (none
    before the file exists; "not run yet" for a part that has not run)."""
    if not path.exists():
        return []
    result = json.loads(path.read_text())
    seconds = result.get("step_seconds_median") or {}
    if not seconds:
        return []
    setup = result.get("step_setup", {})
    lines = ["", "## Learning per CPU-hour", "",
             f"`{result['command_steps']}`: seconds per optimizer step ({setup.get('rollouts')} rollouts, "
             f"{setup.get('prompts')} prompts x {setup.get('group')}, micro-batches of {setup.get('micro_batch')}, "
             f"<= {setup.get('max_completion_length')} tokens, {setup.get('threads')} threads; learning rate 0, so the "
             "variants sample alike, and LARFT's awareness pass on every step), the median of the later steps, each "
             "variant in its own process; speedup against `today`.", "",
             "| variant | GRPO-only s/step | LARFT s/step | speedup GRPO-only / LARFT |", "|---|---|---|---|"]
    for variant, what in STEP_LABELS.items():
        grpo, larft = seconds.get(f"grpo-{variant}"), seconds.get(f"larft-{variant}")
        if grpo is None and larft is None:
            continue
        speed = [seconds[f"{m}-today"] / s if s and seconds.get(f"{m}-today") else None
                 for m, s in (("grpo", grpo), ("larft", larft))]
        lines.append(f"| `{variant}`: {what} | " + " | ".join(f"{s:.1f}" if s else "-" for s in (grpo, larft))
                     + " | " + " / ".join(f"{s:.2f}" if s else "-" for s in speed) + " |")
    per_hour = result.get("steps_per_hour") or {}
    facts = [f"LARFT / GRPO-only step time: {result['larft_over_grpo_ratio']:.2f} with the recipe, "
             f"{result['larft_over_grpo_ratio_today']:.2f} before it"] if "larft_over_grpo_ratio_today" in result else []
    if per_hour:
        facts.append("LARFT steps per hour: " + ", ".join(f"{'the recipe' if v == 'fast' else v} {n:.0f}"
                                                            for v, n in per_hour.items()))
    for lever, by in (result.get("levers_over_recipe") or {}).items():
        facts.append(f"`{lever}` over the recipe (`--part levers`, run beside it): "
                     f"{by['grpo']['step']:.2f} / {by['larft']['step']:.2f} per step")
    if facts:
        lines += ["", ". ".join(facts) + "."]
    at = result.get("heldout_ls_at_minutes") or {}
    if not at:
        return lines + ["", "Held-out LS after fixed training minutes (`--part minutes`): not run yet."]
    marks = sorted({m for v in at.values() for m in v}, key=float)
    runs = result.get("minute_runs", {})
    lines += ["", f"`{result['command_minutes']}`: LARFT runs of the recipe (`fast`) and of the recipe before its "
              f"levers (`today`) stopped after the same training minutes (the held-out checks' own time not counted); "
              "LIFEBench's length score on the recipe's held-out prompts (never the eval set; of its training "
              "constraints, `equal` only in configs/recipe-cpu.yaml: the scale of the equal-to column above), "
              f"{result.get('heldout_ls_before', 0):.1f} before training. "
              "The mean of the seeds, then each seed (its optimizer step).", "",
              "| variant | " + " | ".join(f"{m} min" for m in marks) + " |", "|---|" + "---|" * len(marks)]
    for variant, by_mark in at.items():
        cells = []
        for m in marks:
            if m not in by_mark:
                cells.append("-")
                continue
            seeds = []
            for seed, ls in by_mark[m]["per_seed"].items():
                step = next((x["steps"] for x in runs.get(f"{variant}-{seed}", {}).get("marks", [])
                             if f"{x['minutes']:g}" == m), None)
                seeds.append(f"s{seed}: {ls:.1f}" + (f" at step {step}" if step is not None else ""))
            cells.append(f"**{by_mark[m]['mean']:.1f}** ({'; '.join(seeds)})")
        lines.append(f"| `{variant}`: {MINUTE_LABELS.get(variant, variant)} | " + " | ".join(cells) + " |")
    return lines


def long_run_lines(path: Path) -> list[str]:
    """The long run's section of the page, from benchmarks/long_run.py's file (none before it exists):
    its last evaluated point per run, against the base and best-of-8, and its plot."""
    if not path.exists():
        return []
    result = json.loads(path.read_text())
    runs = {name: run["curve"] for name, run in result["runs"].items() if run.get("curve")}
    if not runs:
        return []
    labels = {"larft": "LARFT", "grpo": "GRPO-only"}
    base = next(iter(runs.values()))[0]
    last = [c[-1] for c in runs.values()]
    done = all(point["steps"] >= result["steps"] for point in last)
    points = "; ".join(f"{labels.get(name, name)} at step {c[-1]['steps']}: **{c[-1]['lifebench_ls']:.1f}** "
                       f"{_ci(c[-1]['lifebench_ls_ci'])[1:]} ({c[-1]['train_minutes']:.0f} training minutes)"
                       for name, c in runs.items())
    best = result.get("best_of_8_ls")
    paired = result.get("larft_minus_grpo") or {}
    differences = [f"step {d['steps']} {d['diff']:+.1f}{_ci(d['ci'])}" for d in paired.get("curve", [])]
    if paired.get("final"):
        differences.append(f"final models (all {paired['final']['n']} prompts) {paired['final']['diff']:+.1f}"
                           f"{_ci(paired['final']['ci'])}")
    compared = ([f"LARFT minus GRPO-only, paired over the same prompts: {'; '.join(differences)}.", ""]
                if differences else [])
    finals = [f"{labels.get(name, name)} **{f['lifebench_ls']:.1f}**{_ci(f['lifebench_ls_ci'])} (equal-to "
              f"{f['lifebench_ls_equal']:.1f}, perplexity {f['perplexity']:.2f}, refusals {100 * f['refusal_rate']:.1f}%"
              f"{health_text(f)})"
              for name, run in result["runs"].items() if (f := run.get("final"))]
    if finals:
        compared = [f"The final models (step {result['steps']}) on all {next(r['final']['lifebench_n'] for r in result['runs'].values() if r.get('final'))} "
                    f"prompts: {'; '.join(finals)}.", "", *compared]
    late = {d["steps"]: d for d in paired.get("full_at", [])}
    if late:  # earlier checkpoints on every prompt: does the final models' difference hold before the last step?
        scores = "; ".join(f"{labels.get(name, name)} " + " / ".join(f"{p['lifebench_ls']:.1f}" for p in run["full_at"]
                                                                    if p["steps"] in late)
                           for name, run in result["runs"].items() if run.get("full_at"))
        steps = " / ".join(str(s) for s in sorted(late))
        compared += [f"Checkpoints at steps {steps} on all the final models' prompts (`{result.get('full_at_command', '')}`): "
                     f"{scores}; LARFT minus GRPO-only, paired: "
                     + "; ".join(f"step {s} {d['diff']:+.1f}{_ci(d['ci'])}" for s, d in sorted(late.items())) + ".", ""]
    return ["", "## The long run" + ("" if done else f" (in progress: {result['steps']} steps each is the goal)"), "",
            f"`{result['command']}`: `{result['recipe']}`, seed {result['seed']}, LIFEBench-lite EN LS on "
            f"{base.get('lifebench_n', result['curve_prompts'])} of its prompts every {result['eval_every']} steps. "
            f"Base {base['lifebench_ls']:.1f}{_ci(base['lifebench_ls_ci'])}; {points}"
            + (f"; best-of-8 from the base model {best:.1f} (the experiment's prompts)." if best else "."),
            "", *compared, "![long_run](img/long_run.png)"]


def appendix_lines(long_run: Path = LONG_RUN, learning_speed: Path = LEARNING_SPEED) -> list[str]:
    """Both sections, in page order."""
    return [*learning_speed_lines(learning_speed), *long_run_lines(long_run)]


def refresh_appendix(page: Path, long_run: Path = LONG_RUN, learning_speed: Path = LEARNING_SPEED) -> None:
    """Rewrite only these sections of the results page (benchmarks/long_run.py after every curve point,
    benchmarks/learning_speed.py --report); the experiment's part of the page is left as it is."""
    text = page.read_text()
    if PAGE_END not in text:
        raise SystemExit(f"{page}: no line starting {PAGE_END!r}; rewrite the page with benchmarks/experiment.py")
    head, tail = text.split(PAGE_END, 1)
    for heading in HEADINGS:
        head = head.split("\n" + heading, 1)[0]
    page.write_text("\n".join([head.rstrip("\n"), *appendix_lines(long_run, learning_speed), "", PAGE_END]) + tail)
