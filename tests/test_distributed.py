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


# -- the awareness loss on 2 ranks equals 1 rank's on the same global batch ----------------------------
TEXTS = ["one", "two words here", "a somewhat longer text of eleven words to count for the model",
         "four words are these", "five", "six six six", "a b c d e f g h", "the last text"]


def _awareness_grads(model_dir: str, rows: list[int], total_items: float, world: int) -> torch.Tensor:
    """This rank's rows: summed awareness loss / `awareness_normalizer`, backward, gradients flattened."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from larft.awareness import awareness_loss, awareness_normalizer, build_awareness_batch

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = build_awareness_batch([TEXTS[i] for i in rows], ["words"] * len(rows), tok)
    args = (batch["input_ids"], batch["attention_mask"], batch["labels"], batch["prefix_length"])
    summed = awareness_loss(model, *args, reduction="sum")
    (summed / awareness_normalizer(total_items, world, accumulation=1, steps_per_generation=1)).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _rank(rank: int, world: int, model_dir: str, port: int, out: str) -> None:
    import torch.distributed as dist

    from larft.awareness import build_awareness_batch, label_token_count
    from transformers import AutoTokenizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = list(range(rank, len(TEXTS), world))  # an uneven split: the ranks hold different label-token counts
    tok = AutoTokenizer.from_pretrained(model_dir)
    local = label_token_count(build_awareness_batch([TEXTS[i] for i in rows], ["words"] * len(rows), tok)["labels"])
    total = local.clone()
    dist.all_reduce(total)  # what the trainer gathers: every process's label tokens
    grads = _awareness_grads(model_dir, rows, total.item(), world)
    dist.all_reduce(grads)  # DDP: the average of the ranks' gradients
    if rank == 0:
        torch.save({"grads": grads / world, "local": local.item(), "total": total.item()}, out)
    dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.subprocess
def test_the_awareness_gradient_on_two_ranks_equals_one_ranks_on_the_same_batch(tmp_path, tiny_model_dir):
    import socket

    import torch.multiprocessing as mp
    from transformers import AutoTokenizer

    from larft.awareness import awareness_loss, build_awareness_batch, label_token_count

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_rank, args=(2, str(tiny_model_dir), port, out), nprocs=2, join=True)
    two = torch.load(out)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    total = label_token_count(build_awareness_batch(TEXTS, ["words"] * len(TEXTS), tok)["labels"]).item()
    assert two["total"] == total and two["local"] != total / 2  # the ranks' shares differ
    one = _awareness_grads(str(tiny_model_dir), list(range(len(TEXTS))), total, world=1)
    assert torch.allclose(two["grads"], one, atol=1e-6, rtol=1e-4)

    # the mean on each rank, averaged by DDP (larft before): not the batch's mean when the shares differ
    from transformers import AutoModelForCausalLM

    per_rank = []
    for rows in (list(range(0, len(TEXTS), 2)), list(range(1, len(TEXTS), 2))):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        batch = build_awareness_batch([TEXTS[i] for i in rows], ["words"] * len(rows), tok)
        awareness_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                       batch["prefix_length"]).backward()
        per_rank.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert not torch.allclose((per_rank[0] + per_rank[1]) / 2, one, atol=1e-6, rtol=1e-4)


@pytest.mark.distributed
@pytest.mark.subprocess
@pytest.mark.skipif(torch.cuda.is_available(), reason="what FSDP does on CPU processes")
def test_the_fsdp_config_on_cpu_processes_trains_as_data_parallel_and_says_so(tmp_path, tiny_model_dir):
    """accelerate applies FSDP only on accelerators: on 2 CPU processes the shipped FSDP config runs
    as plain data parallel (MULTI_CPU), and larft says so instead of letting it pass unnoticed."""
    out = tmp_path / "fsdp"
    config = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "--mixed_precision", "no", "-m", "larft", "train", *_args(tiny_model_dir, out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warning = "the accelerate config asks for FSDP, but accelerate runs this as MULTI_CPU on cpu"
    assert proc.stderr.count(warning) == 1  # the main process only
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(r["num_processes"] == 2 for r in lines)


@pytest.mark.distributed
@pytest.mark.subprocess
def test_two_processes_killed_and_resumed_step_as_an_uninterrupted_run(tmp_path, tiny_model_dir):
    """SIGKILL to the whole 2-process run after checkpoint-2, then --resume: the same steps, lambda and
    rewards as a run never stopped (each rank's RNG, the optimizer and the data position restored)."""
    import contextlib
    import os
    import signal
    import time

    import psutil

    here = Path(__file__).resolve().parent
    config = here.parent / "configs" / "accelerate" / "ddp.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2"]
    args = lambda out: [*_args(tiny_model_dir, out), "--max_steps", "4", "--seed", "3"]  # noqa: E731
    reference = tmp_path / "reference"
    done = subprocess.run([*launch, "-m", "larft", "train", *args(reference)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*launch, str(here / "slow_train.py"), *args(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    start = time.time()
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() - start < 300
        time.sleep(0.1)
    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:  # the launcher and both ranks (torchrun starts them in sessions of their own)
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    for pid in family[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=30)
    assert not (out / "model.safetensors").exists()
    resumed = subprocess.run([*launch, "-m", "larft", "train", *args(out), "--resume", "true"], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert [r["awareness_lambda"] for r in got] == pytest.approx([r["awareness_lambda"] for r in want])
    assert [r["reward_mean"] for r in got] == pytest.approx([r["reward_mean"] for r in want], abs=1e-6)
