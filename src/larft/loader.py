"""The one reader of prompt files, for training, `larft eval --bench_file` and `larft data`.

Every source (a local JSONL / JSON / CSV / Parquet file, a folder of them, or a Hub dataset) is
read by `datasets.load_dataset`, each row keeping where it came from (file and line), then
checked row by row in one pass (`normalize_record`): every problem is reported as
`file:line: field: message`, none is dropped silently.

A prompt row (one JSON object per line):
    prompt          chat messages [{"role", "content"}, ...] or a plain string
                    (or `messages`, TRL's chat column: the conversation before its last answer)
    target          N (integer; wins over reward_model.ground_truth when both are given)
    reward_model    {"ground_truth": N, "style": "chat"}   (official LARFT format)
    constraint      equal | at_most | at_least | range      (default equal)
    unit            words | chars | tokens                  (default words)
    target_range    [lo, hi] for constraint range
    ...             any other column is kept: reward functions of yours get it
A row may have no target when your own reward functions score it (`require_target=False`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larft.errors import UserError
from larft.length import UNITS
from larft.logs import get_logger
from larft.rewards import CONSTRAINTS

logger = get_logger(__name__)

#: the largest target accepted: beyond this a target is a typo, not an instruction
MAX_TARGET = 100_000
#: the `datasets` builder for each local file type
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
#: the columns a length instruction is read from; a row's other columns go to the reward functions
ROW_FIELDS = ("prompt", "messages", "target", "target_range", "constraint", "unit", "reward_model")
#: CSV cells are text: these columns hold JSON there (messages as '[{"role": "user", ...}]')
_CSV_JSON_FIELDS = ("messages", "target_range", "reward_model")


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


Record = tuple[str, int, Any]  # (source, line, record) of one row


# -- prompt rows: read, then validated in one pass --------------------------------------------
def read_rows(source: str | os.PathLike, *, config: str | None = None, split: str = "train",
              require_target: bool = True) -> tuple[list[dict[str, Any]], list[DataIssue]]:
    """Every valid prompt row of `source` and every problem found (nothing dropped silently). A
    row keeps its other columns (reward functions get them as keyword lists) and `_source`."""
    records, issues = read_dataset(str(source), config=config, split=split)
    return check_records(str(source), records, issues, require_target=require_target)


def check_records(name: str, records: list[Record], issues: list[DataIssue], *,
                  require_target: bool = True) -> tuple[list[dict[str, Any]], list[DataIssue]]:
    """The one validating pass over records `read_dataset` gave: the prompt rows and every problem."""
    issues = list(issues)
    columns = {k for _, _, r in records if isinstance(r, dict) for k, v in r.items() if v is not None}
    if records and not columns & {"prompt", "messages"}:
        return [], issues + [DataIssue(name, 0, "columns", f"needs a 'prompt' or 'messages' column; has "
                                                           f"{sorted(columns)}")]
    rows = []
    for where, line, record in records:
        row, row_issues = normalize_record(record, where, line, require_target=require_target)
        issues.extend(row_issues)
        if row is not None:
            row.update({k: v for k, v in record.items() if k not in ROW_FIELDS and k not in row})
            row["_source"] = where
            rows.append(row)
    return rows, issues


def load_rows(source: str | os.PathLike, *, config: str | None = None, split: str = "train",
              skip_invalid: bool = False, require_target: bool = True) -> list[dict[str, Any]]:
    """The prompt rows of `source` (`read_rows`): a DataError listing every problem, unless
    `skip_invalid` (then the skipped rows are reported and the rest returned)."""
    rows, issues = read_rows(source, config=config, split=split, require_target=require_target)
    if issues and not skip_invalid:
        raise DataError(issues)
    if issues:
        shown = "".join(f"\n  {i}" for i in issues[:20])
        logger.warning(f"--skip_invalid: skipped {len(issues)} invalid record(s) of {source}:{shown}")
    if not rows:
        raise DataError([DataIssue(str(source), 0, "", "no valid rows")])
    return rows


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


def _messages(record: dict[str, Any], issue) -> list[dict[str, str]] | None:
    """The row's prompt as chat messages (`prompt`, or `messages` up to its final answer)."""
    prompt, name = record.get("prompt"), "prompt"
    if prompt is None and record.get("messages") is not None:
        # a chat dataset (TRL's "messages" column): the conversation up to its final answer is the prompt
        prompt, name = record["messages"], "messages"
        if not isinstance(prompt, list):
            got = "text that is not a JSON list" if isinstance(prompt, str) else type(prompt).__name__
            issue(name, f"must be a list of chat messages, got {got}")
            return None
        if prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") == "assistant":
            prompt = prompt[:-1]
            if not prompt:
                issue(name, "has no message before its last assistant message")
                return None
    if prompt is None:
        issue("prompt", "missing (give 'prompt', or 'messages' as a chat)")
        return None
    if isinstance(prompt, str):
        if not prompt.strip():
            issue("prompt", "is empty")
            return None
        return [{"role": "user", "content": prompt}]
    if not (isinstance(prompt, list) and prompt):
        issue(name, "must be a non-empty string or list of chat messages")
        return None
    messages = []
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
            "system", "user", "assistant",
        ):
            issue(f"{name}[{i}]", "must be {\"role\": system|user|assistant, \"content\": string}")
            return None
        messages.append({"role": m["role"], "content": m["content"]})
    if not any(m["content"].strip() for m in messages if m["role"] == "user"):
        issue(name, "has no non-empty user message")
        return None
    return messages


def normalize_record(record: Any, path: str, line: int, *,
                     require_target: bool = True) -> tuple[dict[str, Any] | None, list[DataIssue]]:
    """One prompt row {prompt, target, target_range, constraint, unit, line} or its problems. A row
    with no target at all is a problem unless `require_target` is off (your reward scores it)."""
    issues: list[DataIssue] = []

    def issue(field: str, message: str) -> None:
        issues.append(DataIssue(path, line, field, message))

    if not isinstance(record, dict):
        issue("", f"expected a JSON object, got {type(record).__name__}")
        return None, issues
    messages = _messages(record, issue)

    constraint = record.get("constraint") or "equal"
    if constraint not in CONSTRAINTS:
        issue("constraint", f"unknown constraint {constraint!r}; expected one of {', '.join(CONSTRAINTS)}")
    unit = record.get("unit") or "words"
    if unit not in UNITS:
        issue("unit", f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")

    target = target_range = None
    ground_truth = record["reward_model"].get("ground_truth") if isinstance(record.get("reward_model"), dict) else None
    if constraint == "range":
        value = record.get("target_range")
        if value is None and not require_target:
            pass
        elif not (isinstance(value, list) and len(value) == 2):
            issue("target_range", f"constraint 'range' needs target_range [lo, hi], got {value!r}")
        else:
            lo = _check_length_value(value[0], "target_range[0]", issue)
            hi = _check_length_value(value[1], "target_range[1]", issue)
            if lo is not None and hi is not None:
                if lo > hi:
                    issue("target_range", f"lo > hi ({lo} > {hi})")
                else:
                    target_range = [lo, hi]
    elif record.get("target") is not None:
        target = _check_length_value(record["target"], "target", issue)
    elif ground_truth is not None:
        target = _check_length_value(ground_truth, "reward_model.ground_truth", issue)
    elif require_target:
        issue("target", "missing (give 'target' or 'reward_model.ground_truth'; a row without one needs a "
                        "reward function of yours to score it, --reward_funcs)")

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


# -- reading: files, folders and Hub datasets through `datasets` ------------------------------
def read_dataset(name: str, *, config: str | None = None, split: str = "train") -> tuple[list[Record], list[DataIssue]]:
    """The rows of a local file, a local folder (its `split` files, as `datasets` resolves them) or a
    Hub dataset, each with where it came from: a local file's line (JSONL, CSV), its index + 1 (a
    JSON array) or its row number (Parquet); a Hub dataset's row number."""
    path = Path(name).expanduser()
    if path.is_file():
        if config or split != "train":
            raise UserError(f"{name} is one file: it has no --dataset_config and one split "
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
            rows = datasets.load_dataset(builder, data_files=name, split="train").to_list()
    except Exception as e:  # many types for a bad file (StopIteration, ArrowInvalid, ...): reported below
        if builder == "json" and not _is_json_array(path):
            # datasets refuses a JSON Lines file whole for one bad line, or for rows whose fields differ in
            # type: read it line by line, so every problem is named with its line (and --skip_invalid can
            # leave the bad lines out), and rows of mixed types are checked one by one
            records, issues = _read_json_lines(path)
            return [(name, line, record) for line, record in records], issues
        return [], _why_unreadable(path, e)
    if not rows:
        return [], [DataIssue(name, 0, "", "file is empty")]
    lines = _source_lines(path, len(rows))
    if builder == "csv":
        rows = [_decode_csv_row(row) for row in rows]
    return [(name, line, row) for line, row in zip(lines, rows)], []


def _read_json_lines(path: Path) -> tuple[list[tuple[int, Any]], list[DataIssue]]:
    """(line number, parsed object) pairs of a JSON Lines file and the problems met reading it."""
    name, records, issues = str(path), [], []
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
    return records, issues


def _read_local_folder(path: Path, config: str | None, split: str) -> tuple[list[Record], list[DataIssue]]:
    """Each file of the split, read on its own, so a problem names its file and line."""
    import datasets

    with _quiet_datasets():
        files = datasets.load_dataset_builder(str(path), name=config).config.data_files or {}
    if split not in files:
        raise UserError(f"{path}: no {split!r} split (--dataset_train_split); it has: "
                        f"{', '.join(map(str, files)) or 'no data files'}")
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
        raise UserError(
            f"--dataset_name {name}: not a local file or folder, and the Hugging Face Hub cannot be reached ({how}: "
            f"{e}). Download it once while online (datasets caches it), or pass a local file, e.g. "
            "--dataset_name data/train.jsonl"
        ) from None
    except DatasetNotFoundError as e:
        raise UserError(f"--dataset_name {name}: not a local file or folder, and not on the Hub ({e}); a private "
                        "or gated dataset needs `huggingface-cli login`") from None
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
