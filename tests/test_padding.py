"""Sorted, trimmed micro-batches (larft.padding) change no loss and no gradient."""

import json

import pytest
import torch
from datasets import Dataset

from helpers import grads, prompt_rows, two_step_trainer
from larft.padding import rows_per_optimizer_step, sort_by_length, trim_padding


def test_trimmed_micro_batch_gives_the_same_loss_and_gradient(tiny_model_dir, tmp_path):
    # fp32: the cut shifts positions, which bf16 rounding would blur beyond an exact comparison
    trainer = two_step_trainer(tiny_model_dir, tmp_path, max_completion_length=24, beta=0.01, loss_type="bnpo",
                               bf16=False)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(4)).repeat(2)))
    # pad the batch further, as a longer rollout elsewhere in the generation batch would
    extra = 7
    padded = dict(inputs)
    for key in ("completion_ids", "completion_mask", "ref_per_token_logps"):
        value = inputs[key]
        fill = trainer._tokenizer.pad_token_id if key == "completion_ids" else 0
        padded[key] = torch.cat([value, torch.full((value.size(0), extra), fill, dtype=value.dtype)], dim=1)
    for key in ("prompt_ids", "prompt_mask"):
        fill = trainer._tokenizer.pad_token_id if key == "prompt_ids" else 0
        padded[key] = torch.cat([torch.full((inputs[key].size(0), 3), fill, dtype=inputs[key].dtype), inputs[key]], 1)
    trimmed = trim_padding(padded)
    assert trimmed["completion_ids"].size(1) <= inputs["completion_ids"].size(1) < padded["completion_ids"].size(1)
    assert trimmed["prompt_ids"].size(1) < padded["prompt_ids"].size(1)

    full_grad, full_loss = grads(trainer, padded)
    trim_grad, trim_loss = grads(trainer, trimmed)
    assert torch.allclose(full_loss, trim_loss, atol=1e-5)
    assert torch.allclose(full_grad, trim_grad, atol=1e-5)


def test_sort_by_length_keeps_every_rollout_with_its_own_values():
    batch = {
        "prompt_mask": torch.tensor([[1, 1], [0, 1], [1, 1]]),
        "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]]),
        "advantages": torch.tensor([0.3, 0.1, 0.2]),
        "texts": ["long", "short", "mid"],
        "num_items_in_batch": torch.tensor(6),
    }
    out = sort_by_length(batch)
    assert out["texts"] == ["short", "mid", "long"]
    assert out["advantages"].tolist() == [0.1, 0.2, 0.3] or torch.allclose(out["advantages"], torch.tensor([.1, .2, .3]))
    assert out["num_items_in_batch"].item() == 6


@pytest.mark.slow
def test_training_steps_with_trimming_match_those_without(tiny_model_dir, tmp_path):
    """Same seed, learning rate 0: the same rollouts at every step (the sort takes the random draw
    TRL's shuffle would have), and the same logged losses (dapo normalises over the whole generation
    batch: how it is split cannot matter)."""
    import json

    metrics, texts = {}, {}
    for trim in (False, True):
        out = tmp_path / str(trim)
        trainer = two_step_trainer(tiny_model_dir, out, trim_padding=trim, learning_rate=0.0, max_steps=2,
                           per_device_train_batch_size=2, gradient_accumulation_steps=2,
                           max_completion_length=16, logging_steps=1)
        trainer.train()
        metrics[trim] = [{k: v for k, v in r.items() if k in ("loss", "reward", "awareness_loss")}
                         for r in trainer.state.log_history if "loss" in r]
        texts[trim] = [json.loads(x)["text"] for x in (out / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert len(texts[True]) == 8 and texts[True] == texts[False]  # 2 steps x 4 rollouts
    assert len(metrics[True]) == 2
    for with_trim, without in zip(metrics[True], metrics[False]):
        assert with_trim.keys() == without.keys() and "loss" in with_trim
        for key, value in without.items():
            assert abs(with_trim[key] - value) < 1e-4, key


def test_sorting_never_moves_a_rollout_out_of_its_optimizer_step():
    # 8 rollouts, 4 micro-batches of 2, one optimizer step per micro-batch: blocks of 2 rows
    assert rows_per_optimizer_step(8, steps_per_generation=4, accumulation=1) == 2
    assert rows_per_optimizer_step(8, steps_per_generation=4, accumulation=2) == 4
    assert rows_per_optimizer_step(8, steps_per_generation=2, accumulation=4) == 8  # a step spans whole batches
    assert rows_per_optimizer_step(12, steps_per_generation=6, accumulation=4) == 4  # gcd(6, 4) micro-batches
    lengths = [5, 1, 4, 2, 3, 0, 7, 6]
    batch = {"prompt_mask": torch.ones(8, 1, dtype=torch.long),
             "completion_mask": torch.tensor([[1] * n + [0] * (8 - n) for n in lengths]),
             "row": list(range(8))}
    out = sort_by_length(batch, block=2)
    assert [sorted(out["row"][i:i + 2]) for i in range(0, 8, 2)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert out["row"] == [1, 0, 3, 2, 5, 4, 7, 6]  # shortest first inside each block


def _per_step_rollouts(tiny_model_dir, out, trim: bool):
    """Train 4 optimizer steps on one generation batch (steps_per_generation 4, accumulation 1, lr > 0):
    per optimizer step, the sorted list of rollouts (prompt + completion ids, padding dropped) it trained on,
    the logged losses, and the weights at the end."""
    trainer = two_step_trainer(tiny_model_dir, out, trim_padding=trim, learning_rate=1e-2, max_steps=4,
                               per_device_train_batch_size=2, gradient_accumulation_steps=1, steps_per_generation=4,
                               max_completion_length=16, logging_steps=1, bf16=False, beta=0.0)
    seen: list[list[tuple]] = []
    compute = trainer._compute_loss

    def recording(model, inputs):
        rows = []
        for p, pm, c, cm in zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"],
                                inputs["completion_mask"]):
            rows.append((tuple(p[pm.bool()].tolist()), tuple(c[cm.bool()].tolist())))
        seen.append(sorted(rows))
        return compute(model, inputs)

    trainer._compute_loss = recording
    trainer.train()
    losses = [(r["loss"], r.get("awareness_loss")) for r in trainer.state.log_history if "loss" in r]
    weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return seen, losses, weights


@pytest.mark.slow
def test_trimming_keeps_each_optimizer_steps_rollouts_losses_and_weights(tiny_model_dir, tmp_path):
    """steps_per_generation 4 > accumulation 1: each optimizer step trains on one quarter of the
    generation batch. With trimming, each step gets the same quarter as TRL's shuffle gives it without,
    and so the same losses and, at a learning rate > 0, the same weights after every step (fp32)."""
    off = _per_step_rollouts(tiny_model_dir, tmp_path / "off", trim=False)
    on = _per_step_rollouts(tiny_model_dir, tmp_path / "on", trim=True)
    assert len(on[0]) == len(off[0]) == 4
    assert on[0] == off[0]  # the same rollouts at every optimizer step
    assert len(on[1]) == 4
    for (loss_on, aware_on), (loss_off, aware_off) in zip(on[1], off[1]):
        assert abs(loss_on - loss_off) < 1e-5 and abs(aware_on - aware_off) < 1e-5
    assert torch.allclose(on[2], off[2], atol=1e-5)
    from transformers import AutoModelForCausalLM

    start = torch.cat([p.detach().flatten() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters()])
    assert not torch.allclose(on[2], start, atol=1e-4)  # the steps did train


def _first_step_gradient(tiny_model_dir, out, micro: int, accumulation: int):
    """(the gradient the first optimizer step applies, flattened; the rollouts it trained on), fp32."""
    from transformers import TrainerCallback

    grabbed = []

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grabbed.append(torch.cat([p.grad.flatten().clone() for p in model.parameters() if p.grad is not None]))

    trainer = two_step_trainer(tiny_model_dir, out, max_steps=1, per_device_train_batch_size=micro,
                               gradient_accumulation_steps=accumulation, max_completion_length=16, bf16=False,
                               beta=0.0, max_grad_norm=0.0, logging_steps=1)
    trainer.add_callback(Grab())
    trainer.train()
    texts = [json.loads(x)["text"] for x in (out / "out" / "rollouts.jsonl").read_text().splitlines()]
    return grabbed[0], texts


@pytest.mark.slow
def test_smaller_micro_batches_apply_the_same_step(tiny_model_dir, tmp_path):
    """The recipe's micro-batches of 4 x 4 accumulation instead of 8 x 2 (less memory at long rollouts):
    the same rollouts and the same gradient, policy and awareness terms together (both are normalised over
    the whole generation batch, not per micro-batch), up to float summation order."""
    a_grad, a_texts = _first_step_gradient(tiny_model_dir, tmp_path / "a", micro=4, accumulation=2)
    b_grad, b_texts = _first_step_gradient(tiny_model_dir, tmp_path / "b", micro=2, accumulation=4)
    assert len(a_texts) == 8 and a_texts == b_texts
    assert a_grad.abs().sum() > 0
    assert torch.allclose(a_grad, b_grad, rtol=1e-4, atol=1e-5)  # largest |gradient| ~0.4 here
