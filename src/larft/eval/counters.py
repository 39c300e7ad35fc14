"""Each benchmark's own word counter, exactly as its upstream code counts.

They differ on purpose (see ../shared/benchmarks/*/README.md): training uses
`larft.length`, evaluation uses the counter of the benchmark it reports.
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u4e00-\u9fff]")
_LIFEBENCH_WORD = re.compile(r"\b[a-zA-Z0-9'-]+\b")
_LONGBENCH_WORD = re.compile(r"\b[a-zA-Z]+\b")
_RULER_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?]+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def lifebench_count(text: str) -> int:
    """LIFEBench `count_words`: whitespace collapsed; CJK chars + \\b[a-zA-Z0-9'-]+\\b matches."""
    text = re.sub(r"\s+", " ", text).strip()
    return len(_CJK.findall(text)) + len(_LIFEBENCH_WORD.findall(text))


def longbench_write_count(text: str) -> int:
    """LongBench-Write / LongWriter: CJK chars + \\b[a-zA-Z]+\\b matches (letters only)."""
    return len(_CJK.findall(text)) + len(_LONGBENCH_WORD.findall(text))


def ruler_count(text: str) -> int:
    """Ruler (nltk RegexpTokenizer(r"\\w+")): runs of Unicode word characters."""
    return len(_RULER_WORD.findall(text))


def lenctrl_count(text: str, level: str) -> int:
    """LenCtrl-Bench stand-in (no public evaluation code): words = whitespace tokens,
    sentences = runs ended by . ! ?, paragraphs = blocks separated by blank lines."""
    if level == "word":
        return len(text.split())
    if level == "sentence":
        parts = [p for p in _SENTENCE_END.split(text) if p.strip()]
        return len(parts)
    if level == "paragraph":
        return len([p for p in _PARAGRAPH_BREAK.split(text) if p.strip()])
    raise ValueError(f"unknown LenCtrl level {level!r}; expected word, sentence or paragraph")
