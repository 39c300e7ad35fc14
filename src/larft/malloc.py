"""glibc allocator settings for training on the CPU, the one place they were measured to help.

PyTorch on CPU allocates and frees large activation buffers every step. glibc returns freed
memory to the OS (trim / munmap) and page-faults it back in on the next allocation, which
costs system time every step. Keeping freed memory in the process (high trim threshold, top
pad) removes that churn (`benchmarks/step_overhead.py`; docs/usage.md, "CPU note"). Because freed
memory is kept, every glibc arena (by default up to 8 per core, one per thread that allocates:
PyTorch's and CTranslate2's workers) holds its own high-water mark; capping the arenas at 2 keeps
the kept memory in few places (`benchmarks/memory.py`). A run on a GPU, evaluation and generation
leave the allocator alone. Set LARFT_MALLOC_TUNING=0 to skip, LARFT_MALLOC_ARENA_MAX=0 to leave the
arena count to glibc. What a step frees is kept only until the step ends: `larft train` then hands the
free pages back (`release_free_memory`), so the resident size is one step's working set, not every page
any step ever touched (benchmarks/memory.py, `keep_steps` against `tuned`); LARFT_MALLOC_TRIM_STEPS=0 keeps them.
Within a step, the free pages also go back after each part that frees much (the rollouts, the awareness
pass's backward, the policy's backward: `release_between_parts`), so one part's freed buffers are not resident
beside the next part's: the demo's peak 8.92 -> 7.58 GB and the recipe's 11.22 -> 9.95 GB, the same rewards
at every step, for +7% / +20% step time (one run each; benchmarks/memory.py, docs/usage.md "CPU note").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """The C library when it is glibc (it has mallopt and malloc_trim), else None; looked up once
    (find_library runs a subprocess), not at every step's release."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name)
    if not all(hasattr(libc, f) for f in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


def tune_malloc(device: Any = "cpu") -> bool:
    """Apply the settings when training runs on the CPU (`device`: the run's torch device) under
    glibc; returns whether they were applied."""
    if os.environ.get("LARFT_MALLOC_TUNING", "1") == "0" or getattr(device, "type", str(device)) != "cpu":
        return False
    libc = _glibc()
    if libc is None:
        return False  # not glibc (musl, macOS): leave the allocator alone
    # Buffers below this come from the heap and are reused instead of mmap'ed and unmapped
    # each time (glibc caps it at 32 MiB on 64-bit).
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(os.environ.get("LARFT_MALLOC_MMAP_THRESHOLD", 32 << 20))))
    ok &= bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))  # never give freed heap memory back
    ok &= bool(libc.mallopt(_M_TOP_PAD, 1 << 30))  # grow the heap in 1 GiB steps
    arenas = int(os.environ.get("LARFT_MALLOC_ARENA_MAX") or 2)
    if arenas > 0:  # glibc fixes its limit when it first needs it: this must run before threads allocate
        ok &= bool(libc.mallopt(_M_ARENA_MAX, arenas))
    global _tuned
    _tuned = bool(ok)
    return bool(ok)


_tuned = False  # whether tune_malloc applied its settings in this process


def release_between_parts() -> bool:
    """`release_free_memory` inside a training step, where the settings above keep what a part of it freed
    (only when `tune_malloc` applied them; LARFT_MALLOC_TRIM_PARTS=0 or LARFT_MALLOC_TRIM_STEPS=0 keeps them)."""
    if not _tuned or "0" in (os.environ.get("LARFT_MALLOC_TRIM_STEPS", "1"), os.environ.get("LARFT_MALLOC_TRIM_PARTS", "1")):
        return False
    return release_free_memory()


def release_free_memory() -> bool:
    """Hand the allocator's free pages back to the OS (glibc's malloc_trim): with the thresholds above
    freed memory is otherwise kept, so the process's resident size is every page any step ever touched.
    Returns whether anything was released (False off glibc)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
