"""Batched generation for chat prompts: used by `larft generate`, the before/after length
check and evaluation."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from larft.length import final_text


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The prompt as the model sees it: its chat template with a generation prompt, or raw text."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages) + "\n"


def prompt_length(tokenizer: Any, messages: Sequence[dict[str, str]]) -> int:
    """Tokens of the rendered prompt (what counts against context windows and prompt limits)."""
    return len(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.8,
    progress: bool = False,
) -> list[str]:
    """Final answers (think blocks and markers stripped) for a list of chat prompts."""
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[str] = []
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch")
    try:
        for start in starts:
            chunk = [render_chat(tokenizer, p) for p in prompts[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
            new = out[:, enc["input_ids"].shape[1] :]
            texts.extend(final_text(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts
