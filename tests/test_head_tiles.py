"""larft.head_tiles: a smaller token tile for TRL's fused LM head on CPU gives the same log-probs and
gradients (up to float summation order), is set only inside the block, and leaves CUDA alone."""

import importlib

import pytest
import torch

from larft.head_tiles import MODULE, NAME, token_tile
from tiny import tiny_model, tiny_tokenizer


def _fused_pass(model, ids, tokens):
    model.zero_grad()
    with token_tile(tokens, "cpu"):
        out = model(input_ids=ids, labels=ids, fused_lm_head=True)
        (out.log_probs.sum() + out.entropy.sum()).backward()
    return out.log_probs.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_small_token_tile_gives_the_same_log_probs_and_gradients():
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_model(tiny_tokenizer())
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids = torch.randint(0, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    trl_lp, trl_grads = _fused_pass(model, ids, None)  # 117 scored tokens: one tile of TRL's 4096
    small_lp, small_grads = _fused_pass(model, ids, 16)  # 8 tiles
    assert torch.allclose(trl_lp, small_lp, atol=1e-6)
    assert trl_grads.keys() == small_grads.keys() and len(trl_grads) > 0
    for name, grad in trl_grads.items():
        assert torch.allclose(grad, small_grads[name], atol=1e-6, rtol=1e-5), name
    assert any(g.abs().sum() > 0 for g in trl_grads.values())


def test_tile_is_set_inside_the_block_only_and_never_on_cuda():
    module = importlib.import_module(MODULE)
    before = getattr(module, NAME)
    with token_tile(256, "cpu"):
        assert getattr(module, NAME) == 256
    assert getattr(module, NAME) == before
    with token_tile(256, "cuda"):  # Triton kernels: TRL's tile stays
        assert getattr(module, NAME) == before
    with token_tile(None, "cpu"):
        assert getattr(module, NAME) == before
    with pytest.raises(RuntimeError), token_tile(256, "cpu"):
        raise RuntimeError("a failing step")
    assert getattr(module, NAME) == before
    with pytest.raises(ValueError, match="positive"), token_tile(0, "cpu"):
        pass


def test_the_tile_is_what_trl_projects_by(monkeypatch):
    """TRL reads the tile when it runs (not at import): 117 scored tokens in tiles of 16 are 8 token tiles, each
    over the tiny vocabulary's one vocabulary slice."""
    from trl.kernels import chunked_logprob
    from trl.trainer.utils import add_fused_lm_head

    calls = {"forward": 0, "backward": 0}
    for name, key in (("_forward_tile", "forward"), ("_backward_tile", "backward")):
        original = getattr(chunked_logprob, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(chunked_logprob, name, counted)
    model = tiny_model(tiny_tokenizer())
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids = torch.randint(0, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    slices = -(-model.config.vocab_size // chunked_logprob_vocab_chunk())
    _fused_pass(model, ids, 16)
    assert calls == {"forward": 8 * slices, "backward": 8 * slices}
    calls.update(forward=0, backward=0)
    _fused_pass(model, ids, None)  # TRL's 4096: one token tile
    assert calls == {"forward": slices, "backward": slices}


def chunked_logprob_vocab_chunk():
    from trl.trainer import utils

    return utils._CHUNKED_LOGPROB_CHUNK_SIZE


def test_larft_trainer_trains_with_its_tile_and_restores_trls(tiny_model_dir, tmp_path, monkeypatch):
    from trl import GRPOTrainer

    from helpers import tiny_trainer

    module = importlib.import_module(MODULE)
    seen = []
    original = GRPOTrainer.training_step

    def recording(self, *args, **kwargs):
        seen.append(getattr(module, NAME))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "training_step", recording)
    before = getattr(module, NAME)
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "run", max_steps=1, max_completion_length=8,
                           lm_head_token_tile=64)
    trainer.train()
    assert seen and set(seen) == {64}
    assert getattr(module, NAME) == before
