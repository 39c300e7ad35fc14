"""`EvalSettings`: how `larft eval` generates and scores (also `larft.eval.runner.EvalSettings`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class EvalSettings:
    batch_size: int = 8
    max_batch_tokens: int = 16384  # padded (prompt + new) tokens per generation batch
    max_new_tokens_cap: int = 2048
    tokens_per_word: float | None = None  # the tokenizer's tokens per word; None: measured (larft.budget)
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.8
    seed: int = 0
    limit: int | None = None
    filters: dict[str, str] = field(default_factory=dict)
    counting_own: int = 24  # own generations the counting probe asks the model to count
    device: str = "auto"  # auto: CUDA when present, else CPU
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    chat_template_kwargs: dict | None = None
    reasoning_delimiters: str = "<think>,</think>"
    bootstrap: int = 1000  # resamples for the 95% intervals
    backend: str = "hf"  # hf (transformers generate), ct2 (CTranslate2 on CPU, fp32) or vllm (GPU)
    best_of: int = 1  # N > 1: sample N answers per length prompt, keep the highest length reward (larft.best_of)
    tokens_per_word_cn: float | None = None  # per CJK character; None: measured
    system_prompt: str = "default"  # system message before every prompt (larft.generation.with_system_prompt)

    def __post_init__(self) -> None:
        """The one check of the values `larft eval` and `run_eval` are given (a UserError each)."""
        from larft.eval.generators import check_backend
        from larft.length import parse_delimiters
        from larft.models import check_device

        check_backend(self.backend)
        check_device(self.device, self.dtype)
        parse_delimiters(self.reasoning_delimiters)

    def budget(self, target: int, lang: str = "en", control: str = "equal", metric: str = "lifebench") -> tuple[int, bool]:
        """(max_new_tokens for this prompt, whether --max-new-tokens-cap cut it). Score-neutral: the
        answer may reach the length where its score is already ~0 (`larft.budget`), so a cut answer
        scores as an uncut run-away would. A prompt the cap cuts is `budget_limited`: listed, not
        generated, kept out of the headline."""
        from larft.budget import token_budget, zero_score_multiple

        per_word = self.tokens_per_word_cn if lang == "cn" else self.tokens_per_word
        if per_word is None:
            raise ValueError("EvalSettings.tokens_per_word is not set: the Evaluator measures it from the tokenizer")
        need = token_budget(target, zero_score_multiple(control, metric), per_word)
        return min(self.max_new_tokens_cap, need), need > self.max_new_tokens_cap

    def max_new_tokens(self, target: int, lang: str = "en", control: str = "equal", metric: str = "lifebench") -> int:
        return self.budget(target, lang, control, metric)[0]

    def sampled(self, length_targets: bool = True) -> bool:
        """Whether generation samples: --sample, or best-of-N (on prompts with a length target)."""
        return self.do_sample or (length_targets and self.best_of > 1)

    def decoding_key(self, length_targets: bool = True) -> str:
        """Everything besides the prompt and budget that changes an output: part of the cache key.
        Best-of-N applies to prompts with a length target (`length_targets`); the others (counting
        answers) are decoded as without it."""
        mode = f"sample-t{self.temperature}-p{self.top_p}-s{self.seed}" if self.sampled(length_targets) else "greedy"
        if length_targets and self.best_of > 1:
            mode += f"-best{self.best_of}"
        if self.backend != "hf":  # another engine's numerics: its own cache entries
            mode += f"-{self.backend}"
        if self.chat_template_kwargs:
            mode += "-tpl" + json.dumps(self.chat_template_kwargs, sort_keys=True)
        if self.system_prompt != "default":
            mode += "-sys" + json.dumps(self.system_prompt)
        return mode
