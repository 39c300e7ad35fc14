"""Length-constrained prompt sets: generate, read (JSONL/Parquet, official LARFT format
too), validate with file:line:field errors, convert.

A row (one JSON object per line):
    prompt          chat messages [{"role", "content"}, ...] or a plain string
    reward_model    {"ground_truth": N, "style": "chat"}   (official LARFT format) and/or
    target          N (integer; wins over reward_model.ground_truth when both are given)
    constraint      equal | at_most | at_least | range      (default equal)
    unit            words | chars | tokens                  (default words)
    target_range    [lo, hi] for constraint range
    data_source     free text
"""

from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from larft.errors import UserError
from larft.length import UNITS
from larft.rewards import CONSTRAINTS

#: the largest target accepted: beyond this a target is a typo, not an instruction
MAX_TARGET = 100_000


class DataError(UserError):
    """Invalid data; the message lists every problem as file:line: field: message."""

    def __init__(self, issues: list["DataIssue"]):
        self.issues = issues
        shown = "\n".join(f"  {i}" for i in issues[:50])
        more = f"\n  ... and {len(issues) - 50} more" if len(issues) > 50 else ""
        super().__init__(f"{len(issues)} problem(s) in the data:\n{shown}{more}")


@dataclass(frozen=True)
class DataIssue:
    path: str
    line: int  # 1-based line (JSONL, CSV), index + 1 (JSON array) or row (Parquet, Hub); 0 = the whole file
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


# -- reading ------------------------------------------------------------------------------
def read_records(path: str | os.PathLike) -> tuple[list[tuple[int, Any]], list[DataIssue]]:
    """(line number, parsed object) pairs and the problems met while reading."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        return [], [DataIssue(name, 0, "", "file not found")]
    if path.is_dir():
        return [], [DataIssue(name, 0, "", "is a directory, expected a .jsonl or .parquet file")]
    if path.suffix == ".parquet":
        return _read_parquet(path)
    records, issues = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                issues.append(DataIssue(name, number, "", f"not valid UTF-8 (byte {e.start})"))
                continue
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as e:
                issues.append(DataIssue(name, number, "", f"malformed JSON: {e.msg} (column {e.colno})"))
    if not records and not issues:
        issues.append(DataIssue(name, 0, "", "file is empty"))
    return records, issues


def _read_parquet(path: Path) -> tuple[list[tuple[int, Any]], list[DataIssue]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file: report, don't hide
        return [], [DataIssue(str(path), 0, "", f"cannot read as Parquet: {e}")]
    names = set(table.column_names)
    if "prompt" not in names or not ({"target", "reward_model"} & names):
        return [], [
            DataIssue(
                str(path), 0, "schema",
                f"needs columns 'prompt' and 'target' or 'reward_model'; has {sorted(names)}",
            )
        ]
    rows = table.to_pylist()
    if not rows:
        return [], [DataIssue(str(path), 0, "", "file is empty")]
    return list(enumerate(rows, start=1)), []


# -- validation ---------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_length_value(value: Any, field: str, issue) -> int | None:
    if not _is_int(value):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            issue(field, f"must be an integer, got {value!r}")
            return None
    if value <= 0:
        issue(field, f"must be positive, got {value}")
        return None
    if value > MAX_TARGET:
        issue(field, f"{value} is above the maximum of {MAX_TARGET}")
        return None
    return value


def normalize_record(record: Any, path: str, line: int) -> tuple[dict[str, Any] | None, list[DataIssue]]:
    """One training row {prompt, target, target_range, constraint, unit} or its problems."""
    issues: list[DataIssue] = []

    def issue(field: str, message: str) -> None:
        issues.append(DataIssue(path, line, field, message))

    if not isinstance(record, dict):
        issue("", f"expected a JSON object, got {type(record).__name__}")
        return None, issues

    prompt, name = record.get("prompt"), "prompt"
    if prompt is None and record.get("messages") is not None:
        # a chat dataset (TRL's "messages" column): the conversation up to its final answer is the prompt
        prompt, name = record["messages"], "messages"
        if not isinstance(prompt, list):
            got = "text that is not a JSON list" if isinstance(prompt, str) else type(prompt).__name__
            issue(name, f"must be a list of chat messages, got {got}")
            prompt = None
        elif prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
            prompt = prompt[:-1]
            if not prompt:
                issue(name, "has no message before its last assistant message")
                prompt = None
    messages: list[dict[str, str]] | None = None
    if prompt is None:
        if name == "prompt":
            issue("prompt", "missing (give 'prompt', or 'messages' as a chat)")
    elif isinstance(prompt, str):
        if not prompt.strip():
            issue("prompt", "is empty")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt:
        messages = []
        for i, m in enumerate(prompt):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                "system", "user", "assistant",
            ):
                issue(f"{name}[{i}]", "must be {\"role\": system|user|assistant, \"content\": string}")
                messages = None
                break
            messages.append({"role": m["role"], "content": m["content"]})
        if messages is not None and not any(m["content"].strip() for m in messages if m["role"] == "user"):
            issue(name, "has no non-empty user message")
    else:
        issue(name, "must be a non-empty string or list of chat messages")

    constraint = record.get("constraint") or "equal"
    if constraint not in CONSTRAINTS:
        issue("constraint", f"unknown constraint {constraint!r}; expected one of {', '.join(CONSTRAINTS)}")
    unit = record.get("unit") or "words"
    if unit not in UNITS:
        issue("unit", f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")

    target = target_range = None
    if constraint == "range":
        value = record.get("target_range")
        if not (isinstance(value, list) and len(value) == 2):
            issue("target_range", f"constraint 'range' needs target_range [lo, hi], got {value!r}")
        else:
            lo = _check_length_value(value[0], "target_range[0]", issue)
            hi = _check_length_value(value[1], "target_range[1]", issue)
            if lo is not None and hi is not None:
                if lo > hi:
                    issue("target_range", f"lo > hi ({lo} > {hi})")
                else:
                    target_range = [lo, hi]
    else:
        if record.get("target") is not None:
            target = _check_length_value(record["target"], "target", issue)
        elif isinstance(record.get("reward_model"), dict) and "ground_truth" in record["reward_model"]:
            target = _check_length_value(record["reward_model"]["ground_truth"], "reward_model.ground_truth", issue)
        else:
            issue("target", "missing (give 'target' or 'reward_model.ground_truth')")

    if issues:
        return None, issues
    return {
        "prompt": messages,
        "target": target,
        "target_range": target_range,
        "constraint": constraint,
        "unit": unit,
        "line": line,
    }, []


def validate_file(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[DataIssue]]:
    """Every row that is valid, and every problem of the file (one pass, nothing dropped silently)."""
    records, issues = read_records(path)
    rows = []
    for line, record in records:
        row, row_issues = normalize_record(record, str(path), line)
        issues.extend(row_issues)
        if row is not None:
            rows.append(row)
    return rows, issues


def load_rows(path: str | os.PathLike, skip_invalid: bool = False) -> list[dict[str, Any]]:
    """Training rows of a file; raises DataError unless `skip_invalid` (then reports the skips)."""
    rows, issues = validate_file(path)
    return _valid_rows(rows, issues, str(path), skip_invalid)


def _valid_rows(rows: list[dict[str, Any]], issues: list[DataIssue], source: str, skip_invalid: bool) -> list[dict]:
    if issues and not skip_invalid:
        raise DataError(issues)
    if issues:
        print(f"[larft] --skip_invalid: skipped {len(issues)} invalid record(s) of {source}:")
        for i in issues[:20]:
            print(f"  {i}")
    if not rows:
        raise DataError([DataIssue(source, 0, "", "no valid rows")])
    return rows


# -- datasets (--dataset_name) -----------------------------------------------------------
#: the `datasets` builder for each local file type
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
#: the columns a length instruction is read from; a row's other columns go to the reward functions
ROW_FIELDS = ("prompt", "messages", "target", "target_range", "constraint", "unit", "reward_model")
#: CSV cells are text: these columns hold JSON there (messages as '[{"role": "user", ...}]')
_CSV_JSON_FIELDS = ("messages", "target_range", "reward_model")

Record = tuple[str, int, Any]  # (source, line, record) of one dataset row


def load_dataset_rows(name: str, *, config: str | None = None, split: str = "train",
                      skip_invalid: bool = False) -> list[dict[str, Any]]:
    """Training rows of `--dataset_name` (a local file or folder, or a Hub dataset), read with
    `datasets.load_dataset` and validated row by row: every problem as source:line: field: message.
    Rows keep their other columns (reward functions get them as keyword lists)."""
    records, issues = read_dataset(name, config=config, split=split)
    rows = []
    for source, line, record in records:
        row, row_issues = normalize_record(record, source, line)
        issues.extend(row_issues)
        if row is not None:
            row.update({k: v for k, v in record.items() if k not in ROW_FIELDS and k not in row})
            row["_source"] = source
            rows.append(row)
    return _valid_rows(rows, issues, name, skip_invalid)


def read_dataset(name: str, *, config: str | None = None, split: str = "train") -> tuple[list[Record], list[DataIssue]]:
    """The rows of a local file, a local folder (its `split` files, as `datasets` resolves them) or a
    Hub dataset, each with where it came from: a local file's line (JSONL, CSV), its index + 1 (a
    JSON array) or its row number (Parquet); a Hub dataset's row number."""
    path = Path(name).expanduser()
    if path.is_file():
        if config or split != "train":
            raise ValueError(f"--dataset_name {name} is one file: it has no --dataset_config and one split "
                             f"(got config {config!r}, split {split!r})")
        return _read_local_file(path)
    if path.is_dir():
        return _read_local_folder(path, config, split)
    if path.suffix.lower() in FILE_BUILDERS or name.startswith((".", "/", "~")):
        return [], [DataIssue(name, 0, "", "file not found")]
    return _read_hub_dataset(name, config, split)


def _read_local_file(path: Path) -> tuple[list[Record], list[DataIssue]]:
    import datasets

    name = str(path)
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        return [], [DataIssue(name, 0, "", f"unsupported file type {path.suffix!r}; expected "
                                           f"{', '.join(FILE_BUILDERS)}")]
    if not path.read_bytes().strip():
        return [], [DataIssue(name, 0, "", "file is empty")]
    try:
        with _quiet_datasets():
            table = datasets.load_dataset(builder, data_files=name, split="train")
    except Exception as e:  # many types for a bad file (StopIteration, ArrowInvalid, ...): reported below
        if path.suffix.lower() in (".json", ".jsonl") and not _is_json_array(path):
            # datasets refuses a JSON Lines file whole for one bad line: read it line by line, so every
            # problem is named with its line and --skip_invalid can leave the bad lines out
            records, issues = read_records(path)
            if issues:
                return [(name, line, record) for line, record in records], issues
        return [], _why_unreadable(path, e)
    rows = table.to_list()
    if not rows:
        return [], [DataIssue(name, 0, "", "file is empty")]
    lines = _source_lines(path, len(rows))
    if builder == "csv":
        rows = [_decode_csv_row(row) for row in rows]
    return [(name, line, row) for line, row in zip(lines, rows)], []


def _read_local_folder(path: Path, config: str | None, split: str) -> tuple[list[Record], list[DataIssue]]:
    """Each file of the split, read on its own, so a problem names its file and line."""
    import datasets

    with _quiet_datasets():
        files = datasets.load_dataset_builder(str(path), name=config).config.data_files or {}
    if split not in files:
        raise ValueError(f"--dataset_name {path}: no {split!r} split (--dataset_train_split); "
                         f"it has: {', '.join(map(str, files)) or 'no data files'}")
    records, issues = [], []
    for file in files[split]:
        more, problems = _read_local_file(Path(file))
        records += more
        issues += problems
    return records, issues


def _read_hub_dataset(name: str, config: str | None, split: str) -> tuple[list[Record], list[DataIssue]]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        with _quiet_datasets():
            table = datasets.load_dataset(name, name=config, split=split)
    except ConnectionError as e:
        how = "HF_HUB_OFFLINE is set" if datasets.config.HF_HUB_OFFLINE else "no network"
        raise ValueError(
            f"--dataset_name {name}: not a local file or folder, and the Hugging Face Hub cannot be reached ({how}: "
            f"{e}). Download it once while online (datasets caches it), or pass a local file, e.g. "
            "--dataset_name data/train.jsonl"
        ) from None
    except DatasetNotFoundError as e:
        raise ValueError(f"--dataset_name {name}: not a local file or folder, and not on the Hub ({e}); a private or "
                         "gated dataset needs `huggingface-cli login`") from None
    return [(name, i, row) for i, row in enumerate(table, start=1)], []


def _why_unreadable(path: Path, error: Exception) -> list[DataIssue]:
    """Why `datasets` could not read a local file: a JSON array is re-parsed with the standard
    library to name the bad line; otherwise the reader's own message."""
    name = str(path)
    if path.suffix.lower() in (".json", ".jsonl") and _is_json_array(path):
        try:
            json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            return [DataIssue(name, 0, "", f"not valid UTF-8 (byte {e.start})")]
        except json.JSONDecodeError as e:
            return [DataIssue(name, e.lineno, "", f"malformed JSON: {e.msg} (column {e.colno})")]
    cause = error.__cause__ or error  # datasets wraps the reader's error in DatasetGenerationError
    kind = {"csv": "CSV", "parquet": "Parquet"}.get(FILE_BUILDERS[path.suffix.lower()], "JSON")
    return [DataIssue(name, 0, "", f"cannot read as {kind}: {type(cause).__name__}: {cause}")]


def _is_json_array(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"[")


def _source_lines(path: Path, n: int) -> list[int]:
    """The file line of each of the `n` rows `datasets` read (row numbers when they cannot be matched)."""
    lines: list[int] = []
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".json" and not _is_json_array(path)):
        with open(path, "rb") as f:
            lines = [number for number, raw in enumerate(f, start=1) if raw.strip()]
    elif suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            next(reader, None)  # the header
            start = reader.line_num + 1
            for row in reader:
                if row:  # blank lines are skipped, as pandas does
                    lines.append(start)
                start = reader.line_num + 1
    return lines if len(lines) == n else list(range(1, n + 1))


def _decode_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key in _CSV_JSON_FIELDS:
        if isinstance(row.get(key), str):
            try:
                row[key] = json.loads(row[key])
            except json.JSONDecodeError:
                pass  # left as text: normalize_record names the field and what it must be
    return row


class _quiet_datasets:
    """No `datasets` progress bars or log lines while loading: larft reports what went wrong."""

    def __enter__(self):
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars, logging

        self.was_disabled, self.verbosity = are_progress_bars_disabled(), logging.get_verbosity()
        disable_progress_bars()
        logging.set_verbosity(logging.CRITICAL)  # a reader's failure is reported by larft, once

    def __exit__(self, *exc):
        from datasets.utils import enable_progress_bars, logging

        logging.set_verbosity(self.verbosity)
        if not self.was_disabled:
            enable_progress_bars()


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
    targets: Iterable[int] = (16, 32, 64, 128),
    constraints: Iterable[str] = ("equal",),
    units: Iterable[str] = ("words",),
    topics: Iterable[str] = TOPICS,
    seed: int = 0,
    range_width: float = 0.2,
    styles: Iterable[str] = ("plain",),
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

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Copy records between JSONL and Parquet as they are (after validating them)."""
    records, issues = read_records(src)
    for line, record in records:
        issues.extend(normalize_record(record, str(src), line)[1])
    if issues:
        raise DataError(issues)
    write_rows([r for _, r in records], dst)
    return len(records)
