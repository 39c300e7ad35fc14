"""Benchmark prompt sets: each benchmark expanded exactly as its upstream does, as EvalItems
(which benchmark reads which file: `larft.eval.registry`).

Files come from `--bench_file` (any user file of the format) or, for the named benchmarks,
from the data folder found by `benchmark_data_dir()` (`$LARFT_BENCHMARKS`, else the
`shared/benchmarks` folder beside a larft checkout).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from larft.loader import DataError, DataIssue, read_dataset
from larft.errors import MissingFileError

LIFEBENCH_LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
LIFEBENCH_CONTROL_WORDS = {
    "en": {"equal": "equal to", "at_most": "at most", "at_least": "at least"},
    "cn": {"equal": "等于", "at_most": "至多有", "at_least": "至少有"},
}
RULER_TARGETS = ("10", "30", "50", "80", "150", "300", "500", "700", ">800")
RULER_SUFFIX = "\nThe response should have a word count of {target} words."


@dataclass
class EvalItem:
    """One prompt to generate for, with what its benchmark needs to score the answer."""

    id: str
    messages: list[dict[str, str]]
    target: int
    control: str = "equal"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def lang(self) -> str:
        return self.meta.get("lang", "en")


def benchmark_data_dir() -> Path:
    env = os.environ.get("LARFT_BENCHMARKS")
    if env:
        if not Path(env).is_dir():
            raise MissingFileError(f"LARFT_BENCHMARKS={env} is not a folder")
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "benchmarks"
        if candidate.is_dir():
            return candidate
    raise MissingFileError(
        "benchmark data not found: set LARFT_BENCHMARKS to the folder holding lifebench/ and longwrite-ruler/, "
        "or pass --bench-file"
    )


def _records(path: Path, required: Iterable[str]) -> list[tuple[int, dict]]:
    """(line, record) of a benchmark file, read by `larft.loader` (through `datasets`), each record
    holding the `required` fields, or a DataError naming every file:line: field that does not."""
    records, issues = read_dataset(str(path))
    out = []
    for _, line, record in records:
        if not isinstance(record, dict):
            issues.append(DataIssue(str(path), line, "", "expected a JSON object"))
            continue
        missing = [key for key in required if record.get(key) in (None, "")]
        issues += [DataIssue(str(path), line, key, "missing") for key in missing]
        out.append((line, {k: v for k, v in record.items() if v is not None}))
    if issues:
        raise DataError(issues)
    return out


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# -- LIFEBench ----------------------------------------------------------------------------
def lifebench_items(path: Path) -> list[EvalItem]:
    """Lite/label files: every task x 3 controls x 10 lengths, placeholders filled as upstream."""
    items = []
    for line, rec in _records(path, ("id", "lang", "task")):
        lang = rec["lang"]
        if lang not in LIFEBENCH_CONTROL_WORDS:
            raise DataError([DataIssue(str(path), line, "lang", f"expected en or cn, got {lang!r}")])
        if "{word_count}" not in rec["task"]:
            raise DataError([DataIssue(str(path), line, "task", "has no {word_count} placeholder")])
        for control, words in LIFEBENCH_CONTROL_WORDS[lang].items():
            for length in LIFEBENCH_LENGTHS:
                task = rec["task"].replace("{word_count_type}", words).replace("{word_count}", str(length))
                items.append(EvalItem(
                    id=f"{rec['id']}-{control}-{length}", messages=_user(task), target=length, control=control,
                    meta={"lang": lang, "category": rec.get("category"), "type": rec.get("type")},
                ))
    return items


_REFACTOR_LENGTH = re.compile(r"(?:equal to|等于)\s*(\d+)")


def lifebench_refactor_items(path: Path) -> list[EvalItem]:
    """The refactor file is already instantiated ("equal to N"); N is read from the task."""
    items = []
    for line, rec in _records(path, ("id", "lang", "task")):
        found = _REFACTOR_LENGTH.findall(rec["task"])
        if not found:
            raise DataError([DataIssue(str(path), line, "task", "no 'equal to N' / '等于N' length requirement")])
        length = int(found[-1])
        items.append(EvalItem(
            id=f"{rec['id']}-{line}", messages=_user(rec["task"]), target=length, control="equal",
            meta={"lang": rec["lang"], "category": rec.get("category"), "type": rec.get("type")},
        ))
    return items


# -- LongBench-Write format -----------------------------------------------------------------
def longbench_write_items(path: Path) -> list[EvalItem]:
    items = []
    for line, rec in _records(path, ("prompt", "length")):
        if not isinstance(rec["length"], int) or rec["length"] <= 0:
            raise DataError([DataIssue(str(path), line, "length", f"must be a positive integer, got {rec['length']!r}")])
        lang = "cn" if re.search(r"[\u4e00-\u9fff]", rec["prompt"]) else "en"
        items.append(EvalItem(id=str(line), messages=_user(rec["prompt"]), target=rec["length"],
                              meta={"lang": lang, "type": rec.get("type"), "metric": "longbench"}))
    return items


# -- Ruler TLG ----------------------------------------------------------------------------
def ruler_tlg_items(instructions: list[str], seed: int = 10) -> list[EvalItem]:
    """Ruler's TLG prompts over our own instructions (upstream draws from OpenHermes-2.5, which
    is offline-unreachable): the same seeded target draw and the same suffix wording."""
    rng = random.Random(seed)
    items = []
    for i, instruction in enumerate(instructions):
        target = rng.choice(RULER_TARGETS)
        text = instruction + RULER_SUFFIX.format(target=target.replace(">", "more than "))
        numeric = int(target.lstrip(">"))
        items.append(EvalItem(id=str(i), messages=_user(text), target=numeric, meta={"target_label": target}))
    return items


#: evaluation-only topics: disjoint from `larft.data.TOPICS`, which training prompts use
EVAL_TOPICS = [
    "the history of the violin", "how glaciers shape valleys", "the rules of cricket", "a night at an observatory",
    "how a compass works", "the life of a honeybee queen", "why leaves change colour", "the Silk Road",
    "how trains switch tracks", "a fisherman at dawn", "the invention of the telephone", "how clouds form",
    "the benefits of reading aloud", "a day in a busy hospital", "how paper is made", "the Great Wall of China",
    "why the sky is blue", "the first airplane flight", "a walk through a pine forest", "how submarines dive",
    "the history of coffee", "learning to swim", "how elections work", "a thunderstorm over the sea",
    "the life of an ant colony", "how earthquakes happen", "the art of origami", "a visit to a museum",
    "why people collect stamps", "how wind turbines work", "the story of the Olympic games", "a quiet village square",
    "how the heart pumps blood", "the history of writing", "a desert at night", "how recycling plants sort waste",
    "the habits of owls", "the first telescope", "a snowy mountain hut", "how rivers form deltas",
]


def ruler_instructions() -> list[str]:
    """Open-ended instructions without a length request (evaluation topics x four verbs)."""
    verbs = ["Describe", "Explain", "Write about", "Discuss"]
    return [f"{verb} {topic}." for topic in EVAL_TOPICS for verb in verbs]


# -- LenCtrl format -------------------------------------------------------------------------
def lenctrl_items(path: Path) -> list[EvalItem]:
    """Records with `instruction`, `constraint` (an integer count) and `level`
    (word / sentence / paragraph). The instruction is sent as it is."""
    items = []
    for line, rec in _records(path, ("instruction", "constraint", "level")):
        if rec["level"] not in ("word", "sentence", "paragraph"):
            raise DataError([DataIssue(str(path), line, "level", f"expected word, sentence or paragraph, got {rec['level']!r}")])
        try:
            target = int(rec["constraint"])
        except (TypeError, ValueError):
            raise DataError([DataIssue(str(path), line, "constraint", f"must be an integer count, got {rec['constraint']!r}")]) from None
        if target <= 0:
            raise DataError([DataIssue(str(path), line, "constraint", f"must be a positive count, got {target}")])
        items.append(EvalItem(id=str(line), messages=_user(rec["instruction"]), target=target,
                              meta={"level": rec["level"]}))
    return items
