"""Less padding in the policy's forward and backward: micro-batches of similar length, each cut
to its own longest rollout.

TRL pads a whole generation batch to its longest completion (and its longest prompt) and splits
it into micro-batches as they are. On CPU every padded position costs as much as a real one.
Sorting the batch by length before the split puts similar lengths together, and cutting each
micro-batch to the columns that hold a real token removes the rest. Every loss TRL computes is a
masked sum or mean over real tokens, so the cut changes no loss; which rollouts share a
micro-batch changes as with TRL's own random shuffle (exactly nothing for the token-level
losses `dapo`, `cispo`, `vespo`, which are normalised over the whole generation batch).
"""

from __future__ import annotations

from typing import Any

import torch

#: tensors laid out like the completion: (rollouts, completion positions)
COMPLETION_KEYS = ("completion_ids", "completion_mask", "tool_mask", "old_per_token_logps", "ref_per_token_logps",
                   "sampling_per_token_logps", "importance_sampling_ratio")
#: tensors laid out like the (left-padded) prompt
PROMPT_KEYS = ("prompt_ids", "prompt_mask")


def sort_by_length(batch: dict[str, Any]) -> dict[str, Any]:
    """The generation batch reordered by real (prompt + completion) length, in unison over every
    per-rollout value (tensors along their first dimension, lists); scalars are kept."""
    lengths = batch["prompt_mask"].sum(dim=1) + batch["completion_mask"].sum(dim=1)
    order = torch.argsort(lengths.cpu(), stable=True)
    rows = lengths.size(0)

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
