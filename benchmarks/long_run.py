"""What does more compute buy? GRPO-only and LARFT trained far longer than the experiment's runs,
with LIFEBench-lite LS measured along the way.

    .venv/bin/python benchmarks/long_run.py [--steps 300] [--eval_every 50] [--runs larft,grpo]
    .venv/bin/python benchmarks/long_run.py --report    # paired differences, plot, page from the records
    .venv/bin/python benchmarks/long_run.py --full_at 200,250   # finished runs' checkpoints on every prompt

Each run trains with the recipe (configs/recipe-cpu.yaml; GRPO-only: awareness_lambda_max 0) for
`--steps` optimizer steps on the experiment's training prompts, saving a checkpoint every half
`--eval_every` steps (a killed run resumes from the last one); at every `--eval_every` steps the
training is stopped (SIGTERM: larft saves and exits), the checkpoint evaluated, and training resumed. Every checkpoint (and the base model, step 0) is evaluated greedily on a fixed
seeded slice of LIFEBench-lite EN 16..128 (`--curve_limit` prompts, score-neutral caps, ct2); the
final model on every such prompt with the counting / retention probe, its curve point read from those
answers. Resumable stage by stage:
work (models, eval caches) under $LARFT_HOME/long_run/<name>, outside the checkout; finished
figures in benchmarks/results/long_run.json (+ docs/img/long_run.png and the long run's section of docs/results.md),
rewritten after each stage, with LARFT minus GRPO-only paired over the prompts at every step both reached.
The runs take turns, one curve point each, so a run split across sessions keeps both curves abreast;
each point records the commit it was measured at (its training may span earlier commits).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import read_json, write_json  # noqa: E402
from experiment import (  # noqa: E402
    git_commit, headline, larft, paired_ls_difference_of, train_settings)
from results_page import refresh_appendix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "long_run.json"
PLOT = ROOT / "docs" / "img" / "long_run.png"
PAGE = ROOT / "docs" / "results.md"
LIFEBENCH_FILTER = "lang=en,min_length=16,max_length=128"


def work_dir(name: str) -> Path:
    home = Path(os.environ.get("LARFT_HOME", Path.home() / ".cache" / "larft"))
    return home / "long_run" / name


def _load() -> dict:
    return read_json(RESULTS)


def _save(result: dict) -> None:
    write_json(RESULTS, result)
    if PAGE.exists():
        refresh_appendix(PAGE, long_run=RESULTS)


def best_of_8_reference(given: float | None, recorded: float | None) -> float | None:
    """The plot's reference line: `--best_of_8_ls`, else what the results already hold, else best-of-8's
    LS in benchmarks/results/experiment.json (the untrained model, the experiment's prompts)."""
    if given is not None:
        return given
    if recorded is not None:
        return recorded
    experiment = read_json(ROOT / "benchmarks" / "results" / "experiment.json")
    return experiment.get("runs", {}).get("best_of_8", {}).get("lifebench_ls")


def evaluate(model: str, out: Path, log: Path, *, full: bool, limit: int | None, system_prompt: str = "default") -> dict:
    """LIFEBench LS (and, for a final model, the probe) of one model; cached in `out`. `limit` None:
    every prompt, LIFEBench only."""
    args = ["--model", model, "--bench", "lifebench", "--filter", LIFEBENCH_FILTER, "--backend", "ct2",
            "--batch-size", "16", "--max-new-tokens-cap", "1024", "--device", "cpu", "--system-prompt", system_prompt]
    if not full and limit is not None:
        args += ["--limit", str(limit)]
    if not (out / "lifebench" / "results.json").exists():
        larft("eval", *args, "--out", str(out / "lifebench"), log=log)
    merged = json.loads((out / "lifebench" / "results.json").read_text())
    if full:
        if not (out / "probe" / "results.json").exists():
            larft("eval", "--model", model, "--bench", "counting", "--bench", "retention", "--counting-own", "24",
                  "--backend", "ct2", "--device", "cpu", "--system-prompt", system_prompt, "--out", str(out / "probe"),
                  log=log)
        merged["benchmarks"].update(json.loads((out / "probe" / "results.json").read_text())["benchmarks"])
        return headline(merged)
    life = merged["benchmarks"]["lifebench"]["metrics"]
    return {"lifebench_ls": life["LS"], "lifebench_ls_ci": life["ci95"]["LS"],
            "lifebench_ls_equal": life["per_control"]["equal"]["LS"], "lifebench_n": life["n"],
            "truncated": life.get("truncated"), "refusal_rate": life["refusals"]["rate"]}


def curve_point_from_final(final: Path, curve_ids: list[str], out: Path) -> None:
    """The last curve point from the final model's full evaluation: its answers to the curve's prompts
    (greedy, so the same answers as a run on those prompts alone), scored as `larft eval` scores them,
    written where `evaluate` caches the point. Saves evaluating the final model twice."""
    from larft.eval.settings import EvalSettings
    from larft.eval.tasks import LifeBench

    full = json.loads((final / "lifebench" / "results.json").read_text())
    bench = full["benchmarks"]["lifebench"]
    wanted = set(curve_ids)
    samples = [x for x in bench["samples"] if x["id"] in wanted]
    if len(samples) != len(wanted):
        missing = sorted(wanted - {x["id"] for x in samples})
        raise SystemExit(f"{final}: the final evaluation lacks {len(missing)} curve prompt(s), e.g. {missing[:3]}")
    settings = full.get("settings", {})
    scoring = EvalSettings(bootstrap=settings.get("bootstrap", 1000), seed=settings.get("seed", 0))
    derived = {**full, "derived_from": str(final / "lifebench" / "results.json"),
               "benchmarks": {"lifebench": {**{k: v for k, v in bench.items() if k not in ("metrics", "samples")},
                                            "metrics": LifeBench().metrics(samples, scoring), "samples": samples}}}
    (out / "lifebench").mkdir(parents=True, exist_ok=True)
    write_json(out / "lifebench" / "results.json", derived)


def train_until(run: str, stop_step: int, args: argparse.Namespace, work: Path, train_file: Path) -> Path:
    """Train `run` (the whole `--steps` schedule) until a checkpoint at `stop_step` exists, then stop it
    with SIGTERM (larft saves a checkpoint and exits; the next call resumes). Returns the run folder."""
    import signal
    import subprocess

    from larft.run_setup import complete_checkpoints

    out = work / "train" / run
    settings = train_settings({"train": args.recipe})
    settings.update({"max_steps": args.steps, "save_steps": max(1, args.eval_every // 2), "seed": args.seed,
                     "model": "default", "train_file": str(train_file), "output_dir": str(out),
                     "length_check_prompts": 0})
    if run == "grpo":
        settings["awareness_lambda_max"] = 0.0
    config = work / "train" / f"{run}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))

    def reached() -> bool:
        if (out / "model.safetensors").exists():
            return True
        return stop_step < args.steps and (out / f"checkpoint-{stop_step}" / "trainer_state.json").exists()

    if reached():
        return out
    resume = ["--resume", "true"] if out.is_dir() and complete_checkpoints(out) else []
    if out.exists() and not resume:
        shutil.rmtree(out)
    log = work / "logs" / f"train-{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        proc = subprocess.Popen([sys.executable, "-m", "larft", "train", "--config", str(config), *resume],
                                stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        while proc.poll() is None:
            if reached() and stop_step < args.steps:
                time.sleep(5)  # the checkpoint's files are complete once trainer_state.json is written
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                break
            time.sleep(10)
    if proc.returncode not in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
        raise SystemExit(f"larft train ({run}) failed (exit {proc.returncode}); see {log}")
    if not reached():
        raise SystemExit(f"larft train ({run}) stopped before step {stop_step}; see {log}")
    return out


def set_aside_lost_points(data: dict, out: Path) -> list[dict]:
    """A run's recorded curve points that its training folder can no longer continue from (the
    machine that trained them is gone: no final model, no checkpoint at or past the last point) are
    moved to `lost_curves` and the curve starts over, so that one curve is one training trajectory.
    Returns the points set aside."""
    from larft.run_setup import complete_checkpoints

    trained = [p for p in data.get("curve", []) if p["steps"] > 0]
    if not trained or "final" in data or (out / "model.safetensors").exists():
        return []  # nothing recorded yet, or a finished run: nothing left to train
    newest = complete_checkpoints(out) if out.is_dir() else []
    if newest and int(newest[0].name.split("-")[-1]) >= max(p["steps"] for p in trained):
        return []
    data.setdefault("lost_curves", []).append({"set_aside": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               "reason": f"no checkpoint to continue from in {out}",
                                               "curve": trained})
    data["curve"] = [p for p in data["curve"] if p["steps"] == 0]
    return trained


def compare_runs(result: dict, work: Path, a: str = "larft", b: str = "grpo") -> None:
    """`a` minus `b` in LS at every evaluated step both runs reached (and on the final models), paired
    over the prompts both answered: the two curves share their prompts, so the pairing cancels how hard
    each prompt is. Stored as result["<a>_minus_<b>"]; nothing when either run is missing."""
    runs = result.get("runs", {})
    if a not in runs or b not in runs:
        return

    def paired(tag: str) -> dict | None:  # the two runs' evaluations cached under eval/<run>-<tag>
        return paired_ls_difference_of(*(work / "eval" / f"{run}-{tag}" / "lifebench" / "results.json" for run in (a, b)))

    def both_reached(key: str) -> list[int]:
        return sorted(set.intersection(*({p["steps"] for p in runs[run].get(key, [])} for run in (a, b))) - {0})

    curve = [{"steps": s, **d} for s in both_reached("curve") if (d := paired(f"{s}-curve"))]
    late = [{"steps": s, **d} for s in both_reached("full_at") if (d := paired(f"{s}-full"))]
    final = paired("final")
    result[f"{a}_minus_{b}"] = {"curve": curve, **({"final": final} if final else {}), **({"full_at": late} if late else {})}


def evaluate_checkpoints_fully(result: dict, work: Path, steps: list[int], system: str) -> None:
    """Each finished run's checkpoints at `steps` on every prompt (the final model's prompts), as
    runs[run]["full_at"]: whether the final models' paired difference holds at the steps before the
    last, or is one checkpoint's draw. Cached per checkpoint; only finished runs."""
    for run, data in result.get("runs", {}).items():
        if "final" not in data:
            print(f"[long_run] {run}: not finished; --full_at evaluates finished runs only", flush=True)
            continue
        for step in steps:
            checkpoint = work / "train" / run / f"checkpoint-{step}"
            if not (checkpoint / "model.safetensors").exists():
                raise SystemExit(f"{checkpoint}: no model to evaluate (--full_at {step}; curve points are kept "
                                 f"at multiples of the run's eval_every)")
            point = evaluate(str(checkpoint), work / "eval" / f"{run}-{step}-full", work / "logs" / f"eval-{run}.log",
                             full=False, limit=None, system_prompt=system)
            data["full_at"] = sorted([p for p in data.get("full_at", []) if p["steps"] != step]
                                     + [{"steps": step, "commit": git_commit(), **point}], key=lambda p: p["steps"])
            print(f"[long_run] {run} step {step}, every prompt: LS {point['lifebench_ls']:.1f}", flush=True)


def prune(out: Path, keep_steps: set[int]) -> None:
    """Free disk: optimizer states of every checkpoint but the newest, and whole checkpoints that are
    neither the newest nor a curve point."""
    from larft.run_setup import complete_checkpoints

    found = complete_checkpoints(out)
    for ckpt in found[1:]:
        step = int(ckpt.name.split("-")[-1])
        if step not in keep_steps:
            shutil.rmtree(ckpt)
            continue
        for name in ("optimizer.pt", "scheduler.pt"):
            (ckpt / name).unlink(missing_ok=True)


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for run, data in result.get("runs", {}).items():
        curve = data.get("curve", [])
        if not curve:
            continue
        steps = [p["steps"] for p in curve]
        ls = [p["lifebench_ls"] for p in curve]
        lo = [p["lifebench_ls_ci"][0] for p in curve]
        hi = [p["lifebench_ls_ci"][1] for p in curve]
        hours = [p["train_minutes"] / 60 for p in curve]
        for ax, x in zip(axes, (steps, hours)):
            ax.plot(x, ls, marker="o", label="LARFT" if run == "larft" else "GRPO-only")
            ax.fill_between(x, lo, hi, alpha=0.15)
    reference = result.get("best_of_8_ls")
    for ax in axes:
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle="--",
                       label=f"best-of-8, untrained ({reference:.1f}, the experiment's prompts)")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel("optimizer steps (16 rollouts each)")
    axes[1].set_xlabel("hours of training (wall clock, 2 CPU cores)")
    scored = next((c[0].get("lifebench_n") for c in (r.get("curve") for r in result.get("runs", {}).values()) if c), None)
    axes[0].set_ylabel(f"LIFEBench-lite EN LS ({scored or '?'} prompts, greedy)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)  # below both panels
    fig.suptitle("Length control vs training compute, bundled SmolLM2-135M-Instruct")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=120)


def final_figures(out: Path, args: argparse.Namespace, work: Path, run: str, system: str) -> dict:
    """The finished run's model on every LIFEBench-lite prompt of the filter, with the probe."""
    seconds = {int(m["step"]): m.get("step_seconds") or 0.0
               for m in (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip())}
    final = evaluate(str(out), work / "eval" / f"{run}-final", work / "logs" / f"eval-{run}.log", full=True,
                     limit=args.curve_limit, system_prompt=system)
    return {"steps": args.steps, "train_minutes": sum(seconds.values()) / 60, "commit": git_commit(), **final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="v1")
    parser.add_argument("--recipe", default="configs/recipe-cpu.yaml")
    parser.add_argument("--runs", default="larft,grpo")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--curve_limit", type=int, default=96, help="LIFEBench prompts of each curve point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--best_of_8_ls", type=float, help="the reference line (default: read from experiment.json)")
    parser.add_argument("--report", action="store_true", help="train and evaluate nothing: the paired "
                        "differences, plot and results page again from what is recorded and cached")
    parser.add_argument("--full_at", help="train nothing: evaluate the finished runs' checkpoints at these "
                        "steps (e.g. 200,250) on every prompt, as the final models are, and pair them")
    args = parser.parse_args()
    work = work_dir(args.name)
    result = _load()
    if args.report or args.full_at:
        if args.full_at:
            evaluate_checkpoints_fully(result, work, [int(x) for x in args.full_at.split(",")],
                                       result.get("system_prompt", "default"))
            result["full_at_command"] = "python benchmarks/long_run.py " + " ".join(sys.argv[1:])
        compare_runs(result, work)
        _save(result)
        plot(result)
        return
    if result.get("name") not in (None, args.name):
        result = {}
    result.update({"name": args.name, "recipe": args.recipe, "steps": args.steps, "eval_every": args.eval_every,
                   "curve_prompts": args.curve_limit, "seed": args.seed,
                   "command": "python benchmarks/long_run.py " + " ".join(sys.argv[1:])})
    result["best_of_8_ls"] = best_of_8_reference(args.best_of_8_ls, result.get("best_of_8_ls"))
    runs = result.setdefault("runs", {})
    train_file = work / "train.jsonl"
    if not train_file.exists():
        larft("data", "generate", "--n", "400", "--targets", "16,32,64,128", "--constraints", "equal",
              "--styles", "plain,requirement", "--seed", "1", "--out", str(train_file), log=work / "logs" / "data.log")
    system = str(train_settings({"train": args.recipe}).get("system_prompt", "default"))  # eval as trained
    result["system_prompt"] = system
    base = evaluate("default", work / "eval" / "base-curve", work / "logs" / "eval-base.log", full=False,
                    limit=args.curve_limit, system_prompt=system)
    base_samples = read_json(work / "eval" / "base-curve" / "lifebench" / "results.json")["benchmarks"]["lifebench"]["samples"]
    points = list(range(args.eval_every, args.steps + 1, args.eval_every))
    order = args.runs.split(",")
    for run in order:
        runs.setdefault(run, {"curve": []})
        lost = set_aside_lost_points(runs[run], work / "train" / run)
        if lost:
            print(f"[long_run] {run}: curve points at steps {[p['steps'] for p in lost]} were trained on a "
                  "machine whose checkpoints are gone; set aside in lost_curves, the run starts over", flush=True)
            _save(result)  # at once: a checkpoint of the new run must never meet the old run's points
    # the runs take turns, one curve point each: a session that ends midway leaves both curves as far
    for step in points:
        for run in order:
            data = runs[run]
            if any(p["steps"] == step for p in data["curve"]):
                continue
            out = train_until(run, step, args, work, train_file)
            metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
            seconds = {int(m["step"]): m.get("step_seconds") or 0.0 for m in metrics}
            model = str(out) if step == args.steps else str(out / f"checkpoint-{step}")
            if step == args.steps and "final" not in data:  # the final model: every prompt once, the curve's among them
                data["final"] = final_figures(out, args, work, run, system)
                curve_point_from_final(work / "eval" / f"{run}-final", [x["id"] for x in base_samples],
                                       work / "eval" / f"{run}-{step}-curve")
            point = evaluate(model, work / "eval" / f"{run}-{step}-curve", work / "logs" / f"eval-{run}.log",
                             full=False, limit=args.curve_limit, system_prompt=system)
            data["curve"] = [p for p in data["curve"] if p["steps"] not in (0, step)]
            data["curve"] = sorted([{"steps": 0, "train_minutes": 0.0, **base}, *data["curve"], {
                "steps": step, "train_minutes": sum(v for k, v in seconds.items() if k <= step) / 60,
                "commit": git_commit(), **point}], key=lambda p: p["steps"])
            compare_runs(result, work)
            _save(result)
            plot(result)
            prune(out, set(points))
            print(f"[long_run] {run} step {step}: LS {point['lifebench_ls']:.1f}", flush=True)
            if "final" in data and step == args.steps:
                print(f"[long_run] {run}: LS {data['final']['lifebench_ls']:.1f} after {args.steps} steps "
                      f"(all {data['final']['lifebench_n']} prompts)", flush=True)
    for run in order:  # a last point recorded before its final evaluation (an older record)
        if "final" not in runs[run] and any(p["steps"] == args.steps for p in runs[run]["curve"]):
            runs[run]["final"] = final_figures(work / "train" / run, args, work, run, system)
            compare_runs(result, work)
            _save(result)
    plot(result)


if __name__ == "__main__":
    main()
