"""Less padding in the policy's forward and backward: micro-batches of similar length, each cut
to its own longest rollout.

TRL pads a whole generation batch to its longest completion (and its longest prompt), shuffles
it and splits it into `steps_per_generation` micro-batches. On CPU every padded position costs as
much as a real one. After TRL's own shuffle, the rollouts of each *optimizer step* (its
`gradient_accumulation_steps` micro-batches) are sorted by length among themselves, and each
micro-batch is cut to the columns that hold a real token. So every optimizer step trains on exactly
the rollouts TRL's shuffle gives it; only their order among that step's micro-batches changes, and
that changes no gradient (the step sums them) and no loss (every loss TRL computes is a masked sum
or mean over real tokens). Sorting across optimizer steps would not be neutral: with
steps_per_generation > gradient_accumulation_steps each step would train on one length slice of
the batch, and under a length reward length and advantage go together.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: tensors laid out like the completion: (rollouts, completion positions)
COMPLETION_KEYS = ("completion_ids", "completion_mask", "tool_mask", "old_per_token_logps", "ref_per_token_logps",
                   "sampling_per_token_logps", "importance_sampling_ratio")
#: tensors laid out like the (left-padded) prompt
PROMPT_KEYS = ("prompt_ids", "prompt_mask")


def rows_per_optimizer_step(rows: int, steps_per_generation: int, accumulation: int) -> int:
    """How many consecutive rows of a (shuffled) generation batch of `rows` rollouts one optimizer
    step trains on together: micro-batch j of the batch runs at micro-step s0 + j (s0 a multiple of
    steps_per_generation), and an optimizer step is `accumulation` consecutive micro-steps, so blocks
    of gcd(steps_per_generation, accumulation) micro-batches never straddle two optimizer steps."""
    if rows % steps_per_generation:
        raise ValueError(f"a generation batch of {rows} rollouts does not split into {steps_per_generation} "
                         "micro-batches")
    return rows // steps_per_generation * math.gcd(steps_per_generation, max(accumulation, 1))


def sort_by_length(batch: dict[str, Any], block: int | None = None, ties: torch.Tensor | None = None) -> dict[str, Any]:
    """The generation batch reordered by real (prompt + completion) length within each block of
    `block` consecutive rows (None: the whole batch as one block), in unison over every per-rollout
    value (tensors along their first dimension, lists); scalars are kept. A rollout never leaves its block.
    Rows of equal length keep the order of `ties` (a rank per row; default: their order in the batch)."""
    lengths = batch["prompt_mask"].sum(dim=1).cpu() + batch["completion_mask"].sum(dim=1).cpu()
    rows = lengths.size(0)
    block = block or rows
    if rows % block:
        raise ValueError(f"{rows} rows do not split into blocks of {block}")
    blocks = torch.arange(rows) // block
    ties = torch.arange(rows) if ties is None else ties.cpu()
    key = (blocks * (int(lengths.max()) + 1) + lengths) * rows + ties
    order = torch.argsort(key, stable=True)

    def permute(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[order.to(value.device)] if value.ndim >= 1 and value.size(0) == rows else value
        if isinstance(value, list) and len(value) == rows:
            return [value[i] for i in order.tolist()]
        return value

    return {key: permute(value) for key, value in batch.items()}


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """One micro-batch cut to the completion columns up to its last real token and the prompt
    columns from its first real token (prompts are left-padded)."""
    out = dict(batch)
    completion_mask = batch["completion_mask"]
    real = completion_mask.any(dim=0).nonzero()
    keep = int(real.max()) + 1 if real.numel() else 1
    width = completion_mask.size(1)
    if keep < width:
        for key in COMPLETION_KEYS:
            value = out.get(key)
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.size(1) == width:
                out[key] = value[:, :keep]
    prompt_mask = batch["prompt_mask"]
    real = prompt_mask.any(dim=0).nonzero()
    start = int(real.min()) if real.numel() else 0
    if start > 0:
        for key in PROMPT_KEYS:
            out[key] = out[key][:, start:]
    return out
