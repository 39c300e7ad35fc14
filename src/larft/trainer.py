"""LARFTTrainer: TRL's GRPOTrainer plus the hindsight length-awareness loss.

    loss = GRPO loss (with TRL's KL `beta` and `entropy_coef`) + lambda(t) * awareness CE

Two hooks, both TRL private methods (pinned: see pyproject.toml, tested in tests/):
- `_generate_and_score_completions`: after TRL has sampled and scored the rollouts, turn
  each one into a counting example. The example tensors have one row per rollout, so
  TRL's shuffle/split hands every micro-step exactly its own rollouts' examples.
- `_compute_loss`: add lambda(t) * CE on those examples, divided by the gradient
  accumulation steps like TRL's own policy loss (on one process, backpropagated first, so
  that one graph is alive at a time).
Quantized CTranslate2 rollouts are corrected by importance sampling in a third hook,
`_get_per_token_logps_and_entropies` (larft.importance).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel, TrainerCallback
from trl import GRPOTrainer
from trl.trainer.grpo_trainer import RewardFunc

from larft.awareness import awareness_loss, awareness_normalizer, build_awareness_batch, label_token_count
from larft.card import (LARFT_BIBTEX, PAPER_ID, PAPER_TITLE, TAGS, CardInfo, base_model_fields, model_card,
                        read_length_check)
from larft.config import LARFTConfig
from larft.errors import UserError
from larft.importance import importance_weights, weight_gradient
from larft.length import count_words, final_text, measure, parse_delimiters
from larft.length_spec import LengthSpec
from larft.head_tiles import token_tile
from larft.malloc import release_between_parts
from larft.rewards import LengthReward, is_refusal, length_deviation
from larft.rollout_end import rollout_end, rollout_stop_ids
from larft.schedule import awareness_lambda

if TYPE_CHECKING:
    from peft import PeftModel

# TRL 1.16 reads transformers 5's deprecated `is_gradient_checkpointing` on every step: not the user's to act on
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

AWARENESS_KEYS = ("awareness_input_ids", "awareness_attention_mask", "awareness_labels", "awareness_prefix_length")
AWARENESS_LOSS_MASK = "awareness_loss_mask"  # only with awareness_loss_on="number"
AWARENESS_ITEMS = "awareness_items_in_batch"  # label tokens in the generation batch, all processes


class LARFTTrainer(GRPOTrainer):
    """GRPO with the length reward and the hindsight awareness loss (LARFT).

    Rewards: the length reward (read from the dataset's target columns) comes first, then
    your `reward_funcs`, if any; TRL's `reward_weights` weighs them in that order. Pass
    `length_reward=False` to train on your reward functions alone; a `LengthReward` of your
    own in `reward_funcs` replaces the default one. A reward function may return None for a
    completion it cannot score; a rollout that no function scores stops training.
    With `awareness_lambda_max=0` it is plain GRPO (no counting examples are built).
    Every other argument is GRPOTrainer's.
    """

    _tag_names = list(TAGS)
    _name = "LARFT"
    _paper = {"title": PAPER_TITLE, "id": PAPER_ID, "citation": LARFT_BIBTEX}

    def __init__(self, model: str | PreTrainedModel | PeftModel,
                 reward_funcs: RewardFunc | list[RewardFunc] | None = None, args: LARFTConfig | None = None, *,
                 length_reward: bool = True, **kwargs: Any):
        if args is None:
            args = LARFTConfig("larft-output")
        if not isinstance(args, LARFTConfig):
            raise TypeError(f"LARFTTrainer needs a LARFTConfig, got {type(args).__name__}")
        self.reasoning = parse_delimiters(args.reasoning_delimiters)
        funcs = [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) \
            else [reward_funcs]
        from larft.rewards import length_reward as plain_length_reward

        # the plain function stands for the length reward: ours, configured by args (guards, stop tokens)
        funcs = [LengthReward(tokenizer=kwargs.get("processing_class"), degenerate_guard=args.degenerate_guard,
                              refusal_floor=args.refusal_floor, reasoning=self.reasoning,
                              allow_missing_target=len(funcs) > 1)
                 if f is plain_length_reward else f for f in funcs]
        if length_reward and not any(isinstance(f, LengthReward) for f in funcs):
            # next to other rewards, a row without a length target is theirs to score: None here
            funcs.insert(0, LengthReward(tokenizer=kwargs.get("processing_class"),
                                         degenerate_guard=args.degenerate_guard, refusal_floor=args.refusal_floor,
                                         reasoning=self.reasoning, allow_missing_target=bool(funcs)))
            classes = kwargs.get("reward_processing_classes")
            if classes is not None:  # one per reward function, in TRL's order: none for the length reward
                classes = list(classes) if isinstance(classes, (list, tuple)) else [classes]
                kwargs["reward_processing_classes"] = [None, *classes]
        if not funcs:
            raise UserError("LARFTTrainer has no reward function: with length_reward=False, pass reward_funcs")
        if args.reward_weights is not None and len(args.reward_weights) != len(funcs):
            names = ["length_reward" if isinstance(f, LengthReward) else getattr(f, "__name__", repr(f)) for f in funcs]
            raise UserError(f"reward_weights has {len(args.reward_weights)} value(s) for {len(funcs)} reward "
                            f"functions: {', '.join(names)} (the length reward comes first; length_reward=False "
                            "drops it)")
        from larft.ct2_engine import CT2Rollouts, check_importance_sampling, choose_backend, corrects_quantized_rollouts

        self.rollout_backend = choose_backend(args, model, kwargs.get("peft_config"))
        if self.rollout_backend == "ct2":
            check_importance_sampling(args)
            if kwargs.get("rollout_func") is not None:
                raise UserError("rollout_backend 'ct2' generates the rollouts itself; with a rollout_func of your "
                                "own, set rollout_backend: hf")
            kwargs["rollout_func"] = CT2Rollouts(args.rollout_compute_type,
                                                 sampler_logprobs=corrects_quantized_rollouts(args))
        #: quantized ct2 rollouts: the policy gradient is importance-weighted against the sampler's log-probs
        self.importance_sampling = self.rollout_backend == "ct2" and corrects_quantized_rollouts(args)
        self._correcting: dict[str, Any] | None = None  # the micro-batch whose loss is being computed
        self._base_model_name = model if isinstance(model, str) else None
        #: subfolder of the output (and Hub repo) with the merged LoRA model, for the card; set by `larft train`
        self.merged_subfolder: str | None = None
        #: the Hub dataset the prompts came from, for the card; set by `larft train --dataset_name`
        self.dataset_name: str | None = None
        #: the held-out rows of the before/after length check (`length_check_prompts`), system prompt applied
        self.length_check_rows: list[dict[str, Any]] = []
        if kwargs.get("train_dataset") is not None:
            kwargs["train_dataset"], self.length_check_rows = prepare_prompts(kwargs["train_dataset"], args)
        import warnings

        from larft import cpu_fsdp

        cpu_fsdp.install()  # LARFT_CPU_FSDP=1 on CPU processes: FSDP2, before the Accelerator is built
        with warnings.catch_warnings():  # TRL flags rollout_func as experimental; larft's use is pinned and tested
            if self.rollout_backend == "ct2":
                warnings.filterwarnings("ignore", message="You are using 'rollout_func'")
            super().__init__(model=model, reward_funcs=funcs, args=args, **kwargs)
        #: the ids that end a rollout (`larft.rollout_end`): the reward, truncated_rate, rollouts.jsonl and the
        #: awareness label all cut a rollout at the first of them
        self.rollout_stop_ids = rollout_stop_ids(self.eos_token_ids, self._tokenizer)
        for func in self.reward_funcs:  # the tokens unit needs the policy's tokenizer
            if isinstance(func, LengthReward):
                if func.tokenizer is None:
                    func.tokenizer = self._tokenizer
                if func.stop_ids is None:
                    func.stop_ids = set(self.rollout_stop_ids)
        from larft.private_api import check_trl

        check_trl(self)  # the TRL internals larft overrides and reads: a clear error if a release moved them
        self._use_larft_console()
        self._add_run_callbacks()
        self.add_callback(_CardAtTrainEnd(self))  # last: the card shows the length check's "after"

    def _add_run_callbacks(self) -> None:
        """What every LARFT run writes, from Python as from `larft train`: metrics.jsonl (each file holding
        this run's steps only), the before/after length check on the held-out rows, and a warning when
        max_completion_length cuts rollouts before their reward is known."""
        from datasets import Dataset

        from larft.callbacks import LengthCheckCallback, MetricsJsonlCallback, ResumedStepFiles
        from larft.run_setup import check_completion_budget

        have = {type(c) for c in self.callback_handler.callbacks}
        self.add_callback(ResumedStepFiles(self.args.output_dir))
        if MetricsJsonlCallback not in have:
            self.add_callback(MetricsJsonlCallback(self.args.output_dir))
        if self.length_check_rows:
            self.add_callback(LengthCheckCallback(self.length_check_rows, self._tokenizer, None, self.args.output_dir,
                                                  self.args.chat_template_kwargs, self.reasoning, trainer=self))
        if isinstance(self.train_dataset, Dataset):  # a stream is not read ahead of training
            check_completion_budget(self.train_dataset, self._tokenizer, self.args)

    def _use_larft_console(self) -> None:
        """transformers prints every log dict under the bar (ProgressCallback) or as lines
        (PrinterCallback, with disable_tqdm); ours show the few numbers a person reads."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from larft.callbacks import LARFTPrinterCallback, LARFTProgressCallback

        for callback in list(self.callback_handler.callbacks):
            if type(callback) is ProgressCallback:  # not subclasses (e.g. a user's own)
                self.callback_handler.remove_callback(callback)
                self.add_callback(LARFTProgressCallback())
            elif type(callback) is PrinterCallback:
                self.callback_handler.remove_callback(callback)
                self.add_callback(LARFTPrinterCallback())

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """transformers' save_model; under FSDP a final model (not a checkpoint) is saved whole. Checkpoints
        stay as the FSDP config says (sharded: what a resumed run reads); with SHARDED_STATE_DICT
        transformers writes no model at all for the final save (transformers#30491), so it is switched to
        FULL_STATE_DICT for that save, as transformers' FSDP guide advises. Every process must call it."""
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if not (self.is_fsdp_enabled and plugin is not None and not _internal_call):
            return super().save_model(output_dir, _internal_call)
        previous = plugin.state_dict_type
        plugin.set_state_dict_type("FULL_STATE_DICT")
        try:
            return super().save_model(output_dir, _internal_call)
        finally:
            plugin.set_state_dict_type(previous)

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
        """TRL's rewards (None -> NaN), checked: a reward of +-inf, or a rollout that no reward
        function scored (every value NaN: None or a NaN), stops training. A NaN next to a
        finite reward is TRL's "this function cannot score this completion"."""
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards  # every process's rollouts, for the rollout trace
        self._last_completion_ids = completion_ids_list  # this process's, unpadded: where each rollout ends
        step = self.state.global_step + 1
        infinite = torch.isinf(rewards)
        if infinite.any():
            row, col = (int(i) for i in infinite.nonzero()[0])
            raise FloatingPointError(
                f"reward function {self.reward_func_names[col]!r} gave {rewards[row, col].item()} for rollout {row} "
                f"at step {step} (a reward must be a finite number, or None for a completion it cannot score)"
            )
        unscored = torch.isnan(rewards).all(dim=1)
        if unscored.any():
            row = int(unscored.nonzero()[0])
            raise FloatingPointError(
                f"no reward for rollout {row} at step {step}: every reward function gave None or NaN "
                f"({', '.join(self.reward_func_names)}); larft does not train on a rollout nothing scored"
            )
        return rewards

    # -- the model card -------------------------------------------------------------------
    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """Write the LARFT card to OUTPUT_DIR/README.md (TRL and transformers call this when
        saving a checkpoint and before pushing to the Hub)."""
        if not self.is_world_process_zero():
            return
        from accelerate.utils import is_peft_model
        from trl.trainer.utils import get_config_model_id

        if model_name is None:
            model_name = (self.args.hub_model_id or Path(self.args.output_dir).name).split("/")[-1]
        loaded = self._base_model_name or get_config_model_id(self.model.config) or None
        extra = [tags] if isinstance(tags, str) else list(tags or [])
        info = CardInfo(
            model_name=model_name, config=self.args, **base_model_fields(loaded),
            repo_id=getattr(self, "hub_model_id", None) or self.args.hub_model_id,
            reward_funcs=[(n, float(w)) for n, w in zip(self.reward_func_names, self.reward_weights.tolist())],
            steps=self.state.global_step, num_processes=self.accelerator.num_processes,
            adapter=is_peft_model(self.model), merged_subfolder=self.merged_subfolder,
            length_check=read_length_check(self.args.output_dir), extra_tags=extra,
            dataset_name=dataset_name or self.dataset_name,
        )
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        model_card(info).save(Path(self.args.output_dir) / "README.md")

    # -- padding: micro-batches of similar length, each cut to its own longest rollout ------------
    def _prepare_inputs(self, generation_batch: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        """TRL's `_prepare_inputs` (generate a batch every steps_per_generation x num_iterations
        micro-steps, shuffle it, split it, hand out one piece per micro-step), with `trim_padding`:
        after TRL's shuffle, each optimizer step's rollouts sorted by length among themselves
        (`larft.padding`), and each piece cut to its own longest rollout. Every optimizer step sees
        exactly the rollouts it sees without trimming."""
        if not (self.model.training and self.args.trim_padding):
            return super()._prepare_inputs(generation_batch)
        from trl.trainer.utils import (shuffle_sequence_dict, split_pixel_values_by_grid, split_tensor_dict,
                                       unsplit_pixel_values_by_grid)  # larft.private_api checks them

        from larft.padding import rows_per_optimizer_step, sort_by_length, trim_padding

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = split_pixel_values_by_grid(self._generate_and_score_completions(generation_batch))
            rows = batch["completion_mask"].size(0)
            # TRL's own shuffle (the same draw) decides which rollouts each optimizer step gets; among equal
            # lengths, rows keep their order from before it
            batch["_row"] = torch.arange(rows)
            batch = shuffle_sequence_dict(batch)
            ties = batch.pop("_row")
            block = rows_per_optimizer_step(rows, self.args.steps_per_generation, self.args.gradient_accumulation_steps)
            pieces = split_tensor_dict(sort_by_length(batch, block, ties), self.args.steps_per_generation)
            self._buffered_inputs = [trim_padding(unsplit_pixel_values_by_grid(p)) for p in pieces]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    # -- hook 1: rollouts -> length metrics, the rollout trace and counting examples ------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        #: the dataset row of each rollout while it is generated (ct2's per-target budgets read its target)
        self.generating_rows = inputs
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self.generating_rows = None
        release_between_parts()  # what generating freed is not resident beside the forward and backward
        mode = "train" if self.model.training else "eval"
        ids, self._last_completion_ids = self._last_completion_ids, None  # unpadded, as the reward functions saw them
        texts, truncated = self._completion_texts(ids)
        units = [LengthSpec.of(row).unit for row in inputs]
        lengths = self._log_length_metrics(mode, texts, truncated, inputs, units)
        if mode == "train" and self.args.log_rollouts:
            self._write_rollouts(inputs, texts, lengths, truncated)
        if mode == "train" and self.args.awareness_lambda_max > 0:
            batch = build_awareness_batch(texts, units, self._tokenizer, self.args.awareness_max_text_tokens,
                                          self.args.chat_template_kwargs, loss_on=self.args.awareness_loss_on,
                                          system_prompt=self.args.system_prompt,
                                          prompt_style=self.args.awareness_prompt)
            device = output["completion_ids"].device
            for key, name in zip(AWARENESS_KEYS, ("input_ids", "attention_mask", "labels", "prefix_length")):
                output[key] = batch[name].to(device)
            if "loss_mask" in batch:
                output[AWARENESS_LOSS_MASK] = batch["loss_mask"].to(device)
            # the label tokens of the whole generation batch, every process's: the awareness loss is their mean
            local = label_token_count(batch["labels"], batch.get("loss_mask")).to(device)
            output[AWARENESS_ITEMS] = self.accelerator.gather(local.reshape(1)).sum()
        return output

    def _completion_texts(self, completion_ids: list[list[int]]) -> tuple[list[str], list[bool]]:
        """What each rollout actually wrote (its final answer) and whether it was cut off.

        Decoded up to the rollout's end (`larft.rollout_end`: the first eos id of the generation
        config or tokenizer, or pad), the same end the reward sees, *not* through `completion_mask`:
        TRL zeroes that mask for truncated rollouts when `mask_truncated_completions` is on, and a
        truncated rollout must still be counted and labelled by the text the reward scored. The ids are
        the unpadded ones the reward functions get: in TRL's padded tensor a rollout cut at its own
        budget (per-target budgets) would be followed by pad, and read as finished."""
        rows, truncated = [], []
        for ids in completion_ids:
            end, cut = rollout_end(ids, self.rollout_stop_ids)
            rows.append(ids[:end])
            truncated.append(cut)
        texts = self._tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [final_text(t, self.reasoning) for t in texts], truncated

    def _log_length_metrics(self, mode: str, texts: list[str], truncated: list[bool], rows: list[dict],
                            units: list[str]) -> list[int]:
        device = self.accelerator.device
        lengths = [measure(t, u, tokenizer=self._tokenizer, extract=False) for t, u in zip(texts, units)]
        errors, refusals = [], []
        for n, row in zip(lengths, rows):
            spec = LengthSpec.of(row)
            target, constraint = spec.goal, spec.constraint
            if target is None:  # a prompt only other reward functions score: no length error
                errors.append(float("nan"))
                refusals.append(n <= 1)
                continue
            errors.append(length_deviation(n, target, constraint))
            # with the floor off, a refusal is still what LIFEBench drops: an answer of <= 1 unit
            floor = self.args.refusal_floor
            refusals.append(is_refusal(n, target, constraint, floor) if floor > 0 else n <= 1)
        words = [count_words(t) for t in texts]
        local = torch.tensor([errors, words, refusals, truncated], dtype=torch.float32, device=device).T  # (B, 4)
        gathered = self.accelerator.gather(local)
        self._metrics[mode]["length_error_mean"].append(gathered[:, 0].nanmean().item())
        self._metrics[mode]["completion_words_mean"].append(gathered[:, 1].mean().item())
        self._metrics[mode]["refusal_rate"].append(gathered[:, 2].mean().item())
        self._metrics[mode]["truncated_rate"].append(gathered[:, 3].mean().item())
        return lengths

    def _write_rollouts(self, rows: list[dict], texts: list[str], lengths: list[int], truncated: list[bool]) -> None:
        """One line per rollout in OUTPUT_DIR/rollouts.jsonl (main process writes every rank's rows):
        the trace to check, independently of larft's own metrics, what was asked (the last message, and
        the system message when there is one), written and rewarded."""
        from accelerate.utils import gather_object

        local = []
        for row, text, n, cut in zip(rows, texts, lengths, truncated):
            spec = LengthSpec.of(row)
            messages = row["prompt"]
            chat = isinstance(messages, list)
            prompt = messages[-1]["content"] if chat else str(messages)
            system = messages[0]["content"] if chat and messages and messages[0].get("role") == "system" else None
            local.append({"prompt": prompt, **({} if system is None else {"system": system}), "target": spec.as_json(),
                          "constraint": spec.constraint, "unit": spec.unit, "length": n, "truncated": cut, "text": text})
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
        rollouts, read from the awareness pass's argmax at the count's positions of the label
        (teacher-forced, no extra forward; `awareness.read_count`). A count that is not a number
        counts as an error of 1. It shows whether perception improves before, with or without
        control (compare `length_error_mean`)."""
        from larft.awareness import IGNORE_INDEX, count_error, read_count

        errors = []
        for row, ids in predicted.items():
            read = read_count(self._tokenizer, labels[row][labels[row] != IGNORE_INDEX].tolist(), ids)
            if read is not None:
                errors.append(count_error(*read))
        local = torch.tensor([sum(errors), len(errors)], dtype=torch.float32, device=self.accelerator.device)
        total = self.accelerator.gather(local.reshape(1, 2)).sum(dim=0)
        if total[1] > 0:
            self._metrics[mode]["awareness_count_error"].append((total[0] / total[1]).item())

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's training loop, with the fused LM head's token tile of `lm_head_token_tile` on a device
        without Triton (`larft.head_tiles`)."""
        with token_tile(self.args.lm_head_token_tile, self.accelerator.device):
            return super().train(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """TRL's micro-step; then, on a CPU run with larft's allocator settings, what its backward freed goes
        back to the OS (`larft.malloc.release_between_parts`): the same arithmetic, a lower peak."""
        loss = super().training_step(*args, **kwargs)
        release_between_parts()
        return loss

    # -- hook 2: the unified loss -----------------------------------------------------------
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        mode = "train" if self.model.training else "eval"
        has_examples = mode == "train" and AWARENESS_KEYS[0] in inputs
        first = has_examples and self._awareness_backward_first()
        if first:  # its own backward now: its graph is freed before the policy's is built
            awareness = self._awareness_term(model, inputs, backward=True)
        logged_policy = len(self._metrics[mode]["policy_loss"])
        if self.importance_sampling and mode == "train" and inputs.get("sampling_per_token_logps") is not None:
            self._correcting = inputs
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._correcting = None
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        if len(self._metrics[mode]["policy_loss"]) == logged_policy:  # TRL logs it only with an entropy bonus
            policy = self.accelerator.gather(loss.detach() * accumulation).mean().item()
            self._metrics[mode]["policy_loss"].append(policy)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the GRPO loss is {loss.item()} at step {self.state.global_step + 1}")
        if not has_examples:
            return loss
        if not first:
            awareness = self._awareness_term(model, inputs, backward=False)
        return loss + awareness  # detached when its backward is done: the logged loss is still the sum

    def _awareness_backward_first(self) -> bool:
        """Whether the awareness loss gets its own backward before the policy's forward: the same
        gradient (both sum into .grad before the optimizer step) with one graph alive at a time
        instead of two, the peak memory of a CPU run. One process without DeepSpeed only (DeepSpeed's
        backward also steps; DDP would all-reduce twice)."""
        from accelerate.utils import DistributedType

        return self.accelerator.num_processes == 1 and self.accelerator.distributed_type != DistributedType.DEEPSPEED

    def _awareness_term(self, model: Any, inputs: dict[str, Any], backward: bool) -> torch.Tensor:
        """lambda(t) * the awareness CE of this training micro-batch, divided so that a step's terms sum to the
        mean over the generation batch; with `backward`, its gradient is taken now and the term
        comes back detached."""
        lam = self.current_awareness_lambda()
        batch = [inputs[k] for k in AWARENESS_KEYS]
        loss_mask = inputs.get(AWARENESS_LOSS_MASK)
        predicted: dict[int, list[int]] = {}
        # summed here, divided by the generation batch's label tokens: the mean over the whole batch,
        # the same on 1 or N processes and for any micro-batch split (as TRL's dapo loss)
        normalizer = awareness_normalizer(inputs[AWARENESS_ITEMS].item(), self.accelerator.num_processes,
                                          self.current_gradient_accumulation_steps, self.args.steps_per_generation)
        if lam > 0:
            summed = awareness_loss(model, *batch, predictions=predicted, loss_mask=loss_mask, reduction="sum")
            term = lam * summed / normalizer
        else:  # warm-up starts at exactly 0: measure the loss, spend no backward on it
            with torch.no_grad():
                summed = awareness_loss(model, *batch, predictions=predicted, loss_mask=loss_mask, reduction="sum")
            term = summed.new_zeros(())
        counting = summed.detach() / label_token_count(batch[2], loss_mask).clamp(min=1)  # this micro-batch's mean
        self._log_count_error("train", batch[2], predicted)
        if not torch.isfinite(counting):
            raise FloatingPointError(f"the awareness loss is {counting.item()} at step {self.state.global_step + 1}")
        self._metrics["train"]["awareness_loss"].append(self.accelerator.gather(counting.detach().reshape(1)).mean().item())
        self._metrics["train"]["awareness_lambda"].append(lam)
        if backward and term.requires_grad:
            self.accelerator.backward(term)
            release_between_parts()  # the counting pass's freed activations, before the policy's forward
        return term.detach() if backward else term

    # -- hook 3: quantized rollouts -> importance-weighted policy gradient -----------------------
    def _get_per_token_logps_and_entropies(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        """TRL's per-token log-probs; inside the policy loss of a step whose rollouts a quantized
        engine sampled, their gradient is weighted by pi_policy / pi_sampler (truncated or masked
        as `vllm_importance_sampling_mode` says): the gradient TRL's vLLM path gets by multiplying
        the per-token loss, for every loss type, except that the KL term's (beta > 0) is weighted too
        and the logged losses are the unweighted ones. With sequence-level importance sampling
        (GSPO) and a token mode, TRL scales each rollout's loss by its tokens' ratios: here each
        rollout's weight is their mean, which gives that gradient."""
        out = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        inputs = self._correcting
        if inputs is None:
            return out
        logps = out[0]
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        sampler = inputs["sampling_per_token_logps"]
        generating = inputs.get("old_per_token_logps")  # the policy that the rollouts were meant to come from
        generating = logps.detach() if generating is None else generating
        args = self.args
        weights = importance_weights(generating, sampler, mask, args.vllm_importance_sampling_mode,
                                     args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max)
        if self.importance_sampling_level == "sequence" and weights.size(-1) > 1:
            weights = (weights * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
        real = mask.bool() & ~torch.isnan(sampler)
        gap = (generating - sampler).abs()[real]
        per_token = weights.expand_as(mask)[mask.bool()]
        metrics = self._metrics["train"]
        metrics["sampling/sampling_logp_difference/mean"].append(
            self.accelerator.gather(gap.mean() if gap.numel() else logps.new_zeros(())).mean().item())
        metrics["sampling/importance_sampling_ratio/mean"].append(
            self.accelerator.gather(per_token.mean() if per_token.numel() else logps.new_ones(())).mean().item())
        return (weight_gradient(logps, weights), *out[1:])

def prepare_prompts(dataset: Any, args: LARFTConfig) -> tuple[Any, list[dict[str, Any]]]:
    """The training prompts as the LARFTConfig asks, the same from Python and from `larft train`: the length
    check's rows held out (`length_check_prompts`: the last rows with a length target,
    `run_setup.held_out_positions`) and the system message (`system_prompt`) put before every chat prompt.
    Returns (training dataset, held-out rows with the system message)."""
    from datasets import Dataset

    from larft.generation import with_system_prompt
    from larft.run_setup import held_out_positions

    held_rows: list[dict[str, Any]] = []
    if args.length_check_prompts > 0:
        if not isinstance(dataset, Dataset):
            raise UserError(f"length_check_prompts={args.length_check_prompts} holds out rows of a datasets.Dataset; "
                            f"got {type(dataset).__name__} (set length_check_prompts: 0 for a streamed dataset)")
        held = held_out_positions(dataset, args.length_check_prompts)
        held_rows = [{**dataset[i], "prompt": with_system_prompt(dataset[i]["prompt"], args.system_prompt)}
                     for i in held]
        if held:
            dropped = set(held)
            dataset = dataset.select([i for i in range(len(dataset)) if i not in dropped])
    if args.system_prompt != "default":
        system = args.system_prompt
        dataset = dataset.map(lambda row: {"prompt": with_system_prompt(row["prompt"], system)})
    return dataset, held_rows


class _CardAtTrainEnd(TrainerCallback):
    """Writes the LARFT model card when training ends, so a library user's output_dir has one."""

    def __init__(self, trainer: LARFTTrainer):
        self.trainer = trainer

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.create_model_card()
