"""larft.models: how a model name becomes a folder (no model is loaded here)."""

import pytest

from larft import models


def test_a_gguf_file_is_converted_once_into_a_folder_keyed_by_its_name_and_size(tmp_path, monkeypatch):
    monkeypatch.delenv("LARFT_HOME", raising=False)
    monkeypatch.setattr(models, "larft_home", lambda: tmp_path / "home")
    gguf = tmp_path / "home" / "models" / "Tiny.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"x" * 10)
    seen = []
    monkeypatch.setattr(models, "gguf_to_hf", lambda src, target: seen.append((src, target)) or target)
    # $LARFT_HOME works in a config even when the variable is unset
    got = models.resolve_model("$LARFT_HOME/models/Tiny.gguf")
    key = f"Tiny-10-{gguf.stat().st_mtime_ns}"
    assert seen == [(gguf, tmp_path / "home" / "models" / key)]
    assert got == str(tmp_path / "home" / "models" / key)
    assert models.resolve_model("owner/name") == "owner/name"  # a Hub id passes through
    # an HF folder under $LARFT_HOME (a warm-up model named in a config)
    assert models.resolve_model("$LARFT_HOME/counting_warmup/m") == str(tmp_path / "home" / "counting_warmup" / "m")


def test_a_missing_gguf_file_is_a_clear_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
        models.resolve_model(str(tmp_path / "nowhere.gguf"))
