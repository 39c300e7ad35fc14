"""The TRL and CTranslate2 internals larft leans on are all where larft expects them, and a release that
moves one is named in the error, not met as an AttributeError inside a training step."""

import re
from pathlib import Path

import pytest

from larft import private_api
from larft.private_api import check_ct2, check_trl, count, trl_problems


def test_installed_trl_and_ctranslate2_have_every_private_name(tiny_model_dir, tmp_path):
    from helpers import tiny_trainer

    trainer = tiny_trainer(tiny_model_dir, tmp_path, max_steps=1)  # it checks itself when built
    assert trl_problems(trainer) == []
    pytest.importorskip("ctranslate2")
    check_ct2()


def test_a_moved_method_attribute_or_helper_is_named(monkeypatch, tiny_model_dir, tmp_path):
    from trl import GRPOTrainer

    class Built:  # a trainer of a TRL release that renamed _buffered_inputs
        def __getattr__(self, name):
            if name == "_buffered_inputs":
                raise AttributeError(name)
            return None

    monkeypatch.setitem(private_api.TRL_METHODS, "_compute_loss", ("model", "inputs", "num_items"))
    monkeypatch.setitem(private_api.TRL_HELPERS, "trl.trainer.utils", ("shuffle_sequence_dict", "gone_helper"))
    with pytest.raises(RuntimeError) as error:
        check_trl(Built())
    message = str(error.value)
    assert re.search(r"GRPOTrainer\._compute_loss takes \(model, inputs[^)]*\), larft passes \(model, inputs, num_items\)",
                     message)
    assert "trl.trainer.utils.gone_helper is gone" in message
    assert "no attribute _buffered_inputs" in message and "_prepare_inputs" in message
    assert hasattr(GRPOTrainer, "_compute_loss")

    monkeypatch.setitem(private_api.CT2_PRIVATE, "ctranslate2.converters.transformers", ("_GONE_LOADERS",))
    pytest.importorskip("ctranslate2")
    with pytest.raises(RuntimeError, match="_GONE_LOADERS is gone"):
        check_ct2()


def test_pyproject_states_how_many_private_names_larft_uses():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    n = count()
    assert f"{n['trl']} private TRL names" in text and f"{n['ctranslate2']} of CTranslate2" in text
