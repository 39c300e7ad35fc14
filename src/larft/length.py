"""Length measurement: the one place where larft decides how long a text is.

Training rewards, awareness labels and the training-side metrics all count here, so the
model is rewarded and taught with the same ruler. (Benchmarks use their own upstream
counters; those live with the evaluation code, on purpose.)
"""

from __future__ import annotations

import re
from collections import Counter
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


# -- answer health: loops and sentence ends ----------------------------------------------------
#: the eval's loop metric: an answer of >= LOOP_MIN_WORDS words loops when more than LOOP_SHARE of its
#: word 4-grams repeat an earlier 4-gram (`is_looping`). The length reward's degenerate guard is the
#: same function with the same settings (`larft.rewards.is_degenerate`).
LOOP_NGRAM = 4
LOOP_SHARE = 0.3
LOOP_MIN_WORDS = 8


def repetition_share(text: str, n: int = LOOP_NGRAM) -> float:
    """Share of the word n-grams of `text` that repeat an earlier n-gram of the same text:
    (n-grams - distinct n-grams) / n-grams, over larft words (`WORD_PATTERN`, lower-cased; a CJK
    character is a word). 0.0 for a text of fewer than n words. "a b c a b c" has 4 trigrams, 3
    distinct: 0.25; a text that says one sentence over and over tends to 1."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    words = [w.lower() for w in WORD_PATTERN.findall(text)]
    grams = list(zip(*(words[i:] for i in range(n))))
    if not grams:
        return 0.0
    return (len(grams) - len(Counter(grams))) / len(grams)


def is_looping(text: str, n: int = LOOP_NGRAM, threshold: float = LOOP_SHARE,
               min_words: int = LOOP_MIN_WORDS) -> bool | None:
    """Whether `text` loops: its `repetition_share(text, n)` is above `threshold`. None (not
    judged) for a text of fewer than `min_words` words, where a few repeats say nothing; with
    `min_words=0` every text is judged (a text shorter than n words never loops).

    The eval's loop metric and the length reward's degenerate guard (`larft.rewards.is_degenerate`)
    are both the default: 4-grams, > 0.3, >= 8 words."""
    if min_words > 0 and count_words(text) < min_words:
        return None
    return repetition_share(text, n) > threshold


#: what ends a sentence: . ! ? and the ellipsis, and the CJK full stop, exclamation and question marks
SENTENCE_ENDS = frozenset(".!?\u2026\u3002\uff01\uff1f")
#: closing quotes and brackets that may follow a sentence end ('He said "yes."', '(see above.)', 「好。」)
_CLOSERS = "\"'\u201d\u2019\u00bb\u203a)]}\u300d\u300f\uff09\u3011\u3009\u300b\uff02"
#: markdown marks and whitespace that may trail an answer (emphasis, code, strike-through, rules)
_TRAILING_MARKUP = "*_`~#=-"


def ends_on_sentence(text: str) -> bool:
    """Whether an answer ends on a finished sentence: after trailing whitespace, markdown marks
    (* _ ` ~ # = -: a closing `**`, a code fence, a rule) and closing quotes / brackets are stripped,
    its last character is a sentence end (`. ! ?`, `…`, or CJK `。！？`). So `Done.`, `**Done.**`, `He said "no."`,
    `(as above.)` and `好。」` end on a sentence; `and then the`, `(see above)`, `Steps:`, a list item
    without a full stop, and an empty answer do not. Pass the final answer (`final_text`)."""
    text = text.rstrip()
    while text and (text[-1].isspace() or text[-1] in _TRAILING_MARKUP or text[-1] in _CLOSERS):
        text = text[:-1]
    return bool(text) and text[-1] in SENTENCE_ENDS
