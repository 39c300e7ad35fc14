"""What a prompt row asks for: a length target, the constraint on it and the unit it is counted in.

Rows travel as plain dicts (TRL hands each dataset column to the reward functions as a keyword
list, and `datasets` fills a column a row lacks with None); `LengthSpec.of(row)` reads one such row
in one place, with the defaults (constraint `equal`, unit `words`), so no caller repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

#: a target: N units, or [lo, hi] for the `range` constraint
Goal = int | tuple[int, int]


@dataclass(frozen=True)
class LengthSpec:
    """A row's length instruction. `target` is None for a row without one (a prompt only your own
    reward functions score); `target_range` is set instead of `target` for `range`."""

    target: int | None = None
    constraint: str = "equal"
    unit: str = "words"
    target_range: tuple[int, int] | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> "LengthSpec":
        """The spec of a row: a validated prompt row (`larft.data`) or the columns of one rollout
        as TRL passes them; the official LARFT `reward_model.ground_truth` counts as `target`."""
        constraint = row.get("constraint") or "equal"
        unit = row.get("unit") or "words"
        if constraint == "range":
            value = row.get("target_range")
            lo_hi = None if value is None else (int(value[0]), int(value[1]))
            return cls(None, constraint, unit, lo_hi)
        target = row.get("target")
        if target is None and isinstance(row.get("reward_model"), Mapping):
            target = row["reward_model"].get("ground_truth")
        return cls(None if target is None else int(target), constraint, unit)

    @property
    def goal(self) -> Goal | None:
        """What the length is judged against: `target_range` for `range`, else `target`; None without one."""
        return self.target_range if self.constraint == "range" else self.target

    @property
    def has_target(self) -> bool:
        return self.goal is not None

    @property
    def largest(self) -> int | None:
        """The largest length the instruction asks for (the upper end of a range)."""
        goal = self.goal
        return max(goal) if isinstance(goal, tuple) else goal

    def required_goal(self) -> Goal:
        """`goal`, for callers that cannot work without one: a KeyError naming what the row lacks."""
        if self.goal is None:
            if self.constraint == "range":
                raise KeyError("range row has no 'target_range'")
            raise KeyError("row has neither 'target' nor 'reward_model.ground_truth'")
        return self.goal

    def as_json(self) -> int | list[int] | None:
        """`goal` as it is written to JSON files (a range as a list)."""
        goal = self.goal
        return list(goal) if isinstance(goal, tuple) else goal
