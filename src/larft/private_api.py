"""The private surface larft leans on, in one place: TRL's GRPOTrainer methods it overrides or calls and
the attributes it reads, the TRL helpers it imports from inside TRL, and CTranslate2's private loader
table. TRL and CTranslate2 may move any of these in a minor release; `check_trl` and `check_ct2` say
exactly what moved (LARFTTrainer checks TRL when it is built, the ct2 engine checks CTranslate2 when it
converts a model), instead of an AttributeError deep inside a training step. pyproject.toml pins the
releases these were checked against.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

#: GRPOTrainer methods larft overrides (trainer.py, importance.py) or calls (ct2_engine.py): name -> the
#: parameters larft passes, in order
TRL_METHODS: dict[str, tuple[str, ...]] = {
    "_prepare_inputs": ("generation_batch",),
    "_generate_and_score_completions": ("inputs",),
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_compute_loss": ("model", "inputs"),
    "_get_per_token_logps_and_entropies": ("model",),
    "_tokenize_prompts": ("prompts",),
}

#: attributes a built GRPOTrainer has, which larft reads or sets: name -> where larft uses it
TRL_ATTRIBUTES: dict[str, str] = {
    "_step": "trainer.py _prepare_inputs: which buffered micro-batch a micro-step gets",
    "_buffered_inputs": "trainer.py _prepare_inputs: the split generation batch",
    "_metrics": "trainer.py: the length, awareness and importance-sampling metrics",
    "_tokenizer": "trainer.py: decoding rollouts, building counting examples",
    "eos_token_ids": "trainer.py, ct2_engine.py: where a rollout ends",
    "num_iterations": "trainer.py _prepare_inputs: rollout reuse",
    "importance_sampling_level": "trainer.py: sequence-level importance weights",
    "reward_func_names": "trainer.py: reward errors and rollouts.jsonl",
    "max_completion_length": "ct2_engine.py: the rollout budget",
    "rollout_func": "trainer.py, ct2_engine.py: the ct2 rollouts",
}

#: TRL helpers imported from TRL's own modules: module -> names
TRL_HELPERS: dict[str, tuple[str, ...]] = {
    "trl.trainer.utils": ("shuffle_sequence_dict", "split_tensor_dict", "split_pixel_values_by_grid",
                          "unsplit_pixel_values_by_grid", "get_config_model_id"),
    "trl.trainer.grpo_trainer": ("RewardFunc",),
    "trl.models": ("unwrap_model_for_generation",),
    "trl.kernels.chunked_logprob": ("TOKEN_CHUNK_SIZE",),  # head_tiles.py: set for a CPU run's training
}

#: CTranslate2's private table of converters by model class (ct2_engine.py converts the policy in memory)
CT2_PRIVATE: dict[str, tuple[str, ...]] = {"ctranslate2.converters.transformers": ("_MODEL_LOADERS",)}


def count() -> dict[str, int]:
    """How many private names larft leans on, by library."""
    return {"trl": len(TRL_METHODS) + len(TRL_ATTRIBUTES) + sum(map(len, TRL_HELPERS.values())),
            "ctranslate2": sum(map(len, CT2_PRIVATE.values()))}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _missing_names(table: dict[str, tuple[str, ...]]) -> list[str]:
    problems = []
    for module_name, names in table.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            problems.append(f"module {module_name} does not import ({e})")
            continue
        problems += [f"{module_name}.{name} is gone" for name in names if not hasattr(module, name)]
    return problems


def trl_problems(trainer: Any = None) -> list[str]:
    """What of TRL_METHODS, TRL_HELPERS and (given a built trainer) TRL_ATTRIBUTES is not where larft expects it."""
    from trl import GRPOTrainer

    problems = []
    for name, params in TRL_METHODS.items():
        method = getattr(GRPOTrainer, name, None)
        if method is None:
            problems.append(f"GRPOTrainer.{name} is gone")
            continue
        have = [p for p in inspect.signature(method).parameters if p != "self"]
        if have[: len(params)] != list(params):
            problems.append(f"GRPOTrainer.{name} takes ({', '.join(have)}), larft passes ({', '.join(params)})")
    problems += _missing_names(TRL_HELPERS)
    if trainer is not None:
        problems += [f"a GRPOTrainer has no attribute {name} (used in {use})"
                     for name, use in TRL_ATTRIBUTES.items() if not hasattr(trainer, name)]
    return problems


def check_trl(trainer: Any = None) -> None:
    """A RuntimeError naming every piece of TRL's private surface that moved, or nothing."""
    problems = trl_problems(trainer)
    if problems:
        raise RuntimeError(f"larft relies on TRL internals that trl {_version('trl')} moved: " + "; ".join(problems)
                           + ". Install the TRL release pinned in larft's pyproject.toml (larft.private_api lists them)")


def check_ct2() -> None:
    """A RuntimeError naming what of CTranslate2's private surface moved, or nothing."""
    problems = _missing_names(CT2_PRIVATE)
    if problems:
        raise RuntimeError(f"larft's ct2 engine relies on CTranslate2 internals that ctranslate2 "
                           f"{_version('ctranslate2')} moved: " + "; ".join(problems)
                           + ". Install the release pinned in larft's pyproject.toml, or set rollout_backend: hf")
