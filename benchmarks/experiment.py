"""Does it work? base vs GRPO-only vs LARFT, side by side, from one command.

    .venv/bin/python benchmarks/experiment.py --config configs/experiment-cpu.yaml

1. generates the training prompts (`larft data generate`; topics disjoint from the eval ones);
2. trains every run of `runs:` with the same prompts, seed and step budget (`larft train`);
3. evaluates the base model and every trained model (`larft eval`, groups of `eval:`);
4. writes benchmarks/results/experiment.json and docs/results.md (+ plots in docs/img/).

Every stage is skipped when its output already exists, so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "experiment.json"
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


def train_run(name: str, cfg: dict, work: Path, train_file: Path) -> dict:
    out = work / "train" / name
    timing = work / "train" / f"{name}.timing.json"
    if (out / "model.safetensors").exists() and timing.exists():
        return json.loads(timing.read_text())
    config = {**cfg["train"], **cfg["runs"][name], "model": cfg["model"], "train_file": str(train_file),
              "output_dir": str(out)}
    config_path = work / "train" / f"{name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    resume = ["--resume", "true"] if any(out.glob("checkpoint-*")) else []
    if out.exists() and not resume:
        import shutil

        shutil.rmtree(out)  # a run that died before its first checkpoint starts over
    seconds = larft("train", "--config", str(config_path), *resume, log=work / "logs" / f"train-{name}.log")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    info = {"train_minutes": seconds / 60, "step_seconds_sum": sum(s["step_seconds"] or 0 for s in steps)}
    timing.write_text(json.dumps(info))
    return info


def eval_model(name: str, model: str, cfg: dict, work: Path) -> dict:
    ev = cfg["eval"]
    merged: dict = {"benchmarks": {}, "summary": {}}
    for group, spec in ev.items():
        if not isinstance(spec, dict):
            continue
        out = work / "eval" / name / group
        if not (out / "results.json").exists():
            args = ["eval", "--model", model, "--out", str(out), "--batch-size", str(ev.get("batch_size", 8)),
                    "--max-new-tokens-cap", str(ev.get("max_new_tokens_cap", 2048))]
            for bench in spec["bench"]:
                args += ["--bench", bench]
            if spec.get("filter"):
                args += ["--filter", spec["filter"]]
            if spec.get("limit"):
                args += ["--limit", str(spec["limit"])]
            if spec.get("counting_own"):
                args += ["--counting-own", str(spec["counting_own"])]
            larft(*args, log=work / "logs" / f"eval-{name}-{group}.log")
        result = json.loads((out / "results.json").read_text())
        merged["benchmarks"].update(result["benchmarks"])
        merged["summary"].update(result["summary"])
    return merged


def headline(merged: dict) -> dict:
    b = merged["benchmarks"]
    life = b["lifebench"]["metrics"]
    ruler = b["ruler-tlg"]["metrics"]
    return {
        "lifebench_ls": life["LS"],
        "lifebench_ld": life["LD"],
        "lifebench_ls_per_control": {c: v["LS"] for c, v in life["per_control"].items()},
        "lifebench_ld_per_control": {c: v["LD"] for c, v in life["per_control"].items()},
        "lifebench_n": life["n"],
        "ruler_pm": ruler["all"]["PM"], "ruler_fm": ruler["all"]["FM"],
        "ruler_levels": {k: v for k, v in ruler.items()},
        "counting_mae": b["counting"]["metrics"]["MAE_all"],
        "counting_mae_parsed": b["counting"]["metrics"]["MAE"],
        "counting_format_rate": b["counting"]["metrics"]["format_rate"],
        "counting_within10_rate": b["counting"]["metrics"]["within10_rate"],
        "perplexity": b["retention"]["metrics"]["perplexity"],
    }


def plots(cfg: dict, work: Path, runs: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from larft.eval.report import compare

    img = DOCS / "img"
    img.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    compare([str(work / "eval" / n / "lifebench") for n in names], img / "lifebench", names=names)
    curves = {n: [json.loads(x) for x in (work / "train" / n / "metrics.jsonl").read_text().splitlines()]
              for n in cfg["runs"]}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, key in zip(axes.flat, ["reward_mean", "length_error_mean", "awareness_loss", "awareness_lambda"]):
        for n, rows in curves.items():
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=n)
        ax.set_title(key), ax.set_xlabel("step"), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "training_curves.png", dpi=110)
    plt.close(fig)
    return ["img/training_curves.png", "img/lifebench/asked_vs_delivered.png", "img/lifebench/ls_by_length.png"]


def markdown(cfg: dict, runs: dict, images: list[str]) -> str:
    controls = ["equal", "at_most", "at_least"]
    lines = [
        "# Does LARFT work? base vs GRPO-only vs LARFT on the bundled model", "",
        "Produced by `.venv/bin/python benchmarks/experiment.py --config configs/experiment-cpu.yaml` "
        "(figures: `benchmarks/results/experiment.json`).", "",
        "| run | LS equal | LS at_most | LS at_least | **LS mean** | LD % | Ruler PM | Ruler FM | counting MAE | "
        "count format % | perplexity | train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        h = r["metrics"]
        ls = [f"{h['lifebench_ls_per_control'].get(c, float('nan')):.1f}" for c in controls]
        lines.append(
            f"| {name} | {' | '.join(ls)} | **{h['lifebench_ls']:.1f}** | {h['lifebench_ld']:.1f} | {h['ruler_pm']:.1f} | "
            f"{h['ruler_fm']:.1f} | {h['counting_mae']:.1f} | {100 * h['counting_format_rate']:.0f} | "
            f"{h['perplexity']:.2f} | {r.get('train_minutes', 0):.1f} |"
        )
    lines += ["", "Settings: `configs/experiment-cpu.yaml`. LIFEBench lite, EN, targets 16..256 words "
              f"({runs['base']['metrics']['lifebench_n']} prompts, a seeded sample), all three controls; Ruler TLG "
              "levels 0-1 on our own evaluation instructions; counting probe = mean absolute error of the model's "
              "word counts (an unparsable answer counts as 0); perplexity on the shipped reference texts.", ""]
    lines += [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "experiment-cpu.yaml"))
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    work = ROOT / cfg["work_dir"]
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    from larft.data import generate_rows, write_rows

    train_file = work / "train.jsonl"
    if not train_file.exists():
        d = cfg["train_data"]
        write_rows(generate_rows(d["n"], targets=d["targets"], constraints=d["constraints"], seed=d["seed"]), train_file)

    runs: dict[str, dict] = {"base": {"model": cfg["model"]}}
    runs["base"]["metrics"] = headline(eval_model("base", cfg["model"], cfg, work))
    print("base", runs["base"]["metrics"], flush=True)
    for name in cfg["runs"]:
        info = train_run(name, cfg, work, train_file)
        model_dir = str(work / "train" / name)
        runs[name] = {"model": model_dir, **info, "settings": {**cfg["train"], **cfg["runs"][name]}}
        runs[name]["metrics"] = headline(eval_model(name, model_dir, cfg, work))
        print(name, runs[name]["metrics"], flush=True)

    result = {"config": cfg, "runs": {}, "total_minutes": (time.time() - started) / 60,
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name, r in runs.items():  # flat keys first, as the issue asks, then the details
        result["runs"][name] = {"lifebench_ls": r["metrics"]["lifebench_ls"], "lifebench_ld": r["metrics"]["lifebench_ld"],
                                "counting_mae": r["metrics"]["counting_mae"], "perplexity": r["metrics"]["perplexity"],
                                "train_minutes": r.get("train_minutes", 0.0), **r}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    images = plots(cfg, work, runs)
    results_md = DOCS / "results.md"
    body = markdown(cfg, runs, images)
    notes = DOCS / "results-notes.md"
    if notes.exists():
        body += "\n" + notes.read_text()
    results_md.write_text(body)
    print(body)


if __name__ == "__main__":
    main()
