"""Hindsight length awareness: LARFT's cognition task.

Every rollout the policy just wrote becomes a supervised example "count the words of this
text" whose label is its true count, `<word_count>N</word_count>` + eos. Only the label
tokens carry loss. Prompts go through the model's chat template when it has one (an
instruct model is asked the way it is used); the official release feeds raw text.

`loss_on="number"` (an option, not the method) puts the loss on the count's own tokens only:
most label tokens are the tags and the end of the turn, so once a model has learned the format
the mean over the whole label says little about whether it counts.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch

from larft.generation import render_chat
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


#: the official release's counting prompt, raw text without a chat template; the label follows the text
RELEASE_PROMPT = (
    "You are a precise text analysis assistant. Your task is to count the number of words in the provided text, "
    "where words include both Chinese characters and English words/numbers.\nRespond ONLY with the final word "
    "count, enclosed in XML tags like this: <word_count>XXX</word_count>.\n\n--- TEXT TO ANALYZE ---\n{text}"
)
#: how a counting example is asked: as a chat turn (larft) or as the release's raw text
PROMPT_STYLES = ("chat", "release")


def counting_answer(count: int, unit: str = "words") -> str:
    tag = TAGS[unit]
    return f"<{tag}>{count}</{tag}>"


def parse_count(answer: str, unit: str = "words") -> int | None:
    """The count in a model's answer, or None when it did not answer in the format."""
    tag = TAGS[unit]
    match = re.search(rf"<{tag}>\s*(\d+)\s*</{tag}>", answer)
    return int(match.group(1)) if match else None


def render_prompt(tokenizer: Any, user_text: str, chat_template_kwargs: dict | None = None,
                  system_prompt: str = "default") -> str:
    """A single user turn rendered as the model sees it (shared with generation and eval)."""
    from larft.generation import with_system_prompt

    messages = with_system_prompt([{"role": "user", "content": user_text}], system_prompt)
    return render_chat(tokenizer, messages, chat_template_kwargs)


_SLOT = "\u0000TEXT\u0000"


def prompt_parts(tokenizer: Any, unit: str, chat_template_kwargs: dict | None = None,
                 system_prompt: str = "default", style: str = "chat") -> tuple[str, str]:
    """The counting prompt around the text: (everything before it, everything after it).
    The part before is the same for every text of a unit, which `awareness_loss` exploits.
    `style="release"`: the official release's raw-text prompt (words only), the label right after the text."""
    if style == "release":
        if unit != "words":
            raise ValueError(f"awareness_prompt 'release' counts words only (the release's prompt); got unit {unit!r}")
        return RELEASE_PROMPT.split("{text}")[0], ""
    if style != "chat":
        raise ValueError(f"awareness_prompt must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")
    rendered = render_prompt(tokenizer, counting_instruction(_SLOT, unit), chat_template_kwargs, system_prompt)
    before, after = rendered.split(_SLOT)
    return before, after


def turn_end(tokenizer: Any, chat_template_kwargs: dict | None = None) -> str:
    """What ends an assistant turn in this model's chat template (`<|im_end|>` for ChatML,
    `<|eot_id|>` for Llama 3, `<end_of_turn>` for Gemma): render a turn, read what follows its
    content. Without a template (or when the template adds nothing) it is the eos token."""
    if getattr(tokenizer, "chat_template", None):
        slot = "\u0000ANSWER\u0000"
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": slot}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, **(chat_template_kwargs or {}))
        if slot in rendered:
            tail = rendered.split(slot, 1)[1].rstrip()
            if tail:
                return tail
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no chat template end-of-turn and no eos token; "
                         "the awareness label needs one to end the answer")
    return tokenizer.eos_token


def build_awareness_batch(
    texts: Sequence[str],
    units: Sequence[str],
    tokenizer: Any,
    max_text_tokens: int | None = None,
    chat_template_kwargs: dict | None = None,
    loss_on: str = "label",
    system_prompt: str = "default",
    prompt_style: str = "chat",
) -> dict[str, torch.Tensor]:
    """Counting examples for `texts`, left-padded: input_ids, attention_mask, labels, and
    prefix_length (tokens of the shared prompt part before the text, per row); with
    `loss_on="number"` also loss_mask, True at the label tokens that spell the count.

    Left padding puts every label at the end of its row, so the loss needs logits for the
    last few positions only. A text longer than `max_text_tokens` is cut and the cut text is
    what gets counted, so the label always matches what the model reads.
    """
    if len(texts) != len(units):
        raise ValueError(f"{len(texts)} texts but {len(units)} units")
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    end = tokenizer.eos_token if prompt_style == "release" else turn_end(tokenizer, chat_template_kwargs)
    end_ids = tokenizer(end, add_special_tokens=False)["input_ids"]
    parts = {u: prompt_parts(tokenizer, u, chat_template_kwargs, system_prompt, prompt_style) for u in set(units)}
    prefix_ids = {u: tokenizer(parts[u][0], add_special_tokens=False)["input_ids"] for u in parts}
    rows = []
    for text, unit in zip(texts, units):
        if max_text_tokens is not None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_text_tokens:
                text = tokenizer.decode(ids[:max_text_tokens], skip_special_tokens=True)
        count = measure(text, unit, tokenizer=tokenizer, extract=False)
        prompt_ids = prefix_ids[unit] + tokenizer(text + parts[unit][1], add_special_tokens=False)["input_ids"]
        answer = counting_answer(count, unit)
        label_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        number = _spells_count(tokenizer, answer, label_ids) if loss_on == "number" else [False] * len(label_ids)
        label_ids = label_ids + end_ids
        number = number + [False] * len(end_ids)
        rows.append((prompt_ids, label_ids, len(prefix_ids[unit]), number))
    batch = left_pad([(p, a) for p, a, _, _ in rows], tokenizer)
    batch["prefix_length"] = torch.tensor([n for _, _, n, _ in rows], dtype=torch.long)
    if loss_on == "number":
        width = batch["input_ids"].size(1)
        loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, (_, label_ids, _, number) in enumerate(rows):
            loss_mask[i, width - len(label_ids) :] = torch.tensor(number)
        batch["loss_mask"] = loss_mask
    return batch


def left_pad(rows: Sequence[tuple[list[int], list[int]]], tokenizer: Any) -> dict[str, torch.Tensor]:
    """(prompt ids, label ids) rows as one left-padded batch: input_ids, attention_mask, and labels
    (IGNORE_INDEX except on the label ids). Left padding puts every label at the end of its row,
    which `awareness_loss` relies on to compute logits for the last positions only."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt_ids, label_ids) in enumerate(rows):
        seq = prompt_ids + label_ids
        input_ids[i, width - len(seq) :] = torch.tensor(seq)
        attention_mask[i, width - len(seq) :] = 1
        labels[i, width - len(label_ids) :] = torch.tensor(label_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


#: which label tokens carry the awareness loss: all of them (the method) or only the count's
LOSS_ON = ("label", "number")


def _spells_count(tokenizer: Any, answer: str, ids: list[int]) -> list[bool]:
    """Per token of `ids` (the tokenized `answer`), whether it covers the count between the tags.
    Character spans from the fast tokenizer's offsets; a slow tokenizer: from decoding growing
    prefixes of the same ids (so the label is the same in both modes, whatever the tokenizer)."""
    start = answer.index(">") + 1
    end = answer.index("<", start)
    try:
        spans = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, KeyError):
        edges = [0] + [len(tokenizer.decode(ids[: k + 1])) for k in range(len(ids))]
        spans = list(zip(edges[:-1], edges[1:]))
    return [a < end and b > start for a, b in spans]


def awareness_loss(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    prefix_length: torch.Tensor | None = None,
    chunks: int | None = None,
    predictions: dict[int, list[int]] | None = None,
    loss_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean next-token cross-entropy over the label tokens only (with `loss_mask`: over the
    label tokens it marks, e.g. the count's own; predictions still cover the whole label).
    `reduction="sum"`: the sum instead, for a mean over a batch split across micro-batches and
    processes (`awareness_normalizer`).

    With a `predictions` dict, it also receives, per row, the argmax token at every label
    position (teacher-forced: what the model would answer given the right tokens before): a
    free by-product of this pass, read by the trainer as the model's count of its own rollout.

    Exact, but cheap, because this pass is LARFT's main cost:
    - logits only for the positions that predict a label (labels end each left-padded row);
    - rows sorted by length and run in `chunks` groups, each cut to its own longest row
      (padding is paid in full on CPU);
    - the prompt part before the text is the same in every row: with `prefix_length` it is
      computed once and its keys/values shared by the group (gradients flow through it; not for a
      model sharded by FSDP2, `_is_fsdp2`).
    A batch without any label token gives 0, not NaN. Default chunks: one per 4 rows, at most 4.
    """
    loss_labels = labels if loss_mask is None else labels.masked_fill(~loss_mask.bool(), IGNORE_INDEX)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n_tokens = label_token_count(labels, loss_mask)
    if not n_tokens:
        return torch.zeros((), device=input_ids.device, requires_grad=True)
    rows = input_ids.size(0)
    sharded = _is_fsdp2(model)  # FSDP2: no shared prefix (`_is_fsdp2`)
    chunks = max(1, min(chunks if chunks is not None else min(4, rows // 4), rows))
    order = torch.argsort(attention_mask.sum(dim=1))
    total = torch.zeros((), device=input_ids.device)
    for part in torch.tensor_split(order, chunks):
        ids, mask, lab, loss_lab = input_ids[part], attention_mask[part], labels[part], loss_labels[part]
        keep = int(mask.sum(dim=1).max())  # this group's longest row; the rest is left padding
        ids, mask, lab, loss_lab = ids[:, -keep:], mask[:, -keep:], lab[:, -keep:], loss_lab[:, -keep:]
        if not (lab != IGNORE_INDEX).any():
            continue
        shared = prefix_length[part] if prefix_length is not None and not sharded else None
        prefix = _shared_prefix(ids, mask, shared)  # None without a shared prefix
        sink = _RowSink(part.tolist(), predictions) if predictions is not None else None
        loss = _cached_prefix_loss(model, ids, mask, lab, prefix, sink, loss_lab) if prefix is not None else None
        total = total + (loss if loss is not None else _plain_loss(model, ids, mask, lab, sink, loss_lab))
    return total if reduction == "sum" else total / n_tokens


def label_token_count(labels: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
    """How many tokens the awareness loss is taken over (the label tokens, or those `loss_mask` marks)."""
    has_label = labels != IGNORE_INDEX
    return (has_label if loss_mask is None else has_label & loss_mask.bool()).sum()


def awareness_normalizer(items_in_batch: float, num_processes: int, accumulation: int,
                         steps_per_generation: int) -> float:
    """What one micro-batch's summed awareness loss is divided by, so that the loss over a
    generation batch is the mean over all its label tokens (`items_in_batch`, every process's),
    whatever the split into processes and micro-batches: DDP averages the processes' gradients
    and each optimizer step sums `accumulation` micro-batches of the batch's `steps_per_generation`.
    The same rule as TRL's token-level `dapo` loss."""
    return max(float(items_in_batch), 1.0) / num_processes * accumulation / steps_per_generation


def read_count(tokenizer: Any, label: list[int], predicted: list[int]) -> tuple[int, int | None] | None:
    """(true count, the model's count) of one counting example, from its label ids and the argmax
    at each label position (teacher-forced, `awareness_loss(predictions=)`); None for a label
    without a count. The model's count is read at the count's own positions only, set into the
    true label: a tag it would spell wrong does not hide whether it counts (with
    `loss_on="number"` it is never taught the tags), so both loss modes are measured alike."""
    text = tokenizer.decode(label)
    unit = next((u for u in TAGS if f"<{TAGS[u]}>" in text), "words")
    truth = parse_count(text, unit)
    if truth is None:
        return None
    answer = counting_answer(truth, unit)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if ids != label[: len(ids)] or len(predicted) != len(label):
        raise ValueError(f"label {label} is not the tokenized {answer!r} + the turn's end, or predictions "
                         f"({len(predicted)}) do not cover it ({len(label)})")
    spliced = [p if is_count else t for t, p, is_count in zip(ids, predicted, _spells_count(tokenizer, answer, ids))]
    return truth, parse_count(tokenizer.decode(spliced), unit)


def count_error(truth: int, guess: int | None) -> float:
    """|guess - truth| / truth, capped at 1; a count that is not a number is an error of 1."""
    return 1.0 if guess is None else min(abs(guess - truth) / max(truth, 1), 1.0)


class _RowSink:
    """Collects argmax predictions at label positions for the original rows of a group."""

    def __init__(self, rows: list[int], into: dict[int, list[int]]):
        self.rows, self.into = rows, into

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        best = logits.detach().argmax(dim=-1)
        for row, pred, target in zip(self.rows, best, targets):
            keep = target != IGNORE_INDEX
            self.into[row] = pred[keep].tolist()


def _label_span(lab: torch.Tensor) -> int:
    """Positions from the earliest label token to the end of the rows."""
    labelled = lab != IGNORE_INDEX
    first = int(labelled.int().argmax(dim=1)[labelled.any(dim=1)].min())
    return lab.size(1) - first


def _sum_ce(logits: torch.Tensor, targets: torch.Tensor, sink: _RowSink | None = None,
            loss_targets: torch.Tensor | None = None) -> torch.Tensor:
    logits = logits[:, :-1, :].float()  # position t predicts token t + 1
    if sink is not None:
        sink.add(logits, targets)
    loss_targets = targets if loss_targets is None else loss_targets
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), loss_targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def _is_fsdp2(model: Any) -> bool:
    """Whether FSDP2 (`fully_shard`) manages `model`. The shared prefix's keys/values carry gradient
    back into the prefix's forward without passing through any layer's output, where FSDP2 hooks
    the re-gathering of the layer's (by then resharded) parameters for backward: that backward
    then reads freed storage ("setStorage: ... out of bounds for storage of size 0"), so a sharded
    model takes the plain pass (the same loss, without the shared prefix's saving)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6
        return False
    if isinstance(model, FSDPModule):
        return True
    modules = getattr(model, "modules", None)  # blocks sharded under an unsharded root
    return callable(modules) and any(isinstance(m, FSDPModule) for m in modules())


def _plain_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, lab: torch.Tensor,
                sink: _RowSink | None = None, loss_lab: torch.Tensor | None = None) -> torch.Tensor:
    span = _label_span(lab)
    outputs = model(input_ids=ids, attention_mask=mask, logits_to_keep=span + 1, use_cache=False)
    return _sum_ce(outputs.logits, lab[:, -span:], sink, None if loss_lab is None else loss_lab[:, -span:])


def _shared_prefix(ids: torch.Tensor, mask: torch.Tensor, prefix_length: torch.Tensor | None) -> torch.Tensor | None:
    """The (1, P) prompt prefix when every row of the group starts with the same P tokens."""
    if prefix_length is None or int(prefix_length.min()) != int(prefix_length.max()) or int(prefix_length[0]) < 2:
        return None
    p = int(prefix_length[0])
    starts = (mask == 0).sum(dim=1, keepdim=True)  # left padding of each row
    if int((mask.sum(dim=1) - p).min()) < 2:
        return None
    prefixes = ids.gather(1, starts + torch.arange(p, device=ids.device))
    if not bool((prefixes == prefixes[:1]).all()):
        return None
    return prefixes[:1]


def _cached_prefix_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, lab: torch.Tensor,
                        prefix: torch.Tensor, sink: _RowSink | None = None,
                        loss_lab: torch.Tensor | None = None) -> torch.Tensor | None:
    """Run the shared prefix once, then every row's own tokens on top of its keys/values.

    Rows become [prefix][left padding][own tokens]; the padding is masked out and the own
    tokens get positions P, P+1, ... as in the plain layout, so logits are identical.
    Returns None when the model gives no cache (e.g. gradient checkpointing), to fall back."""
    rows, p = ids.size(0), prefix.size(1)
    own = mask.sum(dim=1) - p
    width = int(own.max())
    own_ids, own_lab = ids[:, -width:], lab[:, -width:]
    column = torch.arange(width, device=ids.device)
    own_mask = (column[None, :] >= (width - own)[:, None]).long()
    positions = (p + own_mask.cumsum(dim=1) - 1).clamp(min=p)
    first = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
    # transformers >= 5.24 names the cache `cache` (input and output), earlier 5.x `past_key_values`
    key = "cache" if getattr(first, "cache", None) is not None else "past_key_values"
    cache = getattr(first, key, None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(rows)
    span = _label_span(own_lab)
    full_mask = torch.cat([torch.ones(rows, p, dtype=own_mask.dtype, device=ids.device), own_mask], dim=1)
    outputs = model(input_ids=own_ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                    logits_to_keep=span + 1, **{key: cache})
    return _sum_ce(outputs.logits, own_lab[:, -span:], sink, None if loss_lab is None else loss_lab[:, -span:])
