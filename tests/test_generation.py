"""Generation helpers that training-time checks depend on."""

import torch

from larft.generation import weights_precision
from tiny import tiny_model, tiny_tokenizer


def test_a_check_during_bf16_training_computes_in_the_weights_precision():
    """accelerate wraps a prepared model's forward in bf16 autocast; the held-out length check
    takes that wrapper off, so it answers as the saved fp32 model does (`larft eval`)."""
    from accelerate import Accelerator

    tokenizer = tiny_tokenizer()
    plain = tiny_model(tokenizer)
    ids = torch.tensor([tokenizer.encode("In about 16 words, describe the history of tea.")])
    with torch.no_grad():
        expected = plain(ids).logits
    prepared = Accelerator(cpu=True, mixed_precision="bf16").prepare(tiny_model(tokenizer))
    with torch.no_grad():
        autocast = prepared(ids).logits
        with weights_precision(prepared) as model:
            own = model(ids).logits
        after = prepared(ids).logits
    assert not torch.equal(autocast, expected)  # the wrapper does change the numbers
    assert torch.equal(own, expected)
    assert torch.equal(after, autocast)  # and is back afterwards


def test_a_model_without_the_wrapper_is_left_as_it_is():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    forward = model.forward
    with weights_precision(model) as same:
        assert same is model and model.forward == forward
    assert "forward" not in model.__dict__
