"""LARFT from Python: your own prompts with length targets, plus a reward function of yours.

    .venv/bin/python examples/train_python_api.py --max_steps 2        # bundled SmolLM2-135M: ~3.5 min, 2 CPU cores
    .venv/bin/python examples/train_python_api.py --model Qwen/Qwen2.5-0.5B-Instruct --max_steps 100

The trainer adds LARFT's length reward (read from each row's `target`, `constraint`, `unit`)
in front of your reward functions; `reward_weights` weighs them in that order.
"""

from __future__ import annotations

import argparse
import time

from datasets import Dataset

from larft import LARFTConfig, LARFTTrainer, final_text
from larft.models import load_tokenizer, resolve_model

TOPICS = [
    "Describe how a lighthouse works.", "Explain why bread rises.", "Describe a walk through a pine forest.",
    "Explain how a bicycle stays upright.", "Describe the smell of rain.", "Explain what a library is for.",
    "Describe a busy harbour at dawn.", "Explain how bees make honey.",
]
WORDING = {"equal": "Answer in about {n} words.", "at_most": "Answer in at most {n} words."}


def length_prompts() -> Dataset:
    """One row per prompt: the chat prompt and its length target (the columns LARFT reads)."""
    rows = []
    for i, topic in enumerate(TOPICS):
        target, constraint = (16, 24, 32, 48)[i % 4], ("equal", "at_most")[i % 2]
        rows.append({"prompt": [{"role": "user", "content": f"{topic} {WORDING[constraint].format(n=target)}"}],
                     "target": target, "constraint": constraint, "unit": "words"})
    return Dataset.from_list(rows)


def ends_with_a_sentence(prompts: list, completions: list, **columns: object) -> list[float | None]:
    """A reward of your own: 1 when the answer ends a sentence, 0 when it stops mid-sentence
    (returning None for a completion would mean "cannot score this one")."""
    texts = [final_text(c[-1]["content"] if isinstance(c, list) else c) for c in completions]
    return [1.0 if t.rstrip().endswith((".", "!", "?")) else 0.0 for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (bundled SmolLM2-135M-Instruct), an HF id or a path")
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--output_dir", default="outputs/python-api")
    args = parser.parse_args()

    model = resolve_model(args.model)  # 'default' -> the bundled model's cached HF folder
    config = LARFTConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_generations=4,                # 4 rollouts per prompt, 2 prompts per step
        per_device_train_batch_size=8,
        max_completion_length=64,
        learning_rate=1e-5,
        reward_weights=[1.0, 0.5],        # length reward first, then ends_with_a_sentence
        report_to="none",
        save_strategy="no",               # no checkpoint-N (with optimizer state); save_model below
        seed=0,
    )
    trainer = LARFTTrainer(
        model=model,
        reward_funcs=[ends_with_a_sentence],
        args=config,
        train_dataset=length_prompts(),
        processing_class=load_tokenizer(model),
    )
    start = time.perf_counter()
    trainer.train()
    trainer.save_model(args.output_dir)  # model + the LARFT model card (README.md)
    logged = [r for r in trainer.state.log_history if "reward" in r]
    for record in logged:
        print(f"step {record['step']}: reward {record['reward']:.3f} (length {record['rewards/length_reward/mean']:.3f}, "
              f"sentence {record['rewards/ends_with_a_sentence/mean']:.3f}), "
              f"length error {record['length_error_mean']:.3f}")
    print(f"trained {trainer.state.global_step} steps in {time.perf_counter() - start:.0f} s; "
          f"model and card in {args.output_dir}")


if __name__ == "__main__":
    main()
