"""What a user would train instead of LARFT: rejection-sampling SFT, hindsight-relabelled SFT and
length DPO, on equal footing.

`larft train --method rft` / `--method hir` / `--method dpo` run in rounds. Each round samples G
answers per prompt from the current model (the GRPO run's num_generations, temperature, top_p and
max_completion_length), scores them with the same length reward, then
- rft: fine-tunes on the answers with reward >= rft_threshold (TRL's SFTTrainer);
- hir: hindsight instruction relabelling: fine-tunes on *every* answer that ended on its own, its
  prompt's number replaced by the answer's true length ("In about 64 words" -> "In about 41
  words" for a 41-word answer; TRL's SFTTrainer). Every sample is a correct example of control,
  where rft keeps the few that landed near the asked length;
- dpo: trains on one (best, worst) pair per prompt whose best beats its worst (TRL's DPOTrainer,
  reference model: the base model, as GRPO's KL term).

Equal budget: a GRPO run of these settings samples max_steps x per_device_train_batch_size x
gradient_accumulation_steps (/ num_iterations) completions, G per prompt; the baselines sample
exactly as many, split over `baseline_rounds` rounds, from the same training rows (a seeded
shuffle, like GRPO's sampler), with the run's rollout engine (`rollout_backend` hf, or ct2
re-synced to the weights each round). Optimizer settings (learning rate, scheduler, batch size,
accumulation, seed, precision) are the run's own; GRPO-only fields (beta, entropy_coef,
awareness_*, scale_rewards, ...) are not used. Outputs match `larft train`'s: the model and
tokenizer in output_dir, larft_run.json, metrics.jsonl (one line per round, with the tokens
generated), rollouts.jsonl, the held-out length check and the model card (README.md, the
baseline's own); --push_to_hub uploads them as transformers' Trainer does.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from larft.errors import UserError
from larft.head_tiles import DEFAULT_TOKENS, token_tile
from larft.logs import get_logger

logger = get_logger(__name__)

METHODS = ("larft", "rft", "hir", "dpo")


@dataclass
class BaselineConfig:
    """The training method, and the settings of the RFT / DPO baselines (`larft train` options)."""

    method: str = field(
        default="larft",
        metadata={"help": "larft (GRPO + awareness loss; GRPO only with awareness_lambda_max 0), or a baseline "
                          "that samples as many completions as that GRPO run: rft (rejection-sampling SFT), hir "
                          "(hindsight-relabelled SFT) or dpo (length DPO)."},
    )
    baseline_rounds: int = field(
        default=4, metadata={"help": "rft/hir/dpo: sample-then-train rounds, over which the GRPO run's sampled "
                                     "completions are split evenly."},
    )
    rft_threshold: float = field(
        default=0.8, metadata={"help": "rft: keep the answers whose length reward is >= this (1 = inside the "
                                       "allowed region, 0.8 = within 20%% of the target)."},
    )
    rft_epochs: float = field(default=1.0, metadata={"help": "rft / hir: SFT epochs over each round's examples."})
    dpo_beta: float = field(default=0.1, metadata={"help": "dpo: DPO's beta (TRL's default 0.1)."})
    dpo_epochs: float = field(default=1.0, metadata={"help": "dpo: DPO epochs over each round's pairs."})

    def check_baseline(self) -> None:
        """Bad values, and options the baselines do not support, are one clear error naming the option."""
        if self.method not in METHODS:
            raise UserError(f"--method: unknown value {self.method!r}; expected one of {', '.join(METHODS)} "
                            "(GRPO only: --method larft --awareness_lambda_max 0)")
        if self.baseline_rounds < 1:
            raise UserError(f"--baseline_rounds must be >= 1, got {self.baseline_rounds}")
        if not 0.0 <= self.rft_threshold <= 1.0:
            raise UserError(f"--rft_threshold must be in [0, 1] (a length reward), got {self.rft_threshold}")
        for name in ("rft_epochs", "dpo_epochs", "dpo_beta"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name} must be > 0, got {getattr(self, name)}")
        if self.method == "larft":
            return
        for option, used in (("--use_peft / --lora_r / --load_in_4bit", getattr(self, "use_peft", False)),
                             ("--reward_funcs", getattr(self, "reward_funcs", None)),
                             ("--resume", getattr(self, "resume", False))):
            if used:
                raise UserError(f"--method {self.method} does not support {option} (the baselines train all weights "
                                "with the length reward only, in one go)")


# -- the budget ------------------------------------------------------------------------------
def grpo_rollouts(config: Any, n_rows: int) -> int:
    """Completions a GRPO run of `config` samples: one generation batch per steps_per_generation x
    num_iterations micro-steps, i.e. max_steps x per_device_train_batch_size x
    gradient_accumulation_steps x processes / num_iterations (without max_steps: every row, G
    times, per epoch)."""
    if config.max_steps > 0:
        return (config.max_steps * config.per_device_train_batch_size * config.gradient_accumulation_steps
                * config.world_size) // config.num_iterations
    return math.ceil(config.num_train_epochs * n_rows) * config.num_generations


def round_prompts(rows: Sequence[dict[str, Any]], n_prompts: int, rounds: int, seed: int) -> list[list[dict[str, Any]]]:
    """`n_prompts` rows in a seeded shuffled order (a new shuffle each pass over the rows, as
    GRPO's sampler), split into `rounds` consecutive parts of (nearly) equal size."""
    if not rows:
        raise UserError("no training rows")
    if n_prompts < rounds:
        raise UserError(f"--baseline_rounds {rounds} is more than the {n_prompts} prompts of the GRPO budget "
                        "(max_steps x per_device_train_batch_size x gradient_accumulation_steps / num_generations)")
    order: list[int] = []
    epoch = 0
    while len(order) < n_prompts:
        perm = list(range(len(rows)))
        random.Random(seed + epoch).shuffle(perm)
        order += perm
        epoch += 1
    bounds = [n_prompts * r // rounds for r in range(rounds + 1)]
    return [[rows[i] for i in order[bounds[r]:bounds[r + 1]]] for r in range(rounds)]


# -- what each round trains on ------------------------------------------------------------
def _eligible(group: Any, skip_truncated: bool) -> list[int]:
    return [i for i, s in enumerate(group.samples) if not (skip_truncated and s.truncated)]


def rft_examples(groups: Sequence[Any], threshold: float, skip_truncated: bool = False) -> list[dict[str, Any]]:
    """Every sample with reward >= threshold, as a prompt-completion example (SFTTrainer's
    conversational format; the loss is on the completion only). With `skip_truncated` (the
    run's mask_truncated_completions), answers cut off at the budget are never kept."""
    out = []
    for group in groups:
        for i in _eligible(group, skip_truncated):
            if group.rewards[i] >= threshold:
                out.append({"prompt": group.row["prompt"],
                            "completion": [{"role": "assistant", "content": group.samples[i].text}],
                            "reward": group.rewards[i]})
    return out


def relabel_prompt(row: dict[str, Any], length: int) -> list[dict[str, Any]] | None:
    """The row's prompt with its asked length replaced by `length` in the last user message, or None
    when that cannot be done safely: a range row (two numbers), a target that is not written exactly
    once as a number there, or a prompt that is not a list of chat messages."""
    from larft.length_spec import LengthSpec

    target, prompt = LengthSpec.of(row).goal, row.get("prompt")
    if not isinstance(target, int) or not isinstance(prompt, list):
        return None
    users = [i for i, m in enumerate(prompt) if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(prompt[users[-1]].get("content"), str):
        return None
    content = prompt[users[-1]]["content"]
    number = re.compile(rf"(?<![\d.]){target}(?![\d]|\.\d)")
    if len(number.findall(content)) != 1:
        return None
    out = [dict(m) for m in prompt]
    out[users[-1]]["content"] = number.sub(str(length), content)
    return out


def hir_examples(groups: Sequence[Any], tokenizer: Any = None) -> list[dict[str, Any]]:
    """Every answer that ended on its own (not cut at the token budget: its length is what the model
    chose) and is longer than one unit, as a prompt-completion example whose prompt asks for the
    answer's true length in the row's unit (`relabel_prompt`); rows whose prompt cannot be relabelled
    give none. `length` in each example is that true length."""
    from larft.length import final_text, measure
    from larft.length_spec import LengthSpec

    out = []
    for group in groups:
        unit = LengthSpec.of(group.row).unit
        for sample in group.samples:
            if sample.truncated:
                continue
            length = measure(final_text(sample.text, group.reasoning), unit, tokenizer=tokenizer, extract=False)
            prompt = relabel_prompt(group.row, length) if length > 1 else None
            if prompt is not None:
                out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": sample.text}],
                            "length": length})
    return out


def dpo_pairs(groups: Sequence[Any], skip_truncated: bool = False) -> list[dict[str, Any]]:
    """One (chosen, rejected) = (highest, lowest reward) pair per prompt, ties to the first; a
    prompt whose samples all score the same gives no pair (nothing to prefer)."""
    from larft.best_of import pick_best, pick_worst

    out = []
    for group in groups:
        keep = _eligible(group, skip_truncated)
        if len(keep) < 2:
            continue
        rewards = [group.rewards[i] for i in keep]
        best, worst = keep[pick_best(rewards)], keep[pick_worst(rewards)]
        if group.rewards[best] <= group.rewards[worst]:
            continue
        out.append({"prompt": group.row["prompt"],
                    "chosen": [{"role": "assistant", "content": group.samples[best].text}],
                    "rejected": [{"role": "assistant", "content": group.samples[worst].text}],
                    "chosen_reward": group.rewards[best], "rejected_reward": group.rewards[worst]})
    return out


# -- one round of training (TRL's trainers) ---------------------------------------------------
#: TrainingArguments fields the baselines take from the run's config (the optimizer, not GRPO's loss)
SHARED_FIELDS = ("learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "weight_decay",
                 "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "seed", "data_seed", "bf16", "fp16", "use_cpu",
                 "activation_checkpointing", "disable_tqdm", "trust_remote_code")


def trainer_args(cls: type, config: Any, epochs: float, **extra: Any) -> Any:
    """An SFTConfig / DPOConfig with the run's optimizer settings, `epochs` over the round's
    data, nothing saved or reported (larft writes metrics.jsonl and the final model itself)."""
    names = {f.name for f in fields(cls)}
    shared = {k: getattr(config, k) for k in SHARED_FIELDS if k in names and hasattr(config, k)}
    return cls(output_dir=str(config.output_dir), num_train_epochs=epochs, max_steps=-1, save_strategy="no",
               report_to="none", logging_steps=1, max_length=None, **shared, **extra)


def _with_template_kwargs(examples: list[dict[str, Any]], config: Any) -> list[dict[str, Any]]:
    kwargs = getattr(config, "chat_template_kwargs", None)
    return [{**x, "chat_template_kwargs": kwargs} for x in examples] if kwargs else examples


def sft_round(model: Any, tokenizer: Any, examples: list[dict[str, Any]], config: Any, epochs: float) -> dict:
    """Fine-tune `model` in place on the kept answers with TRL's SFTTrainer."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = [{"prompt": x["prompt"], "completion": x["completion"]} for x in examples]
    trainer = SFTTrainer(model=model, args=trainer_args(SFTConfig, config, epochs),
                         train_dataset=Dataset.from_list(_with_template_kwargs(data, config)),
                         processing_class=tokenizer)
    with token_tile(getattr(config, "lm_head_token_tile", DEFAULT_TOKENS), trainer.accelerator.device):  # TRL's fused head too
        result = trainer.train()
    out = {"train_loss": result.training_loss, "train_steps": trainer.state.global_step}
    _release(trainer)
    return out


def dpo_round(model: Any, ref_model: Any, tokenizer: Any, pairs: list[dict[str, Any]], config: Any, beta: float,
              epochs: float) -> dict:
    """Train `model` in place on the (chosen, rejected) pairs with TRL's DPOTrainer."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data = [{"prompt": x["prompt"], "chosen": x["chosen"], "rejected": x["rejected"]} for x in pairs]
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=trainer_args(DPOConfig, config, epochs, beta=beta),
                         train_dataset=Dataset.from_list(_with_template_kwargs(data, config)),
                         processing_class=tokenizer)
    with token_tile(getattr(config, "lm_head_token_tile", DEFAULT_TOKENS), trainer.accelerator.device):  # TRL's fused head too
        result = trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    out = {"train_loss": result.training_loss, "train_steps": trainer.state.global_step,
           "dpo_accuracy": logged[-1]["rewards/accuracies"] if logged else None}
    _release(trainer)
    return out


def _release(trainer: Any) -> None:
    """Free a finished round's trainer now: a Trainer sits in reference cycles (its callbacks,
    accelerate's hooks), so its optimizer state (2 fp32 copies of the model) would otherwise wait
    for a full garbage collection, one more per round (a 4-round DPO run died of it at 24 GB)."""
    import gc

    trainer.optimizer = trainer.lr_scheduler = None
    trainer.accelerator.free_memory()
    del trainer
    gc.collect()


# -- the run ----------------------------------------------------------------------------------
def _round_record(groups: Sequence[Any], tokenizer: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The round's sampling metrics (GRPO's metric names where they exist) and its rollout lines."""
    from larft.length import final_text, measure
    from larft.length_spec import LengthSpec
    from larft.rewards import length_deviation

    lines, words, errors = [], [], []
    for group in groups:
        row = group.row
        spec = LengthSpec.of(row)
        target, unit, constraint = spec.required_goal(), spec.unit, spec.constraint
        for sample, reward in zip(group.samples, group.rewards):
            answer = final_text(sample.text, group.reasoning)
            length = measure(answer, unit, tokenizer=tokenizer, extract=False)
            words.append(measure(answer, "words", extract=False))
            errors.append(length_deviation(length, target, constraint))
            lines.append({"prompt": row["prompt"][-1]["content"],
                          "target": spec.as_json(), "constraint": constraint,
                          "unit": unit, "length": length, "truncated": sample.truncated, "text": sample.text,
                          "reward/length_reward": reward})
    samples = [s for g in groups for s in g.samples]
    rewards = [r for g in groups for r in g.rewards]
    n = len(samples)
    record = {
        "prompts": len(groups), "samples": n, "gen_tokens": sum(s.new_tokens for s in samples),
        "reward_mean": sum(rewards) / n, "reward_best_of_g_mean": sum(g.reward for g in groups) / len(groups),
        "length_error_mean": sum(errors) / n, "completion_words_mean": sum(words) / n,
        "truncated_rate": sum(s.truncated for s in samples) / n,
    }
    return record, lines


def rollout_sampler(config: Any, model: Any, tokenizer: Any) -> tuple[str, Any]:
    """(engine name, generate function for `sample_groups`) from the run's `rollout_backend`, as the
    GRPO run would choose it: hf (transformers generate, the default) or ct2 (CTranslate2 on CPU,
    re-synced to the model's weights before each round's sampling: `sampler.sync(model)`). vLLM
    is the GRPO trainer's own path: refused here, not silently replaced."""
    from larft.ct2_engine import choose_backend

    backend = choose_backend(config, model)
    if backend == "vllm":
        raise UserError("--method rft/hir/dpo samples with rollout_backend hf or ct2; vllm is the GRPO trainer's path")
    if backend == "hf":
        return "hf", None
    from larft.ct2_engine import records_generator

    return "ct2", records_generator(model, tokenizer, compute_type=config.rollout_compute_type, sync=False)


def _append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:  # whole lines, appended
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


#: why a round of each method can have nothing to train on
NOTHING_TO_TRAIN = {"rft": "no answer reached rft_threshold", "dpo": "no prompt with unequal rewards",
                    "hir": "no answer ended on its own inside the budget in a prompt whose number can be relabelled"}


#: each method's own options, shown on its model card
METHOD_OPTIONS = {"rft": ("baseline_rounds", "rft_threshold", "rft_epochs"), "hir": ("baseline_rounds", "rft_epochs"),
                  "dpo": ("baseline_rounds", "dpo_beta", "dpo_epochs")}


def write_card(setup: Any, train_args: Any, config: Any, rounds: int, repo_id: str | None) -> None:
    """OUTPUT_DIR/README.md: the model card of a baseline run (`larft.card`, method `train_args.method`)."""
    from larft.card import CardInfo, base_model_fields, model_card, read_length_check

    method = train_args.method
    info = CardInfo(
        model_name=(config.hub_model_id or setup.output_dir.name).split("/")[-1], config=config,
        **base_model_fields(setup.model_path), repo_id=repo_id, reward_funcs=[("length_reward", 1.0)], steps=rounds,
        length_check=read_length_check(setup.output_dir), dataset_name=setup.hub_dataset, method=method,
        method_settings={name: getattr(train_args, name) for name in METHOD_OPTIONS[method]},
    )
    model_card(info).save(setup.output_dir / "README.md")


def train_baseline(train_args: Any, config: Any) -> Path:
    """`larft train --method rft|hir|dpo`: rounds of sample -> score -> train, then the model,
    tokenizer and model card saved to output_dir (so `larft eval --model OUTPUT_DIR` works), and
    uploaded with --push_to_hub. The run is prepared as LARFT's is (`larft.run_setup`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from larft.best_of import sample_groups
    from larft.length import parse_delimiters
    from larft.malloc import tune_malloc
    from larft.run_setup import hub_repo, prepare_run, push_output

    method = train_args.method
    BaselineConfig.check_baseline(train_args)
    if method not in NOTHING_TO_TRAIN:
        raise ValueError(f"train_baseline runs --method rft, hir or dpo, not {method!r}")
    if config.world_size > 1:
        raise UserError(f"--method {method} runs in one process (launch it without accelerate/torchrun)")
    tune_malloc(config.device)  # CPU training only: where it was measured to help
    setup = prepare_run(train_args, config, resumable=False)
    output_dir, rows, tokenizer, init_kwargs = setup.output_dir, setup.rows, setup.tokenizer, setup.init_kwargs
    G = config.num_generations
    n_prompts = grpo_rollouts(config, len(rows)) // G
    plan = round_prompts(rows, n_prompts, train_args.baseline_rounds, config.seed)
    budget = {"grpo_rollouts": n_prompts * G, "prompts": n_prompts, "num_generations": G,
              "rounds": train_args.baseline_rounds, "max_completion_length": config.max_completion_length,
              "temperature": config.temperature, "top_p": config.top_p}
    setup.write_record(train_args, config, method=method, budget=budget)
    repo_id = hub_repo(config)  # --push_to_hub: the repo exists (or the error is seen) before any training
    logger.info(f"--method {method}: {train_args.baseline_rounds} rounds, {n_prompts} prompts x {G} samples "
                f"(the sampling budget of the GRPO run: {n_prompts * G} completions of <= {config.max_completion_length} "
                "tokens)")

    load_kwargs = {"trust_remote_code": config.trust_remote_code, **init_kwargs}
    model = AutoModelForCausalLM.from_pretrained(setup.model_path, **load_kwargs).to(config.device)
    ref_model = None
    if method == "dpo":  # the base model, fixed: the reference GRPO's KL term uses
        ref_model = AutoModelForCausalLM.from_pretrained(setup.model_path, **load_kwargs).to(config.device).eval()
    backend, sampler = rollout_sampler(config, model, tokenizer)
    reasoning = parse_delimiters(config.reasoning_delimiters)
    check = setup.length_check(config)
    if check:
        check.before(model)
    skip_truncated = bool(config.mask_truncated_completions)
    total_tokens = 0
    for number, round_rows in enumerate(plan, start=1):
        t0 = time.perf_counter()
        torch.manual_seed(config.seed + number)
        if sampler is not None:
            sampler.sync(model)  # the engine samples from this round's weights
        groups = sample_groups(
            model, tokenizer, round_rows, G, max_new_tokens=config.max_completion_length,
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k or 0,
            batch_size=config.generation_batch_size, chat_template_kwargs=config.chat_template_kwargs,
            reasoning=reasoning, degenerate_guard=config.degenerate_guard, refusal_floor=config.refusal_floor,
            generate=sampler,
        )
        gen_seconds = time.perf_counter() - t0
        record, rollouts = _round_record(groups, tokenizer)
        total_tokens += record["gen_tokens"]
        trained: dict[str, Any] = {"train_loss": None, "train_steps": 0}
        if method in ("rft", "hir"):
            examples = (rft_examples(groups, train_args.rft_threshold, skip_truncated) if method == "rft"
                        else hir_examples(groups, tokenizer))
            record["kept"] = len(examples)
            if examples:
                trained = sft_round(model, tokenizer, examples, config, train_args.rft_epochs)
        else:
            pairs = dpo_pairs(groups, skip_truncated)
            record["pairs"] = len(pairs)
            if pairs:
                trained = dpo_round(model, ref_model, tokenizer, pairs, config, train_args.dpo_beta,
                                    train_args.dpo_epochs)
        if not trained["train_steps"]:
            logger.warning(f"round {number}: nothing to train on ({NOTHING_TO_TRAIN[method]})")
        seconds = time.perf_counter() - t0
        line = {"step": number, "round": number, "method": method, "rollout_backend": backend, **record, "gen_tokens_total": total_tokens,
                **trained, "gen_seconds": gen_seconds, "train_seconds": seconds - gen_seconds, "step_seconds": seconds}
        _append_jsonl(output_dir / "metrics.jsonl", [line])
        if config.log_rollouts:
            _append_jsonl(output_dir / "rollouts.jsonl", [{"step": number, **r} for r in rollouts])
        print(f"[larft] round {number}/{len(plan)}: reward {record['reward_mean']:.3f}, "
              + (f"pairs {record['pairs']}" if method == "dpo" else f"kept {record['kept']}")
              + f"/{record['samples']} samples, {record['gen_tokens']} tokens generated, {seconds:.1f} s", flush=True)
    if check:
        check.finish(model)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    write_card(setup, train_args, config, rounds=len(plan), repo_id=repo_id)
    if repo_id:
        push_output(config, repo_id)
    logger.info(f"model saved to {output_dir} (metrics: {output_dir / 'metrics.jsonl'}; {total_tokens} tokens "
                "generated in all)")
    return output_dir


__all__ = ["BaselineConfig", "METHODS", "dpo_pairs", "dpo_round", "grpo_rollouts", "hir_examples", "relabel_prompt",
           "rft_examples", "round_prompts", "sft_round", "train_baseline"]
