"""The token tile of TRL's fused LM head, set for a training run where it runs without Triton.

TRL 1.16 scores tokens through `trl.kernels.ChunkedLogProbFunction` in tiles of
`TOKEN_CHUNK_SIZE` tokens x 32768 vocabulary entries. On CUDA, Triton kernels fold each tile in
place; on CPU the torch fallback materializes ~8 fp32 temporaries of a whole tile in the backward
(`larft.memory_estimate.CPU_HEAD_TILE_TEMPS_BACKWARD`), so a smaller token tile is the largest
memory cut of a CPU step with long rollouts. The log-probs and entropies are computed per token
either way; only the order in which the LM head's fp32 gradient sums its token tiles changes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

MODULE = "trl.kernels.chunked_logprob"
NAME = "TOKEN_CHUNK_SIZE"
#: larft's token tile without Triton (LARFTConfig.lm_head_token_tile's default): a sixteenth of TRL's 4096;
#: on CPU a smaller tile costs no speed (benchmarks/memory.py, variants checkpointing_tile*)
DEFAULT_TOKENS = 256


@contextlib.contextmanager
def token_tile(tokens: int | None, device: Any) -> Iterator[None]:
    """Within the block, TRL's fused head projects `tokens` tokens per tile on a device without
    Triton (CUDA keeps TRL's tile); `None` keeps TRL's. The previous value comes back afterwards."""
    import importlib

    import torch

    if tokens is None or torch.device(device).type == "cuda":
        yield
        return
    if int(tokens) < 1:
        raise ValueError(f"lm_head_token_tile must be a positive number of tokens, got {tokens}")
    module = importlib.import_module(MODULE)
    before = getattr(module, NAME)
    setattr(module, NAME, int(tokens))
    try:
        yield
    finally:
        setattr(module, NAME, before)
