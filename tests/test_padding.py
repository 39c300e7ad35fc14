"""Sorted, trimmed micro-batches (larft.padding) change no loss and no gradient."""

import pytest
import torch
from datasets import Dataset

from helpers import grads, prompt_rows, two_step_trainer
from larft.padding import sort_by_length, trim_padding


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
