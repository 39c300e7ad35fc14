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
