"""The glibc allocator settings apply to CPU training only (where they were measured to help)."""

import platform

import pytest
import torch

from larft.malloc import tune_malloc


def test_not_for_a_gpu_run_nor_when_turned_off(monkeypatch):
    assert tune_malloc(torch.device("cuda", 0)) is False
    assert tune_malloc("mps") is False
    monkeypatch.setenv("LARFT_MALLOC_TUNING", "0")
    assert tune_malloc(torch.device("cpu")) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's mallopt")
def test_applied_for_cpu_training_on_glibc():
    assert tune_malloc(torch.device("cpu")) is True


_COUNT_HEAPS = r"""
import ctypes, ctypes.util, sys, threading, torch
from larft.malloc import tune_malloc
print("tuned", tune_malloc(torch.device("cpu")))
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
barrier = threading.Barrier(8)
def work():
    p = libc.malloc(1 << 20)  # this thread's first malloc picks (or makes) its arena
    barrier.wait()  # all 8 threads alive at once: none can reuse a finished thread's arena
    libc.free(p)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
f = libc.fopen(sys.argv[1].encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the arenas are glibc's")
@pytest.mark.parametrize("arena_max, most", [("2", 2), ("0", None)])
def test_threads_share_the_capped_arenas(tmp_path, arena_max, most):
    """With the cap (the default), 8 threads allocating at once share 2 glibc arenas (the main one
    and one more); with LARFT_MALLOC_ARENA_MAX=0 glibc makes one per thread (the test can fail)."""
    import os
    import subprocess
    import sys

    info = tmp_path / "malloc_info.xml"
    env = {**os.environ, "LARFT_MALLOC_ARENA_MAX": arena_max, "LARFT_MALLOC_TUNING": "1"}
    env.pop("MALLOC_ARENA_MAX", None)
    out = subprocess.run([sys.executable, "-c", _COUNT_HEAPS, str(info)], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "tuned True" in out
    heaps = info.read_text().count("<heap nr=")
    if most is not None:
        assert heaps <= most
    else:
        assert heaps > 2


_TRIM = r"""
import ctypes, ctypes.util, torch
from larft.malloc import release_free_memory, tune_malloc
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:")) // 1024
tune_malloc(torch.device("cpu"))
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
before = rss_mb()
blocks = [libc.malloc(1 << 20) for _ in range(400)]  # 400 MiB of heap blocks (below the mmap threshold)
for p in blocks:
    libc.memset(p, 1, 1 << 20)  # touched: resident
keep = libc.malloc(64)  # a live block above them: the freed ones are a hole, not the heap's free top
for p in blocks:
    libc.free(p)
kept = rss_mb()
print("released", release_free_memory())
print(before, kept, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_kept_by_the_tuning_goes_back_when_released():
    """The tuning keeps freed heap memory resident (no trim); release_free_memory, which larft train
    calls after every step, hands the pages back, even those of a hole below a live block."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LARFT_MALLOC_TUNING": "1"}
    out = subprocess.run([sys.executable, "-c", _TRIM], env=env, capture_output=True, text=True, check=True).stdout
    before, kept, released = (int(x) for x in out.splitlines()[-1].split())
    assert "released True" in out
    assert kept - before > 300  # freed, yet resident
    assert released - before < 100  # handed back


@pytest.mark.parametrize("env, calls", [("1", 2), ("0", 0)])
def test_cpu_training_releases_memory_after_every_optimizer_step(tmp_path, tiny_model_dir, monkeypatch, env, calls):
    """After every optimizer step, and inside a step after the rollouts and after each micro-step's backward."""
    import inspect

    import larft.malloc
    from larft.cli import parse_train_args
    from larft.train import train

    released = []  # who asked: the step's end (a callback) or a part of the step (release_between_parts)
    monkeypatch.setattr(larft.malloc, "release_free_memory",
                        lambda: released.append(inspect.stack()[1].function) or True)
    monkeypatch.setattr(larft.malloc, "tune_malloc", lambda device="cpu": True)  # as on a glibc CPU run
    monkeypatch.setattr(larft.malloc, "_tuned", True)
    monkeypatch.setenv("LARFT_MALLOC_TRIM_STEPS", env)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"prompt": "Describe tea in {n} words.", "target": {n}}}\n' for n in (5, 6, 7, 8)))
    train(*parse_train_args(["--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "run"),
                             "--dataset_name", str(rows), "--max_steps", "2", "--num_generations", "2",
                             "--per_device_train_batch_size", "4", "--max_completion_length", "8",
                             "--report_to", "none", "--save_strategy", "no"]))
    assert released.count("on_step_end") == calls
    # 2 steps of 1 micro-step: after each step's rollouts and each micro-step's backward (the awareness pass's own
    # backward only once lambda > 0)
    parts = released.count("release_between_parts")
    assert (parts >= 4) if calls else parts == 0
