"""FSDP2 (parameters sharded as DTensors) on CPU processes over gloo, through accelerate's own FSDP2 path.

What it patches, and why: accelerate 1.16 never selects FSDP on CPU. `AcceleratorState.__init__` sets
`DistributedType.FSDP` and keeps the FSDP plugin (accelerate/state.py:971-977) only inside a branch
taken for accelerator process groups (state.py:947: `MULTI_GPU`, `MULTI_XPU`, `MULTI_NPU`, ...), not
for `MULTI_CPU`. CPU processes launched with an FSDP config (`ACCELERATE_USE_FSDP=true`,
`FSDP_VERSION=2`: what `accelerate launch --config_file configs/accelerate/fsdp.yaml` exports) therefore
run plain DDP, every process holding the whole model. `install()` wraps `AcceleratorState.__init__` so
that, after accelerate's own code ran, a `MULTI_CPU` state built with an FSDP plugin becomes
`DistributedType.FSDP` with that plugin: what that branch does on GPUs (mixed precision handed to the
plugin, the type written back to `PartialState`'s shared state). Nothing else is patched.

Everything past that choice already works on CPU (torch 2.13): `fully_shard` defaults to a CPU device
mesh without an accelerator (torch/distributed/fsdp/_fully_shard/_fsdp_init.py:214), gloo has the
all-gather / reduce-scatter FSDP2 issues, and accelerate's `fsdp2_prepare_model` and distributed
checkpoints (accelerate/utils/fsdp_utils.py) and transformers' Trainer (`is_fsdp_enabled` is
`accelerator.state.fsdp_plugin is not None`, transformers/trainer.py:875) are device-agnostic. So
`accelerate.prepare` shards the model, TRL's GRPOTrainer shards its reference model (`prepare_fsdp`),
checkpoints are torch distributed checkpoints (one shard file per rank) that `--resume` loads.
Generation needs nothing more: `fully_shard` marks the modules it manages `_is_fsdp_managed_module`
(torch/distributed/fsdp/_fully_shard/_fully_shard.py:289), so transformers' `generate` turns
`synced_gpus` on with more than one process (transformers/generation/utils.py:2569): every rank steps
until all are done; without it, ranks stopping at different lengths hang in the next all-gather.

Two things sharding needed in larft itself, on GPUs as well: the awareness loss takes its plain pass
under FSDP2 (`awareness._is_fsdp2`: gradient through a cached prefix skips FSDP2's re-gathering), and
`larft train` saves the final model as a full state dict (with SHARDED_STATE_DICT checkpoints,
transformers' `save_model` writes no model at all).

It applies only when asked (`LARFT_CPU_FSDP=1`), when accelerate was asked for FSDP
(`ACCELERATE_USE_FSDP=true`) and when no accelerator (CUDA, XPU, MPS, ...) is present, so a GPU run is
never touched. `LARFTTrainer` installs it before its Accelerator is built, so `larft train` and
Python code get it alike. It is for tests and CPU experiments: the sharded code paths
(sharding, generation, sharded checkpoints, resume) without GPUs.
"""

from __future__ import annotations

import functools
import os

ENV = "LARFT_CPU_FSDP"
_installed = False


def wanted() -> bool:
    """`LARFT_CPU_FSDP=1`, accelerate asked for FSDP, and no accelerator on this machine."""
    if os.environ.get(ENV, "0").lower() not in ("1", "true", "yes"):
        return False
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return False
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return False
    return not torch.cuda.is_available()


def install() -> bool:
    """Patch accelerate (once) when `wanted()`; returns whether the patch is in place. Call it before
    the Trainer (its Accelerator) is built: the distributed type is fixed when the state is first made."""
    global _installed
    if _installed:
        return True
    if not wanted():
        return False
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    @functools.wraps(original)
    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        # accelerate/state.py:971-977, the FSDP branch, for the MULTI_CPU type it leaves out
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = self.distributed_type

    AcceleratorState.__init__ = __init__
    _installed = True
    return True
