"""Where does the demo's memory go? Peak RSS per phase of a short demo run, variants side by side.

The demo (configs/demo-cpu.yaml) peaks near 11 GB for a 135M model. Each variant runs the demo's
settings for `--steps` optimizer steps in a fresh process, with every phase a demo run has: the
held-out check before, the steps (rollouts, forward, backward), a checkpoint (model + optimizer),
the check after and the final save. A thread samples the process's RSS (/proc/self/status) every
0.1 s and keeps the peak of each phase, named by training callbacks. Variants: larft's allocator
tuning on (`tuned`, the default: trim and mmap thresholds, top pad, arenas capped at 2), off
(`untuned`), on with glibc's own arena count (`arenas_glibc`: LARFT_MALLOC_ARENA_MAX=0), on with the
cap set from process start (`arenas2`: MALLOC_ARENA_MAX=2), free pages handed back after every part of a step
(`trim_phases`; larft's default since, `release_between_parts`; `trim_steps_only` is the default before it),
buffers above 4 or 16 MiB mmap'ed (`mmap4m`, `mmap16m`), micro-batches of 4 instead of 8 (`micro4`), transformers rollouts
instead of CTranslate2's (`hf_rollouts`: what the engine's copy of the weights costs), fp32 instead of
bf16 autocast (`fp32`), an int8 CTranslate2 engine (`int8_rollouts`, top_p 1 as its correction needs), a
LoRA adapter (`lora`: rank 16 on every linear layer, ct2 rolling out the merged weights), activation
checkpointing (`checkpointing`: each layer's activations recomputed in the backward), TRL's own token tile for its fused LM head
(`trl_head_tile`: 4096 tokens; larft sets 256 on CPU, `larft.head_tiles`; `checkpointing_tile512` / `_tile256`), freed memory kept
across steps (`keep_steps`: LARFT_MALLOC_TRIM_STEPS=0, the tuning before it trimmed between steps). Step time is reported
next to memory: a variant that saves memory by costing time says so. Each variant records the commit
it was measured at. Writes benchmarks/results/memory.json (finished variants are kept; --redo to
measure again).

    .venv/bin/python benchmarks/memory.py [--steps 3] [--variants tuned,untuned,arenas_glibc,arenas2,micro4,hf_rollouts,fp32,int8_rollouts,lora,checkpointing,keep_steps]
    .venv/bin/python benchmarks/memory.py --config recipe --steps 45 --variants tuned,checkpointing
    .venv/bin/python benchmarks/memory.py --config long --steps 3 --fine --variants tuned,trl_head_tile

With `--config recipe` (configs/recipe-cpu.yaml) or a number of steps other than 3, results are kept
under `<config>-<steps>/<variant>`. Each run also records its per-step rewards (a variant that saves
memory must train the same: the same rewards step for step at the same seed) and the dry run's estimate
of its peak (`larft train --dry_run`, `larft.memory_estimate`), to put the measured peak beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import read_json, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory.json"
DEMO = ROOT / "configs" / "demo-cpu.yaml"
#: --config: (config file, flags over it); `long`: the demo's settings at the recipe's lengths (16..512 words,
#: budget 1423 tokens, activation checkpointing), the shape where the estimate and the measurement part most
CONFIGS = {"demo": (DEMO, []), "recipe": (ROOT / "configs" / "recipe-cpu.yaml", []),
           "long": (DEMO, ["--train_targets", "16,32,64,128,256,512", "--max_completion_length", "1423",
                           "--activation_checkpointing", "true"])}

#: (environment, larft train flags) of each variant, over the demo's settings
VARIANTS = {
    "tuned": ({}, []),
    "untuned": ({"LARFT_MALLOC_TUNING": "0"}, []),
    "arenas_glibc": ({"LARFT_MALLOC_ARENA_MAX": "0"}, []),
    "arenas2": ({"MALLOC_ARENA_MAX": "2"}, []),
    "micro4": ({}, ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "4"]),
    "hf_rollouts": ({}, ["--rollout_backend", "hf"]),
    "fp32": ({}, ["--bf16", "false"]),
    "int8_rollouts": ({}, ["--rollout_compute_type", "int8", "--top_p", "1.0"]),
    "lora": ({}, ["--lora_r", "16"]),
    "checkpointing": ({}, ["--activation_checkpointing", "true"]),
    "trl_head_tile": ({}, ["--lm_head_token_tile", "4096"]),  # TRL's own fused-head token tile (larft's: 256)
    "checkpointing_tile512": ({}, ["--activation_checkpointing", "true", "--lm_head_token_tile", "512"]),
    "checkpointing_tile256": ({}, ["--activation_checkpointing", "true", "--lm_head_token_tile", "256"]),
    "keep_steps": ({"LARFT_MALLOC_TRIM_STEPS": "0"}, []),
    "trim_phases": ({"LARFT_MEMORY_TRIM_PHASES": "1"}, []),
    "trim_steps_only": ({"LARFT_MALLOC_TRIM_PARTS": "0"}, []),
    "mmap4m": ({"LARFT_MALLOC_MMAP_THRESHOLD": str(4 << 20)}, []),
    "mmap16m": ({"LARFT_MALLOC_MMAP_THRESHOLD": str(16 << 20)}, []),
}


class PhaseSampler:
    """The process's RSS every `every` seconds; the peak of each named phase, by kind."""

    def __init__(self, every: float = 0.1):
        self.every, self.phase, self.peaks = every, "setup", {}
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def rss_gb() -> dict[str, float]:
        """Resident memory by kind: anonymous (heap, tensors), file-backed (libraries, mapped
        weights), shared memory (files in /dev/shm that something maps)."""
        kinds = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, *rest = line.split()
                if key in kinds:
                    out[kinds[key]] = int(rest[0]) * 1024 / 1e9
        out["rss"] = sum(out.values())
        return out

    def _sample(self) -> None:
        with self._lock:  # the sampler thread and a phase switch both sample
            phase, now = self.phase, self.rss_gb()
            if now["rss"] > self.peaks.get(phase, {}).get("rss", 0.0):
                self.peaks[phase] = now

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.every)

    def enter(self, phase: str) -> None:
        self._sample()  # the moment of the switch belongs to the phase that ends
        with self._lock:
            self.phase = phase

    def __enter__(self) -> "PhaseSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def estimate_gb(config_file: Path, flags: list[str]) -> float:
    """The dry run's estimate of the run's peak (GB), for the same options."""
    from larft.cli import explicit_options, parse_train_args
    from larft.dry_run import dry_run
    import contextlib
    import io

    argv = ["--config", str(config_file), *flags, "--dry_run"]
    train_args, config = parse_train_args(argv)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        dry_run(train_args, config, explicit_options(argv))
    head = next(line for line in printed.getvalue().splitlines() if line.startswith("Peak memory per device"))
    return float(head.split("): ")[1].split(" GB")[0])


def _name_step_parts(sampler: "PhaseSampler") -> None:
    """`--fine`: the steps phase split into its parts (rollouts, the awareness pass, the policy's forward,
    backward, the optimizer step), by wrapping the methods that do them; each part's peak is its own."""
    import functools

    import accelerate
    import trl

    import larft.trainer as larft_trainer

    def named(owner: Any, method: str, phase: str, after: str | None = None) -> None:
        original = getattr(owner, method)

        @functools.wraps(original)  # the signature stays the method's (larft.private_api checks it)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            previous = sampler.phase
            sampler.enter(phase)
            try:
                return original(*args, **kwargs)
            finally:
                sampler.enter(after or previous)

        setattr(owner, method, wrapper)

    named(larft_trainer.LARFTTrainer, "_generate_and_score_completions", "step: rollouts + scoring", "step: other")
    named(larft_trainer.LARFTTrainer, "_awareness_term", "step: awareness forward + backward")
    named(trl.GRPOTrainer, "_compute_loss", "step: policy forward")
    named(accelerate.Accelerator, "backward", "step: backward")
    named(torch_optimizer_class(), "step", "step: optimizer")


def _trim_after_parts() -> None:
    """`trim_phases`: the allocator's free pages handed back after the rollouts, the awareness pass and each
    backward, not only after the optimizer step (the arithmetic is untouched)."""
    import functools

    import accelerate

    import larft.trainer as larft_trainer
    from larft.malloc import release_free_memory

    def trimmed(owner: Any, method: str) -> None:
        original = getattr(owner, method)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            finally:
                release_free_memory()

        setattr(owner, method, wrapper)

    trimmed(larft_trainer.LARFTTrainer, "_generate_and_score_completions")
    trimmed(larft_trainer.LARFTTrainer, "_awareness_term")
    trimmed(accelerate.Accelerator, "backward")


def torch_optimizer_class() -> Any:
    import torch

    return torch.optim.AdamW


def worker(variant: str, steps: int, out: str, config_name: str = "demo") -> None:
    """One run of `steps` steps with its phases sampled; prints peaks, step times and rewards as JSON."""
    import resource

    from transformers import TrainerCallback

    from larft.cli import parse_train_args
    from larft.train import train

    config_file, config_flags = CONFIGS[config_name]
    flags = [*config_flags, "--output_dir", out, "--max_steps", str(steps), "--save_steps", str(steps),
             "--report_to", "none", *VARIANTS[variant][1]]
    estimate = estimate_gb(config_file, flags)
    train_args, config = parse_train_args(["--config", str(config_file), *flags])
    sampler = PhaseSampler()

    class Phases(TrainerCallback):
        """Names what the process is doing: the check before runs in on_train_begin (the trainer's own
        callback), the steps from the first on_step_begin to on_train_end, saves inside them."""

        def on_step_begin(self, args, state, control, **kwargs):
            if sampler.phase == "load, check before":
                sampler.enter("steps")

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:
                sampler.enter("checkpoint")

        def on_save(self, args, state, control, **kwargs):
            sampler.enter("steps")

        def on_train_end(self, args, state, control, **kwargs):
            sampler.enter("check after, final save")

    if os.environ.get("LARFT_MEMORY_FINE") == "1":
        _name_step_parts(sampler)
    if os.environ.get("LARFT_MEMORY_TRIM_PHASES") == "1":
        _trim_after_parts()
    sampler.enter("load, check before")
    with sampler:
        train(train_args, config, extra_callbacks=[Phases()])
    records = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    print("RESULT " + json.dumps({
        "phase_peak_rss_gb": sampler.peaks,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,  # kB -> GB
        "step_seconds": [r["step_seconds"] for r in records],
        "rewards": [r["reward_mean"] for r in records],
        "estimate_gb": estimate,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--config", choices=list(CONFIGS), default="demo")
    parser.add_argument("--fine", action="store_true", help="split the steps phase into its parts (kept under "
                        "`<config>-<steps>-fine/<variant>`)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--redo", default="", help="comma-separated variants to measure again")
    parser.add_argument("--worker", choices=list(VARIANTS))
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out, args.config)
        return
    result = read_json(RESULTS)
    runs = result.setdefault("runs", {})
    prefix = "" if (args.config, args.steps, args.fine) == ("demo", 3, False) else \
        f"{args.config}-{args.steps}{'-fine' if args.fine else ''}/"
    for key in filter(None, args.redo.split(",")):
        runs.pop(prefix + key, None)
    for variant in args.variants.split(","):
        key = prefix + variant
        if key in runs and runs[key].get("steps") == args.steps:
            continue
        env = {**os.environ, **VARIANTS[variant][0], **({"LARFT_MEMORY_FINE": "1"} if args.fine else {})}
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(args.steps),
                                   "--config", args.config, "--out", tmp], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"{variant} failed (exit {proc.returncode})")
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        runs[key] = {"steps": args.steps, "commit": commit,
                     **json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])}
        run = runs[key]
        print(f"{key:8s} peak {run['peak_rss_gb']:.2f} GB (estimate {run['estimate_gb']:.2f}), later steps "
              f"{statistics.median(run['step_seconds'][1:] or run['step_seconds']):.1f} s; "
              + ", ".join(f"{k} {v['rss']:.2f}" for k, v in run["phase_peak_rss_gb"].items()), flush=True)
        result.update({"what": "peak RSS per phase of the demo's settings, a fresh process per variant",
                       "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                       "command": "python benchmarks/memory.py " + " ".join(sys.argv[1:])})
        write_json(RESULTS, result)


if __name__ == "__main__":
    main()
