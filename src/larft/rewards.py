"""The length reward: LARFT's rule-based RL signal, plus a TRL-compatible wrapper.

    delta = |L - c| / c,  R = max(0, 1 - delta)          (paper, "equal to")

`at_most` / `at_least` / `range` give 1 on the allowed side and the same linear fall-off
outside it, measured from the nearest allowed bound.

Refusal floor: an answer shorter than `refusal_length(target)` units (<= 1 unit, or below
`refusal_floor` x the target) scores 0 whatever the constraint, unless the target itself is
that small. Without it "at most 64 words" is won by saying nothing, a shortcut a policy finds
and LIFEBench would not show (it drops answers of <= 1 word as refusals).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import math

from larft.length import (
    DEFAULT_REASONING, LOOP_MIN_WORDS, LOOP_NGRAM, LOOP_SHARE, completion_text, count_words, final_text, is_looping,
    measure, repetition_share,
)
from larft.length_spec import LengthSpec
from larft.rollout_end import rollout_end, rollout_stop_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CONSTRAINTS = ("equal", "at_most", "at_least", "range")

#: default refusal floor: answers below 10% of the target (and of <= 1 unit) are refusals
REFUSAL_FLOOR = 0.1


def _falloff(length: int, bound: int) -> float:
    """max(0, 1 - |L - c| / c), c >= 1."""
    return max(0.0, 1.0 - abs(length - bound) / bound)


def length_deviation(length: int, target: int | Sequence[int], constraint: str = "equal") -> float:
    """Relative distance to the allowed region (0 when satisfied): |L - c| / c for `equal`."""
    lo, hi = _bounds(target, constraint)
    if lo is not None and length < lo:
        bound = lo
    elif hi is not None and length > hi:
        bound = hi
    else:
        return 0.0
    return abs(length - bound) / bound


def _bounds(target: int | Sequence[int], constraint: str) -> tuple[int | None, int | None]:
    if constraint == "range":
        if isinstance(target, (str, bytes)) or not isinstance(target, Sequence) or len(target) != 2:
            raise ValueError(f"constraint 'range' needs target=(lo, hi), got {target!r}")
        lo, hi = int(target[0]), int(target[1])
        if lo < 1:
            raise ValueError(f"a length target must be a positive integer, got range {target!r}")
        if lo > hi:
            raise ValueError(f"range target has lo > hi: {target!r}")
        return lo, hi
    if isinstance(target, Sequence) and not isinstance(target, (str, bytes)):
        raise ValueError(f"constraint {constraint!r} needs a single integer target, got {target!r}")
    c = int(target)
    if c < 1:  # one rule everywhere (data files, training, eval): |L - c| / c needs c >= 1
        raise ValueError(f"a length target must be a positive integer, got {c}")
    if constraint == "equal":
        return c, c
    if constraint == "at_most":
        return None, c
    if constraint == "at_least":
        return c, None
    raise ValueError(f"unknown constraint {constraint!r}; expected one of {', '.join(CONSTRAINTS)}")


def refusal_length(target: int | Sequence[int], constraint: str = "equal", floor: float = REFUSAL_FLOOR) -> int:
    """The shortest answer that is not a refusal: max(2, ceil(floor * c)) units, where c is the
    target (the lower bound of a range), but never more than c itself, so a target of 1
    accepts a 1-unit answer. `floor <= 0` turns the rule off (returns 0)."""
    if floor <= 0:
        return 0
    lo, hi = _bounds(target, constraint)
    c = lo if lo is not None else hi
    return min(int(c), max(2, math.ceil(floor * c)))


def is_refusal(length: int, target: int | Sequence[int], constraint: str = "equal",
               floor: float = REFUSAL_FLOOR) -> bool:
    """True when `length` is below the refusal floor (see `refusal_length`)."""
    return length < refusal_length(target, constraint, floor)


def repeated_trigram_share(text: str) -> float:
    """Share of word trigrams that repeat an earlier trigram (0 for fewer than 3 words):
    `larft.length.repetition_share(text, 3)`."""
    return repetition_share(text, 3)


def is_degenerate(text: str, threshold: float = LOOP_SHARE, n: int = LOOP_NGRAM, min_words: int = LOOP_MIN_WORDS) -> bool:
    """The length reward's degenerate guard: the text loops as the eval counts loops
    (`larft.length.is_looping`, one function, its settings): more than `threshold` (0.3) of its word
    n-grams (4-grams) repeat an earlier one, judged from `min_words` (8) words on. (Before 2026-12-07:
    trigrams, > 0.5, which let a long rollout loop for its last third and still score.)"""
    return bool(is_looping(text, n=n, threshold=threshold, min_words=min_words))


def length_score(
    text: str,
    target: int | Sequence[int],
    *,
    unit: str = "words",
    constraint: str = "equal",
    tokenizer: PreTrainedTokenizerBase | None = None,
    degenerate_guard: bool = False,
    refusal_floor: float = 0.0,
    reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING,
    truncated: bool = False,
) -> float:
    """Reward in [0, 1] for how well `text` meets the length constraint.

    The text is reduced to its final answer first (no reasoning block, no chat markers).
    With `degenerate_guard`, a looping response (`is_degenerate`: > 30% repeated word 4-grams) gets 0; with
    `refusal_floor` > 0, an answer below the refusal floor gets 0 (see `refusal_length`);
    a `truncated` answer (cut at its budget) gets `truncated_reward`.
    """
    answer = final_text(text, reasoning)
    lo, hi = _bounds(target, constraint)
    if degenerate_guard and is_degenerate(answer):
        return 0.0
    length = measure(answer, unit, tokenizer=tokenizer, extract=False)
    if truncated:
        return truncated_reward(length, target, constraint)
    if is_refusal(length, target, constraint, refusal_floor):
        return 0.0
    if lo is not None and length < lo:
        return _falloff(length, lo)
    if hi is not None and length > hi:
        return _falloff(length, hi)
    return 1.0


def truncated_reward(length: int, target: int | Sequence[int], constraint: str = "equal") -> float:
    """The reward of a rollout cut at its budget, which would have gone on: once past an upper
    bound (`equal`, `at_most`, `range`) it can only end longer, and is scored 0 (with a budget of
    >= 2x the target that is its reward anyway); past an `at_least` target it is 1. Scored by this
    rule, a cut rollout stays in the loss and teaches the policy that running on is wrong
    (`mask_truncated_completions` would drop it). Cut short of its target (a budget too small to
    judge it), it is scored by its length so far, as if it had ended there."""
    lo, hi = _bounds(target, constraint)
    if hi is not None and length > hi:
        return 0.0
    if hi is None and length >= lo:
        return 1.0
    if lo is not None and length < lo:
        return _falloff(length, lo)
    return 1.0  # inside a range, or under at_most's bound: as if it had ended


class LengthReward:
    """TRL reward function: reads each rollout's target/constraint/unit from its dataset row.

    Columns used: `target` or `reward_model` (official LARFT format), optional `constraint`
    (default "equal") and `unit` (default "words"). TRL passes every dataset column as a
    keyword list with one entry per completion.

    A rollout cut at its budget (TRL's `completion_ids` not ending in a stop token) is scored by
    `truncated_reward`, the reward it would have had: 0 past an upper bound, 1 past an `at_least`
    target. `stop_ids` are the tokens that end a turn (default: the tokenizer's eos and pad;
    LARFTTrainer sets TRL's own list); with neither, every text is scored as written.

    A row without a target is an error naming it, unless `allow_missing_target`: then it
    gets None (TRL's "cannot score this one"), so that a dataset can mix length prompts with
    prompts that only other reward functions score. LARFTTrainer turns it on when it adds
    the length reward next to reward functions of yours.
    """

    __name__ = "length_reward"

    def __init__(self, tokenizer: PreTrainedTokenizerBase | None = None, degenerate_guard: bool = True,
                 refusal_floor: float = REFUSAL_FLOOR, reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING,
                 allow_missing_target: bool = False, stop_ids: Sequence[int] | None = None):
        self.tokenizer = tokenizer
        self.stop_ids = None if stop_ids is None else set(stop_ids)
        self.degenerate_guard = degenerate_guard
        self.refusal_floor = refusal_floor
        self.reasoning = reasoning
        self.allow_missing_target = allow_missing_target

    def _stops(self) -> set[int]:
        if self.stop_ids is not None:
            return self.stop_ids
        return set(rollout_stop_ids((), self.tokenizer)) if self.tokenizer is not None else set()

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None,
                 **columns: Any) -> list[float | None]:
        rows = rows_from_columns(columns, len(completions))
        stops = self._stops() if completion_ids is not None else set()  # none known: every text scored as written
        rewards: list[float | None] = []
        for i, (prompt, completion, row) in enumerate(zip(prompts, completions, rows)):
            spec = LengthSpec.of(row)
            target = spec.goal
            if target is None:
                if not self.allow_missing_target:
                    raise ValueError(
                        f"length reward: rollout {i} (prompt {_prompt_text(prompt)!r}) has no length target: its row "
                        "needs 'target' or 'reward_model.ground_truth' ('target_range' for constraint 'range'). "
                        "Rows without one are allowed only next to other reward functions "
                        "(LengthReward(allow_missing_target=True))"
                    )
                rewards.append(None)
                continue
            rewards.append(length_score(
                completion_text(completion),
                target,
                unit=spec.unit,
                constraint=spec.constraint,
                tokenizer=self.tokenizer,
                degenerate_guard=self.degenerate_guard,
                refusal_floor=self.refusal_floor,
                reasoning=self.reasoning,
                truncated=bool(stops) and rollout_end(completion_ids[i], stops)[1],
            ))
        return rewards


def length_reward(prompts: list, completions: list, completion_ids: list | None = None,
                  **columns: Any) -> list[float | None]:
    """The length reward as a plain TRL reward function, like `trl.rewards.accuracy_reward`:
    `GRPOTrainer(reward_funcs=[length_reward])`. Each completion is scored against its dataset
    row's `target` / `constraint` / `unit` (`length_score`). It knows no tokenizer: for the
    `tokens` unit and TRL's cut-rollout test use `LengthReward(tokenizer=...)`; LARFTTrainer swaps
    this function for its own configured `LengthReward`."""
    return LengthReward()(prompts, completions, completion_ids=completion_ids, **columns)


def _prompt_text(prompt: str | list[dict[str, Any]], limit: int = 80) -> str:
    """The last message of a prompt, shortened for an error message."""
    text = prompt[-1].get("content", "") if isinstance(prompt, list) and prompt else str(prompt)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TRL_EXTRA_KWARGS = ("trainer_state", "log_extra", "log_metric", "completion_ids", "environments")


def rows_from_columns(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Turn TRL's column-wise reward kwargs back into one dict per completion."""
    data = {k: v for k, v in columns.items() if k not in _TRL_EXTRA_KWARGS}
    for key, values in data.items():
        if len(values) != n:
            raise ValueError(f"column {key!r} has {len(values)} values for {n} completions")
    return [{k: v[i] for k, v in data.items()} for i in range(n)]


__all__ = [
    "CONSTRAINTS",
    "LengthReward",
    "count_words",
    "is_degenerate",
    "is_refusal",
    "length_deviation",
    "length_reward",
    "length_score",
    "refusal_length",
    "repeated_trigram_share",
    "truncated_reward",
]
