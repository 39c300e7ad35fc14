"""Builders and helpers shared by the tests: prompt rows, a LARFTTrainer on the tiny model, the
`larft` command in a subprocess, a gradient read-out, a benchmark or research script as a module.

Plain functions rather than fixtures: tests call them with their own arguments, several times in
one test (a trainer per setting, rows of several sizes), which a fixture can only do as a factory.
conftest.py keeps the fixtures (the session's tiny model) and puts this folder on sys.path, so a
test imports them with `from helpers import ...`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str) -> Any:
    """The script at `path` (from the repository root, e.g. "benchmarks/long_run.py") imported as a
    module of its file's name, its folder on sys.path (the scripts import their neighbours)."""
    import importlib.util

    file = ROOT / path
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)
    return module


#: the larft console script beside this Python (unlike `python -m larft`, it does not put the cwd on sys.path)
LARFT_SCRIPT = Path(sys.executable).with_name("larft")


def prompt_rows(n: int = 8, targets: tuple[int, ...] = (4, 8), seed: int = 1) -> list[dict[str, Any]]:
    """`n` generated prompt rows, validated as training reads them (`data.normalize_record`)."""
    from larft.data import generate_rows
    from larft.loader import normalize_record

    rows = generate_rows(n, targets=list(targets), constraints=("equal",), styles=("plain",), seed=seed)
    return [normalize_record(r, "-", i)[0] for i, r in enumerate(rows, 1)]


#: LARFTConfig settings every tiny trainer shares: 4 rollouts (2 prompts x 2) a step, nothing reported or saved
TINY_RUN = {"num_generations": 2, "per_device_train_batch_size": 4, "report_to": "none", "save_strategy": "no"}


def tiny_trainer(model_dir: str | Path, output_dir: str | Path, *, rows: list[dict] | None = None,
                 reward_funcs: list | None = None, **settings: Any) -> Any:
    """A LARFTTrainer on the model in `model_dir` with its own tokenizer, training on `rows`
    (default: `prompt_rows()`), writing to `output_dir`. `settings` are LARFTConfig fields over TINY_RUN,
    and LARFTTrainer's own `length_reward` / `reward_processing_classes` / `peft_config` / `rollout_func` / `callbacks`."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from larft.config import LARFTConfig
    from larft.trainer import LARFTTrainer

    trainer_kwargs = {k: settings.pop(k) for k in ("length_reward", "reward_processing_classes", "peft_config",
                                                   "rollout_func", "callbacks")
                      if k in settings}
    args = LARFTConfig(**{"output_dir": str(output_dir), **TINY_RUN, **settings})
    return LARFTTrainer(model=str(model_dir), reward_funcs=reward_funcs, args=args,
                        train_dataset=Dataset.from_list(prompt_rows() if rows is None else rows),
                        processing_class=AutoTokenizer.from_pretrained(model_dir), **trainer_kwargs)


#: a short LARFT run (tests of the trainer, padding, budgets): 2 steps of rollouts of <= 12 tokens, the
#: awareness loss at full weight from the first step
TWO_STEPS = {"max_steps": 2, "max_completion_length": 12, "learning_rate": 1e-3, "awareness_lambda_max": 1.0,
             "awareness_warmup_ratio": 0.0, "seed": 0}


def two_step_trainer(model_dir: str | Path, tmp_path: Path, **overrides: Any) -> Any:
    """`tiny_trainer` with TWO_STEPS' settings (`overrides` win), writing to tmp_path / "out"."""
    return tiny_trainer(model_dir, tmp_path / "out", **{**TWO_STEPS, **overrides})


def grads(trainer: Any, inputs: dict) -> tuple[Any, Any]:
    """(every parameter's gradient of the trainer's loss on `inputs`, flattened into one tensor; the loss)."""
    import torch

    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]), loss


def larft(*args: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
          console_script: bool = False) -> subprocess.CompletedProcess:
    """`python -m larft ARGS` (or the `larft` console script) in a subprocess, its output captured as text;
    `env` is added to this process's environment."""
    command = [str(LARFT_SCRIPT)] if console_script else [sys.executable, "-m", "larft"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})})
