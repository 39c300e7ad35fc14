"""Benchmark metrics, as their upstream definitions state them (see ../shared/benchmarks).

LIFEBench LS uses LD as a *fraction*: the released upstream code feeds the percent value to
exp(), which makes LS ~0 unless |LD| < ~1% (a bug, documented there); we do not copy it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Hashable, Iterable, Mapping

LIFEBENCH_CONTROLS = ("equal", "at_most", "at_least")


# -- LIFEBench ----------------------------------------------------------------------------
def lifebench_ld(length: int, target: int) -> float:
    """Signed length deviation (fraction): (L_o - L_c) / L_c."""
    return (length - target) / target


def lifebench_ls(length: int, target: int, control: str) -> float:
    """Length score in [0, 100]: undershooting punished with k1 = 5, overshooting with k2 = 2."""
    ld = lifebench_ld(length, target)
    if control == "equal":
        return 100 * math.exp(5 * ld) if ld < 0 else 100 * math.exp(-2 * ld)
    if control == "at_most":
        return 100.0 if ld <= 0 else 100 * math.exp(-2 * ld)
    if control == "at_least":
        return 100.0 if ld >= 0 else 100 * math.exp(5 * ld)
    raise ValueError(f"unknown LIFEBench control {control!r}")


def lifebench_aggregate(samples: Iterable[tuple[str, int, int]]) -> dict:
    """samples: (control, target, delivered length). Responses of <= 1 word are refusals and
    are dropped first (as upstream), but counted: `refusals` has them per control and length,
    so a policy that learns to answer nothing shows up. Per control: LD (mean |LD| x 100) and
    LS (mean LS) per length, then the unweighted mean over lengths (macro average, as upstream)."""
    by_control: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    asked: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    refused: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for control, target, length in samples:
        asked[control][target] += 1
        if length <= 1:
            refused[control][target] += 1
            continue
        by_control[control][target].append((abs(lifebench_ld(length, target)) * 100, lifebench_ls(length, target, control)))
    total = sum(sum(v.values()) for v in asked.values())
    dropped = sum(sum(v.values()) for v in refused.values())
    result: dict = {
        "per_control": {},
        "refusals_dropped": dropped,
        "refusals": {
            "n": dropped, "rate": dropped / total if total else 0.0,
            "per_control": {
                c: {"n": sum(refused[c].values()), "rate": sum(refused[c].values()) / sum(asked[c].values()),
                    "per_length": {t: refused[c][t] for t in sorted(asked[c])}}
                for c in sorted(asked)
            },
        },
    }
    for control, by_length in sorted(by_control.items()):
        per_length = {
            t: {"LD": sum(x[0] for x in v) / len(v), "LS": sum(x[1] for x in v) / len(v), "n": len(v)}
            for t, v in sorted(by_length.items())
        }
        result["per_control"][control] = {
            "LD": sum(p["LD"] for p in per_length.values()) / len(per_length),
            "LS": sum(p["LS"] for p in per_length.values()) / len(per_length),
            "per_length": per_length,
        }
    controls = result["per_control"].values()
    if controls:
        result["LD"] = sum(c["LD"] for c in controls) / len(controls)
        result["LS"] = sum(c["LS"] for c in controls) / len(controls)
    return result


def lifebench_headline(samples: list[tuple[str, int, int]]) -> dict[str, float | None]:
    """The figures that get bootstrap intervals: LS and LD overall and per control."""
    agg = lifebench_aggregate(samples)
    out: dict[str, float | None] = {"LS": agg.get("LS"), "LD": agg.get("LD")}
    for control, c in agg["per_control"].items():
        out[f"LS {control}"] = c["LS"]
        out[f"LD {control}"] = c["LD"]
    return out


def lifebench_ls_by_length(aggregate: dict) -> dict[int, float]:
    """LS per target length, the mean over the controls scored at that length (the macro average
    the headline takes, length by length)."""
    by_length: dict[int, list[float]] = defaultdict(list)
    for c in aggregate["per_control"].values():
        for t, v in c["per_length"].items():
            by_length[int(t)].append(v["LS"])
    return {t: sum(v) / len(v) for t, v in sorted(by_length.items())}


# -- answer health (every length benchmark) ------------------------------------------------
#: the per-sample flags `answer_health` reads: `ends_on_sentence` and `loops` (None: too short to
#: judge) from `larft.length.ends_on_sentence` / `is_looping`, and `truncated` (cut at its budget)
HEALTH_FLAGS = ("ends_on_sentence", "loops", "truncated")


def _health_cell(samples: list[Mapping[str, Any]]) -> dict[str, Any]:
    cell: dict[str, Any] = {"n": len(samples)}
    for key in HEALTH_FLAGS:
        judged = [bool(x[key]) for x in samples if x.get(key) is not None]
        cell[key] = sum(judged) / len(judged) if judged else None
        if key == "loops":
            cell["loops_judged"] = len(judged)
    return cell


def answer_health(samples: Iterable[Mapping[str, Any]], bucket: Callable[[Mapping[str, Any]], Hashable] | None = None,
                  order: Callable[[Any], Any] | None = None, name: str = "per_length") -> dict[str, Any]:
    """How the answers end, beside the length scores: over all samples and per bucket (default
    the sample's target length), the share of answers that
    - `ends_on_sentence`: end on a finished sentence (`larft.length.ends_on_sentence`);
    - `loops`: loop, over the answers long enough to judge (>= 8 words; `loops_judged` of them):
      more than 30% of their word 4-grams repeat an earlier one (`larft.length.is_looping`, the
      function behind the length reward's degenerate guard);
    - `truncated`: were cut at their token budget.
    Each share is None where no sample carries its flag (results written before the flags were
    recorded). Every answer counts, refusals included; `n` is the number of answers."""
    samples = list(samples)
    bucket = bucket or (lambda x: x["target"])
    groups: dict[Hashable, list[Mapping[str, Any]]] = defaultdict(list)
    for x in samples:
        groups[bucket(x)].append(x)
    return {**_health_cell(samples), name: {k: _health_cell(groups[k]) for k in sorted(groups, key=order)}}


# -- LongBench-Write ----------------------------------------------------------------------
def longbench_sl(length: int, target: int) -> float:
    """S_l in [0, 100]; 0 for an empty output."""
    if length <= 0:
        return 0.0
    if length > target:
        return 100 * max(0.0, 1 - (length / target - 1) / 3)
    return 100 * max(0.0, 1 - (target / length - 1) / 2)


# -- Ruler TLG ----------------------------------------------------------------------------
RULER_LEVELS = {0: ("10", "30", "50", "80"), 1: ("150", "300", "500"), 2: ("700", ">800")}
RULER_PM = {"10": (0, 20), "30": (20, 40), "50": (40, 60), "80": (70, 90), "150": (130, 170), "300": (280, 320),
            "500": (450, 550), "700": (630, 770), ">800": (800, math.inf)}
RULER_FM = {"10": (0, 20), "30": (20, 40), "50": (40, 60), "80": (60, 100), "150": (100, 200), "300": (200, 400),
            "500": (400, 600), "700": (600, 800), ">800": (800, math.inf)}


def ruler_hit(length: int, target: str, intervals: dict) -> bool:
    """In the left-open interval (lo, hi]; an empty response always misses."""
    lo, hi = intervals[target]
    return length > 0 and lo < length <= hi


def ruler_aggregate(samples: Iterable[tuple[str, int]]) -> dict:
    """samples: (TargetLength string, count). PM/FM per level and pooled ("all", micro average)."""
    samples = list(samples)
    level_of = {t: lvl for lvl, ts in RULER_LEVELS.items() for t in ts}
    result = {}
    for name, members in [(f"level{lvl}", [s for s in samples if level_of[s[0]] == lvl]) for lvl in RULER_LEVELS] + [
        ("all", samples)
    ]:
        if members:
            result[name] = {
                "PM": 100 * sum(ruler_hit(n, t, RULER_PM) for t, n in members) / len(members),
                "FM": 100 * sum(ruler_hit(n, t, RULER_FM) for t, n in members) / len(members),
                "n": len(members),
            }
    return result


# -- LenCtrl / counting -------------------------------------------------------------------
def mean_absolute_error(pairs: Iterable[tuple[float, float]]) -> float:
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no pairs to average")
    return sum(abs(a - b) for a, b in pairs) / len(pairs)
