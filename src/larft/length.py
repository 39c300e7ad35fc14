"""Length measurement: the one place where larft decides how long a text is.

Training rewards, awareness labels and the training-side metrics all count here, so the
model is rewarded and taught with the same ruler. (Benchmarks use their own upstream
counters; those live with the evaluation code, on purpose.)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from larft.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

UNITS = ("words", "chars", "tokens")

# The LARFT paper's COUNTWORDS: each CJK character is a word, each run of ASCII letters,
# digits, apostrophes and hyphens is a word; punctuation is not.
WORD_PATTERN = re.compile(r"[\u4e00-\u9fff]|[a-zA-Z0-9'-]+")

#: Reasoning delimiters: Qwen3 / DeepSeek-R1 style `<think>...</think>`. DeepSeek-R1's template opens
#: `<think>` inside the prompt, so a generation may hold only the closing tag. Configurable per run
#: (`reasoning_delimiters` in LARFTConfig, `--reasoning_delimiters` in eval), see `parse_delimiters`.
DEFAULT_REASONING = (("<think>", "</think>"),)

_CHAT_MARKERS = re.compile(
    r"<\|im_start\|>(?:system|user|assistant)?\n?|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>"
    r"|<\|start_header_id\|>\w*<\|end_header_id\|>|<\|begin_of_text\|>|<\|end_of_text\|>"
    r"|<start_of_turn>(?:model|user)?\n?|<end_of_turn>|</s>|<s>"
)


def parse_delimiters(spec: str | None) -> tuple[tuple[str, str], ...]:
    """`"<think>,</think>"` (pairs separated by `;`) -> ((start, end), ...); "" or "none" -> ()."""
    if spec is None:
        return DEFAULT_REASONING
    spec = spec.strip()
    if spec.lower() in ("", "none"):
        return ()
    pairs = []
    for part in spec.split(";"):
        bits = [b.strip() for b in part.split(",")]
        if len(bits) != 2 or not all(bits):
            raise UserError(f"reasoning delimiters: expected 'start,end' pairs separated by ';', got {part!r}")
        pairs.append((bits[0], bits[1]))
    return tuple(pairs)


def strip_reasoning(text: str, delimiters: tuple[tuple[str, str], ...] = DEFAULT_REASONING) -> str:
    """The text without reasoning. For each (start, end) pair:
    - closed blocks `start ... end` are removed;
    - an end without a start (the start was in the prompt): everything up to it is reasoning;
    - a start without an end (cut off while reasoning): everything from it on is reasoning,
      so the answer is empty."""
    for start, end in delimiters:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), "", text, flags=re.DOTALL)
        if end in text:  # no start before it (closed blocks are gone): the start was in the prompt
            text = text.split(end, 1)[1]
        if start in text:
            text = text[: text.index(start)]
    return text


def final_text(text: str, reasoning: tuple[tuple[str, str], ...] = DEFAULT_REASONING) -> str:
    """The answer a user sees: no reasoning (see `strip_reasoning`), no chat-template markers, trimmed."""
    text = strip_reasoning(text, reasoning)
    text = _CHAT_MARKERS.sub("", text)
    return text.strip()


def count_words(text: str) -> int:
    """Words as the LARFT paper counts them (CJK character = 1 word)."""
    return len(WORD_PATTERN.findall(text))


def count_chars(text: str) -> int:
    """Non-whitespace characters: the natural unit for CJK text."""
    return sum(1 for ch in text if not ch.isspace())


def count_tokens(text: str, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens of the given tokenizer, without special tokens."""
    if tokenizer is None:
        raise ValueError("unit 'tokens' needs a tokenizer")
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def measure(text: str, unit: str = "words", *, tokenizer: PreTrainedTokenizerBase | None = None,
            extract: bool = True) -> int:
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


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """Text of a TRL completion: a plain string, or a list of chat messages (assistant turns)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") or "" for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")
