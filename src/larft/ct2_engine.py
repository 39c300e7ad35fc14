"""CTranslate2 as a CPU rollout engine: the policy's current weights, converted in memory every
optimizer step, generate the rollouts (benchmarks/rollout_speed.py compares its speed with
`model.generate`).

On-policy by construction: fp32 weights (no quantization unless asked, and then it says so),
the policy tokenizer's chat template and stop tokens, HF sampling semantics (temperature, then
top-k, then top-p; top_k 0 = the whole vocabulary, where CTranslate2's own default of 1 would
mean greedy)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from larft.errors import UserError
from larft.logs import get_logger

logger = get_logger(__name__)

INSTALL_HINT = "pip install 'larft[ct2]'  (or: pip install ctranslate2)"


def require_ctranslate2() -> Any:
    """The ctranslate2 module, or a clear error naming the extra to install (checked before any model loads)."""
    try:
        import ctranslate2
    except ImportError:
        raise RuntimeError(f"rollout_backend 'ct2' needs CTranslate2, which is not installed: {INSTALL_HINT}") from None
    return ctranslate2


def check_convertible(config: Any) -> None:
    """Fail early, naming the architecture, when CTranslate2 has no converter for this model."""
    require_ctranslate2()
    from larft.private_api import check_ct2

    check_ct2()  # a private table: a clear error if a CTranslate2 release moved it
    from ctranslate2.converters.transformers import _MODEL_LOADERS

    name = type(config).__name__
    if name not in _MODEL_LOADERS:
        arch = ",".join(getattr(config, "architectures", None) or [name])
        raise RuntimeError(f"rollout_backend 'ct2' cannot convert this model's architecture ({arch}: CTranslate2 "
                           "has no converter for it); use rollout_backend: hf")


def _module_skeleton(model: Any) -> Any:
    """A copy of the module tree that shares every parameter and buffer: CTranslate2's loaders
    delete submodules as they convert them (to save memory), which must not happen to the policy."""
    import copy

    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo)


def _merged_lora_skeleton(model: Any) -> Any:
    """A PEFT policy's base model as CTranslate2 converts it: every LoRA layer replaced by its base
    layer with the adapter merged in by PEFT's own `merge` (any LoRA variant), applied to copies of
    the base weights, so the policy's own weights and adapter stay as they are; a module PEFT trains
    in full (`modules_to_save`) is replaced by its trained copy."""
    import torch
    from peft import PeftType
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper

    kinds = {str(getattr(c, "peft_type", "")) for c in model.peft_config.values()}
    if kinds - {str(PeftType.LORA)}:
        raise UserError(f"rollout_backend 'ct2' merges LoRA adapters only, not {', '.join(sorted(kinds))}; use "
                        "rollout_backend: hf")
    skeleton = _module_skeleton(model.get_base_model())
    replaced: list[str] = []
    for name, module in list(skeleton.named_modules()):
        if any(name.startswith(done + ".") for done in replaced):
            continue
        if isinstance(module, BaseTunerLayer):
            layer = module.get_base_layer()
            for field in ("weight", "bias"):
                value = getattr(layer, field, None)
                if isinstance(value, torch.Tensor):
                    if not value.is_floating_point():
                        raise UserError(f"rollout_backend 'ct2' cannot convert a quantized base model ({name}); use "
                                        "rollout_backend: hf")
                    setattr(layer, field, torch.nn.Parameter(value.detach().clone(), requires_grad=False))
            if not module.disable_adapters:
                module.merge(adapter_names=list(module.active_adapters))
            replacement = module.get_base_layer()
        elif isinstance(module, ModulesToSaveWrapper):
            adapters = module.active_adapters
            replacement = (module.original_module if module.disable_adapters or not adapters
                           else module.modules_to_save[adapters[0]])
        elif isinstance(module, AuxiliaryTrainingWrapper):
            raise UserError(f"rollout_backend 'ct2' cannot merge PEFT's {type(module).__name__} ({name}); use "
                            "rollout_backend: hf")
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(skeleton.get_submodule(parent) if parent else skeleton, child, replacement)
        replaced.append(name)
    return skeleton


def _is_peft_model(model: Any) -> bool:
    """A PEFT wrapper (not transformers' own adapter support, which has no base model to merge into)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


class _without_per_layer_gc:
    """CTranslate2's loaders call gc.collect() after every layer (to free a model loaded from
    disk); here the weights stay alive in the policy, and a full collection of a training
    process's heap per layer slows every sync."""

    def __init__(self, module: Any):
        self.module = module

    def __enter__(self) -> None:
        import types

        self.saved = self.module.gc
        self.module.gc = types.SimpleNamespace(collect=lambda *a, **k: 0)

    def __exit__(self, *exc: Any) -> None:
        self.module.gc = self.saved


def _scale_projection(decoder: Any, scale: float) -> None:
    """The output layer times `scale`, as new arrays: a tied embedding matrix keeps its values (and
    is stored apart from the output layer from then on: one more vocabulary x hidden matrix).
    A final logit soft-cap would apply after the scale, not before: such models are refused."""
    if not isinstance(getattr(decoder, "final_logit_softcapping", "none"), str):
        raise UserError("this model soft-caps its final logits, which CTranslate2 applies after the temperature that "
                        "the importance-sampling correction folds into the output layer; use rollout_compute_type: "
                        "float32 or vllm_importance_sampling_correction: false")
    projection = decoder.projection
    projection.weight = projection.weight * scale
    bias = getattr(projection, "bias", None)
    if bias is not None and not isinstance(bias, str):
        projection.bias = bias * scale


@dataclass
class Rollout:
    """One generated completion: its token ids (ending with the stop token when it stopped, as
    TRL's own generation returns them), the per-token log-probs of the sampling distribution,
    and whether it ran into its budget."""

    completion_ids: list[int]
    logprobs: list[float]
    truncated: bool


class CT2Engine:
    """A CTranslate2 generator that holds a copy of a transformers causal LM's weights.

    `sync(model)` rebuilds it from the model's current weights (converted in memory, passed
    through a RAM-backed folder); `generate` decodes token-id prompts.

    `logits_scale` multiplies the output projection at every sync. CTranslate2 reports the log-prob
    of a sampled token before its sampling temperature; with `logits_scale` = 1 / T and sampling at
    temperature 1, the engine samples the same tempered distribution and reports its log-probs (what
    an importance-sampling correction needs)."""

    def __init__(self, tokenizer: Any, *, compute_type: str = "float32", threads: int = 0,
                 logits_scale: float = 1.0):
        self.ct2 = require_ctranslate2()
        self.tokenizer = tokenizer
        self.compute_type = compute_type
        self.threads = threads
        self.logits_scale = float(logits_scale)
        self.generator: Any = None
        self.sync_seconds: list[float] = []
        self._vocab: list[str] | None = None

    def sync(self, model: Any) -> float:
        """Convert `model`'s current weights (a PEFT model's with its adapter merged) and load them;
        returns the seconds it took.

        The converted model goes through a RAM-backed folder (/dev/shm where there is one):
        CTranslate2's spec serialises only to a folder, and loading from it is one copy less
        than handing the same bytes over as Python objects."""
        import os
        import tempfile

        import torch
        from ctranslate2.converters import transformers as converters

        start = time.perf_counter()
        check_convertible(_model_config(model))
        loader = converters._MODEL_LOADERS[type(model.config).__name__]
        self.generator = None  # free the old copy before the new one is built
        ram = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="larft-ct2-", dir=ram) as tmp:
            with torch.no_grad(), _without_per_layer_gc(converters):
                source = _merged_lora_skeleton(model) if _is_peft_model(model) else _module_skeleton(model)
                spec = loader(source, self.tokenizer)
                del source
                if self.logits_scale != 1.0:
                    _scale_projection(spec.decoder, self.logits_scale)
            spec.validate()
            spec.optimize(quantization=None)
            spec.save(tmp)
            del spec  # the arrays the converter made (fused QKV) are freed before CTranslate2 loads its copy
            self.generator = self.ct2.Generator(tmp, device="cpu", compute_type=self.compute_type,
                                                intra_threads=self.threads)
            if self._vocab is None:
                import json

                with open(os.path.join(tmp, "vocabulary.json"), encoding="utf-8") as fh:
                    self._vocab = json.load(fh)
        seconds = time.perf_counter() - start
        self.sync_seconds.append(seconds)
        return seconds

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        stop_ids: Sequence[int],
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> list[Rollout]:
        """Complete each prompt (token ids, chat template already applied); `max_new_tokens` is one
        budget for all or one per prompt (a row stops at its own, in the same batch)."""
        if self.generator is None:
            raise RuntimeError("CT2Engine.generate called before sync(model)")
        if seed is not None:
            self.ct2.set_random_seed(int(seed))
        vocab = self._vocab
        tokens = [[vocab[i] for i in ids] for ids in prompt_ids]
        sampling = ({"sampling_topk": int(top_k or 0), "sampling_topp": float(top_p or 1.0),
                     "sampling_temperature": float(temperature)} if do_sample else
                    {"sampling_topk": 1, "sampling_topp": 1.0, "sampling_temperature": 1.0})
        stops = [int(i) for i in stop_ids]
        budgets = [int(max_new_tokens)] * len(tokens) if isinstance(max_new_tokens, int) else \
            [int(b) for b in max_new_tokens]
        if len(budgets) != len(tokens):
            raise ValueError(f"{len(budgets)} budgets for {len(tokens)} prompts")
        return self._generate(tokens, budgets, stops, sampling)

    def _generate(self, tokens: list[list[str]], budgets: list[int], stops: list[int], sampling: dict) -> list[Rollout]:
        """Per-token log-probs come from the step callback (generate_batch returns only their sum);
        the callback also stops each row at its own budget."""
        logps: list[list[float]] = [[] for _ in tokens]

        def on_step(step: Any) -> bool:
            logps[step.batch_id].append(float(step.log_prob) if step.log_prob is not None else float("nan"))
            return len(logps[step.batch_id]) >= budgets[step.batch_id]

        results = self.generator.generate_batch(
            tokens, max_length=max(budgets), end_token=stops, return_end_token=True,
            include_prompt_in_result=False, return_scores=True, callback=on_step, **sampling,
        )
        rollouts = []
        for result, lp, budget in zip(results, logps, budgets):
            ids = list(result.sequences_ids[0])[:budget]
            stopped = bool(ids) and ids[-1] in stops
            rollouts.append(Rollout(ids, lp[: len(ids)], truncated=not stopped))
        return rollouts


class CT2Rollouts:
    """TRL's `rollout_func` for GRPOTrainer: rollouts from CTranslate2 on the policy's current
    weights. TRL hands it the prompts of this process (each already repeated
    `num_generations` times by TRL's sampler) and expects one completion per prompt.

    Weights are re-synced whenever the optimizer has stepped since the last sync, so every
    rollout comes from the policy being trained. The sampling seed is derived from the run's
    seed and the step: a resumed run samples what the uninterrupted one would have.

    With `sampler_logprobs`, the temperature is folded into the engine's output layer and each
    rollout's per-token log-probs under the distribution it was sampled from are returned, for
    TRL's `sampling_per_token_logps` (the importance-sampling correction of quantized rollouts)."""

    def __init__(self, compute_type: str = "float32", sampler_logprobs: bool = False):
        self.compute_type = compute_type
        self.sampler_logprobs = sampler_logprobs
        self.engine: CT2Engine | None = None
        self.synced_step: int | None = None
        self.generate_seconds: list[float] = []

    def __call__(self, prompts: list, trainer: Any) -> dict[str, Any]:
        import torch

        args = trainer.args
        if self.engine is None:
            scale = 1.0 / args.temperature if self.sampler_logprobs else 1.0
            self.engine = CT2Engine(trainer.processing_class, compute_type=self.compute_type,
                                    threads=torch.get_num_threads(), logits_scale=scale)
        step = trainer.state.global_step
        if self.synced_step != step:
            self.engine.sync(trainer.accelerator.unwrap_model(trainer.model))
            self.synced_step = step
        prompt_ids = trainer._tokenize_prompts(prompts)[0]  # exactly TRL's own chat templating
        budgets = self.budgets(self._rows(prompts, trainer), trainer) if args.per_target_budget \
            else trainer.max_completion_length
        start = time.perf_counter()
        rollouts = self.engine.generate(
            prompt_ids, max_new_tokens=budgets, stop_ids=trainer.eos_token_ids,
            do_sample=True, temperature=1.0 if self.sampler_logprobs else args.temperature,
            top_p=args.top_p if args.top_p is not None else 1.0,
            top_k=args.top_k or 0, seed=args.seed * 1_000_003 + step * 1009 + trainer.accelerator.process_index,
        )
        self.generate_seconds.append(time.perf_counter() - start)
        # the policy changes at the next optimizer step, and the next rollouts convert it anew: the engine's
        # copy of the weights is not kept through the forward and backward in between
        self.engine.generator = None
        self.synced_step = None
        # fp32 rollouts are the policy's own samples: no log-probs to carry, no correction to make
        logprobs = [r.logprobs for r in rollouts] if self.sampler_logprobs else None
        return {"prompt_ids": [list(p) for p in prompt_ids], "completion_ids": [r.completion_ids for r in rollouts],
                "logprobs": logprobs}


    @staticmethod
    def _rows(prompts: list, trainer: Any) -> list[dict]:
        """The dataset row of each rollout, in order (LARFTTrainer sets `generating_rows` while it generates):
        two rows with the same prompt and different targets are two rows, not one prompt."""
        rows = getattr(trainer, "generating_rows", None)
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError(f"per_target_budget: {len(prompts)} prompts to roll out, but the trainer holds "
                               f"{'no' if rows is None else len(rows)} rows for them (LARFTTrainer sets "
                               "`generating_rows` while it generates)")
        return rows

    def budgets(self, rows: list[dict], trainer: Any) -> list[int]:
        """Each rollout's budget from its own row: 2x its target in tokens (`larft.budget.training_budget`),
        where a cut rollout's length reward is known, capped by max_completion_length; rows without a word
        target get max_completion_length."""
        from larft.budget import training_budget
        from larft.length_spec import LengthSpec

        cap = trainer.max_completion_length
        out = []
        for row in rows:
            spec = LengthSpec.of(row)
            words = spec.has_target and spec.unit == "words"
            out.append(min(cap, training_budget(spec.largest, trainer.processing_class)) if words else cap)
        return out


def check_sampling_supported(args: Any) -> None:
    """Sampling options CTranslate2 cannot reproduce with HF's semantics are refused, not ignored."""
    unsupported = []
    if getattr(args, "min_p", None):
        unsupported.append(f"min_p={args.min_p}")
    if getattr(args, "repetition_penalty", 1.0) not in (None, 1.0):
        unsupported.append(f"repetition_penalty={args.repetition_penalty}")
    if getattr(args, "generation_kwargs", None):
        unsupported.append(f"generation_kwargs={args.generation_kwargs}")
    if unsupported:
        raise UserError(f"rollout_backend 'ct2' does not reproduce {', '.join(unsupported)} with transformers' "
                        "semantics; use rollout_backend: hf")


def is_quantized(compute_type: str) -> bool:
    """Whether a CTranslate2 compute type samples from another model than the fp32 policy."""
    return compute_type not in ("float32", "default")


def corrects_quantized_rollouts(args: Any) -> bool:
    """Quantized ct2 rollouts are importance-weighted unless `vllm_importance_sampling_correction`
    (TRL's field, its default on) is turned off."""
    return is_quantized(args.rollout_compute_type) and bool(args.vllm_importance_sampling_correction)


def check_importance_sampling(args: Any) -> None:
    """The correction needs the sampler's probability of each token, which CTranslate2 reports
    only before nucleus / top-k truncation: those are refused with it, and running without it says so."""
    if not is_quantized(args.rollout_compute_type):
        return
    if not args.vllm_importance_sampling_correction:
        logger.warning(f"rollout_compute_type {args.rollout_compute_type}: rollouts come from a quantized copy of the "
                       "policy, uncorrected (vllm_importance_sampling_correction is off)")
        return
    truncating = [f"{name}={value}" for name, value, off in (("top_p", args.top_p, (None, 1.0)),
                                                              ("top_k", args.top_k, (None, 0)))
                  if value not in off]
    if truncating:
        raise UserError(f"rollout_compute_type {args.rollout_compute_type} corrects its rollouts by importance "
                        f"sampling, which needs the sampler's own token probabilities; CTranslate2 reports them "
                        f"before {' and '.join(truncating)} truncates the distribution. Set top_p: 1.0 and top_k: 0, "
                        "or vllm_importance_sampling_correction: false to train on uncorrected quantized rollouts")
    if args.loss_type == "vespo":
        raise UserError("loss_type vespo weighs importance ratios itself; with quantized ct2 rollouts use another "
                        "loss_type or rollout_compute_type: float32")


def choose_backend(args: Any, model: Any, peft_config: Any = None) -> str:
    """The rollout engine a run uses: `args.rollout_backend`, with `auto` resolved (a one-line
    notice says which and why). Asking for ct2 where it cannot run is an error, raised before
    any model is loaded, never a silent fall back to a slower engine."""
    import importlib.util

    import torch

    asked = args.rollout_backend
    if asked in ("hf", "vllm"):
        return asked
    if getattr(args, "use_vllm", False):
        if asked == "ct2":
            raise UserError("rollout_backend 'ct2' and use_vllm both choose the rollout engine: set one")
        return "vllm"
    problem = None
    try:
        require_ctranslate2()
        if (peft_config is not None or hasattr(model, "peft_config")) and importlib.util.find_spec("peft") is None:
            problem = "a LoRA policy needs PEFT: pip install 'larft[peft]'"
        elif torch.cuda.is_available() and not args.use_cpu:
            problem = "rollout_backend 'ct2' is the CPU engine; on a GPU use rollout_backend: vllm or hf"
        else:
            check_sampling_supported(args)
            check_convertible(_model_config(model))
    except (RuntimeError, ValueError) as err:
        problem = str(err)
    if asked == "ct2":
        if problem:
            raise UserError(problem)
        return "ct2"
    if problem:
        logger.info(f"rollout_backend auto -> hf ({problem})")
        return "hf"
    logger.info(f"rollout_backend auto -> ct2 (CTranslate2, {args.rollout_compute_type}, weights synced every step)")
    return "ct2"


def _model_config(model: Any) -> Any:
    if isinstance(model, str):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model)
    return model.config


def records_generator(model: Any, tokenizer: Any, *, compute_type: str = "float32", sync: bool = True) -> Any:
    """A stand-in for `larft.generation.generate_records` (same signature, same records) that
    decodes with CTranslate2: what best-of-N sampling, `larft generate --backend ct2` and the
    baselines use. `generate.sync(model)` re-loads the weights (done once here unless sync=False)."""
    import torch

    from larft.generation import generate_records_ct2, stop_token_ids

    engine = CT2Engine(tokenizer, compute_type=compute_type, threads=torch.get_num_threads())
    stops = sorted(stop_token_ids(model, tokenizer))
    if sync:
        engine.sync(model)

    def generate(model: Any, tokenizer: Any, prompts: list, *, max_new_tokens: Any, do_sample: bool = False,
                 temperature: float = 0.7, top_p: float = 0.8, top_k: int = 0, chat_template_kwargs: dict | None = None,
                 reasoning: tuple = (), **_: Any) -> list:
        return generate_records_ct2(engine, tokenizer, prompts, max_new_tokens=max_new_tokens, stop_ids=stops,
                                    do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                                    seed=int(torch.initial_seed()) % 2**31, chat_template_kwargs=chat_template_kwargs,
                                    reasoning=reasoning)

    generate.sync = engine.sync  # type: ignore[attr-defined]
    generate.engine = engine  # type: ignore[attr-defined]
    return generate
