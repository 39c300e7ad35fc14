"""`larft train --dry_run`: the run's checks, then its estimated peak memory per device part by part, and
whether it fits; nothing written, no weights loaded. Every shipped 7-8B config fits the hardware its header
names by that estimate."""

import json
import shutil
from pathlib import Path

import pytest

from larft.cli import main
from larft.dry_run import parse_memory

ROOT = Path(__file__).resolve().parents[1]

#: each 7-8B config and the launch its header states (8 GPUs of 80 GB)
GPU_CONFIGS = {"paper.yaml": "deepspeed-zero3.yaml", "paper-release.yaml": "deepspeed-zero3.yaml",
               "qwen2.5-7b-8gpu.yaml": "deepspeed-zero3.yaml", "qwen2.5-7b-8gpu-lora.yaml": "ddp.yaml"}


def test_device_memory_sizes():
    assert parse_memory("80GB") == 80e9 and parse_memory("80 gb") == 80e9
    assert parse_memory("24GiB") == 24 * 2**30 and parse_memory("8e10") == 8e10 and parse_memory("512m") == 512e6
    from larft.errors import UserError

    with pytest.raises(UserError, match="--device_memory"):
        parse_memory("eighty")


@pytest.fixture(scope="module")
def qwen7b(tmp_path_factory):
    """A folder with Qwen2.5-7B-Instruct's config.json (no weights) and the tiny tokenizer, and a prompt file."""
    from tiny import tiny_tokenizer

    folder = tmp_path_factory.mktemp("qwen2.5-7b")
    shutil.copyfile(ROOT / "tests" / "data" / "qwen2.5-7b-config.json", folder / "config.json")
    tiny_tokenizer().save_pretrained(folder)
    from larft.data import generate_rows

    data = folder / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generate_rows(64, targets=[50, 500, 2000], seed=0)))
    return folder, data


def _dry(config: str, model: Path, data: Path, launch: str, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(ROOT / "configs" / config), "--model", str(model), "--train_file", str(data),
                 "--output_dir", str(out), "--dry_run", "--accelerate_config",
                 str(ROOT / "configs" / "accelerate" / launch), "--device_memory", "80GB", *extra])


@pytest.mark.parametrize("config", sorted(GPU_CONFIGS))
def test_every_7b_config_fits_its_stated_hardware(config, qwen7b, tmp_path, capsys):
    model, data = qwen7b
    assert _dry(config, model, data, GPU_CONFIGS[config], tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "of 80.0 GB: fits" in printed and "weights" in printed and "optimizer state" in printed
    assert not (tmp_path / "out").exists()  # nothing written


def test_7b_full_fine_tuning_fits_under_zero3_and_not_under_ddp(qwen7b, tmp_path, capsys):
    model, data = qwen7b
    assert _dry("qwen2.5-7b-8gpu.yaml", model, data, "deepspeed-zero3.yaml", tmp_path / "out") == 0
    assert "zero3, 8 process(es)" in capsys.readouterr().out
    assert _dry("qwen2.5-7b-8gpu.yaml", model, data, "ddp.yaml", tmp_path / "out") == 1
    printed = capsys.readouterr().out
    assert "does NOT fit" in printed and "the biggest part is" in printed
    # the micro-batch the 7B configs had before (16 rollouts x 8k tokens) fits under nothing
    assert _dry("qwen2.5-7b-8gpu.yaml", model, data, "deepspeed-zero3.yaml", tmp_path / "out",
                "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "1",
                "--steps_per_generation", "4") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_demo_dry_run_prints_its_parts_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["train", "--config", str(ROOT / "configs" / "demo-cpu.yaml"), "--output_dir", str(out),
                 "--dry_run"]) == 0
    printed = capsys.readouterr().out
    for part in ("weights", "gradients", "optimizer state", "activations", "CTranslate2 weights"):
        assert part in printed, part
    assert "single, 1 process(es)" in printed and ": fits" in printed
    assert not out.exists()
