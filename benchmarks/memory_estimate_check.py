"""Does larft.memory_estimate predict the memory of a real training step? Estimate vs measurement on CPU.

For each variant, a fresh process builds the model from its config with random weights (no download),
then runs ONE LARFT training micro-step the way LARFTTrainer runs it on one process:
- the counting examples of the micro-batch (one per rollout: a shared prompt prefix, the rollout's text,
  a label), `larft.awareness.awareness_loss` forward and backward first (`_awareness_backward_first`);
- the policy micro-batch through TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`, as
  GRPOTrainer patches the model; log-probs and entropy of the completion tokens), TRL's clipped GRPO
  loss with the entropy bonus, backward;
- an AdamW step (TRL's default `adamw_torch_fused`), gradients then set to None.
Variants: the bundled SmolLM2-135M's config (fp32, bf16 autocast, bf16 with activation checkpointing,
and `-together`: the counting pass on top of the policy's graph with one backward for both, as
LARFTTrainer runs on several processes), a Qwen2.5-0.5B-shaped model (bf16 autocast, as larft runs on
a CPU with native bf16), and `wide-mlp`, a calibration shape where one layer outweighs the LM head.
bf16 variants wrap the model's forward in CPU autocast, as accelerate does for `bf16: true`. AdamW's
state is allocated before the measured step (a step at learning rate 0), and the gradients are alive
(zeros) when it starts, as in the second micro-batch of a gradient accumulation: the steady state. Left
padding on a few rows makes the batches padded, as GRPO's are.

Memory is the process's resident set: the peak (VmHWM, reset through /proc/self/clear_refs just
before the step) minus the resident size after the imports and a warm-up (so Python, torch and the
thread pools are not counted; the estimate's fixed overhead is 0 on CPU). glibc is told to map every
buffer above 64 KiB on its own (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at
once and the peak is the peak of live memory (larft train's own allocator tuning keeps freed memory
on purpose, which this would count as live).

    .venv/bin/python benchmarks/memory_estimate_check.py [--variants smollm2-fp32,smollm2-bf16,...]
        [--rows 4] [--prompt 64] [--completion 192] [--threads 1]

Writes benchmarks/results/memory_estimate.json: per variant the estimate's parts, the measured peak and
the gap (measured - estimated, and its share of the measurement); and (`configs_8x80gb`, arithmetic
only, `--configs-only` for just that) the estimates of configs/paper.yaml, paper-release.yaml and
qwen2.5-7b-8gpu.yaml on 8 x 80 GB under DDP, ZeRO-3 and FSDP, and which ZeRO-3 settings fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory_estimate.json"
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

#: a Qwen2.5-0.5B-shaped model (its config.json's shapes), random weights
QWEN05B = dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
               num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
               max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0)
#: a calibration shape whose one-layer terms outweigh the LM head's (wide MLP, small vocabulary): it checks
#: the recomputed layer of activation checkpointing and the backward's working set
WIDE_MLP = dict(hidden_size=576, intermediate_size=8192, num_hidden_layers=6, num_attention_heads=9,
                num_key_value_heads=3, vocab_size=2048, tie_word_embeddings=True, max_position_embeddings=4096)
#: name -> (model, bf16 autocast, activation checkpointing, awareness backward first, rows, prompt, completion);
#: rows / prompt / completion None: the command line's
VARIANTS = {
    "smollm2-fp32": ("smollm2", False, False, True, None, None, None),
    "smollm2-bf16": ("smollm2", True, False, True, None, None, None),
    "smollm2-bf16-ckpt": ("smollm2", True, True, True, None, None, None),
    "qwen0.5b-bf16": ("qwen0.5b", True, False, True, None, None, None),
    "qwen0.5b-fp32": ("qwen0.5b", False, False, True, None, None, None),
    # the counting pass built on the policy's graph, one backward for both (LARFTTrainer on N > 1 processes)
    "smollm2-bf16-together": ("smollm2", True, False, False, None, None, None),
    "wide-mlp-fp32": ("wide-mlp", False, False, True, 8, 64, 448),
    "wide-mlp-fp32-ckpt": ("wide-mlp", False, True, True, 8, 64, 448),
}
DEFAULT_VARIANTS = ("smollm2-fp32,smollm2-bf16,smollm2-bf16-ckpt,smollm2-bf16-together,qwen0.5b-bf16,"
                    "wide-mlp-fp32,wide-mlp-fp32-ckpt")


def model_config(name: str):
    if name == "smollm2":  # the bundled model's config, read from its GGUF file (no weights, no tokenizer)
        from transformers import AutoConfig

        from larft.models import bundled_gguf_path

        gguf = bundled_gguf_path()
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    from transformers import LlamaConfig, Qwen2Config

    if name == "wide-mlp":
        return LlamaConfig(**WIDE_MLP)
    return Qwen2Config(**{k: v for k, v in QWEN05B.items() if k != "model_type"})


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, *rest = line.split()
            if key in ("VmRSS:", "VmHWM:"):
                out[key[:-1]] = int(rest[0]) * 1024
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    """One variant, in this (fresh) process: the measured step and the resident sizes around it."""
    import torch

    torch.set_num_threads(spec["threads"])
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from larft.awareness import awareness_loss

    torch.manual_seed(0)
    (torch.randn(64, 64) @ torch.randn(64, 64)).sum()  # thread pools and kernels up before the baseline
    config = model_config(spec["model"])
    baseline = _status()["VmRSS"]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.train()
    for module in model.modules():  # GRPOConfig.disable_dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if spec["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))  # as GRPOTrainer does
    if spec["bf16"]:  # accelerate's native AMP: the forward under autocast
        model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    after_model = _status()["VmRSS"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0, fused=True)

    rows, prompt, completion = spec["rows"], spec["prompt"], spec["completion"]
    vocab = config.vocab_size
    g = torch.Generator().manual_seed(0)
    # the policy micro-batch: left-padded prompts, completions right-padded (row i is i x 3 tokens shorter)
    seq = prompt + completion
    input_ids = torch.randint(10, vocab, (rows, seq), generator=g)
    attention_mask = torch.ones(rows, seq, dtype=torch.long)
    completion_mask = torch.ones(rows, completion, dtype=torch.long)
    for i in range(1, rows):
        attention_mask[i, : 3 * i] = 0
        completion_mask[i, completion - 3 * i:] = 0
    attention_mask[:, prompt:] = completion_mask
    # the counting examples: shared prefix, the rollout's text, label; left padding
    a_prefix, a_label = spec["awareness_prompt_tokens"], spec["awareness_label_tokens"]
    a_seq = a_prefix + completion + a_label
    a_ids = torch.randint(10, vocab, (rows, a_seq), generator=g)
    a_ids[:, :a_prefix] = a_ids[0, :a_prefix]
    a_mask = torch.ones(rows, a_seq, dtype=torch.long)
    a_labels = torch.full((rows, a_seq), -100, dtype=torch.long)
    a_labels[:, -a_label:] = a_ids[:, -a_label:]
    for i in range(1, rows):  # shorter texts: left padding before the shared prefix
        a_mask[i, : 3 * i] = 0
        a_ids[i, 3 * i: 3 * i + a_prefix] = a_ids[0, :a_prefix]
    a_prefix_len = torch.full((rows,), a_prefix, dtype=torch.long)

    def phase_peak(name: str, into: dict) -> None:  # this phase's peak, then the next phase's starts now
        into[f"{name}_peak"] = _status()["VmHWM"] - baseline
        _reset_peak()

    def step() -> dict[str, float]:
        times: dict[str, float] = {}
        t = time.perf_counter()
        loss_a = 0.3 * awareness_loss(model, a_ids, a_mask, a_labels, a_prefix_len, reduction="sum") / a_label
        if spec["awareness_first"]:
            loss_a.backward()  # LARFTTrainer._awareness_backward_first: its graph is freed before the policy's
            loss_a = 0.0
        times["awareness_s"] = time.perf_counter() - t
        phase_peak("awareness", times)
        t = time.perf_counter()
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :-completion] = -100
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        logps, entropy = out.log_probs[:, -completion:], out.entropy[:, -completion:]
        ratio = torch.exp(logps - logps.detach())
        advantages = torch.randn(rows, 1, generator=g)
        per_token = -torch.min(ratio * advantages, torch.clamp(ratio, 0.8, 1.28) * advantages) - 0.01 * entropy
        loss = (per_token * completion_mask).sum() / completion_mask.sum() + loss_a
        loss.backward()  # with awareness_first off: one backward through both graphs (N > 1 processes)
        times["policy_s"] = time.perf_counter() - t
        phase_peak("policy", times)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phase_peak("optimizer_step", times)
        return times

    # AdamW's state first (learning rate 0: the weights do not move), as every step after the first sees it
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)  # gradients alive, as in a later micro-batch of an accumulation
    for group in optimizer.param_groups:
        group["lr"] = 1e-6
    before_step = _status()["VmRSS"]
    reset = _reset_peak()
    times = step()
    status = _status()
    peak = max(times["awareness_peak"], times["policy_peak"], times["optimizer_step_peak"])
    return {
        "baseline_rss": baseline, "model_rss": after_model - baseline, "state_rss": before_step - baseline,
        "peak": peak, "after_step_rss": status["VmRSS"] - baseline,
        "peak_reset": reset, "n_params": sum(p.numel() for p in model.parameters()), **times,
    }


def estimate(spec: dict, config):
    from larft.memory_estimate import estimate_memory

    return estimate_memory(
        config, dtype_bytes=4, mixed_precision=spec["bf16"], strategy="single", num_processes=1,
        per_device_train_batch_size=spec["rows"], max_prompt_length=spec["prompt"],
        max_completion_length=spec["completion"], activation_checkpointing=spec["checkpointing"], beta=0.0,
        awareness=True, awareness_prompt_tokens=spec["awareness_prompt_tokens"],
        awareness_label_tokens=spec["awareness_label_tokens"], steps_per_generation=1, device_type="cpu",
        awareness_backward_first=spec["awareness_first"])


#: the 7B configs, estimated on 8 x 80 GB (the model's shapes: tests/data/qwen2.5-7b-config.json, no download)
CONFIGS = ("configs/paper.yaml", "configs/paper-release.yaml", "configs/qwen2.5-7b-8gpu.yaml")
QWEN7B_CONFIG = ROOT / "tests" / "data" / "qwen2.5-7b-config.json"
DEVICE_MEMORY = int(80e9)


def config_estimates(num_processes: int = 8) -> dict:
    """Estimates for the 7B configs as they are under DDP, ZeRO-3 and FSDP; then, under ZeRO-3, the
    settings that fit: micro-batches of B rollouts with 16 / B accumulation steps (the same 16 rollouts per
    GPU per optimizer step, 128 on 8 GPUs = the paper's PPO mini-batch of 32 prompts), steps_per_generation
    4 x 16 / B (the same 512-rollout generation round), activation checkpointing on; with the configured
    prompt limit and with 128-token prompts (larft's generated prompts are ~60 tokens)."""
    import yaml
    from transformers import Qwen2Config

    from larft.memory_estimate import GB, estimate_for

    model = Qwen2Config.from_json_file(str(QWEN7B_CONFIG))
    out = {}
    short = lambda e: {"total_gb": round(e.total / GB, 1), "fits": e.fits, "phase": e.phase,  # noqa: E731
                       "biggest": f"{e.biggest.name} {e.biggest.bytes / GB:.1f} GB",
                       "phases_gb": {k: round(v / GB, 1) for k, v in e.phases.items()}}
    for path in CONFIGS:
        data = yaml.safe_load((ROOT / path).read_text())
        entry: dict = {"as_is": {}, "zero3_fit": []}
        for strategy in ("ddp", "zero3", "fsdp"):
            est = estimate_for(data, model, num_processes=num_processes, strategy=strategy,
                               device_memory=DEVICE_MEMORY, device_type="cuda")
            entry["as_is"][strategy] = short(est)
        for prompt in (int(data.get("max_prompt_tokens", 1024)), 128):
            for rows in (16, 8, 4, 2, 1):
                accumulation = 16 // rows
                variant = {**data, "per_device_train_batch_size": rows, "gradient_accumulation_steps": accumulation,
                           "steps_per_generation": 4 * accumulation, "activation_checkpointing": True,
                           "max_prompt_tokens": prompt}
                est = estimate_for(variant, model, num_processes=num_processes, strategy="zero3",
                                   device_memory=DEVICE_MEMORY, device_type="cuda")
                entry["zero3_fit"].append({"max_prompt_tokens": prompt, "per_device_train_batch_size": rows,
                                           "gradient_accumulation_steps": accumulation,
                                           "steps_per_generation": 4 * accumulation,
                                           "rollout_tokens_per_micro_batch": rows * est.settings["seq_len"],
                                           **short(est)})
        # at the release's micro-batches (2 rollouts, 8 accumulation steps), what else moves the peak
        options = {
            "as configured": {},
            "vLLM colocate 0.3": {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3},
            "hf generation of 32 rollouts per GPU (steps_per_generation 16)": {"use_vllm": False,
                                                                                "steps_per_generation": 16},
            "flash_attention_2": {"attn_implementation": "flash_attention_2"},
        }
        entry["zero3_options"] = []
        for prompt in (int(data.get("max_prompt_tokens", 1024)), 128):
            for label, extra in options.items():
                variant = {**data, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 8,
                           "steps_per_generation": 32, "activation_checkpointing": True, "max_prompt_tokens": prompt}
                overrides = {k: v for k, v in extra.items() if k == "attn_implementation"}
                variant.update({k: v for k, v in extra.items() if k != "attn_implementation"})
                est = estimate_for(variant, model, num_processes=num_processes, strategy="zero3",
                                   device_memory=DEVICE_MEMORY, device_type="cuda", **overrides)
                entry["zero3_options"].append({"max_prompt_tokens": prompt, "option": label, **short(est)})
        out[path] = entry
    return out


def main() -> None:
    from _runs import read_json, write_json

    from larft.memory_estimate import AWARENESS_LABEL_TOKENS, AWARENESS_PROMPT_TOKENS, GB

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--rows", type=int, default=4, help="rollouts per micro-batch")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per rollout")
    parser.add_argument("--completion", type=int, default=192, help="completion tokens per rollout")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    parser.add_argument("--configs-only", action="store_true",
                        help="only the 7B configs' estimates (no measurement)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    results = read_json(RESULTS)
    results["configs_8x80gb"] = config_estimates()
    for path, entry in results["configs_8x80gb"].items():
        print(path, {k: (v["total_gb"], v["fits"], v["phase"], v["biggest"]) for k, v in entry["as_is"].items()})
        for row in entry["zero3_fit"]:
            print(f"  zero3 prompt<={row['max_prompt_tokens']} B={row['per_device_train_batch_size']} "
                  f"acc={row['gradient_accumulation_steps']}: {row['total_gb']} GB fits={row['fits']} "
                  f"({row['phase']}; {row['phases_gb']})")
        for row in entry["zero3_options"]:
            print(f"  zero3 B=2 acc=8 prompt<={row['max_prompt_tokens']} {row['option']}: {row['total_gb']} GB "
                  f"fits={row['fits']} ({row['phase']}; {row['phases_gb']}; biggest {row['biggest']})")
    write_json(RESULTS, results)
    if args.configs_only:
        return
    results.setdefault("variants", {})
    results["setup"] = {
        "rows": args.rows, "prompt_tokens": args.prompt, "completion_tokens": args.completion,
        "awareness_prompt_tokens": AWARENESS_PROMPT_TOKENS, "awareness_label_tokens": AWARENESS_LABEL_TOKENS,
        "threads": args.threads, "machine": platform.processor() or platform.machine(),
        "method": "peak RSS (VmHWM reset before the step) minus RSS after imports, fresh process per variant, "
                  "MALLOC_MMAP_THRESHOLD_=65536",
    }
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "2",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        model, bf16, ckpt, first, rows, prompt, completion = VARIANTS[name]
        spec = dict(model=model, bf16=bf16, checkpointing=ckpt, awareness_first=first, rows=rows or args.rows,
                    prompt=prompt or args.prompt, completion=completion or args.completion, threads=args.threads,
                    awareness_prompt_tokens=AWARENESS_PROMPT_TOKENS, awareness_label_tokens=AWARENESS_LABEL_TOKENS)
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{name}: the worker failed\n{proc.stderr[-3000:]}")
        measured = json.loads(line[len("RESULT "):])
        est = estimate(spec, model_config(model))
        gap = measured["peak"] - est.total
        results["variants"][name] = {
            "model": model, "bf16_autocast": bf16, "activation_checkpointing": ckpt, "awareness_backward_first": first,
            "rows": spec["rows"], "prompt_tokens": spec["prompt"], "completion_tokens": spec["completion"],
            "measured_peak_gb": round(measured["peak"] / GB, 3),
            "estimated_peak_gb": round(est.total / GB, 3),
            "gap_gb": round(gap / GB, 3), "gap_share_of_measured": round(gap / measured["peak"], 3),
            "estimated_phase": est.phase,
            "estimated_phases_gb": {k: round(v / GB, 3) for k, v in est.phases.items()},
            "measured": {k: (round(v / GB, 3) if k.endswith(("rss", "peak")) else v)
                         for k, v in measured.items()},
            "estimate": est.to_dict(), "seconds": round(time.time() - start, 1), "commit": commit,
        }
        print(f"{name}: measured {measured['peak'] / GB:.3f} GB, estimated {est.total / GB:.3f} GB "
              f"(gap {gap / GB:+.3f} GB, {gap / measured['peak']:+.1%}); weights+state measured "
              f"{measured['state_rss'] / GB:.3f} GB; measured phases: awareness {measured['awareness_peak'] / GB:.3f}, "
              f"policy {measured['policy_peak'] / GB:.3f}, "
              f"optimizer step {measured['optimizer_step_peak'] / GB:.3f} GB",
              flush=True)
        print(est.format(), flush=True)
        write_json(RESULTS, results)


if __name__ == "__main__":
    main()
