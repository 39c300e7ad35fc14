"""LARFTTrainer: TRL's GRPOTrainer plus the hindsight length-awareness loss.

    loss = GRPO loss (with TRL's KL `beta` and `entropy_coef`) + lambda(t) * awareness CE

Two hooks, both TRL private methods (pinned: see pyproject.toml, tested in tests/):
- `_generate_and_score_completions`: after TRL has sampled and scored the rollouts, turn
  each one into a counting example. The example tensors have one row per rollout, so
  TRL's shuffle/split hands every micro-step exactly its own rollouts' examples.
- `_compute_loss`: add lambda(t) * CE on those examples, divided by the gradient
  accumulation steps like TRL's own policy loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from larft.awareness import TAGS as _TAG
from larft.awareness import awareness_loss, build_awareness_batch
from larft.config import LARFTConfig
from larft.length import count_words, final_text, measure, parse_delimiters
from larft.rewards import LengthReward, is_refusal, length_deviation, target_from_row
from larft.schedule import awareness_lambda

AWARENESS_KEYS = ("awareness_input_ids", "awareness_attention_mask", "awareness_labels", "awareness_prefix_length")


class LARFTTrainer(GRPOTrainer):
    """GRPO with the length reward and the hindsight awareness loss (LARFT).

    `reward_funcs` defaults to the length reward read from the dataset's target columns.
    With `awareness_lambda_max=0` it is plain GRPO (no counting examples are built).
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: LARFTConfig | None = None, **kwargs: Any):
        if args is None:
            args = LARFTConfig("larft-output")
        if not isinstance(args, LARFTConfig):
            raise TypeError(f"LARFTTrainer needs a LARFTConfig, got {type(args).__name__}")
        self.reasoning = parse_delimiters(args.reasoning_delimiters)
        if reward_funcs is None:
            reward_funcs = [LengthReward(tokenizer=kwargs.get("processing_class"), degenerate_guard=args.degenerate_guard,
                                         refusal_floor=args.refusal_floor, reasoning=self.reasoning)]
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        for func in self.reward_funcs:  # the tokens unit needs the policy's tokenizer
            if isinstance(func, LengthReward) and func.tokenizer is None:
                func.tokenizer = self._tokenizer

    # -- lambda(t) ------------------------------------------------------------------------
    def current_awareness_lambda(self) -> float:
        """lambda at the optimizer step being computed (global_step counts finished steps)."""
        return awareness_lambda(
            self.state.global_step,
            max(self.state.max_steps, 1),
            self.args.awareness_lambda_max,
            self.args.awareness_warmup_ratio,
        )

    # -- numerical faults stop training ------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards  # every process's rollouts, for the rollout trace
        bad = ~torch.isfinite(rewards)
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            raise FloatingPointError(
                f"reward function {self.reward_func_names[col]!r} gave {rewards[row, col].item()} for rollout {row} "
                f"at step {self.state.global_step + 1} (a reward must be a finite number; larft does not skip it)"
            )
        return rewards

    # -- hook 1: rollouts -> length metrics, the rollout trace and counting examples ------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        texts, truncated = self._completion_texts(output["completion_ids"])
        units = [row.get("unit") or "words" for row in inputs]
        lengths = self._log_length_metrics(mode, texts, truncated, inputs, units)
        if mode == "train" and self.args.log_rollouts:
            self._write_rollouts(inputs, texts, lengths, truncated)
        if mode == "train" and self.args.awareness_lambda_max > 0:
            batch = build_awareness_batch(texts, units, self._tokenizer, self.args.awareness_max_text_tokens,
                                          self.args.chat_template_kwargs)
            device = output["completion_ids"].device
            for key, name in zip(AWARENESS_KEYS, ("input_ids", "attention_mask", "labels", "prefix_length")):
                output[key] = batch[name].to(device)
        return output

    def _completion_texts(self, completion_ids: torch.Tensor) -> tuple[list[str], list[bool]]:
        """What each rollout actually wrote (its final answer) and whether it was cut off.

        Decoded up to the first stop token (eos / pad), *not* through `completion_mask`: TRL
        zeroes that mask for truncated rollouts when `mask_truncated_completions` is on, and a
        truncated rollout must still be counted and labelled by the text the reward scored."""
        stops = {t for t in (self._tokenizer.eos_token_id, self._tokenizer.pad_token_id) if t is not None}
        rows, truncated = [], []
        for ids in completion_ids.tolist():
            end = next((i for i, t in enumerate(ids) if t in stops), None)
            rows.append(ids if end is None else ids[:end])
            truncated.append(end is None)
        texts = self._tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [final_text(t, self.reasoning) for t in texts], truncated

    def _log_length_metrics(self, mode: str, texts: list[str], truncated: list[bool], rows: list[dict],
                            units: list[str]) -> list[int]:
        device = self.accelerator.device
        lengths = [measure(t, u, tokenizer=self._tokenizer, extract=False) for t, u in zip(texts, units)]
        errors, refusals = [], []
        for n, row in zip(lengths, rows):
            target, constraint = target_from_row(row), row.get("constraint") or "equal"
            errors.append(length_deviation(n, target, constraint))
            # with the floor off, a refusal is still what LIFEBench drops: an answer of <= 1 unit
            floor = self.args.refusal_floor
            refusals.append(is_refusal(n, target, constraint, floor) if floor > 0 else n <= 1)
        words = [count_words(t) for t in texts]
        local = torch.tensor([errors, words, refusals, truncated], dtype=torch.float32, device=device).T  # (B, 4)
        gathered = self.accelerator.gather(local)
        self._metrics[mode]["length_error_mean"].append(gathered[:, 0].mean().item())
        self._metrics[mode]["completion_words_mean"].append(gathered[:, 1].mean().item())
        self._metrics[mode]["refusal_rate"].append(gathered[:, 2].mean().item())
        self._metrics[mode]["truncated_rate"].append(gathered[:, 3].mean().item())
        return lengths

    def _write_rollouts(self, rows: list[dict], texts: list[str], lengths: list[int], truncated: list[bool]) -> None:
        """One line per rollout in OUTPUT_DIR/rollouts.jsonl (main process writes every rank's rows):
        the trace to check, independently of larft's own metrics, what was asked, written and rewarded."""
        from accelerate.utils import gather_object

        local = []
        for row, text, n, cut in zip(rows, texts, lengths, truncated):
            target = target_from_row(row)
            prompt = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else str(row["prompt"])
            local.append({"prompt": prompt, "target": list(target) if isinstance(target, tuple) else target,
                          "constraint": row.get("constraint") or "equal", "unit": row.get("unit") or "words",
                          "length": n, "truncated": cut, "text": text})
        records = gather_object(local)
        if not self.accelerator.is_main_process:
            return
        rewards = getattr(self, "_last_rewards", None)
        step = self.state.global_step + 1
        lines = []
        for i, record in enumerate(records):
            record = {"step": step, **record}
            if rewards is not None and i < rewards.size(0):
                for name, value in zip(self.reward_func_names, rewards[i].tolist()):
                    record[f"reward/{name}"] = value
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        path = Path(self.args.output_dir) / "rollouts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:  # whole lines, appended: a kill loses at most a line
            f.write("".join(lines))

    def _log_count_error(self, mode: str, labels: torch.Tensor, predicted: dict[int, list[int]]) -> None:
        """`awareness_count_error`: mean |counted - true| / true of the model's own counts of its
        rollouts, read from the awareness pass's argmax at the label positions (teacher-forced,
        no extra forward). An answer that does not parse counts as an error of 1. It shows whether
        perception improves before, with or without control (compare `length_error_mean`)."""
        from larft.awareness import IGNORE_INDEX, parse_count

        errors = []
        for row, ids in predicted.items():
            label = labels[row][labels[row] != IGNORE_INDEX].tolist()
            text = self._tokenizer.decode(label)
            unit = next((u for u in ("words", "chars", "tokens") if f"<{_TAG[u]}>" in text), "words")
            truth = parse_count(text, unit)
            guess = parse_count(self._tokenizer.decode(ids), unit)
            if truth is not None:
                errors.append(1.0 if guess is None else min(abs(guess - truth) / max(truth, 1), 1.0))
        local = torch.tensor([sum(errors), len(errors)], dtype=torch.float32, device=self.accelerator.device)
        total = self.accelerator.gather(local.reshape(1, 2)).sum(dim=0)
        if total[1] > 0:
            self._metrics[mode]["awareness_count_error"].append((total[0] / total[1]).item())

    # -- hook 2: the unified loss -----------------------------------------------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        logged_policy = len(self._metrics[mode]["policy_loss"])
        loss = super()._compute_loss(model, inputs)
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        if len(self._metrics[mode]["policy_loss"]) == logged_policy:  # TRL logs it only with an entropy bonus
            policy = self.accelerator.gather(loss.detach() * accumulation).mean().item()
            self._metrics[mode]["policy_loss"].append(policy)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the GRPO loss is {loss.item()} at step {self.state.global_step + 1}")
        if mode != "train" or AWARENESS_KEYS[0] not in inputs:
            return loss
        lam = self.current_awareness_lambda()
        batch = [inputs[k] for k in AWARENESS_KEYS]
        predicted: dict[int, list[int]] = {}
        if lam > 0:
            counting = awareness_loss(model, *batch, predictions=predicted)
            loss = loss + lam * counting / accumulation
        else:  # warm-up starts at exactly 0: measure the loss, spend no backward on it
            with torch.no_grad():
                counting = awareness_loss(model, *batch, predictions=predicted)
        self._log_count_error(mode, batch[2], predicted)
        if not torch.isfinite(counting):
            raise FloatingPointError(f"the awareness loss is {counting.item()} at step {self.state.global_step + 1}")
        self._metrics[mode]["awareness_loss"].append(self.accelerator.gather(counting.detach().reshape(1)).mean().item())
        self._metrics[mode]["awareness_lambda"].append(lam)
        return loss
