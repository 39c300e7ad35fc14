"""Generation cache: one JSON line per finished prompt, appended and flushed as soon as it
is generated, so an interrupted eval resumes without redoing finished prompts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


class GenerationCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        last_line_cut = False
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                key = record["key"]
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                if number == len(lines):  # a line cut by a kill mid-write: that prompt is generated again
                    print(f"[larft] {self.path}:{number}: incomplete last line ignored ({e}); it will be redone",
                          file=sys.stderr)
                    last_line_cut = True
                    continue
                raise ValueError(f"{self.path}:{number}: corrupt cache line ({e}); delete the file to start over") from None
            self.records[key] = record
        if lines[-1].strip():  # no final newline: make the next append start on a fresh line
            kept = lines[:-1] if last_line_cut else lines
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in kept if line.strip()))
            os.replace(tmp, self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def output(self, key: str) -> str:
        return self.records[key]["output"]

    def record(self, key: str) -> dict[str, Any]:
        """The whole cached record: output plus what was stored with it (budget, truncated, ...)."""
        return self.records[key]

    def add(self, key: str, output: str, **extra: Any) -> None:
        record = {"key": key, "output": output, **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[key] = record
