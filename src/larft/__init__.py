"""larft: Length-Aware Reinforcement Fine-Tuning (LARFT) on TRL.

    from larft import LARFTConfig, LARFTTrainer
    trainer = LARFTTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", args=LARFTConfig("out"), train_dataset=ds)
    trainer.train()

The names below load on first use (module `__getattr__`): `import larft` and `larft --help`
stay fast because torch / TRL are imported only when the trainer or its config is touched.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("larft")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.2.0"

#: public name -> module that defines it
_EXPORTS = {
    "LARFTTrainer": "larft.trainer",
    "LARFTConfig": "larft.config",
    "length_reward": "larft.rewards",
    "length_score": "larft.rewards",
    "LengthReward": "larft.rewards",
    "awareness_lambda": "larft.schedule",
    "count_words": "larft.length",
    "count_chars": "larft.length",
    "count_tokens": "larft.length",
    "measure": "larft.length",
    "final_text": "larft.length",
    "run_eval": "larft.eval.runner",
    "best_of_n": "larft.best_of",
    "EvalSettings": "larft.eval.runner",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # static type checkers and IDEs see the real objects
    from larft.best_of import best_of_n
    from larft.config import LARFTConfig
    from larft.eval.runner import EvalSettings, run_eval
    from larft.length import count_chars, count_tokens, count_words, final_text, measure
    from larft.rewards import LengthReward, length_reward, length_score
    from larft.schedule import awareness_lambda
    from larft.trainer import LARFTTrainer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'larft' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
