"""The same code on several processes (accelerate, gloo on CPU) and with LoRA (PEFT)."""

import json
import subprocess
from pathlib import Path
import sys

import pytest
import torch


def _args(model_dir, out):
    return ["--model", str(model_dir), "--output_dir", str(out), "--max_steps", "2", "--num_generations", "2",
            "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--train_size", "32",
            "--awareness_lambda_max", "0.5", "--report_to", "none", "--save_steps", "1", "--learning_rate", "1e-2"]


@pytest.mark.distributed
@pytest.mark.subprocess
def test_two_cpu_processes_with_accelerate(tmp_path, tiny_model_dir):
    out = tmp_path / "ddp"
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "ddp.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "-m", "larft", "train", *_args(tiny_model_dir, out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]  # written once, by the main process
    assert all(r["awareness_loss"] is not None and r["awareness_loss"] > 0 for r in lines)
    assert lines[1]["awareness_lambda"] > 0
    assert all(r["num_processes"] == 2 for r in lines)  # both ranks trained (DDP all-reduces need both)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "checkpoint-2")
    AutoModelForCausalLM.from_pretrained(out)


def test_lora_adapter_loads_with_peft_and_changes_outputs(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from larft.cli import parse_train_args
    from larft.train import train

    out = tmp_path / "lora"
    train_args, config = parse_train_args([*_args(tiny_model_dir, out), "--lora_r", "4", "--lora_target_modules",
                                           "q_proj,v_proj"])
    train(train_args, config)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
        after = adapted(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits
    assert not torch.allclose(before, after)
    assert torch.allclose(after, merged, atol=1e-5)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["awareness_loss"] > 0
