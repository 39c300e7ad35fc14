"""Where a rollout ends: one definition for the length reward, `truncated_rate`, rollouts.jsonl and
the awareness label, so that all four read the same text and agree on whether it was cut.

A turn ends at the first of the model's end-of-turn ids: every eos id of its generation config (which
may list several, e.g. Llama 3's `<|eot_id|>` and `<|eom_id|>` beside `<|end_of_text|>`) and the
tokenizer's eos; TRL pads finished rollouts with the pad id, so in training the pad id ends one too.
A rollout with none of them ran into its budget: it is truncated.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def turn_end_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """The ids that end a turn: every eos id of the generation config, and the tokenizer's eos."""
    ids = getattr(generation_config, "eos_token_id", None)
    found = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        found.add(tokenizer.eos_token_id)
    return {int(i) for i in found}


def rollout_stop_ids(eos_token_ids: Iterable[int], tokenizer: Any) -> frozenset[int]:
    """The ids that end a training rollout: TRL's eos list (`GRPOTrainer.eos_token_ids`: the generation
    config's eos ids and the tokenizer's) and the pad id TRL fills a finished rollout with."""
    ids = {int(i) for i in eos_token_ids if i is not None}
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    if getattr(tokenizer, "pad_token_id", None) is not None:
        ids.add(tokenizer.pad_token_id)
    return frozenset(ids)


def rollout_end(ids: Sequence[int], stop_ids: Iterable[int]) -> tuple[int, bool]:
    """(how many tokens of `ids` the rollout wrote before its end, whether it was truncated): the text is
    `ids[:end]`; with no stop id anywhere the rollout ran into its budget (truncated) and all of it counts."""
    stops = stop_ids if isinstance(stop_ids, (set, frozenset)) else set(stop_ids)
    for i, token in enumerate(ids):
        if token in stops:
            return i, False
    return len(ids), True
