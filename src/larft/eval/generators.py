"""Generation for `larft eval`: one generator per engine behind one interface.

    generator.generate(jobs, sampling) -> list[Generation]

A `Job` is one prompt with its own budget; a `Generation` (larft.generation) is the raw answer
(reasoning kept: the cache stores what the model wrote, the scorer strips it), its new tokens,
whether the budget cut it and that budget. The engines are `HFGenerator` (transformers
`generate`), `CT2Generator` (CTranslate2 on CPU, fp32) and `VLLMGenerator` (GPU), by `--backend`
name in `GENERATORS`. `Batched` groups jobs of similar length into batches and hands them to an
engine one batch at a time; caching (`larft.eval.cache.CachedGenerator`) and best-of-N
(`larft.eval.best_of.BestOfN`) are layers around it with the same interface.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Iterator, Protocol, Sequence

from larft.errors import UserError
from larft.generation import Generation


@dataclass(frozen=True)
class Job:
    """One prompt to answer: chat messages and the prompt's own max_new_tokens."""

    id: str
    messages: list[dict[str, str]]
    budget: int
    draw: int = 0  # which of a prompt's N samples (best-of-N)


@dataclass(frozen=True)
class Sampling:
    """How to decode: greedy, or sampled with a seed (batch k of a call is seeded `seed + k`)."""

    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.8
    seed: int = 0
    draws: int = 1  # samples per prompt (best-of-N): vLLM seeds each draw of a batch apart

    def for_batch(self, number: int) -> Sampling:
        return replace(self, seed=self.seed + number)


class Generator(Protocol):
    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Generation]: ...


class LocalModel:
    """The model an eval runs: its tokenizer, and its transformers weights loaded on first use
    (with the vLLM backend only the retention check needs them)."""

    def __init__(self, path: str, tokenizer: Any, device: str, dtype: str, trust_remote_code: bool = False):
        self.path, self.tokenizer, self.device, self.dtype = path, tokenizer, device, dtype
        self.trust_remote_code = trust_remote_code

    @functools.cached_property
    def model(self) -> Any:
        from larft.models import load_model

        return load_model(self.path, dtype=self.dtype, trust_remote_code=self.trust_remote_code, device=self.device)

    @functools.cached_property
    def generation_config(self) -> Any:
        """The model's generation config (its eos ids) without loading the weights; None without one."""
        from transformers import GenerationConfig

        try:
            return GenerationConfig.from_pretrained(self.path)
        except OSError:
            return None

    @functools.cached_property
    def config(self) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)


class HFGenerator:
    """transformers `generate`: one batch per call, every row stopped at its own budget."""

    def __init__(self, local: LocalModel, chat_template_kwargs: dict | None = None, seed: int = 0):
        self.local, self.chat_template_kwargs = local, chat_template_kwargs

    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Generation]:
        import torch

        from larft.generation import generate_records

        if sampling.do_sample:
            torch.manual_seed(sampling.seed)
        return generate_records(
            self.local.model, self.local.tokenizer, [j.messages for j in jobs], max_new_tokens=[j.budget for j in jobs],
            batch_size=len(jobs), do_sample=sampling.do_sample, temperature=sampling.temperature,
            top_p=sampling.top_p, chat_template_kwargs=self.chat_template_kwargs, reasoning=(),
        )


class CT2Generator:
    """CTranslate2 (CPU, fp32), converted from the transformers model on first use: the same
    greedy answers and budgets as `HFGenerator` (tests/test_eval_run.py)."""

    def __init__(self, local: LocalModel, chat_template_kwargs: dict | None = None, seed: int = 0):
        from larft.ct2_engine import check_convertible

        try:  # before anything is generated: CTranslate2 missing, or no converter for this architecture
            check_convertible(local.config)
        except RuntimeError as e:
            raise UserError(str(e)) from None
        self.local, self.chat_template_kwargs = local, chat_template_kwargs

    @functools.cached_property
    def engine(self) -> Any:
        import torch

        from larft.ct2_engine import CT2Engine

        engine = CT2Engine(self.local.tokenizer, threads=torch.get_num_threads())
        engine.sync(self.local.model)
        return engine

    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Generation]:
        from larft.generation import generate_records_ct2, stop_token_ids

        return generate_records_ct2(
            self.engine, self.local.tokenizer, [j.messages for j in jobs], max_new_tokens=[j.budget for j in jobs],
            stop_ids=sorted(stop_token_ids(self.local.model, self.local.tokenizer)), do_sample=sampling.do_sample,
            temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
            chat_template_kwargs=self.chat_template_kwargs, reasoning=(),
        )


def load_vllm(model_path: str, dtype: str, seed: int, trust_remote_code: bool) -> Any:
    """A vLLM engine for generation (GPU). A missing vLLM is a clear error naming the extra."""
    try:
        from vllm import LLM
    except ImportError:
        raise UserError("--backend vllm needs vLLM: pip install 'larft[vllm]' (a CUDA machine)") from None
    return LLM(model=model_path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code)


class VLLMGenerator:
    """vLLM: one SamplingParams per prompt (its own budget), one seed per draw."""

    def __init__(self, local: LocalModel, chat_template_kwargs: dict | None = None, seed: int = 0):
        from larft.generation import stop_token_ids

        self.llm = load_vllm(local.path, local.dtype, seed, local.trust_remote_code)
        self.local, self.chat_template_kwargs = local, chat_template_kwargs
        # the turn ends where transformers' generate ends it: the generation config's eos and the tokenizer's
        self.stop_ids = sorted(stop_token_ids(local, local.tokenizer))

    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Generation]:
        from larft.generation import generate_records_vllm

        # one seed per request: the N samples of a prompt must differ (same prompt + same seed = same
        # answer in vLLM); with N = 1 this is the batch's seed
        return generate_records_vllm(
            self.llm, self.local.tokenizer, [j.messages for j in jobs], max_new_tokens=[j.budget for j in jobs],
            do_sample=sampling.do_sample, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
            seeds=[sampling.seed * sampling.draws + j.draw for j in jobs], chat_template_kwargs=self.chat_template_kwargs,
            stop_ids=self.stop_ids, reasoning=(),
        )


#: `--backend` name -> engine
GENERATORS: dict[str, type] = {"hf": HFGenerator, "vllm": VLLMGenerator, "ct2": CT2Generator}
BACKENDS = tuple(GENERATORS)


def check_backend(name: str, allowed: Sequence[str] = BACKENDS) -> None:
    if name not in allowed:
        raise UserError(f"--backend: unknown value {name!r}; expected one of {', '.join(allowed)}")


class Batched:
    """Prompts of similar length batched together (sorted by prompt + budget tokens), at most
    `batch_size` a batch and at most `max_batch_tokens` padded (prompt + new) tokens; every prompt
    keeps exactly its own budget. Batch k is decoded with seed + k."""

    def __init__(self, engine: Generator, tokenizer: Any, batch_size: int, max_batch_tokens: int,
                 chat_template_kwargs: dict | None = None):
        self.engine, self.tokenizer = engine, tokenizer
        self.batch_size, self.max_batch_tokens, self.chat_template_kwargs = batch_size, max_batch_tokens, chat_template_kwargs

    def batches(self, jobs: Sequence[Job]) -> list[list[int]]:
        """The batches, as indices into `jobs`."""
        from larft.generation import prompt_length

        totals = [prompt_length(self.tokenizer, j.messages, self.chat_template_kwargs) + j.budget for j in jobs]
        batches: list[list[int]] = []
        current: list[int] = []
        width = 0
        for i in sorted(range(len(jobs)), key=lambda i: totals[i]):
            total = totals[i]
            if current and (len(current) >= self.batch_size
                            or max(width, total) * (len(current) + 1) > self.max_batch_tokens):
                batches.append(current)
                current, width = [], 0
            current.append(i)
            width = max(width, total)
        if current:
            batches.append(current)
        return batches

    def stream(self, jobs: Sequence[Job], sampling: Sampling) -> Iterator[tuple[list[Job], list[Generation]]]:
        """(batch, its generations), one batch at a time (a caller saves each as soon as it is done)."""
        for number, batch in enumerate(self.batches(jobs)):
            chunk = [jobs[i] for i in batch]
            yield chunk, self.engine.generate(chunk, sampling.for_batch(number))

    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Generation]:
        out: dict[int, Generation] = {}
        for number, batch in enumerate(self.batches(jobs)):
            out.update(zip(batch, self.engine.generate([jobs[i] for i in batch], sampling.for_batch(number))))
        return [out[i] for i in range(len(jobs))]
