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

from typing import Any

import torch
from trl import GRPOTrainer

from larft.awareness import awareness_loss, build_awareness_batch
from larft.config import LARFTConfig
from larft.length import count_words, final_text, measure
from larft.rewards import LengthReward, length_deviation, target_from_row
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
        if reward_funcs is None:
            reward_funcs = [LengthReward(tokenizer=kwargs.get("processing_class"), degenerate_guard=args.degenerate_guard)]
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
        bad = ~torch.isfinite(rewards)
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            raise FloatingPointError(
                f"reward function {self.reward_func_names[col]!r} gave {rewards[row, col].item()} for rollout {row} "
                f"at step {self.state.global_step + 1} (a reward must be a finite number; larft does not skip it)"
            )
        return rewards

    # -- hook 1: rollouts -> length metrics and counting examples ---------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        texts = self._completion_texts(output["completion_ids"], output["completion_mask"])
        units = [row.get("unit") or "words" for row in inputs]
        self._log_length_metrics(mode, texts, inputs, units)
        if mode == "train" and self.args.awareness_lambda_max > 0:
            batch = build_awareness_batch(texts, units, self._tokenizer, self.args.awareness_max_text_tokens)
            device = output["completion_ids"].device
            for key, name in zip(AWARENESS_KEYS, ("input_ids", "attention_mask", "labels", "prefix_length")):
                output[key] = batch[name].to(device)
        return output

    def _completion_texts(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[str]:
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(completion_ids, completion_mask)]
        return [final_text(t) for t in self._tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def _log_length_metrics(self, mode: str, texts: list[str], rows: list[dict], units: list[str]) -> None:
        device = self.accelerator.device
        lengths = [measure(t, u, tokenizer=self._tokenizer, extract=False) for t, u in zip(texts, units)]
        errors = [
            length_deviation(n, target_from_row(row), row.get("constraint") or "equal")
            for n, row in zip(lengths, rows)
        ]
        words = [count_words(t) for t in texts]
        local = torch.tensor([errors, words], dtype=torch.float32, device=device).T  # (B, 2)
        gathered = self.accelerator.gather(local)
        self._metrics[mode]["length_error_mean"].append(gathered[:, 0].mean().item())
        self._metrics[mode]["completion_words_mean"].append(gathered[:, 1].mean().item())

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
        if lam > 0:
            counting = awareness_loss(model, *batch)
            loss = loss + lam * counting / accumulation
        else:  # warm-up starts at exactly 0: measure the loss, spend no backward on it
            with torch.no_grad():
                counting = awareness_loss(model, *batch)
        if not torch.isfinite(counting):
            raise FloatingPointError(f"the awareness loss is {counting.item()} at step {self.state.global_step + 1}")
        self._metrics[mode]["awareness_loss"].append(self.accelerator.gather(counting.detach().reshape(1)).mean().item())
        self._metrics[mode]["awareness_lambda"].append(lam)
        return loss
