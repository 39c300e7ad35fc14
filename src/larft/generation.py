"""Batched generation for chat prompts: used by `larft generate`, the before/after length
check and evaluation."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from larft.length import DEFAULT_REASONING, final_text


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], chat_template_kwargs: dict | None = None) -> str:
    """The prompt as the model sees it: its chat template with a generation prompt, or raw text.
    `chat_template_kwargs` (e.g. {"enable_thinking": false}) reach the template everywhere a
    model is asked something: rollouts (TRL), counting examples, the length check and eval."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True,
                                             **(chat_template_kwargs or {}))
    return "\n".join(m["content"] for m in messages) + "\n"


def prompt_length(tokenizer: Any, messages: Sequence[dict[str, str]], chat_template_kwargs: dict | None = None) -> int:
    """Tokens of the rendered prompt (what counts against context windows and prompt limits)."""
    return len(tokenizer(render_chat(tokenizer, messages, chat_template_kwargs), add_special_tokens=False)["input_ids"])


#: system messages a run can put before every prompt (any other text is used as it is)
SYSTEM_PROMPTS = {"default": None, "none": "", "short": "You are a helpful assistant."}


def with_system_prompt(messages: Any, system_prompt: str = "default") -> Any:
    """The chat messages with the chosen system message first. `default` leaves them to the chat
    template (which may add its own: SmolLM2's adds a ~20-token one to every prompt); `none` is an
    empty system message (the template then adds nothing); `short` a one-line one. A conversation
    that starts with its own system message keeps it; a plain-text prompt is left as it is."""
    if system_prompt == "default" or not isinstance(messages, list) or (messages and messages[0].get("role") == "system"):
        return messages
    return [{"role": "system", "content": SYSTEM_PROMPTS.get(system_prompt, system_prompt)}, *messages]


@dataclass
class Generation:
    """One generated answer: `text` is the final answer (reasoning and markers stripped),
    `new_tokens` what was generated, `truncated` whether it stopped at its budget instead of
    ending its turn, `max_new_tokens` the budget this row actually had."""

    text: str
    new_tokens: int
    truncated: bool
    max_new_tokens: int


class _RowBudgets(StoppingCriteria):
    """Stop each row at its own max_new_tokens, so rows with different budgets can share a
    batch and every row gets exactly its own budget (not the batch's largest)."""

    def __init__(self, prompt_width: int, budgets: torch.Tensor):
        self.prompt_width = prompt_width
        self.budgets = budgets

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.budgets.to(input_ids.device)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a turn: the model's generation config eos (may be several), the tokenizer's eos
    (`larft.rollout_end.turn_end_ids`)."""
    from larft.rollout_end import turn_end_ids

    return turn_end_ids(getattr(model, "generation_config", None), tokenizer)


@contextmanager
def weights_precision(model: Any) -> Iterator[Any]:
    """The model computing in its weights' own precision: accelerate's mixed-precision wrapper of
    `forward` (bf16 autocast while training) taken off for the duration, so a check made during
    training answers as `larft eval` of the saved model would."""
    original = model.__dict__.get("_original_forward")
    if original is None or "forward" not in model.__dict__:
        yield model
        return
    wrapped = model.forward
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


@torch.no_grad()
def generate_records(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.8,
    top_k: int = 0,
    progress: bool = False,
    chat_template_kwargs: dict | None = None,
    reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING,
    synced_gpus: bool | None = None,
) -> list[Generation]:
    """Generate for chat prompts; `max_new_tokens` is one budget for all or one per prompt. `synced_gpus`:
    transformers' own option for sharded models on several processes (each keeps stepping until all are
    done; None lets transformers decide)."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts):
        raise ValueError(f"{len(budgets)} budgets for {len(prompts)} prompts")
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    records: list[Generation] = []
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch")
    try:
        for start in starts:
            chunk = [render_chat(tokenizer, p, chat_template_kwargs) for p in prompts[start : start + batch_size]]
            own = torch.tensor(budgets[start : start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            width = enc["input_ids"].shape[1]
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None} \
                if do_sample else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            out = model.generate(
                **enc, max_new_tokens=int(own.max()), pad_token_id=pad_id, eos_token_id=sorted(stops),
                stopping_criteria=StoppingCriteriaList([_RowBudgets(width, own)]), synced_gpus=synced_gpus, **sampling,
            )
            for row, budget in zip(out[:, width:].tolist(), own.tolist()):
                end = next((i for i, t in enumerate(row[:budget]) if t in stops), None)
                ids = row[:end] if end is not None else row[:budget]
                text = tokenizer.decode(ids, skip_special_tokens=True)
                records.append(Generation(final_text(text, reasoning), len(ids), end is None, budget))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return records


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], **kwargs: Any) -> list[str]:
    """Final answers (reasoning and markers stripped) for a list of chat prompts; see `generate_records`."""
    return [r.text for r in generate_records(model, tokenizer, prompts, **kwargs)]


def generate_records_vllm(
    llm: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: Sequence[int],
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.8,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    chat_template_kwargs: dict | None = None,
    stop_ids: Sequence[int] = (),
    reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING,
) -> list[Generation]:
    """The same records as `generate_records`, generated by a vLLM engine: one SamplingParams per
    prompt, so every prompt gets its own budget; the prompt is rendered by the same chat template,
    the answer stops at the same `stop_ids` and is counted and trimmed the same way (stop tokens not
    counted). `truncated` is vLLM's finish_reason "length". `seeds`: one sampling seed per prompt
    (best-of-N needs its N copies of a prompt to differ); default `seed` for all."""
    from vllm import SamplingParams

    texts = [render_chat(tokenizer, p, chat_template_kwargs) for p in prompts]
    seeds = [seed] * len(prompts) if seeds is None else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    params = [
        SamplingParams(max_tokens=int(budget), temperature=temperature if do_sample else 0.0,
                       top_p=top_p if do_sample else 1.0, seed=own_seed if do_sample else None,
                       stop_token_ids=sorted(stop_ids) or None)
        for budget, own_seed in zip(max_new_tokens, seeds)
    ]
    outputs = llm.generate(texts, params, use_tqdm=False)
    records = []
    stops = set(stop_ids)
    for out, budget in zip(outputs, max_new_tokens):
        best = out.outputs[0]
        kept = [t for t in best.token_ids if t not in stops]
        records.append(Generation(final_text(best.text, reasoning), len(kept), best.finish_reason == "length",
                                  int(budget)))
    return records


def generate_records_ct2(
    engine: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int | Sequence[int],
    stop_ids: Sequence[int],
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    chat_template_kwargs: dict | None = None,
    reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING,
) -> list[Generation]:
    """The same records as `generate_records`, from a synced `CT2Engine` (larft.ct2_engine).
    Prompts sharing a budget are decoded together, so each gets exactly its own budget."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts):
        raise ValueError(f"{len(budgets)} budgets for {len(prompts)} prompts")
    ids = [tokenizer(render_chat(tokenizer, p, chat_template_kwargs), add_special_tokens=False)["input_ids"]
           for p in prompts]
    stops = set(stop_ids)
    records: list[Generation | None] = [None] * len(prompts)
    for budget in sorted(set(budgets)):
        rows = [i for i, b in enumerate(budgets) if b == budget]
        outs = engine.generate([ids[i] for i in rows], max_new_tokens=int(budget), stop_ids=sorted(stops),
                               do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                               seed=seed + budget if do_sample else None)
        for i, out in zip(rows, outs):
            kept = [t for t in out.completion_ids if t not in stops]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            records[i] = Generation(final_text(text, reasoning), len(kept), out.truncated, int(budget))
    return records  # type: ignore[return-value]
