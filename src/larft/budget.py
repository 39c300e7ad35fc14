"""Generation budgets that cannot change a score.

A token budget cuts an answer that runs on. If the cut answer can still score, the budget and
not the model decides that score. So every budget here is sized from the length at which the
score is already ~0 (or can no longer change), converted to tokens with the model's own
tokenizer:

- eval, `equal` / `at_most` (LIFEBench: LS = 100 exp(-2 LD)): 3x the target, LS <= 1.8;
- eval, LongBench-Write's S_l (0 at 4x the target): 4x;
- eval, `at_least`: 1.5x, well past the point where the score stops changing (the target);
- training rollouts: 2x, where the length reward of `equal` / `at_most` is exactly 0 and that
  of `at_least` is 1; a rollout cut there has a known reward (`rewards.truncated_reward`).
"""

from __future__ import annotations

import math
from typing import Any

#: where a cut answer's score is ~0 (eval) or known (training), in multiples of the target
ZERO_SCORE_MULTIPLE = {"equal": 3.0, "at_most": 3.0, "at_least": 1.5, "range": 3.0}
LONGBENCH_MULTIPLE = 4.0
TRAINING_MULTIPLE = 2.0

#: no tokenizer spends fewer tokens on a word than this (a floor for odd measurements)
TOKENS_PER_WORD_FLOOR = 1.0
#: answers are tokenized less evenly than prose (lists, numbers, markdown): headroom on the measured rate
MARGIN = 1.15
SLACK_TOKENS = 16

_EN_SAMPLE = (
    "Autumn arrives slowly in the northern valleys. The mornings turn cold, and a thin mist hangs over "
    "the river until the sun climbs above the ridge. Farmers bring in the last of the apples, while "
    "children collect chestnuts along the old stone walls. In the afternoon the light becomes golden, "
    "and the forests change from green to yellow, orange and deep red. Markets fill with pumpkins, "
    "mushrooms, fresh bread and jars of honey. People gather in small cafes to talk about the harvest, "
    "the weather and their plans for the winter. By evening, smoke rises from chimneys, and the smell "
    "of burning wood drifts through narrow streets. Migrating birds pass overhead in long, noisy lines, "
    "heading south toward warmer places. It is a season of endings, but also of rest: the fields lie "
    "quiet, the animals prepare for the cold, and the whole landscape seems to take a long, calm breath "
    "before the first snow. Many people say it is their favourite time of the year, because it is "
    "beautiful, gentle and a little sad, like a good story that is coming to its end."
)
_CN_SAMPLE = (
    "秋天慢慢地来到了北方的山谷。早晨变得寒冷，一层薄雾笼罩着河面，直到太阳爬上山脊。农民们收获最后一批苹果，"
    "孩子们沿着古老的石墙捡栗子。下午的阳光变成金色，森林从绿色变成黄色、橙色和深红色。集市上摆满了南瓜、"
    "蘑菇、新鲜的面包和一罐罐蜂蜜。人们聚在小咖啡馆里，谈论收成、天气和冬天的计划。"
)


_MEASURED: dict[tuple, float] = {}


def tokens_per_word(tokenizer: Any, lang: str = "en") -> float:
    """Tokens the tokenizer spends per word (per CJK character for `cn`), measured once per
    tokenizer on a fixed sample text, with a floor. larft counts a CJK character as a word."""
    from larft.length import count_words

    key = (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer), lang)
    if key not in _MEASURED:
        text = _CN_SAMPLE if lang == "cn" else _EN_SAMPLE
        _MEASURED[key] = len(tokenizer(text, add_special_tokens=False)["input_ids"]) / count_words(text)
    return max(TOKENS_PER_WORD_FLOOR, _MEASURED[key])


def zero_score_multiple(control: str = "equal", metric: str = "lifebench") -> float:
    """How many times the target an eval answer may reach: past it the score is ~0 or fixed."""
    if metric == "longbench":
        return LONGBENCH_MULTIPLE
    if metric == "sample":  # a text to study (the counting probe's own answers), not a score
        return TRAINING_MULTIPLE
    return ZERO_SCORE_MULTIPLE.get(control, 3.0)


def token_budget(target: int, multiple: float, per_word: float) -> int:
    """max_new_tokens that lets an answer reach `multiple` x `target` words at `per_word` tokens a
    word (with MARGIN headroom and SLACK_TOKENS for the turn's end)."""
    return int(math.ceil(multiple * target * per_word * MARGIN)) + SLACK_TOKENS


def answer_budget(target: int | tuple[int, int], tokenizer: Any, constraint: str = "equal") -> int:
    """max_new_tokens of one answer to judge (the length check, `larft generate`): room to reach the
    length where its score is ~0 (a range: from its upper bound)."""
    top = max(target) if isinstance(target, tuple) else target
    return token_budget(top, zero_score_multiple(constraint), tokens_per_word(tokenizer))


def training_budget(max_target: int, tokenizer: Any, lang: str = "en") -> int:
    """The completion budget that lets every rollout reach 2x the largest target: a rollout cut
    there has a known length reward (0 for `equal` / `at_most`, 1 for `at_least`)."""
    return token_budget(max_target, TRAINING_MULTIPLE, tokens_per_word(tokenizer, lang))
