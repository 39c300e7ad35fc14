"""Length-constrained prompt sets: generate them (in the official LARFT format), write them,
convert between JSONL and Parquet. Reading and validating any prompt file is `larft.loader`'s job.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any, Iterable

from larft.errors import UserError
from larft.length import UNITS
from larft.loader import MAX_TARGET, DataError, check_records, read_dataset
from larft.rewards import CONSTRAINTS

# -- generation ---------------------------------------------------------------------------
TOPICS = [
    "the history of tea", "how volcanoes form", "the benefits of walking", "a rainy day in a small town",
    "the life cycle of a butterfly", "why people keep diaries", "the invention of the printing press",
    "how bees make honey", "a lighthouse keeper's evening", "the importance of sleep", "the ocean tides",
    "learning a new language", "the first day at a new job", "how bridges carry weight", "autumn in the mountains",
    "the role of libraries", "a robot learning to cook", "the water cycle", "the history of chess",
    "why cats purr", "a journey by night train", "how vaccines work", "the smell of fresh bread",
    "the design of a good chair", "city gardens", "the moon landing", "saving money as a student",
    "a letter to a future self", "how maps are made", "the sound of rain on a roof", "recycling plastic",
    "the migration of birds", "a market in the early morning", "how solar panels work", "friendship",
    "the history of the bicycle", "a snowstorm", "why we dream", "the work of a firefighter", "coral reefs",
]
VERBS = ["describe", "explain", "write about", "discuss"]
TEMPLATES = {
    "equal": ["In about {n} {u}, {verb} {topic}.", "{Verb} {topic} in {n} {u}.", "Answer in exactly {n} {u}: {verb} {topic}."],
    "at_most": ["In at most {n} {u}, {verb} {topic}.", "{Verb} {topic} in no more than {n} {u}."],
    "at_least": ["In at least {n} {u}, {verb} {topic}.", "{Verb} {topic} using no fewer than {n} {u}."],
    "range": ["In {lo} to {hi} {u}, {verb} {topic}.", "{Verb} {topic} in between {lo} and {hi} {u}."],
}
#: A second prompt style, a task followed by a separate requirement sentence (the shape of
#: LIFEBench's "[Requirement] Your response must be at most N words long", on our own topics),
#: so that what is learned does not hinge on one phrasing of the length request.
REQUIREMENT_TASKS = [
    "[Instruction] {Verb} {topic}.", "[Instruction] Answer this question: \n What should everyone know about {topic}?",
    "Write a short article about {topic}.", "Tell a story that involves {topic}.", "{Verb} {topic} for a curious child.",
]
REQUIREMENT_SENTENCES = {
    "equal": ["\n\n[Requirement] Your response must be equal to {n} {u} long.", " The answer must be exactly {n} {u} long.",
              " Use {n} {u}."],
    "at_most": ["\n\n[Requirement] Your response must be at most {n} {u} long.", " Keep it under {n} {u}.",
                " The answer must be at most {n} {u} long."],
    "at_least": ["\n\n[Requirement] Your response must be at least {n} {u} long.", " Write at least {n} {u}.",
                 " The answer must be at least {n} {u} long."],
    "range": ["\n\n[Requirement] Your response must be between {lo} and {hi} {u} long.", " Use {lo} to {hi} {u}."],
}
STYLES = ("plain", "requirement")
UNIT_WORDING = {"words": "words", "chars": "characters (not counting spaces)", "tokens": "tokens"}


def _templates(style: str, constraint: str) -> list[str]:
    if style == "plain":
        return TEMPLATES[constraint]
    if style == "requirement":
        return [task + req for task in REQUIREMENT_TASKS for req in REQUIREMENT_SENTENCES[constraint]]
    raise UserError(f"unknown prompt style {style!r}; expected one of {', '.join(STYLES)}")


def generate_rows(
    n: int,
    *,
    targets: Iterable[int] = (16, 32, 64, 128, 256, 512),
    constraints: Iterable[str] = ("equal", "at_most", "at_least"),
    units: Iterable[str] = ("words",),
    topics: Iterable[str] = TOPICS,
    seed: int = 0,
    range_width: float = 0.2,
    styles: Iterable[str] = ("plain", "requirement"),
) -> list[dict[str, Any]]:
    """`n` prompts drawn without repetition from topics x templates x targets x constraints x
    units, in a seeded order; rows are in the official LARFT shape plus constraint/unit.
    `styles`: `plain` ("In about N words, describe X.") and/or `requirement` (a task, then a
    separate length requirement sentence)."""
    constraints, units, styles = list(constraints), list(units), list(styles)
    for style in styles:
        _templates(style, "equal")  # an unknown style fails before anything is drawn
    for c in constraints:
        if c not in CONSTRAINTS:
            raise UserError(f"unknown constraint {c!r}; expected one of {', '.join(CONSTRAINTS)}")
    for u in units:
        if u not in UNITS:
            raise UserError(f"unknown unit {u!r}; expected one of {', '.join(UNITS)}")
    for t in targets:
        if not 0 < int(t) <= MAX_TARGET:
            raise UserError(f"target {t} is outside 1..{MAX_TARGET}")
    rng = random.Random(seed)
    per_style = []
    for style in styles:  # each style shuffled on its own, then taken in turn: styles are balanced
        combos = [(topic, template, int(t), c, u) for topic in topics for c in constraints
                  for template in _templates(style, c) for t in targets for u in units]
        rng.shuffle(combos)
        per_style.append(combos)
    if len(per_style) == 1:
        combos = per_style[0]
    else:
        combos = [c for group in itertools.zip_longest(*per_style) for c in group if c is not None]
    if n > len(combos):
        raise UserError(f"asked for {n} prompts but only {len(combos)} distinct combinations exist")
    rows = []
    for topic, template, t, c, u in combos[:n]:
        verb = rng.choice(VERBS)
        lo, hi = max(1, round(t * (1 - range_width))), round(t * (1 + range_width))
        text = template.format(n=t, lo=lo, hi=hi, u=UNIT_WORDING[u], verb=verb, Verb=verb.capitalize(), topic=topic)
        row = {
            "prompt": [{"role": "user", "content": text}],
            "reward_model": {"ground_truth": t, "style": "chat"},
            "data_source": "larft_generated",
            "constraint": c,
            "unit": u,
        }
        if c == "range":
            row["target_range"] = [lo, hi]
        rows.append(row)
    return rows


# -- writing / converting -----------------------------------------------------------------
def write_rows(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write JSONL or Parquet (by suffix), atomically: temp file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # every row's columns (pyarrow would take the first row's keys only and drop the rest, e.g. the
        # target_range of "range" rows after an "equal" one); a column a row lacks is null there
        columns = list(dict.fromkeys(k for row in rows for k in row))
        pq.write_table(pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows]), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Copy the records of any prompt file `larft.loader` reads to JSONL or Parquet as they are
    (a column a record lacks stays absent), once every record is valid."""
    records, issues = read_dataset(str(src))
    _, issues = check_records(str(src), records, issues)
    if issues:
        raise DataError(issues)
    write_rows([{k: v for k, v in r.items() if v is not None} for _, _, r in records], dst)
    return len(records)
