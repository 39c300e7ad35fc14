"""The one test on the real bundled model: it loads (converting the GGUF once) and generates."""

import os

import pytest

from larft.generation import generate
from larft.length import count_words
from larft.models import load_model, load_tokenizer, resolve_model


@pytest.mark.slow
def test_default_model_loads_and_generates(tmp_path_factory):
    os.environ.setdefault("LARFT_HOME", str(tmp_path_factory.mktemp("larft-home")))
    path = resolve_model("default")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    tokenizer = load_tokenizer("default")
    model = load_model("default")
    assert getattr(model, "hf_quantizer", None) is None  # trainable and saveable as a plain model
    assert model.num_parameters() > 100_000_000
    texts = generate(model, tokenizer, [[{"role": "user", "content": "Name three colours."}]], max_new_tokens=24)
    assert count_words(texts[0]) >= 3
