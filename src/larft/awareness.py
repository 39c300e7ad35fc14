"""Hindsight length awareness: LARFT's cognition task.

Every rollout the policy just wrote becomes a supervised example "count the words of this
text" whose label is its true count, `<word_count>N</word_count>` + eos. Only the label
tokens carry loss. Prompts go through the model's chat template when it has one (an
instruct model is asked the way it is used); the official release feeds raw text.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch

from larft.length import measure

IGNORE_INDEX = -100

TAGS = {"words": "word_count", "chars": "char_count", "tokens": "token_count"}
_UNIT_NAMES = {"words": "words", "chars": "non-space characters", "tokens": "tokens"}


def counting_instruction(text: str, unit: str = "words") -> str:
    """The user turn of a counting example (also used by the cognition probe in eval)."""
    tag = TAGS[unit]
    return (
        f"Count the {_UNIT_NAMES[unit]} in the text below. "
        f"Answer only with <{tag}>N</{tag}>, where N is the number.\n\nText:\n{text}"
    )


def counting_answer(count: int, unit: str = "words") -> str:
    tag = TAGS[unit]
    return f"<{tag}>{count}</{tag}>"


def parse_count(answer: str, unit: str = "words") -> int | None:
    """The count in a model's answer, or None when it did not answer in the format."""
    tag = TAGS[unit]
    match = re.search(rf"<{tag}>\s*(\d+)\s*</{tag}>", answer)
    return int(match.group(1)) if match else None


def render_prompt(tokenizer: Any, user_text: str) -> str:
    """The prompt as the model sees it: its chat template with a generation prompt, or raw text."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return user_text + "\n"


def build_awareness_batch(
    texts: Sequence[str],
    units: Sequence[str],
    tokenizer: Any,
    max_text_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """Counting examples for `texts`, left-padded: input_ids, attention_mask, labels.

    Left padding puts every label at the end of its row, so the loss needs logits for the
    last few positions only. A text longer than `max_text_tokens` is cut and the cut text is
    what gets counted, so the label always matches what the model reads.
    """
    if len(texts) != len(units):
        raise ValueError(f"{len(texts)} texts but {len(units)} units")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; the awareness label needs one to end the answer")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = []
    for text, unit in zip(texts, units):
        if max_text_tokens is not None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_text_tokens:
                text = tokenizer.decode(ids[:max_text_tokens], skip_special_tokens=True)
        count = measure(text, unit, tokenizer=tokenizer, extract=False)
        prompt_ids = tokenizer(render_prompt(tokenizer, counting_instruction(text, unit)), add_special_tokens=False)[
            "input_ids"
        ]
        label_ids = tokenizer(counting_answer(count, unit), add_special_tokens=False)["input_ids"]
        label_ids = label_ids + [tokenizer.eos_token_id]
        rows.append((prompt_ids, label_ids))
    width = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt_ids, label_ids) in enumerate(rows):
        seq = prompt_ids + label_ids
        start = width - len(seq)
        input_ids[i, start:] = torch.tensor(seq)
        attention_mask[i, start:] = 1
        labels[i, width - len(label_ids) :] = torch.tensor(label_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def awareness_loss(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    chunks: int | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over the label tokens only.

    Rows are sorted by length and run in `chunks` groups, each cut to its own longest row:
    rollouts differ a lot in length, and padding is paid for in full on CPU (2-4 groups
    save ~30% of this pass). Logits are computed only for the positions that predict a label
    (labels sit at the end of each left-padded row), never for the whole text. A batch
    without any label token gives 0, not NaN. Default chunks: one per 4 rows, at most 4.
    """
    has_label = labels != IGNORE_INDEX
    if not has_label.any():
        return torch.zeros((), device=input_ids.device, requires_grad=True)
    rows = input_ids.size(0)
    chunks = max(1, min(chunks if chunks is not None else min(4, rows // 4), rows))
    order = torch.argsort(attention_mask.sum(dim=1))
    total = torch.zeros((), device=input_ids.device)
    for part in torch.tensor_split(order, chunks):
        ids, mask, lab = input_ids[part], attention_mask[part], labels[part]
        keep = int(mask.sum(dim=1).max())  # this group's longest row; the rest is left padding
        ids, mask, lab = ids[:, -keep:], mask[:, -keep:], lab[:, -keep:]
        labelled = lab != IGNORE_INDEX
        if not labelled.any():
            continue
        first_label = int(labelled.int().argmax(dim=1)[labelled.any(dim=1)].min())
        span = keep - first_label  # positions from the earliest label to the end
        outputs = model(input_ids=ids, attention_mask=mask, logits_to_keep=span + 1, use_cache=False)
        logits = outputs.logits[:, :-1, :].float()  # position t predicts token t + 1
        total = total + torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), lab[:, -span:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    return total / has_label.sum()
