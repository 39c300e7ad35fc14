"""The benchmark registry of `larft eval`: `--bench NAME` and `--bench_file PATH --format FMT`
to benchmark objects (larft.eval.tasks, larft.eval.probes), and the prompt selection
(--filter, --limit) every prompt set goes through."""

from __future__ import annotations

import random
from pathlib import Path

from larft.errors import UserError
from larft.eval import benchmarks as B
from larft.eval.metrics import RULER_LEVELS
from larft.eval.probes import Counting, Retention
from larft.eval.settings import EvalSettings
from larft.eval.tasks import Benchmark, LenCtrl, LifeBench, LongBenchWrite, RulerTLG

#: --bench NAME: the named benchmarks (their files under the benchmark data folder)
NAMED: dict[str, Benchmark] = {
    "lifebench": LifeBench("lifebench/data_lite.jsonl"),
    "lifebench-label": LifeBench("lifebench/data_label.jsonl"),
    "lifebench-refactor": LifeBench("lifebench/data_refactor.jsonl", reader=B.lifebench_refactor_items),
    "longwrite-ruler": LongBenchWrite("longwrite-ruler/longwrite_ruler.jsonl"),
    "ruler-tlg": RulerTLG(),
    "counting": Counting(),
    "retention": Retention(),
}
NAMED_BENCHES = tuple(NAMED)

#: --format FMT: the formats a --bench_file can have
FORMATS: dict[str, Benchmark] = {
    "lifebench": LifeBench(),
    "lifebench-refactor": LifeBench(reader=B.lifebench_refactor_items),
    "longbench-write": LongBenchWrite(),
    "lenctrl": LenCtrl(),
}

FILTER_KEYS = ("lang", "control", "min_length", "max_length", "level")

Plan = list[tuple[str, Benchmark, "list[B.EvalItem] | None"]]


def plan(benches: list[str], bench_files: list[tuple[str, str]] | None, settings: EvalSettings) -> Plan:
    """(name, benchmark, its selected prompts) for every --bench and --bench_file, each prompt set
    read and checked now, before any model is loaded: bad input fails fast."""
    for name in benches:
        if name not in NAMED:
            raise UserError(f"unknown benchmark {name!r}; expected one of {', '.join(NAMED)}")
    planned: Plan = []
    for name in benches:
        items = NAMED[name].read()
        planned.append((name, NAMED[name], None if items is None else select(items, settings, name)))
    for path, fmt in bench_files or []:
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMATS)}")
        name = f"{fmt}:{Path(path).stem}"
        planned.append((name, FORMATS[fmt], select(FORMATS[fmt].read(Path(path)), settings, name)))
    return planned


def parse_filters(text: str | None) -> dict[str, str]:
    """`lang=en,max_length=64` -> {"lang": "en", "max_length": "64"}."""
    filters: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise UserError(f"--filter: expected key=value, got {part!r}")
        key, value = (x.strip() for x in part.split("=", 1))
        if key not in FILTER_KEYS:
            raise UserError(f"--filter: unknown key {key!r}; expected one of {', '.join(FILTER_KEYS)}")
        if key in ("min_length", "max_length", "level") and not value.isdigit():
            raise UserError(f"--filter: {key} must be an integer, got {value!r}")
        filters[key] = value
    return filters


def select(items: list[B.EvalItem], settings: EvalSettings, bench: str) -> list[B.EvalItem]:
    """The items that pass --filter, then a seeded sample of --limit of them."""
    f = settings.filters
    level_of = {t: lvl for lvl, ts in RULER_LEVELS.items() for t in ts}
    kept = [
        it for it in items
        if ("lang" not in f or it.lang == f["lang"])
        and ("control" not in f or it.control == f["control"])
        and ("min_length" not in f or it.target >= int(f["min_length"]))
        and ("max_length" not in f or it.target <= int(f["max_length"]))
        and ("level" not in f or "target_label" not in it.meta or level_of[it.meta["target_label"]] <= int(f["level"]))
    ]
    if settings.limit is not None and len(kept) > settings.limit:
        chosen = sorted(random.Random(settings.seed).sample(range(len(kept)), settings.limit))
        kept = [kept[i] for i in chosen]
    if not kept:
        raise UserError(f"{bench}: no prompts left after --filter {settings.filters}")
    return kept
