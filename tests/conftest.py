"""Fixtures shared by the tests. Shared builders and helpers (prompt rows, a tiny LARFTTrainer, the
`larft` command in a subprocess) are plain functions in helpers.py, imported from this folder.

Markers (pyproject.toml): `slow`, `subprocess`, `distributed`; every test runs by default, and
`pytest -m "not slow and not subprocess and not distributed"` is the fast subset."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helpers.py, tiny.py

from tiny import save_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + tokenizer saved as an HF folder, shared by the session."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))
