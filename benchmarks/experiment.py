"""Does it work? base vs GRPO-only vs LARFT (x seeds), and what a user would pick instead
(best-of-N at inference, rejection-sampling SFT, hindsight-relabelled SFT, length DPO), side by side,
from one command.

    .venv/bin/python benchmarks/experiment.py --config configs/experiment-cpu.yaml
    .venv/bin/python benchmarks/experiment.py --config configs/experiment-cpu.yaml --only base,larft-0
    .venv/bin/python benchmarks/experiment.py --config configs/experiment-cpu.yaml --only best_of_8,rft-0,hir-0,dpo-0

1. generates the training prompts (`larft data generate`; topics disjoint from the eval ones);
2. trains every run of `runs:` for every seed of `seeds:` (a run's `n_seeds: k`: the first k
   seeds only) with the same prompts and budget (a run's `method:` rft / hir / dpo: the baselines of
   `larft train --method`, sampling as many completions as the GRPO runs);
3. evaluates the base model, the base model decoded another way (`inference:` stages, e.g.
   best-of-8: `larft eval --best-of 8`, no training) and every trained model (`larft eval`,
   groups of `eval:`);
4. writes benchmarks/results/experiment.json and docs/results.md (+ plots in docs/img/).

Work in progress (models, checkpoints, eval caches) lives in `work_dir` (default
$LARFT_HOME/experiment/<name>, outside the checkout); a killed training run resumes from its last
checkpoint. Every *finished* stage is recorded in the checkout, in
benchmarks/results/experiment/<name>/<stage>/ (headline figures, the settings that produced them,
the eval results (lengths and scores; no long answers, only the counting probe's short replies),
the training curves and a text-free rollout trace: small files, meant to be committed), and a
recorded stage is never run again: an experiment larger than one session is done in parts
(`--only`), on any machine, with the results file rewritten from the records after every stage and
the missing stages listed as `pending`. A record made with other settings than the config's stops
the run (change `name:` for a new experiment). To run a stage again, delete its record folder and
its folders under work_dir (train/<stage>*, eval/<stage>).
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # _runs.py, beside this file: helpers for scripts that drive runs
from _runs import drop_checkpoints, resume_args  # noqa: E402
from results_page import PAGE_END, _ci, appendix_lines  # noqa: E402
RESULTS = ROOT / "benchmarks" / "results" / "experiment.json"
RECORDS = ROOT / "benchmarks" / "results" / "experiment"
DOCS = ROOT / "docs"


def larft(*args: str, log: Path) -> float:
    """Run a larft command, its output to `log`; returns its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ larft {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "larft", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"larft {args[0]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def work_dir(cfg: dict) -> Path:
    if cfg.get("work_dir"):
        return Path(os.path.expandvars(os.path.expanduser(cfg["work_dir"])))
    home = Path(os.environ.get("LARFT_HOME", Path.home() / ".cache" / "larft"))
    return home / "experiment" / Path(cfg.get("name", "default"))


def records_dir(cfg: dict) -> Path:
    """Where the finished stages of this experiment are recorded (in the checkout, committed)."""
    return RECORDS / str(cfg.get("name", "default"))


def eval_groups(cfg: dict) -> list[str]:
    return [g for g, spec in cfg["eval"].items() if isinstance(spec, dict)]


#: fields of a rollout trace line kept in the record (the prompt and answer texts stay in work_dir)
TRACE_FIELDS = ("step", "target", "constraint", "unit", "length", "truncated")


def stage_settings(cfg: dict, tag: str) -> dict:
    """What decides a stage's figures: its training options (trained runs) or eval options
    (inference stages), the model and the eval groups. Recorded with the stage and compared on
    every later run, so a changed config cannot mix old and new figures under one name."""
    settings: dict = {"model": cfg["model"], "eval": cfg["eval"]}
    if tag in (cfg.get("inference") or {}):
        settings["eval_options"] = inference_args(cfg, tag)
        of = (cfg["inference"][tag] or {}).get("of")
        if of:  # a trained run's model decoded another way: that run's settings decide it too
            settings.update(of=of, train=run_settings(cfg, of.rsplit("-", 1)[0]), train_data=cfg["train_data"])
    elif tag != "base":
        name, _ = tag.rsplit("-", 1)
        settings["train"] = run_settings(cfg, name)
        settings["train_data"] = cfg["train_data"]
    return json.loads(json.dumps(settings))  # as it reads back from JSON


def check_record(cfg: dict, tag: str, figures: dict) -> None:
    """Stop when a recorded stage was made with other settings than the config's (records from
    before settings were recorded carry a `recorded_from` note instead and are taken as they are)."""
    recorded_with = figures.get("settings")
    if recorded_with is not None and recorded_with != stage_settings(cfg, tag):
        changed = sorted(k for k in set(recorded_with) | set(stage_settings(cfg, tag))
                         if recorded_with.get(k) != stage_settings(cfg, tag).get(k))
        raise SystemExit(f"{records_dir(cfg) / tag / 'headline.json'}: stage {tag} was recorded with other "
                         f"settings ({', '.join(changed)} differ from the config): give the experiment a new "
                         "`name:`, or delete that record to run the stage again")


def record_stage(cfg: dict, work: Path, tag: str, model: str, timing: dict | None = None,
                 extra: dict | None = None) -> dict:
    """Copy a finished stage into the checkout: each eval group's results.json (no answer texts in
    it), the training curves and a text-free rollout trace; headline.json last, because its
    presence marks the stage as done."""
    rec = records_dir(cfg) / tag
    for group in eval_groups(cfg):
        (rec / group).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "eval" / tag / group / "results.json", rec / group / "results.json")
    figures = {"model": model, **headline(load_eval(rec, cfg)), "train_minutes": 0.0, "commit": git_commit(),
               "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": stage_settings(cfg, tag)}
    figures.update(extra or {})
    if timing is not None:
        figures.update(timing)
        run_dir = work / "train" / tag
        shutil.copyfile(run_dir / "metrics.jsonl", rec / "train_metrics.jsonl")
        trace = run_dir / "rollouts.jsonl"
        if trace.exists():
            from larft.length import ends_on_sentence, is_looping

            lines = []
            for line in trace.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                health = {"loops": is_looping(r["text"]), "ends_on_sentence": ends_on_sentence(r["text"])} \
                    if "text" in r else {}  # the sampled rollouts' health, by step and target, without their texts
                lines.append(json.dumps({**{k: r[k] for k in TRACE_FIELDS if k in r}, **health,
                                         **{k: v for k, v in r.items() if k.startswith("reward/")}}))
            (rec / "rollouts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial = rec / "headline.json.partial"  # whole or absent: a kill mid-write leaves no broken record
    partial.write_text(json.dumps(figures, indent=2) + "\n")
    os.replace(partial, rec / "headline.json")
    return figures


def load_eval(rec: Path, cfg: dict) -> dict:
    """The merged eval results of a recorded (or a work_dir) stage folder: {"benchmarks": ...}."""
    merged: dict = {"benchmarks": {}}
    for group in eval_groups(cfg):
        merged["benchmarks"].update(json.loads((rec / group / "results.json").read_text())["benchmarks"])
    return merged


def recorded(cfg: dict, tag: str) -> dict | None:
    """The headline figures of a recorded stage, or None if it has not finished yet; with the answer
    health of its stored LIFEBench answers (`answer_health_figures`), computed on every read, so a
    record made before those figures existed has them too."""
    path = records_dir(cfg) / tag / "headline.json"
    if not path.exists():
        return None
    results = records_dir(cfg) / tag / "lifebench" / "results.json"
    return {**json.loads(path.read_text()), **answer_health_figures(results), **by_length_figures(results)}


#: keys of a recipe file that choose data or outputs, not training settings: the experiment sets them
NOT_TRAINING = {"model", "output_dir", "train_file", "train_size", "train_targets", "train_constraints", "train_styles",
                "length_check_prompts", "resume"}


def train_settings(cfg: dict) -> dict:
    """`train:` is either a mapping of LARFTConfig fields or the path of a recipe YAML."""
    train = cfg["train"]
    if isinstance(train, str):
        train = yaml.safe_load((ROOT / train).read_text())
    return {k: v for k, v in train.items() if k not in NOT_TRAINING}


#: keys of a `runs:` entry that the experiment reads itself (not `larft train` options)
EXPERIMENT_KEYS = {"n_seeds"}


def run_settings(cfg: dict, name: str) -> dict:
    return {**train_settings(cfg), **{k: v for k, v in (cfg["runs"][name] or {}).items() if k not in EXPERIMENT_KEYS}}


def run_seeds(cfg: dict, name: str) -> list[int]:
    """The seeds a run is trained with: all of `seeds:`, or the first `n_seeds` of them."""
    seeds = [int(s) for s in cfg.get("seeds", [0])]
    n = (cfg["runs"][name] or {}).get("n_seeds")
    return seeds if n is None else seeds[: int(n)]


def inference_args(cfg: dict, name: str) -> list[str]:
    """`larft eval` options of an inference stage (`inference:` entry): best-of-N samples with the
    recipe's temperature / top_p (the GRPO rollouts' sampling) unless the entry sets its own,
    seeded with the first seed."""
    spec = cfg["inference"][name] or {}
    unknown = set(spec) - {"best_of", "temperature", "top_p", "backend", "of", "limit"}
    if unknown:
        raise SystemExit(f"inference stage {name}: unknown key(s) {sorted(unknown)} "
                         "(best_of, temperature, top_p, backend, of, limit)")
    of = spec.get("of")
    if of is not None:
        run, _, seed = str(of).rpartition("-")
        if run not in cfg["runs"] or not seed.isdigit() or int(seed) not in run_seeds(cfg, run):
            raise SystemExit(f"inference stage {name}: `of: {of}` is not a trained stage of this experiment "
                             "(<run>-<seed>, e.g. larft-0)")
    train = train_settings(cfg)
    args = ["--best-of", str(int(spec.get("best_of", 1))), "--seed", str(int(cfg.get("seeds", [0])[0]))]
    for key, option in (("temperature", "--temperature"), ("top_p", "--top_p")):
        value = spec.get(key, train.get(key))
        if value is not None:
            args += [option, str(value)]
    if spec.get("backend"):  # e.g. ct2: same sampling distribution (parity-tested), 1.8x faster generation
        args += ["--backend", str(spec["backend"])]
    if spec.get("limit"):  # a seeded sample of each benchmark's prompts, the same for every stage with this limit
        args += ["--limit", str(int(spec["limit"]))]
    return args


def inference_model(cfg: dict, name: str, work: Path, train_file: Path) -> str:
    """The model an inference stage decodes: the base model, or with `of: <run>-<seed>` that trained
    run's model (trained first where this machine does not have it: models are never committed)."""
    inference_args(cfg, name)  # checks `of:`
    of = (cfg["inference"][name] or {}).get("of")
    if not of:
        return cfg["model"]
    run, seed = of.rsplit("-", 1)
    if not (work / "train" / of / "model.safetensors").exists() and recorded(cfg, of) is not None:
        print(f"[experiment] {name}: {of} is recorded but its model is not on this machine; training it again "
              "(the stage records that its model is a retrain)", flush=True)
        (work / "train" / f"{of}.retrained").touch()
    train_run(run, int(seed), cfg, work, train_file)
    return str(work / "train" / of)


def train_run(name: str, seed: int, cfg: dict, work: Path, train_file: Path) -> dict:
    tag = f"{name}-{seed}"
    out = work / "train" / tag
    timing = work / "train" / f"{tag}.timing.json"
    if (out / "model.safetensors").exists() and timing.exists():
        return json.loads(timing.read_text())
    config = {**run_settings(cfg, name), "seed": seed, "model": cfg["model"], "train_file": str(train_file),
              "output_dir": str(out)}
    config_path = work / "train" / f"{tag}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    resume = resume_args(out)
    if out.exists() and not resume:
        shutil.rmtree(out)  # a run that died before its first checkpoint starts over
    seconds = larft("train", "--config", str(config_path), *resume, log=work / "logs" / f"train-{tag}.log")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    info = {"train_minutes": sum(s["step_seconds"] or 0 for s in steps) / 60, "wall_minutes_last_call": seconds / 60,
            "steps": len(steps)}
    timing.write_text(json.dumps(info))
    drop_checkpoints(out)
    return info


def eval_model(tag: str, model: str, cfg: dict, work: Path, extra: list[str] | None = None) -> dict:
    ev = cfg["eval"]
    merged: dict = {"benchmarks": {}}
    for group, spec in ev.items():
        if not isinstance(spec, dict):
            continue
        out = work / "eval" / tag / group
        if not (out / "results.json").exists():
            args = ["eval", "--model", model, "--out", str(out), "--batch-size", str(ev.get("batch_size", 8)),
                    "--max-new-tokens-cap", str(ev.get("max_new_tokens_cap", 2048)), "--device", "cpu"]
            if ev.get("backend") and "--backend" not in (extra or []):  # an inference stage's own engine wins
                args += ["--backend", str(ev["backend"])]
            if ev.get("system_prompt"):  # the system message the runs were trained with
                args += ["--system-prompt", str(ev["system_prompt"])]
            for bench in spec["bench"]:
                args += ["--bench", bench]
            for key, option in (("filter", "--filter"), ("limit", "--limit"), ("counting_own", "--counting-own")):
                if spec.get(key):
                    args += [option, str(spec[key])]
            args += extra or []
            larft(*args, log=work / "logs" / f"eval-{tag}-{group}.log")
        merged["benchmarks"].update(json.loads((out / "results.json").read_text())["benchmarks"])
    return merged


def headline(merged: dict) -> dict:
    """The figures of one evaluated model (the issue's names first)."""
    b = merged["benchmarks"]
    life = b["lifebench"]["metrics"]
    count = b["counting"]["metrics"]
    out = {
        "lifebench_ls": life["LS"],
        "lifebench_ls_ci": life["ci95"]["LS"],
        "lifebench_ls_equal": life["per_control"]["equal"]["LS"],
        "lifebench_ls_equal_ci": life["ci95"].get("LS equal"),
        "counting_within10": count["within10_rate"],
        "counting_within10_ci": count["ci95"].get("within10_rate"),
        "counting_mae_parsed": count["mae_parsed"],
        "counting_mae_parsed_ci": count["ci95"].get("mae_parsed"),
        "counting_format_rate": count["format_rate"],
        "refusal_rate": life["refusals"]["rate"],
        "refusal_rate_per_control": {c: r["rate"] for c, r in life["refusals"]["per_control"].items()},
        "perplexity": b["retention"]["metrics"]["perplexity"],
        "lifebench_ld": life["LD"],
        "lifebench_ls_per_control": {c: v["LS"] for c, v in life["per_control"].items()},
        "lifebench_ls_per_control_ci": {c: life["ci95"].get(f"LS {c}") for c in life["per_control"]},
        "gen_tokens_per_prompt": gen_tokens_per_prompt(b["lifebench"]),
        "best_of": life.get("best_of", 1),
        "lifebench_n": life["n"],
        "lifebench_budget_limited": len(b["lifebench"].get("budget_limited", [])),
        "lifebench_skipped_too_long": len(b["lifebench"].get("skipped_too_long", [])),
    }
    out.update(health_of(b["lifebench"]))
    if "ruler-tlg" in b and "all" in b["ruler-tlg"]["metrics"]:
        out["ruler_pm"] = b["ruler-tlg"]["metrics"]["all"]["PM"]
        out["ruler_fm"] = b["ruler-tlg"]["metrics"]["all"]["FM"]
    return out


def gen_tokens_per_prompt(bench: dict) -> float | None:
    """Mean tokens generated per LIFEBench prompt, every best-of-N sample counted (results written
    before `larft eval` recorded it: the mean of the samples' new_tokens, one answer each)."""
    value = bench["metrics"].get("gen_tokens_per_prompt")
    if value is None and bench.get("samples"):
        value = statistics.fmean(x["new_tokens"] for x in bench["samples"])
    return value


SCALARS = ("lifebench_ls", "lifebench_ls_equal", "counting_within10", "counting_mae_parsed", "refusal_rate",
           "perplexity", "train_minutes", "gen_tokens_per_prompt", "lifebench_ends_on_sentence", "lifebench_loops",
           "lifebench_cut_at_budget")

#: answer health of a stage's LIFEBench answers (`larft.eval.metrics.answer_health`): figure -> its share
HEALTH_FIGURES = {"lifebench_ends_on_sentence": "ends_on_sentence", "lifebench_loops": "loops",
                  "lifebench_cut_at_budget": "truncated"}


def answer_health_figures(path: Path) -> dict:
    """The whole-benchmark answer-health shares of a stage, from its stored LIFEBench results.json
    (its `metrics.health`, or its samples for records written before that: those carry `truncated`
    but no texts and no health flags, so their ends-on-sentence and loop shares are None). Empty
    when the file is missing."""
    if not path.exists():
        return {}
    return health_of(json.loads(path.read_text())["benchmarks"]["lifebench"])


def by_length_figures(path: Path) -> dict:
    """`lifebench_by_length`: per asked length (words), LS (the mean over the controls scored at it) and
    the answer-health shares (None where not recorded), from a stage's stored LIFEBench results.json."""
    from larft.eval.metrics import lifebench_ls_by_length
    from larft.eval.report import bench_health

    if not path.exists():
        return {}
    bench = json.loads(path.read_text())["benchmarks"]["lifebench"]
    health = (bench_health(bench) or {}).get("per_length", {})
    cells = {}
    for target, ls in lifebench_ls_by_length(bench["metrics"]).items():
        cell = health.get(target, health.get(str(target), {}))
        cells[str(target)] = {"LS": ls, **{figure: cell.get(key) for figure, key in HEALTH_FIGURES.items()}}
    return {"lifebench_by_length": cells}


def health_of(bench: dict) -> dict:
    """HEALTH_FIGURES of one benchmark's results (`larft.eval.report.bench_health`); None where not recorded."""
    from larft.eval.report import bench_health

    health = bench_health(bench) or {}
    return {figure: health.get(key) for figure, key in HEALTH_FIGURES.items()}


def seed_mean(per_seed: dict[int, dict]) -> dict:
    """Mean over seeds of each scalar figure, with its spread (min, max) over seeds."""
    out: dict = {}
    for key in SCALARS:
        values = [r[key] for r in per_seed.values() if r.get(key) is not None]
        if values:
            out[key] = statistics.fmean(values)
            out[f"{key}_seed_range"] = [min(values), max(values)]
    first = next(iter(per_seed.values()))
    for key in ("lifebench_ls_ci",):  # the interval of the mean of seeds is not the mean of intervals: one per seed
        out[f"{key}_per_seed"] = {s: r.get(key) for s, r in per_seed.items()}
    out["lifebench_ls_per_control"] = {c: statistics.fmean(r["lifebench_ls_per_control"][c] for r in per_seed.values())
                                       for c in first["lifebench_ls_per_control"]}
    ns = {r.get("lifebench_n") for r in per_seed.values()}
    if len(ns) == 1:  # the prompts every seed answered (the same set: the eval does not depend on the model)
        out["lifebench_n"] = ns.pop()
    if all("lifebench_by_length" in r for r in per_seed.values()):
        out["lifebench_by_length"] = {}
        targets = sorted({t for r in per_seed.values() for t in r["lifebench_by_length"]}, key=int)
        for target in targets:  # every length any seed answered; a figure only where every seed has it
            keys = {k for r in per_seed.values() for k in r["lifebench_by_length"].get(target, {})}
            mean = {}
            for key in sorted(keys):
                values = [r["lifebench_by_length"].get(target, {}).get(key) for r in per_seed.values()]
                mean[key] = statistics.fmean(values) if None not in values else None
            out["lifebench_by_length"][target] = mean
    return out


def paired_ls_difference(cfg: dict, a: str, b: str) -> dict | None:
    """LIFEBench LS of stage `a` minus stage `b`, paired over the prompts both answered
    (`paired_ls_difference_of`)."""
    return paired_ls_difference_of(*(records_dir(cfg) / tag / "lifebench" / "results.json" for tag in (a, b)))


def figures_on(path: Path, ids: set[str]) -> dict | None:
    """LIFEBench LS and tokens per prompt of a stage's stored answers to the prompts `ids` only (a best-of
    stage's sample), so that stages scored on different prompt sets are compared on the same prompts.
    None without per-prompt samples."""
    from larft.eval.metrics import lifebench_aggregate

    if not path.exists():
        return None
    samples = [x for x in json.loads(path.read_text())["benchmarks"]["lifebench"].get("samples") or []
               if x["id"] in ids]
    if not samples:
        return None
    return {"lifebench_ls": lifebench_aggregate((x["control"], x["target"], x["length"]) for x in samples).get("LS"),
            "gen_tokens_per_prompt": statistics.fmean(x.get("gen_tokens", x["new_tokens"]) for x in samples),
            "lifebench_n": len(samples)}


def on_sample(cfg: dict, runs: dict, stage: str) -> None:
    """For an inference stage scored on a sample of the prompts (`limit:`), every other run's figures on
    that sample (trained runs: the mean over seeds), as runs[name]["on_sample"][stage]."""
    path = records_dir(cfg) / stage / "lifebench" / "results.json"
    ids = {x["id"] for x in json.loads(path.read_text())["benchmarks"]["lifebench"].get("samples") or []}
    for name, run in runs.items():
        if name == stage:
            continue
        tags = [f"{name}-{s}" for s in run["seeds"]] if "seeds" in run else [name]
        each = [figures_on(records_dir(cfg) / t / "lifebench" / "results.json", ids) for t in tags]
        if each and None not in each:
            run.setdefault("on_sample", {})[stage] = {
                k: statistics.fmean(f[k] for f in each) for k in ("lifebench_ls", "gen_tokens_per_prompt")} | {
                "lifebench_n": each[0]["lifebench_n"]}


def paired_ls_difference_of(path_a: Path, path_b: Path) -> dict | None:
    """LIFEBench LS of eval results `path_a` minus `path_b` with a 95% bootstrap interval over the prompts
    both answered, resampled in pairs (same prompt, both answers; strata = control x length, as the
    eval's own intervals): tighter than comparing two unpaired intervals, because the prompts'
    difficulty cancels. None when either is missing or keeps no per-prompt samples (older records)."""
    from larft.eval.metrics import lifebench_aggregate
    from larft.eval.stats import bootstrap_cis

    samples = []
    for path in (path_a, path_b):
        if not path.exists():
            return None
        bench = json.loads(path.read_text())["benchmarks"]["lifebench"]
        if not bench.get("samples"):
            return None
        samples.append({x["id"]: (x["control"], x["target"], x["length"]) for x in bench["samples"]})
    common = sorted(i for i in set(samples[0]) & set(samples[1]) if samples[0][i][:2] == samples[1][i][:2])
    pairs = [(samples[0][i], samples[1][i]) for i in common]

    def difference(items: list) -> dict:
        ls_a, ls_b = (lifebench_aggregate(x[k] for x in items).get("LS") for k in (0, 1))
        return {"diff": None if ls_a is None or ls_b is None else ls_a - ls_b}

    return {"diff": difference(pairs)["diff"], "ci": bootstrap_cis(pairs, difference, strata=lambda x: x[0][:2])["diff"],
            "n": len(pairs)}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "processor": platform.processor()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "experiment-cpu.yaml"))
    parser.add_argument("--only", help="comma-separated stages: base, <run>-<seed> (e.g. larft-0); default all")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    work = work_dir(cfg)
    work.mkdir(parents=True, exist_ok=True)
    stages = all_stages(cfg)
    wanted = set(args.only.split(",")) if args.only else set(stages)
    unknown = wanted - set(stages)
    if unknown:
        raise SystemExit(f"--only: unknown stage(s) {sorted(unknown)}; stages are {stages}")

    from larft.data import generate_rows, write_rows

    train_file = work / "train.jsonl"
    if not train_file.exists():
        d = cfg["train_data"]
        write_rows(generate_rows(d["n"], targets=d["targets"], constraints=d["constraints"], seed=d["seed"],
                                 styles=d.get("styles", ["plain"])), train_file)

    for stage in stages:
        if stage not in wanted:
            continue
        if (figures := recorded(cfg, stage)) is not None:
            check_record(cfg, stage, figures)
            print(f"[experiment] stage {stage}: recorded in {records_dir(cfg) / stage}, not run again", flush=True)
            continue
        print(f"[experiment] stage {stage}", flush=True)
        if stage == "base" or stage in (cfg.get("inference") or {}):
            extra = inference_args(cfg, stage) if stage != "base" else None
            model = cfg["model"] if stage == "base" else inference_model(cfg, stage, work, train_file)
            eval_model(stage, model, cfg, work, extra=extra)
            of = (cfg.get("inference") or {}).get(stage, {}) or {}
            provenance = None if not of.get("of") else {  # which training the decoded model came from
                "of": of["of"], "of_retrained": (work / "train" / f"{of['of']}.retrained").exists(),
                "of_recorded_commit": (recorded(cfg, of["of"]) or {}).get("commit")}
            record_stage(cfg, work, stage, model, extra=provenance)
        else:
            name, seed = stage.rsplit("-", 1)
            timing = train_run(name, int(seed), cfg, work, train_file)
            eval_model(stage, str(work / "train" / stage), cfg, work)
            record_stage(cfg, work, stage, str(work / "train" / stage), timing)
        write_outputs(cfg, stages, args.config)  # partial results after every finished stage
    write_outputs(cfg, stages, args.config)


def all_stages(cfg: dict) -> list[str]:
    """base, the inference stages of the base model (best_of_8), <run>-<seed> for every run and its
    seeds, then the inference stages of trained models (`of:`)."""
    inference = cfg.get("inference") or {}
    of_trained = [n for n, spec in inference.items() if (spec or {}).get("of")]
    return (["base"] + [n for n in inference if n not in of_trained]
            + [f"{name}-{seed}" for name in cfg["runs"] for seed in run_seeds(cfg, name)] + of_trained)


def awareness_runs(cfg: dict, runs: dict) -> list[str]:
    """The trained runs with the awareness loss (method larft, lambda_max not 0), when GRPO-only
    (`grpo`) is there to compare with: `larft` and any variant of it (e.g. another loss shape)."""
    if "grpo" not in runs:
        return []
    return [n for n, o in cfg["runs"].items() if n in runs and n != "grpo"
            and (o or {}).get("method", "larft") == "larft" and (o or {}).get("awareness_lambda_max") != 0.0]


def _overrides(cfg: dict, name: str) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (cfg["runs"][name] or {}).items() if k != "n_seeds") or "the recipe"


def output_paths(cfg: dict) -> tuple[Path, Path]:
    """(figures JSON, results page): benchmarks/results/experiment.json and docs/results.md, or, for a
    `draft: true` experiment (in progress, not yet the published one), both in its records folder."""
    if cfg.get("draft"):
        return records_dir(cfg) / "experiment.json", records_dir(cfg) / "results.md"
    return RESULTS, DOCS / "results.md"


def write_outputs(cfg: dict, stages: list[str], config_path: str) -> None:
    """The figures JSON and the results page (`output_paths`), from the recorded stages only."""
    runs: dict[str, dict] = {}
    pending = [s for s in stages if recorded(cfg, s) is None]
    if "base" not in pending:
        runs["base"] = recorded(cfg, "base")
    for name in cfg.get("inference") or {}:
        if name not in pending:
            runs[name] = {**recorded(cfg, name), "eval_options": inference_args(cfg, name)}
    for name in cfg["runs"]:
        per_seed = {}
        for seed in run_seeds(cfg, name):
            figures = recorded(cfg, f"{name}-{seed}")
            if figures is not None:
                per_seed[seed] = {k: v for k, v in figures.items() if k != "model"}
        if per_seed:
            runs[name] = {**seed_mean(per_seed), "seeds": per_seed, "settings": run_settings(cfg, name)}
    for name in awareness_runs(cfg, runs):  # each LARFT variant against GRPO-only, seed by seed
        common = sorted(set(runs["grpo"]["seeds"]) & set(runs[name]["seeds"]))
        diffs = [runs[name]["seeds"][s]["lifebench_ls"] - runs["grpo"]["seeds"][s]["lifebench_ls"] for s in common]
        if diffs:
            runs[name]["ls_minus_grpo"] = statistics.fmean(diffs)
            runs[name]["ls_minus_grpo_per_seed"] = dict(zip(common, diffs))
            paired = {s: paired_ls_difference(cfg, f"{name}-{s}", f"grpo-{s}") for s in common}
            runs[name]["ls_minus_grpo_paired"] = {s: p for s, p in paired.items() if p is not None}
    for name, spec in (cfg.get("inference") or {}).items():  # stages on a sample: the others on the same prompts
        if (spec or {}).get("limit") and name in runs:
            on_sample(cfg, runs, name)
    result = {
        "command": ".venv/bin/python benchmarks/experiment.py --config " + (
            str(Path(config_path).resolve().relative_to(ROOT)) if Path(config_path).resolve().is_relative_to(ROOT)
            else str(config_path)),
        "commit": git_commit(), "machine": machine(), "config": cfg, "runs": runs, "pending": pending,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    figures_path, page = output_paths(cfg)
    figures_path.parent.mkdir(parents=True, exist_ok=True)
    figures_path.write_text(json.dumps(result, indent=2) + "\n")
    images = plots(cfg, [s for s in stages if s not in pending], page.parent / "img")
    page.write_text(markdown(result, images))


def plots(cfg: dict, done: list[str], img: Path) -> list[str]:
    """The results page's plots, written to `img` (beside the page); returns their paths relative to the page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from larft.eval.report import compare

    img.mkdir(parents=True, exist_ok=True)
    written = []
    records = records_dir(cfg)
    with_samples = [t for t in done if (records / t / "lifebench" / "results.json").exists()]
    if with_samples:
        compare([str(records / t / "lifebench") for t in with_samples], img / "lifebench", names=with_samples)
        written += ["img/lifebench/asked_vs_delivered.png", "img/lifebench/ls_by_length.png"]
    if ls_vs_tokens(cfg, done, img / "ls_vs_tokens.png"):
        written.append("img/ls_vs_tokens.png")
    # training curves of the GRPO runs (steps); the rft / dpo baselines log rounds, not steps
    trained = [t for t in done if (records / t / "train_metrics.jsonl").exists()
               and (cfg["runs"].get(t.rsplit("-", 1)[0]) or {}).get("method", "larft") == "larft"]
    if trained:
        curves = {t: [json.loads(x) for x in (records / t / "train_metrics.jsonl").read_text().splitlines()]
                  for t in trained}
        keys = ["reward_mean", "length_error_mean", "completion_words_mean", "awareness_loss",
                "awareness_count_error", "kl"]
        fig, axes = plt.subplots(2, 3, figsize=(14, 7))
        for ax, key in zip(axes.flat, keys):
            for t, rows in curves.items():
                pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker=".", label=t)
            ax.set_title(key), ax.set_xlabel("step"), ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img / "training_curves.png", dpi=110)
        plt.close(fig)
        # reward per constraint over training, recomputed from every logged rollout
        fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
        for ax, constraint in zip(axes, ["equal", "at_most", "at_least"]):
            for t in trained:
                path = records / t / "rollouts.jsonl"
                if not path.exists():
                    continue
                by_step: dict[int, list[float]] = {}
                for line in path.read_text().splitlines():
                    r = json.loads(line)
                    if r["constraint"] == constraint:
                        by_step.setdefault(r["step"], []).append(next(v for k, v in r.items() if k.startswith("reward/")))
                steps = sorted(by_step)
                means = [statistics.fmean(by_step[k]) for k in steps]
                ax.plot(steps, _rolling(means), label=t)
            ax.set_title(f"reward, {constraint} prompts (5-step mean)"), ax.set_xlabel("step"), ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img / "reward_by_constraint.png", dpi=110)
        plt.close(fig)
        written.insert(1, "img/reward_by_constraint.png")
        written.insert(0, "img/training_curves.png")
        if perception_vs_control(curves, img / "perception_vs_control.png"):
            written.insert(2, "img/perception_vs_control.png")
    return written


def ls_vs_tokens(cfg: dict, done: list[str], path: Path) -> bool:
    """The frontier a user picks from: LIFEBench LS against the tokens generated per prompt (all
    best-of-N samples counted), one point per finished stage (each seed of a trained run). False
    (nothing drawn) with fewer than two points."""
    import matplotlib.pyplot as plt

    points = []
    for tag in done:
        r = recorded(cfg, tag)
        if r and r.get("gen_tokens_per_prompt"):
            points.append((tag, r["gen_tokens_per_prompt"], r["lifebench_ls"], r.get("lifebench_ls_ci"),
                           r.get("lifebench_n")))
    if len(points) < 2:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5))
    one_n = len({p[4] for p in points}) == 1  # every stage scored on the same prompts: n once, in the title
    for tag, tokens, ls, ci, n in points:
        yerr = [[ls - ci[0]], [ci[1] - ls]] if ci else None
        ax.errorbar(tokens, ls, yerr=yerr, fmt="o", capsize=3)
        ax.annotate(tag if one_n else f"{tag} (n={n})", (tokens, ls), textcoords="offset points", xytext=(5, 3),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("tokens generated per LIFEBench prompt (log; every best-of-N sample counted)")
    ax.set_ylabel("LIFEBench LS (95% CI over prompts)")
    ax.set_title("Length score against inference cost" + (f" ({points[0][4]} prompts)" if one_n else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _rolling(values: list[float], k: int = 5) -> list[float]:
    return [statistics.fmean(values[max(0, i - k + 1): i + 1]) for i in range(len(values))]


def _mean_over_seeds(curves: dict, key: str) -> dict[str, list[tuple[int, float]]]:
    """{run: [(step, value averaged over that run's seeds)]} for every run that logged `key`."""
    by_run: dict[str, dict[int, list[float]]] = {}
    for stage, rows in curves.items():
        for r in rows:
            if r.get(key) is not None:
                by_run.setdefault(stage.rsplit("-", 1)[0], {}).setdefault(r["step"], []).append(r[key])
    return {run: [(k, statistics.fmean(v)) for k, v in sorted(steps.items())] for run, steps in by_run.items()}


def perception_vs_control(curves: dict, path: Path) -> bool:
    """Does better perception precede better control? One panel per awareness run: the count error on
    its own rollouts (teacher-forced, `awareness_count_error`) and the length error of those rollouts,
    5-step means over steps, averaged over seeds; GRPO-only's length error is the reference (control
    without the counting task). False (nothing drawn) without an awareness run."""
    import matplotlib.pyplot as plt

    counting = _mean_over_seeds(curves, "awareness_count_error")
    if not counting:
        return False
    length = _mean_over_seeds(curves, "length_error_mean")
    fig, axes = plt.subplots(1, len(counting), figsize=(6.5 * len(counting), 4), sharey=True, squeeze=False)
    for ax, (run, pts) in zip(axes[0], sorted(counting.items())):
        steps, values = zip(*pts)
        ax.plot(steps, _rolling(list(values)), color="tab:purple", label=f"{run}: count error, own rollouts")
        steps, values = zip(*length[run])
        ax.plot(steps, _rolling(list(values)), color="tab:blue", label=f"{run}: length error")
        if "grpo" in length:
            steps, values = zip(*length["grpo"])
            ax.plot(steps, _rolling(list(values)), color="tab:gray", ls="--", label="grpo: length error")
        ax.set_title(f"{run}: perception vs control (5-step means, mean of seeds)", fontsize=9)
        ax.set_xlabel("step"), ax.set_ylabel("relative error"), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def best_of_answer(runs: dict, name: str = "best_of_8") -> str:
    """One line, from the numbers: does LARFT (mean over seeds) beat best-of-N on the base model,
    and at what share of its inference cost (tokens generated per prompt)?"""
    question = "Does LARFT beat best-of-8 on the base model, with 1/8 of the inference cost?"
    if "larft" not in runs or name not in runs:
        missing = [r for r in ("larft", name) if r not in runs]
        return f"{question} **pending** (no {' and no '.join(missing)} results yet)."
    larft, best = runs["larft"], runs[name]
    where = ""
    if larft.get("lifebench_n") != best.get("lifebench_n"):  # scored on other prompts: compare on best-of-N's
        sample = (larft.get("on_sample") or {}).get(name)
        if sample is None:
            return (f"{question} **not comparable here**: best-of-{best.get('best_of', 8)} was scored on "
                    f"{best.get('lifebench_n')} prompts, LARFT on {larft.get('lifebench_n')}.")
        larft, where = {**larft, **sample}, f" (both on best-of-{best.get('best_of', 8)}'s {best.get('lifebench_n')} prompts)"
    diff = larft["lifebench_ls"] - best["lifebench_ls"]
    interval = best.get("lifebench_ls_ci")
    inside = bool(interval) and interval[0] <= larft["lifebench_ls"] <= interval[1]
    verdict = "no" if diff <= 0 else "not clearly" if inside else "yes"
    line = (f"{question} **{verdict}**: LIFEBench LS {larft['lifebench_ls']:.1f} (LARFT, mean of seeds) vs "
            f"{best['lifebench_ls']:.1f}{_ci(interval)} (best-of-{best.get('best_of', 8)}), {diff:+.1f}"
            + (" (inside best-of-8's 95% interval)" if inside and diff > 0 else ""))
    ours, theirs = larft.get("gen_tokens_per_prompt"), best.get("gen_tokens_per_prompt")
    if ours and theirs:
        line += (f"; LARFT generates {ours:.0f} tokens per prompt, best-of-{best.get('best_of', 8)} {theirs:.0f}: "
                 f"{ours / theirs:.2f} of its inference cost (1/{theirs / ours:.1f})")
    return line + where + "."


def _per_seed(run: dict, key: str, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """Each seed's value of `key` with its interval (`key`_ci), as "s0: 60.6 [57.0, 63.6], s1: ..."."""
    out = []
    for seed, v in run["seeds"].items():
        value, ci = v.get(key), v.get(f"{key}_ci")
        if value is None:
            out.append(f"s{seed}: -")
            continue
        text = f"s{seed}: {scale * value:.{digits}f}{unit}"
        if ci:
            text += f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"
        out.append(text)
    return ", ".join(out)


def goals_table(runs: dict) -> list[str]:
    """The recipe issue's goals against the measured figures of LARFT (mean of its seeds, each seed's
    95% interval beside it), each marked met or missed from the numbers; [] until base, GRPO-only and
    LARFT are all recorded."""
    if not all(name in runs for name in ("base", "grpo", "larft")):
        return []
    base, larft = runs["base"], runs["larft"]
    seeds = list(larft["seeds"].values())
    mark = lambda ok: "**met**" if ok else "missed"  # noqa: E731
    gain = larft["lifebench_ls"] - base["lifebench_ls"]
    diff, per = larft.get("ls_minus_grpo"), larft.get("ls_minus_grpo_per_seed", {})
    paired = larft.get("ls_minus_grpo_paired") or {}
    within, mae = larft["counting_within10"], larft.get("counting_mae_parsed")
    refusals = max(max((v.get("refusal_rate_per_control") or {"all": v["refusal_rate"]}).values()) for v in seeds)
    ppl_rise = max(v["perplexity"] for v in seeds) / base["perplexity"] - 1
    minutes = max(v["train_minutes"] for v in seeds)
    ls = f"{larft['lifebench_ls']:.1f} ({_per_seed(larft, 'lifebench_ls')}); base {base['lifebench_ls']:.1f}" \
         f"{_ci(base.get('lifebench_ls_ci'))}: {gain:+.1f}"
    versus = "-" if diff is None else f"{diff:+.1f} (" + ", ".join(
        f"s{s}: {d:+.1f}" + (_ci(paired[s]["ci"]) + " paired" if s in paired else "") for s, d in per.items()) + ")"
    counting = f"{100 * within:.0f}% ({_per_seed(larft, 'counting_within10', 100, 0, '%')}) / " + (
        "-" if mae is None else f"{mae:.1f} ({_per_seed(larft, 'counting_mae_parsed')})")
    rows = [
        ("LS mean of the 3 controls, LARFT", ">= base + 25", ls, mark(gain >= 25)),
        ("LS, LARFT minus GRPO-only (mean of seeds)", ">= +5, or a documented negative result", versus,
         "-" if diff is None else mark(diff >= 5) + ("" if diff >= 5 else " (a negative result: research/notes.md)")),
        ("LS equal-to, LARFT", ">= 50", f"{larft['lifebench_ls_equal']:.1f} ({_per_seed(larft, 'lifebench_ls_equal')})",
         mark(larft["lifebench_ls_equal"] >= 50)),
        ("counting, LARFT: within 10% / MAE (words)", ">= 50% / <= 10", counting,
         mark(within >= 0.5 and mae is not None and mae <= 10)),
        ("refusals (answers <= 1 word), worst control and seed", "<= 2%", f"{100 * refusals:.1f}%",
         mark(refusals <= 0.02)),
        ("perplexity rise on the retention texts, worst seed", "<= 5%", f"{100 * ppl_rise:+.1f}%", mark(ppl_rise <= 0.05)),
        ("wall time of one trained run on 2 cores, slowest seed", "<= 45 min", f"{minutes:.1f} min",
         mark(minutes <= 45)),
    ]
    return ["## The goals (recipe issue), LARFT against them", "",
            "| figure | goal | measured: mean of seeds (each seed [95% CI]) | |", "|---|---|---|---|",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], ""]


def long_lengths_goals(runs: dict) -> list[str]:
    """The goals of the lengths-people-ask-for issue (16..512 words), each marked met or missed from the
    numbers; [] until base and LARFT are recorded with answers at 256 and 512 words."""
    if "base" not in runs or "larft" not in runs:
        return []
    base, larft = runs["base"], runs["larft"]
    lengths_b, lengths_l = base.get("lifebench_by_length", {}), larft.get("lifebench_by_length", {})
    if not all(t in lengths_b and t in lengths_l and lengths_b[t].get("LS") is not None
               and lengths_l[t].get("LS") is not None for t in ("256", "512")):
        return []
    mark = lambda ok: "**met**" if ok else "missed"  # noqa: E731
    gain = larft["lifebench_ls"] - base["lifebench_ls"]
    rows = [("LS, LIFEBench-lite EN 16..512, LARFT (mean of seeds)", ">= base + 15",
             f"{larft['lifebench_ls']:.1f} ({_per_seed(larft, 'lifebench_ls')}); base {base['lifebench_ls']:.1f}: "
             f"{gain:+.1f}", mark(gain >= 15))]
    for t in ("256", "512"):
        d = lengths_l[t]["LS"] - lengths_b[t]["LS"]
        rows.append((f"LS at {t} words, LARFT", ">= base + 15",
                     f"{lengths_l[t]['LS']:.1f}; base {lengths_b[t]['LS']:.1f}: {d:+.1f}", mark(d >= 15)))
    loops = {t: c.get("lifebench_loops") for t, c in lengths_l.items()}
    if None not in loops.values():
        worst = max(loops, key=loops.get)
        rows.append(("greedy answers that loop, LARFT, worst length", "<= 5% at every length",
                     f"{100 * loops[worst]:.1f}% at {worst} words", mark(loops[worst] <= 0.05)))
    best4, best8 = runs.get("best_of_4_larft"), runs.get("best_of_8")
    if best4 and best8 and best4.get("gen_tokens_per_prompt") and best8.get("gen_tokens_per_prompt"):
        share = best4["gen_tokens_per_prompt"] / best8["gen_tokens_per_prompt"]
        rows.append(("best-of-4 of LARFT against best-of-8 of the base model (the same prompts)",
                     ">= its LS at <= half its tokens",
                     f"{best4['lifebench_ls']:.1f}{_ci(best4.get('lifebench_ls_ci'))} vs "
                     f"{best8['lifebench_ls']:.1f}{_ci(best8.get('lifebench_ls_ci'))}, at {share:.2f} of its tokens",
                     mark(best4["lifebench_ls"] >= best8["lifebench_ls"] and share <= 0.5)))
    return ["## The goals (lengths people ask for, 16..512 words), LARFT against them", "",
            "| figure | goal | measured | |", "|---|---|---|---|", *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], ""]


#: the previous experiment, run under the old eval cap (2 tokens per asked word + 32)
EARLIER = ROOT / "research" / "results" / "experiment-cpu-v3.json"


def cap_comparison(runs: dict, cfg: dict | None = None) -> list[str]:
    """How the headline moved from the old eval cap (cpu-v3) to the score-neutral caps, run by run,
    read from the two result files; only for an experiment on cpu-v3's prompts (`compare_caps: true`,
    cpu-v4), nothing when the earlier file is absent."""
    if not (cfg or {}).get("compare_caps") or not EARLIER.exists():
        return []
    old = json.loads(EARLIER.read_text())["runs"]
    both = [name for name in runs if name in old]
    if not both:
        return []
    moves = ", ".join(f"{name} {old[name]['lifebench_ls']:.1f} -> {runs[name]['lifebench_ls']:.1f} "
                      f"({runs[name]['lifebench_ls'] - old[name]['lifebench_ls']:+.1f})" for name in both)
    return ["**Caps.** Every answer here may run to the length where a cut answer already scores ~0 (3x the "
            "target, 1.5x for `at_least`, in the model's own tokens per word: `src/larft/budget.py`). The "
            "previous experiment (cpu-v3, `research/experiment-cpu-v3.md`) cut answers at 2 tokens per asked word "
            "+ 32, where a run-away answer could still score 14-72, with the older recipe (40 steps). LS from "
            f"there to here: {moves}.", ""]


def stage_commits(runs: dict) -> list[str]:
    """Which commit each stage was run and recorded at: stages of one experiment may be run at
    several commits, sessions apart; the page's own commit is only the one that wrote it."""
    parts = []
    for name, r in runs.items():
        if "seeds" in r:
            parts += [f"{name}-{s} `{str(v.get('commit', '?'))[:10]}`" for s, v in r["seeds"].items()]
        else:
            parts.append(f"{name} `{str(r.get('commit', '?'))[:10]}`")
    return [f"Stages, each at the commit it was recorded at: {', '.join(parts)}.", ""] if parts else []


def by_length_table(runs: dict) -> list[str]:
    """LS per asked length, with the share of answers that loop and that were cut at their budget there
    (trained runs: mean of seeds), so a length gain bought with looping answers shows where it happens."""
    lengths = sorted({int(t) for r in runs.values() for t in r.get("lifebench_by_length", {})})
    if not lengths:
        return []
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}"  # noqa: E731
    lines = ["", "LIFEBench LS by asked length (words), the mean over the three controls; in brackets the % of "
             "answers that loop / were cut at their budget at that length:", "",
             "| run | " + " | ".join(str(t) for t in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for name, r in runs.items():
        cells = r.get("lifebench_by_length", {})
        row = []
        for t in lengths:
            c = cells.get(str(t))
            row.append("-" if c is None or c.get("LS") is None else
                       f"{c['LS']:.1f} ({pct(c.get('lifebench_loops'))} / {pct(c.get('lifebench_cut_at_budget'))})")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines


def _shown(path: Path) -> str:
    """A path as the page names it: from the repository root when it is inside the checkout."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def markdown(result: dict, images: list[str]) -> str:
    runs = result["runs"]
    lines = [
        "# Does LARFT work? base vs GRPO-only vs LARFT vs what a user would pick instead, on the bundled model", "",
        f"Produced by `{result['command']}`; page written at commit `{result['commit'][:10]}` "
        f"(figures: `{_shown(output_paths(result['config'])[0])}`). Intervals: 95% bootstrap over prompts; "
        "trained runs are means over seeds, with each seed's value listed. best_of_8: the base model, 8 sampled "
        "answers per prompt, the one with the highest length reward scored (no training); rft / hir / dpo: "
        "rejection-sampling SFT, hindsight-relabelled SFT (every answer, its prompt asking for the length it has) "
        "and length DPO on the model's own samples, as many sampled completions as a GRPO run (`larft train "
        "--method`). gen tok/prompt: tokens generated per LIFEBench prompt, all samples counted "
        "(the inference cost). Answer health, shares of the LIFEBench answers (trained runs: mean of seeds): "
        "ends on sentence (the answer's last character, after trailing markdown and closing quotes, ends a "
        "sentence), loops (more than 30% of its word 4-grams repeat an earlier one; answers of >= 8 words), cut at "
        "budget (stopped at its token budget); `-`: not recorded (answers evaluated before `larft eval` stored "
        "the health flags keep no texts, so only the cut share can be read from them).", "",
    ]
    lines += stage_commits(runs)
    lines += cap_comparison(runs, result["config"])
    if result["pending"]:
        lines += [f"**Pending stages** (not run yet): {', '.join(result['pending'])}.", ""]
    lines += ["| run | LS mean [95% CI] | LS equal | LS at_most | LS at_least | refusals % | ends on sentence % | "
              "loops % | cut at budget % | count within 10% | count MAE (parsed) | count format % | perplexity | "
              "gen tok/prompt | train min |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for name, r in runs.items():
        pc = r.get("lifebench_ls_per_control", {})
        ls = f"**{r['lifebench_ls']:.1f}**" + (_ci(r.get("lifebench_ls_ci")) if "seeds" not in r else "")
        if "seeds" in r:
            ls += " (" + ", ".join(f"s{s}: {v['lifebench_ls']:.1f}{_ci(v['lifebench_ls_ci'])}"
                                   for s, v in r["seeds"].items()) + ")"
        fmt = r.get("counting_format_rate")
        if fmt is None and "seeds" in r:
            fmt = statistics.fmean(v["counting_format_rate"] for v in r["seeds"].values())
        mae = r.get("counting_mae_parsed")
        tokens = r.get("gen_tokens_per_prompt")
        lines.append(
            f"| {name} | {ls} | {pc.get('equal', float('nan')):.1f} | {pc.get('at_most', float('nan')):.1f} | "
            f"{pc.get('at_least', float('nan')):.1f} | {100 * r['refusal_rate']:.1f} | "
            + " | ".join(pct(r.get(k)) for k in HEALTH_FIGURES) + " | "
            f"{100 * r['counting_within10']:.0f} | {'-' if mae is None else f'{mae:.1f}'} | {100 * fmt:.0f} | "
            f"{r['perplexity']:.2f} | {'-' if tokens is None else f'{tokens:.0f}'} | {r.get('train_minutes', 0):.1f} |")
    for name in runs:
        if "ls_minus_grpo" not in runs[name]:
            continue
        per = runs[name]["ls_minus_grpo_per_seed"]
        paired = runs[name].get("ls_minus_grpo_paired") or {}
        label = "LARFT" if name == "larft" else f"{name} (LARFT, {_overrides(result['config'], name)})"
        lines += ["", f"{label} minus GRPO-only, LS: **{runs[name]['ls_minus_grpo']:+.1f}** (per seed: "
                  + ", ".join(f"s{s}: {d:+.1f}" + (f"{_ci(paired[s]['ci'])} paired over {paired[s]['n']} prompts"
                                                   if s in paired else "") for s, d in per.items()) + ")"]
    lines += by_length_table(runs)
    lines += ["", best_of_answer(runs), "", *long_lengths_goals(runs),
              *(goals_table(runs) if result["config"].get("recipe_goals") else [])]
    cfg = result["config"]
    lines += ["", f"Settings: `{cfg.get('recipe', 'configs/experiment-cpu.yaml')}`; evaluation groups: "
              + "; ".join(f"{g}: {spec['bench']} {spec.get('filter', '')}" for g, spec in cfg["eval"].items()
                          if isinstance(spec, dict)), ""]
    lines += [f"![{Path(i).stem}]({i})" for i in images]
    if not result["config"].get("draft"):  # the published page carries the other results; a draft only its own
        lines += appendix_lines()
    lines += ["", PAGE_END + " The studies behind it (recipe sweeps, the "
              "awareness weight, counting alone, a larger model), round by round, are in "
              "[research/notes.md](../research/notes.md).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
