"""The GPU user's paths, run for real on one GPU in a few minutes (no hub: the bundled model).

    .venv/bin/python benchmarks/gpu_smoke.py            # on a CUDA machine (scripts/gpu-smoke.sh sets it up)
    .venv/bin/python benchmarks/gpu_smoke.py --dry-run  # anywhere: check every command's options, run nothing

Steps: the dry run's estimate of the first training step's peak (`larft train --dry_run` on this GPU), then
bf16 LARFT for 10 steps with transformers rollouts (its measured peak beside that estimate), then with TRL's
vLLM colocate rollouts when vLLM is installed; the 7B recipes' settings (configs/qwen2.5-7b-8gpu.yaml full
fine-tuning, configs/qwen2.5-7b-8gpu-lora.yaml LoRA: micro-batches of 2 x 8 accumulation, bf16 weights) on
the small model for 3 steps, on one GPU; `larft eval` on CUDA (LIFEBench-lite EN 16..128, a seeded slice)
with the hf backend, then vLLM's; 2-process FSDP for a few steps when there are two GPUs. Prints one table
(step time, tokens/s, peak GPU memory, the estimate, LS) and writes benchmarks/results/gpu_smoke.json. A step
that fails is recorded with its error and the rest still run; the exit code says whether any failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_smoke.json"
LIFEBENCH = ["--bench", "lifebench", "--filter", "lang=en,min_length=16,max_length=128", "--limit", "96",
             "--system-prompt", "none"]  # as the recipe trains


MODEL = "default"


def train_args(out: Path, steps: int, extra: list[str]) -> list[str]:
    """`larft train` options of a smoke run: the CPU recipe's prompts and settings, on CUDA in bf16."""
    return ["--config", "configs/recipe-cpu.yaml", "--model", MODEL, "--output_dir", str(out), "--max_steps", str(steps),
            "--rollout_backend", "hf", "--per_target_budget", "false", "--bf16", "true", "--report_to", "none",
            "--length_check_prompts", "0", "--save_strategy", "no", *extra]


def recipe_args(config: str, out: Path, data: Path, has_vllm: bool) -> list[str]:
    """A 7B recipe's settings on the small model, 3 steps on one GPU (rollouts cut to 256 tokens)."""
    return ["--config", config, "--model", MODEL, "--output_dir", str(out), "--train_file", str(data),
            "--max_steps", "3", "--max_completion_length", "256", "--length_check_prompts", "4",
            "--save_strategy", "no", "--report_to", "none", "--use_vllm", str(has_vllm).lower()]


def plan(work: Path, gpus: int, has_vllm: bool) -> list[dict]:
    """The steps to run: name, command (argv after `python -m larft` or a full launcher), kind."""
    data = work / "prompts.jsonl"
    steps = [
        {"name": "dry-run-hf", "kind": "dryrun", "argv": ["train", *train_args(work / "dry-run", 10, ["--dry_run"])]},
        {"name": "train-hf", "kind": "train", "argv": ["train", *train_args(work / "train-hf", 10, [])]},
        {"name": "data", "kind": "data", "argv": ["data", "generate", "--out", str(data), "--n", "256", "--targets",
                                                  "16,32,64,128", "--seed", "0"]},
    ]
    for name, config in (("recipe-7b-zero3-settings", "configs/qwen2.5-7b-8gpu.yaml"),
                         ("recipe-7b-lora-settings", "configs/qwen2.5-7b-8gpu-lora.yaml")):
        steps.append({"name": name, "kind": "train", "argv": ["train", *recipe_args(config, work / name, data, has_vllm)]})
    if has_vllm:
        steps.append({"name": "train-vllm-colocate", "kind": "train", "argv": [
            "train", *train_args(work / "train-vllm", 10, ["--use_vllm", "true", "--vllm_mode", "colocate",
                                                           "--vllm_gpu_memory_utilization", "0.3"])]})
    steps.append({"name": "eval-hf", "kind": "eval", "argv": [
        "eval", "--model", MODEL, *LIFEBENCH, "--device", "cuda", "--batch-size", "32", "--out", str(work / "eval-hf")]})
    if has_vllm:
        steps.append({"name": "eval-vllm", "kind": "eval", "argv": [
            "eval", "--model", MODEL, *LIFEBENCH, "--backend", "vllm", "--out", str(work / "eval-vllm")]})
    if gpus >= 2:
        steps.append({"name": "train-fsdp-2gpu", "kind": "train", "launcher": [
            "accelerate", "launch", "--config_file", "configs/accelerate/fsdp.yaml", "--num_processes", "2", "-m", "larft"],
            "argv": ["train", *train_args(work / "train-fsdp", 5, [])]})
    return steps


class GpuMemory:
    """Peak used GPU memory (MiB, all GPUs summed) while a step runs, polled from nvidia-smi."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                self.peak = max(self.peak, sum(int(x) for x in out.split() if x.strip().isdigit()))
            except (OSError, subprocess.TimeoutExpired):
                return
            self._stop.wait(1.0)

    def __enter__(self) -> "GpuMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def figures(step: dict, log: Path) -> dict:
    """Step time and tokens/s of a training run, LS and tokens/s of an eval, from their output files; a dry
    run's estimated peak from its printout."""
    if step["kind"] == "data":
        return {}
    if step["kind"] == "dryrun":
        head = next(x for x in log.read_text(encoding="utf-8").splitlines() if x.startswith("Peak memory per device"))
        return {"estimate_gb": float(head.split("): ")[1].split(" GB")[0])}
    out = Path(step["argv"][step["argv"].index("--output_dir" if step["kind"] == "train" else "--out") + 1])
    if step["kind"] == "train":
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        later = [x["step_seconds"] for x in lines[1:] if x.get("step_seconds")] or [lines[0]["step_seconds"]]
        words = sum(x.get("completion_words_mean", 0) for x in lines[1:]) * 16
        return {"steps": len(lines), "step_seconds_median": sorted(later)[len(later) // 2],
                "reward_first": lines[0].get("reward_mean"), "reward_last": lines[-1].get("reward_mean"),
                "rollout_words_per_s": words / sum(later) if later and sum(later) else None}
    bench = json.loads((out / "results.json").read_text())["benchmarks"]["lifebench"]
    metrics = bench["metrics"]
    tokens = sum(x["gen_tokens"] for x in bench["samples"])
    return {"lifebench_ls": metrics["LS"], "lifebench_ls_ci": metrics["ci95"]["LS"], "n": metrics["n"],
            "gen_tokens": tokens}


def run(args: argparse.Namespace) -> int:
    import torch

    global MODEL
    MODEL = args.model
    gpus = torch.cuda.device_count()
    has_vllm = importlib.util.find_spec("vllm") is not None
    work = Path(args.work or ("<work>" if args.dry_run else tempfile.mkdtemp(prefix="larft-gpu-smoke-")))
    steps = plan(work, gpus if not args.dry_run else 2, has_vllm or args.dry_run)
    if args.dry_run:
        from larft.cli import parse_train_args

        for step in steps:
            print(f"[gpu-smoke] {step['name']}: {' '.join(step.get('launcher', ['python', '-m', 'larft']) + step['argv'])}")
            if step["kind"] in ("train", "dryrun"):
                parse_train_args(step["argv"][1:])  # every option must parse
        print(f"[gpu-smoke] dry run: {len(steps)} steps planned, options valid, nothing run")
        return 0
    if not gpus:
        raise SystemExit("gpu-smoke: no CUDA device (run with --dry-run to check the plan on a CPU machine)")
    result = {"device": torch.cuda.get_device_name(0), "gpus": gpus, "vllm": has_vllm, "torch": torch.__version__,
              "steps": {}, "command": "python benchmarks/gpu_smoke.py " + " ".join(sys.argv[1:])}
    failed = False
    for step in steps:
        launcher = step.get("launcher") or [sys.executable, "-m", "larft"]
        cmd = launcher + step["argv"]
        log = work / f"{step['name']}.log"
        start = time.perf_counter()
        with GpuMemory() as memory, open(log, "w", encoding="utf-8") as f:
            try:
                code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                      timeout=args.step_timeout).returncode
            except subprocess.TimeoutExpired:
                code = 124
        record = {"wall_s": time.perf_counter() - start, "peak_gpu_mib": memory.peak, "exit": code, "log": str(log)}
        if code == 0:
            record.update(figures(step, log))
            if step["kind"] == "eval":
                record["gen_tokens_per_s"] = record["gen_tokens"] / record["wall_s"]
        else:
            failed = True
            record["error_tail"] = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        result["steps"][step["name"]] = record
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'step':26s} {'exit':>4s} {'wall s':>7s} {'s/step':>7s} {'tok/s':>7s} {'peak MiB':>9s} {'est. GB':>7s} "
          f"{'LS':>6s}")
    for name, r in result["steps"].items():
        speed = r.get("gen_tokens_per_s") or r.get("rollout_words_per_s")
        print(f"{name:26s} {r['exit']:>4d} {r['wall_s']:>7.0f} {r.get('step_seconds_median') or 0:>7.1f} "
              f"{speed or 0:>7.0f} {r['peak_gpu_mib']:>9d} {r.get('estimate_gb') or 0:>7.1f} "
              f"{r.get('lifebench_ls') or 0:>6.1f}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="check the plan's options without a GPU; run nothing")
    parser.add_argument("--model", default="default", help="the bundled model, or its GGUF file carried in")
    parser.add_argument("--work", help="keep the runs' outputs in this folder (default: a temporary one)")
    parser.add_argument("--step-timeout", type=int, default=900, help="seconds one step may take")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
