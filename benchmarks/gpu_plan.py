"""Which GPU setup fits which model size: larft's memory estimate (`larft.memory_estimate`, the arithmetic
of `larft train --dry_run`) for Qwen2.5 0.5B-7B and Llama-3.1-8B shapes (their public config.json values,
no weights), under the training paths a user picks from, with the 7B recipe's settings
(configs/qwen2.5-7b-8gpu.yaml: micro-batches of 2 rollouts of <= 8000 tokens, prompts <= 2048 tokens,
activation checkpointing, vLLM colocate at 30%). Estimates, not measurements: docs/usage.md gives the
estimate's measured gap on CPU. Writes benchmarks/results/gpu_plan.json and prints the table of
docs/usage.md ("Training on GPUs"): per model and path, the smallest of 24 / 48 / 80 GB GPUs it fits, with
the estimated peak there (vLLM colocate's 30% share is of that GPU).

    .venv/bin/python benchmarks/gpu_plan.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_plan.json"

#: the shapes of the models' config.json files (Hugging Face Hub, Qwen/Qwen2.5-*-Instruct, meta-llama/Llama-3.1-8B-Instruct)
MODELS = {
    "Qwen2.5-0.5B": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)),
    "Qwen2.5-1.5B": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)),
    "Qwen2.5-3B": ("qwen2", dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)),
    "Qwen2.5-7B": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                                 num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)),
    "Llama-3.1-8B": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)),
}

#: training paths: (label, strategy, processes, overrides of the 7B recipe's settings)
PATHS = [
    ("1 GPU, full", "single", 1, {"dtype": "float32"}),
    ("1 GPU, LoRA r16", "single", 1, {"lora_r": 16, "beta": 0.0}),
    ("8 GPUs DDP, full", "ddp", 8, {"dtype": "float32"}),
    ("8 GPUs DDP, LoRA r16", "ddp", 8, {"lora_r": 16, "beta": 0.0}),
    ("8 GPUs ZeRO-3, full", "zero3", 8, {}),
]
DEVICES = (24e9, 48e9, 80e9)


def model_config(kind: str, shape: dict):
    from transformers import LlamaConfig, Qwen2Config

    return (Qwen2Config if kind == "qwen2" else LlamaConfig)(**shape)


def main() -> None:
    from larft.memory_estimate import estimate_for

    recipe = yaml.safe_load((ROOT / "configs" / "qwen2.5-7b-8gpu.yaml").read_text())
    rows = []
    for name, (kind, shape) in MODELS.items():
        config = model_config(kind, shape)
        for label, strategy, processes, overrides in PATHS:
            settings = {**recipe, **overrides}
            per_device = {}
            for memory in DEVICES:
                est = estimate_for(settings, config, num_processes=processes, strategy=strategy, device_memory=int(memory),
                                   device_type="cuda")
                per_device[f"{memory / 1e9:.0f}GB"] = {"estimate_gb": round(est.total / 1e9, 1), "fits": est.fits,
                                                       "biggest": est.biggest.name}
            rows.append({"model": name, "path": label, "devices": per_device})
    RESULTS.write_text(json.dumps({"what": __doc__.split("\n\n")[0], "command": "python benchmarks/gpu_plan.py",
                                   "settings": "configs/qwen2.5-7b-8gpu.yaml, overrides per path", "rows": rows},
                                  indent=2) + "\n")
    paths = [p[0] for p in PATHS]
    print("| model | " + " | ".join(paths) + " |")
    print("|---|" + "---|" * len(paths))
    for name in MODELS:
        cells = []
        for label in paths:
            row = next(r for r in rows if r["model"] == name and r["path"] == label)
            smallest = next((k for k, d in row["devices"].items() if d["fits"]), None)
            cells.append(f"{smallest[:-2]} GB ({row['devices'][smallest]['estimate_gb']:.0f})" if smallest else
                         f"no ({row['devices']['80GB']['estimate_gb']:.0f} at 80)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
