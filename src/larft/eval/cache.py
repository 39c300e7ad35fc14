"""Generation cache: one JSON line per finished prompt, appended and flushed as soon as it
is generated, so an interrupted eval resumes without redoing finished prompts.

`CachedGenerator` is the caching layer around a generator (larft.eval.generators): only what the
cache lacks is generated, each batch saved as soon as it is done."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from larft.errors import UserError
from larft.logs import get_logger

logger = get_logger(__name__)

if TYPE_CHECKING:
    from larft.eval.generators import Batched, Job, Sampling
    from larft.generation import Generation


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
                    logger.warning(f"{self.path}:{number}: incomplete last line ignored ({e}); it will be redone")
                    last_line_cut = True
                    continue
                raise UserError(f"{self.path}:{number}: corrupt cache line ({e}); delete the file to start over") from None
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


class CachedGenerator:
    """A generator whose answers come from the cache when it has them. `key(job)` names a job's
    entry: everything that changes an answer (prompt id, decoding settings, budget) is in it, so a
    changed setting regenerates and never reuses. Cached text is raw (reasoning kept)."""

    def __init__(self, inner: Batched, cache: GenerationCache, key: Callable[[Job], str], desc: str = "generating"):
        self.inner, self.cache, self.key, self.desc = inner, cache, key, desc

    def generate(self, jobs: Sequence[Job], sampling: Sampling) -> list[Generation]:
        todo = [j for j in jobs if self.key(j) not in self.cache]
        if todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=self.desc, unit="prompt")
            for batch, records in self.inner.stream(todo, sampling):
                for job, record in zip(batch, records):
                    self.cache.add(self.key(job), record.text, max_new_tokens=record.max_new_tokens,
                                   new_tokens=record.new_tokens, truncated=record.truncated)
                bar.update(len(batch))
            bar.close()
        from larft.generation import Generation

        cached = [self.cache.record(self.key(j)) for j in jobs]
        return [Generation(c["output"], c["new_tokens"], c["truncated"], c["max_new_tokens"]) for c in cached]
