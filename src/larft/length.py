"""Length measurement: the one place where larft decides how long a text is.

Training rewards, awareness labels and the training-side metrics all count here, so the
model is rewarded and taught with the same ruler. (Benchmarks use their own upstream
counters; those live with the evaluation code, on purpose.)
"""

from __future__ import annotations

import re
from typing import Any

UNITS = ("words", "chars", "tokens")

# The LARFT paper's COUNTWORDS: each CJK character is a word, each run of ASCII letters,
# digits, apostrophes and hyphens is a word; punctuation is not.
WORD_PATTERN = re.compile(r"[\u4e00-\u9fff]|[a-zA-Z0-9'-]+")

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_UNCLOSED_THINK = re.compile(r"^.*?</think>", re.DOTALL)  # template opened <think> in the prompt
_CHAT_MARKERS = re.compile(
    r"<\|im_start\|>(?:system|user|assistant)?\n?|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>"
    r"|<\|start_header_id\|>\w*<\|end_header_id\|>|<\|begin_of_text\|>|<\|end_of_text\|>"
    r"|<start_of_turn>(?:model|user)?\n?|<end_of_turn>|</s>|<s>"
)


def final_text(text: str) -> str:
    """The answer a user sees: no reasoning block, no chat-template markers, trimmed."""
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:  # the opening tag was in the prompt, only the closing one was generated
        text = _UNCLOSED_THINK.sub("", text, count=1)
    text = _CHAT_MARKERS.sub("", text)
    return text.strip()


def count_words(text: str) -> int:
    """Words as the LARFT paper counts them (CJK character = 1 word)."""
    return len(WORD_PATTERN.findall(text))


def count_chars(text: str) -> int:
    """Non-whitespace characters: the natural unit for CJK text."""
    return sum(1 for ch in text if not ch.isspace())


def count_tokens(text: str, tokenizer: Any) -> int:
    """Tokens of the given tokenizer, without special tokens."""
    if tokenizer is None:
        raise ValueError("unit 'tokens' needs a tokenizer")
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def measure(text: str, unit: str = "words", *, tokenizer: Any = None, extract: bool = True) -> int:
    """Length of `text` in `unit` (words, chars or tokens), after final-text extraction."""
    if extract:
        text = final_text(text)
    if unit == "words":
        return count_words(text)
    if unit == "chars":
        return count_chars(text)
    if unit == "tokens":
        return count_tokens(text, tokenizer)
    raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(UNITS)}")


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a plain string, or a list of chat messages (assistant turns)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") or "" for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")
