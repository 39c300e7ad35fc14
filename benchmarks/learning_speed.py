"""Learning per CPU-hour: what each speed lever buys a training step, side by side.

Step cost (`--part steps`): the recipe's step (16 rollouts, 4 prompts x 4, two micro-batches of
8, targets 16..128 words, the recipe's budget) as it was (`today`: fp32, KL beta 0.001 with its
reference forward, TRL's padded micro-batches), each lever alone, and all of them (`fast`), for
GRPO-only and LARFT (lambda = 1 throughout, so every step pays the awareness pass). Learning
rate 0: the policy never changes, so every fp32 variant samples the same rollouts and the timed
difference is the lever alone. Each run is its own process; the first step (one-time costs) is
reported apart, ratios use the median of the later steps, with a per-part breakdown.
Levers beyond the recipe (`--part levers`: int8 rollouts, top_p 1) are measured against the recipe
re-run beside them, leaving the headline's runs as they are.
Learning per wall-clock (`--part minutes`): the recipe (configs/recipe-cpu.yaml, `fast`) and the
recipe without its speed levers (`today`: fp32, KL beta 0.001, padded micro-batches, transformers
rollouts), the recipe with rollout reuse (`reuse`: num_iterations 2) and with importance-weighted int8
CTranslate2 rollouts (`int8`, top_p 1) and with a LoRA adapter (`lora`: rank 16, all linear layers, 10x
the learning rate) trained for the same minutes, 2
seeds each; the held-out length check (the recipe's 48
held-out prompts, never the eval set) at every mark (`--minutes 15,30`: training minutes, the
checks' own time excluded), the run stopped at the last one. Held-out LS as in the recipe sweep
(`research/recipe_sweep.py`'s `validation`). Work under $LARFT_HOME/learning_speed/minutes; an unfinished run
starts again.
Writes benchmarks/results/learning_speed.json (resumable: finished runs are kept) and its section of docs/results.md.

    .venv/bin/python benchmarks/learning_speed.py --part steps [--steps 4] [--variants today,fast]
    .venv/bin/python benchmarks/learning_speed.py --part levers [--steps 3] [--variants fast-ct2-int8,fast-ct2-topp1]
    .venv/bin/python benchmarks/learning_speed.py --part minutes [--minutes 15,30] [--seeds 0,1] [--variants today,fast,reuse]
    .venv/bin/python benchmarks/learning_speed.py --report   # only the results page's section, from the file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import StepBreakdown, read_json, run_worker, step_record, write_json  # noqa: E402
from results_page import LEARNING_SPEED, refresh_appendix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = LEARNING_SPEED
PAGE = ROOT / "docs" / "results.md"
RECIPE = ROOT / "configs" / "recipe-cpu.yaml"

#: the variant configs/recipe-cpu.yaml is: the headline step speedups are its
RECIPE_VARIANT = "fast-ct2"
#: LARFTConfig fields of each variant; `today` is configs/recipe-cpu.yaml before the levers
VARIANTS = {
    "today": {"beta": 0.001, "trim_padding": False, "bf16": False},
    "beta0": {"beta": 0.0, "trim_padding": False, "bf16": False},
    "trim": {"beta": 0.001, "trim_padding": True, "bf16": False},
    "bf16": {"beta": 0.001, "trim_padding": False, "bf16": True},
    "fast": {"beta": 0.0, "trim_padding": True, "bf16": True},
    "fast-ct2": {"beta": 0.0, "trim_padding": True, "bf16": True, "rollout_backend": "ct2"},
    # int8 rollouts, importance-weighted (token_truncate at 2), need top_p 1: fast-ct2-topp1 is their fp32 twin
    "fast-ct2-topp1": {"beta": 0.0, "trim_padding": True, "bf16": True, "rollout_backend": "ct2", "top_p": 1.0},
    "fast-ct2-int8": {"beta": 0.0, "trim_padding": True, "bf16": True, "rollout_backend": "ct2", "top_p": 1.0,
                      "rollout_compute_type": "int8", "vllm_importance_sampling_mode": "token_truncate",
                      "vllm_importance_sampling_clip_max": 2.0},
}


def step_worker(method: str, variant: str, steps: int, max_new: int, out: str) -> None:
    """One fresh run of `steps` optimizer steps; prints step times, lengths and the breakdown as JSON."""
    import resource

    from larft.cli import TrainArguments
    from larft.config import LARFTConfig
    from larft.train import train

    breakdown = StepBreakdown()

    config = LARFTConfig(**{
        "output_dir": out, "max_steps": steps, "num_generations": 4, "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2, "max_completion_length": max_new, "learning_rate": 0.0,
        "report_to": "none", "save_strategy": "no", "seed": 0, "temperature": 0.7, "top_p": 0.8,
        "entropy_coef": 0.0, "scale_rewards": "batch", "awareness_lambda_max": 1.0 if method == "larft" else 0.0,
        "awareness_warmup_ratio": 0.0, "length_check_prompts": 0, **VARIANTS[variant]})
    train(TrainArguments(model="default", train_size=64, train_targets="16,32,64,128", train_constraints="equal",
                         train_styles="plain,requirement"), config, extra_callbacks=[breakdown.callback])
    record = step_record(out, breakdown)
    records = record.pop("records")
    print("RESULT " + json.dumps({
        **record,
        "reward_mean": [r.get("reward_mean") for r in records],
        "awareness_loss": [r.get("awareness_loss") for r in records],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,  # GiB, as recorded so far
    }))


def _load() -> dict:
    return read_json(RESULTS)


def _save(result: dict) -> None:
    result["levers"] = lever_summary(result)
    write_json(RESULTS, result)
    if RESULTS == LEARNING_SPEED and PAGE.exists():  # a quick check written elsewhere leaves the page alone
        refresh_appendix(PAGE, learning_speed=RESULTS)


#: the minutes variant each lever's held-out effect is read from, and the one it is compared with
HELDOUT_OF_LEVER = {"fast-ct2": ("fast", "today"), "reuse": ("reuse", "fast"), "fast-ct2-int8": ("int8", "fast"),
                    "lora": ("lora", "fast")}


def lever_summary(result: dict) -> dict:
    """One entry a lever, from whichever parts have run: its step and per-word speedups (the recipe's
    levers against `today`, `--part steps`; those beyond the recipe against the recipe, `--part levers`)
    and its held-out effect (mean held-out LS at the last minutes mark minus its baseline's, `--part
    minutes`); None where the part that measures it has not run."""
    steps, words = result.get("levers_step_speedup", {}), result.get("levers_per_word_speedup", {})
    beyond = result.get("levers_over_recipe", {})
    at = result.get("heldout_ls_at_minutes", {})
    last = max((float(m) for v in at.values() for m in v), default=None)

    def heldout(variant: str, baseline: str) -> float | None:
        mark = f"{last:g}" if last is not None else None
        if mark is None or mark not in at.get(variant, {}) or mark not in at.get(baseline, {}):
            return None
        return at[variant][mark]["mean"] - at[baseline][mark]["mean"]

    summary = {}
    for lever in [*steps, *beyond, *(k for k in HELDOUT_OF_LEVER if k not in steps and k not in beyond)]:
        if lever in beyond:
            against = RECIPE_VARIANT
            step = {m: r["step"] for m, r in beyond[lever].items()}
            word = {m: r["per_word"] for m, r in beyond[lever].items()}
        else:  # a recipe lever, or one only the minutes part measures (no step figures)
            against = "today" if lever in steps else None
            step, word = steps.get(lever), words.get(lever)
        variant, baseline = HELDOUT_OF_LEVER.get(lever, (None, None))
        summary[lever] = {"against": against, "step_speedup": step, "per_word_speedup": word,
                          "heldout_ls_gain": heldout(variant, baseline) if variant else None,
                          "heldout_against": baseline}
    return summary


def _use_results(path: Path) -> None:
    global RESULTS
    RESULTS = path


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
    per_word = {k: _per_word(v) for k, v in runs.items()}
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
    # the headline ratios are the recipe's (configs/recipe-cpu.yaml is RECIPE_VARIANT); other variants are levers
    best = RECIPE_VARIANT if all(f"{m}-{RECIPE_VARIANT}" in med for m in ("grpo", "larft")) else None
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


def _per_word(run: dict) -> float:
    """Seconds per rollout word of the later steps: variants whose rollouts differ in length compare on it."""
    return sum(run["later_step_seconds"]) / (16 * sum(run["completion_words_mean"][1:]))


def lever_costs(args: argparse.Namespace) -> None:
    """Levers beyond the recipe (`fast-ct2-*` variants) against the recipe itself, all measured in this
    call, alternating within a method: `lever_runs` and `levers_over_recipe` (step and per-word ratios);
    the headline (`--part steps`) is left as it is."""
    result = _load()
    variants = [RECIPE_VARIANT] + [v for v in args.variants.split(",") if v != RECIPE_VARIANT]
    runs = {}
    for method in ("grpo", "larft"):
        for variant in variants:
            key = f"{method}-{variant}"
            runs[key] = run_worker(__file__, key, "--steps", str(args.steps), "--max_new_tokens", str(args.max_new_tokens))
            print(f"{key:22s} median step {statistics.median(runs[key]['later_step_seconds']):6.1f} s", flush=True)
    med = {k: statistics.median(v["later_step_seconds"]) for k, v in runs.items()}
    result["lever_runs"] = runs
    result["levers_over_recipe"] = {
        variant: {m: {"step": med[f"{m}-{RECIPE_VARIANT}"] / med[f"{m}-{variant}"],
                      "per_word": _per_word(runs[f"{m}-{RECIPE_VARIANT}"]) / _per_word(runs[f"{m}-{variant}"])}
                  for m in ("grpo", "larft")}
        for variant in variants[1:]}
    result["command_levers"] = "python benchmarks/learning_speed.py " + " ".join(sys.argv[1:])
    _save(result)
    print(json.dumps(result["levers_over_recipe"], indent=1))


# -- learning per wall-clock ------------------------------------------------------------------
#: `larft train` flags over the recipe: `today` is the recipe before its speed levers. max_steps sets the
#: lambda schedule's horizon: a run stops at the last mark, and the horizons (their ratio: the measured
#: LARFT step speedup, 1.67) put both variants at about the same point of their schedule there
MINUTE_VARIANTS = {
    "today": ["--max_steps", "36", "--beta", "0.001", "--trim_padding", "false", "--bf16", "false",
              "--rollout_backend", "hf"],
    "fast": ["--max_steps", "60"],
    # rollout reuse (TRL's num_iterations): each generation batch feeds 2 optimizer steps, so a step
    # pays half a generation plus one no-grad forward for the generating policy's log-probs
    "reuse": ["--max_steps", "80", "--num_iterations", "2"],
    # int8 CTranslate2 rollouts with the importance-sampling correction (which needs top_p 1)
    "int8": ["--max_steps", "75", "--top_p", "1.0", "--rollout_compute_type", "int8",
             "--vllm_importance_sampling_mode", "token_truncate", "--vllm_importance_sampling_clip_max", "2.0"],
    # a rank-16 LoRA adapter on every linear layer at 10x the recipe's learning rate (ct2 rolls out the merge)
    "lora": ["--max_steps", "60", "--lora_r", "16", "--learning_rate", "1.0e-4"],
}


def minutes_dir() -> Path:
    return Path(os.environ.get("LARFT_HOME", Path.home() / ".cache" / "larft")) / "learning_speed" / "minutes"


def minutes_worker(variant: str, seed: int, marks: list[float], out: str, flags: list[str]) -> None:
    """One run of the recipe (`variant`'s flags) until the last mark; the held-out check at each mark."""
    from transformers import TrainerCallback

    from larft.cli import parse_train_args
    from larft.run_setup import prepare_run
    from larft.train import train

    train_args, config = parse_train_args(
        ["--config", str(RECIPE), "--output_dir", out, "--seed", str(seed), "--save_strategy", "no",
         "--report_to", "none", *MINUTE_VARIANTS[variant], *flags])
    marks_check = prepare_run(train_args, config).length_check(config)  # the run's own held-out rows, unsaved
    if marks_check is None:
        raise SystemExit("--part minutes needs held-out prompts (length_check_prompts > 0)")
    record: dict = {"marks": []}
    before = Path(out).parent / "before.json"  # the untrained model's answers: the same for every run
    reuse = before.exists() and json.loads(before.read_text(encoding="utf-8"))["flags"] == flags
    if reuse:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(before, Path(out) / "length_check.json")

    class Marks(TrainerCallback):
        """At each mark (training minutes): the held-out check; at the last one, the end of training (the
        run's own check then gives the "after" half, which is the last mark's)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.paused, self.pending = time.monotonic(), 0.0, sorted(marks)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            minutes = (time.monotonic() - self.start - self.paused) / 60
            while len(self.pending) > 1 and minutes >= self.pending[0]:
                mark = self.pending.pop(0)
                began = time.monotonic()
                marks_check._run(model, f"{mark:g}min")
                self.paused += time.monotonic() - began
                record["marks"].append({"minutes": mark, "train_minutes": minutes, "steps": state.global_step,
                                        "results": marks_check.results[f"{mark:g}min"]})
            record["end"] = {"train_minutes": minutes, "steps": state.global_step}
            if minutes >= self.pending[-1]:
                record["stop"] = {"minutes": self.pending[-1], "train_minutes": minutes, "steps": state.global_step}
                control.should_training_stop = True

    train(train_args, config, extra_callbacks=[Marks()])
    check = json.loads((Path(out) / "length_check.json").read_text(encoding="utf-8"))
    if not reuse:
        before.write_text(json.dumps({"flags": flags, "before": check["before"]}), encoding="utf-8")
    end = record.pop("end")
    stop = record.pop("stop", None)
    if stop:
        record["marks"].append({**stop, "results": check["after"]})
    else:  # max_steps came before the last marks: the final model is what those budgets buy
        done = {m["minutes"] for m in record["marks"]}
        record["marks"] += [{"minutes": m, **end, "finished_early": True, "results": check["after"]}
                            for m in marks if m not in done]
    record["before"] = check["before"]
    print("RESULT " + json.dumps(record))


def _held_out(results: list[dict]) -> dict:
    """Held-out LS, error and refusals exactly as the recipe sweep computes them (its `validation`)."""
    sys.path.insert(0, str(ROOT / "research"))
    from recipe_sweep import validation

    figures = validation(results)
    return {"ls": figures["ls"] or 0.0, "error": figures["error"], "refusal_rate": figures["refusals"],
            "n": len(results)}


def learning_minutes(args: argparse.Namespace) -> None:
    """Each (variant, seed) run once in its own process; the held-out LS at every mark."""
    result = _load()
    runs = result.setdefault("minute_runs", {})
    marks = sorted(float(m) for m in args.minutes.split(","))
    for key in (args.redo or "").split(","):
        runs.pop(key.strip(), None)
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in args.variants.split(","):  # variants alternate within a seed: machine drift hits both
            key = f"{variant}-{seed}"
            if key in runs and [m["minutes"] for m in runs[key]["marks"]] == marks:
                continue
            out = minutes_dir() / key
            shutil.rmtree(out, ignore_errors=True)  # an unfinished run starts again: its minutes are gone
            log = minutes_dir() / f"{key}.log"
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w", encoding="utf-8") as f:
                proc = subprocess.run([sys.executable, __file__, "--worker", f"minutes:{variant}:{seed}", "--out",
                                       str(out), "--minutes", args.minutes, "--train_flags", args.train_flags],
                                      stdout=subprocess.PIPE, stderr=f,
                                      text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{key} failed (exit {proc.returncode}); see {log}")
            (out / "model.safetensors").unlink(missing_ok=True)  # the figures are kept, not the model
            record = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
            runs[key] = {"marks": [{**{k: v for k, v in m.items() if k != "results"}, **_held_out(m["results"])}
                                   for m in record["marks"]],
                         "before": _held_out(record["before"])}
            print(f"{key:8s} " + "  ".join(f"{m['minutes']:g} min (step {m['steps']}): LS {m['ls']:.1f}"
                                           for m in runs[key]["marks"]), flush=True)
            _save(result)
    table: dict = {}
    for key, run in runs.items():
        variant, seed = key.rsplit("-", 1)
        for m in run["marks"]:
            table.setdefault(variant, {}).setdefault(f"{m['minutes']:g}", {})[seed] = m["ls"]
    result["heldout_ls_before"] = next(iter(runs.values()))["before"]["ls"] if runs else None
    result["heldout_ls_at_minutes"] = {
        v: {m: {"per_seed": per, "mean": statistics.fmean(per.values())} for m, per in at.items()}
        for v, at in table.items()}
    if "30" in next(iter(table.values()), {}):
        result["heldout_ls_at_30min"] = {v: at["30"] for v, at in result["heldout_ls_at_minutes"].items()}
    result["command_minutes"] = "python benchmarks/learning_speed.py " + " ".join(sys.argv[1:])
    _save(result)
    print(json.dumps(result["heldout_ls_at_minutes"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["steps", "levers", "minutes"], default="steps")
    parser.add_argument("--minutes", default="15,30", help="--part minutes: the marks, in training minutes")
    parser.add_argument("--seeds", default="0,1", help="--part minutes: the seeds")
    parser.add_argument("--train_flags", default="", help="--part minutes: larft train flags for every run (a "
                        "quick check: '--length_check_prompts 4'; write it elsewhere with --results)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=192, help="the recipe's completion budget before the "
                        "score-neutral budgets (the same in every variant)")
    parser.add_argument("--variants", help="default: every variant of the part")
    parser.add_argument("--redo", help="comma-separated runs to measure again (e.g. grpo-today,grpo-trim)")
    parser.add_argument("--report", action="store_true", help="only rewrite the results page's section from the "
                        "results file")
    parser.add_argument("--worker")
    parser.add_argument("--out")
    args = parser.parse_args()
    _use_results(args.results)
    if args.report:
        _save(_load())
        return
    if args.worker and args.worker.startswith("minutes:"):
        _, variant, seed = args.worker.split(":")
        minutes_worker(variant, int(seed), sorted(float(m) for m in args.minutes.split(",")), args.out,
                       args.train_flags.split())
        return
    if args.worker:
        method, variant = args.worker.split("-", 1)
        step_worker(method, variant, args.steps, args.max_new_tokens, args.out)
        return
    if args.part == "minutes":
        args.variants = args.variants or ",".join(MINUTE_VARIANTS)
        learning_minutes(args)
        return
    if args.part == "levers":
        args.variants = args.variants or ",".join(v for v in VARIANTS if v.startswith(RECIPE_VARIANT + "-"))
        lever_costs(args)
        return
    args.variants = args.variants or ",".join(v for v in VARIANTS if not v.startswith(RECIPE_VARIANT + "-"))
    step_costs(args)


if __name__ == "__main__":
    main()
