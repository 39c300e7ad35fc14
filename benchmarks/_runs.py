"""Helpers for scripts that drive `larft train` runs (benchmarks/experiment.py, research/*.py).

Not part of the larft package: scripts import it by putting this folder on sys.path, e.g.
`sys.path.insert(0, str(ROOT / "benchmarks"))`, then `from _runs import resume_args`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from larft.train import complete_checkpoints


def resume_args(output_dir: Path) -> list[str]:
    """`larft train` arguments that continue a run in output_dir: `--resume true` when it holds a
    complete checkpoint, else none (the caller starts the run over)."""
    return ["--resume", "true"] if output_dir.is_dir() and complete_checkpoints(output_dir) else []


def drop_checkpoints(output_dir: Path) -> None:
    """Remove the checkpoint-* folders of a finished run: its final model is kept, the optimizer
    states are not needed any more."""
    for old in output_dir.glob("checkpoint-*"):
        shutil.rmtree(old)
