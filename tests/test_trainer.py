import json
import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from helpers import grads, prompt_rows, two_step_trainer
from larft.awareness import awareness_loss
from larft.cli import parse_train_args
from larft.config import LARFTConfig
from larft.schedule import awareness_lambda
from larft.train import train
from larft.rewards import length_score
from larft.trainer import AWARENESS_KEYS

METRIC_KEYS = [
    "step", "reward_mean", "length_error_mean", "completion_words_mean", "awareness_loss", "awareness_lambda",
    "policy_loss", "kl", "entropy", "step_seconds", "refusal_rate", "truncated_rate", "awareness_count_error",
]


def test_awareness_loss_reaches_the_gradients(tiny_model_dir, tmp_path):
    trainer = two_step_trainer(tiny_model_dir, tmp_path)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    assert all(inputs[k].shape[0] == inputs["completion_ids"].shape[0] for k in AWARENESS_KEYS)

    with_awareness, _ = grads(trainer, inputs)
    trainer.args.awareness_lambda_max = 0.0  # lambda(t) = 0: GRPO only
    grpo_only, _ = grads(trainer, inputs)
    trainer.model.zero_grad()
    ce = awareness_loss(trainer.model, *(inputs[k] for k in AWARENESS_KEYS))
    ce.backward()
    expected = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    assert torch.isfinite(ce) and ce.item() > 0
    assert not torch.allclose(with_awareness, grpo_only)
    assert torch.allclose(with_awareness - grpo_only, expected, atol=1e-5)  # lambda = 1: exactly + grad(CE)

    # under gradient accumulation the added term is divided by the accumulation steps
    trainer.args.awareness_lambda_max = 1.0
    trainer.current_gradient_accumulation_steps = 2
    accumulated, _ = grads(trainer, inputs)
    trainer.args.awareness_lambda_max = 0.0
    grpo_accumulated, _ = grads(trainer, inputs)
    assert torch.allclose(accumulated - grpo_accumulated, expected / 2, atol=1e-5)


def test_awareness_backward_first_gives_the_joint_gradient_with_one_graph_alive(tiny_model_dir, tmp_path):
    """On one process the awareness loss is backpropagated before the policy's forward (its graph
    freed first: the peak memory of a CPU step): the gradient and the returned loss value are
    those of the joint backward, and the policy's forward finds the awareness gradient already
    in place."""
    trainer = two_step_trainer(tiny_model_dir, tmp_path)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    assert trainer._awareness_backward_first()  # one process, no DeepSpeed
    policy_forward = type(trainer).__mro__[1]._get_per_token_logps_and_entropies
    seen = []

    def recording(self, model, *args, **kwargs):
        seen.append(any(p.grad is not None and bool(p.grad.any()) for p in model.parameters()))
        return policy_forward(self, model, *args, **kwargs)

    from unittest import mock

    with mock.patch.object(type(trainer).__mro__[1], "_get_per_token_logps_and_entropies", recording):
        first_grad, first_loss = grads(trainer, inputs)
    assert seen and all(seen)  # the awareness gradient was in .grad before the policy's forward
    assert first_loss.grad_fn is not None  # the policy part still backpropagates through the returned loss
    trainer._awareness_backward_first = lambda: False  # the joint backward of loss + awareness
    joint_grad, joint_loss = grads(trainer, inputs)
    assert torch.allclose(first_loss.detach(), joint_loss.detach(), atol=1e-6)
    assert torch.allclose(first_grad, joint_grad, atol=1e-6)
    assert not torch.allclose(first_grad, torch.zeros_like(first_grad))


def test_grpo_only_builds_no_counting_examples(tiny_model_dir, tmp_path):
    trainer = two_step_trainer(tiny_model_dir, tmp_path, awareness_lambda_max=0.0)
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    assert not any(k in inputs for k in AWARENESS_KEYS)


@pytest.mark.slow
def test_two_step_run_writes_metrics_and_a_loadable_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train_args, config = parse_train_args([
        "--model", str(tiny_model_dir), "--output_dir", str(out), "--max_steps", "2", "--num_generations", "2",
        "--per_device_train_batch_size", "4", "--max_completion_length", "12", "--train_size", "16",
        "--awareness_lambda_max", "0.5", "--report_to", "none", "--save_steps", "1", "--learning_rate", "1e-3",
    ])
    train(train_args, config)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert 0 < lines[0]["peak_rss_gb"] <= lines[1]["peak_rss_gb"] < 64  # a peak so far: never falls
    for record in lines:
        for key in METRIC_KEYS:
            assert key in record and record[key] is not None, key
        assert math.isfinite(record["awareness_loss"]) and record["awareness_loss"] > 0
    # lambda follows the schedule: step k was computed at global step k - 1
    assert [r["awareness_lambda"] for r in lines] == pytest.approx([awareness_lambda(s, 2, 0.5) for s in (0, 1)])
    assert lines[1]["awareness_lambda"] > 0
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoint-2")
    assert model.config.num_hidden_layers == 2
    assert (out / "model.safetensors").exists()


def test_truncated_rollouts_are_counted_and_labelled_by_what_they_wrote(tiny_model_dir, tmp_path):
    """With mask_truncated_completions, TRL zeroes the loss mask of cut-off rollouts; their counting
    labels and length metrics must still count the text the reward scored (not an empty text)."""
    from larft.awareness import IGNORE_INDEX, parse_count
    from larft.length import count_words, final_text

    trainer = two_step_trainer(tiny_model_dir, tmp_path, mask_truncated_completions=True, max_completion_length=10)
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    tok = trainer.processing_class
    cut = [i for i, row in enumerate(inputs["completion_ids"].tolist()) if tok.eos_token_id not in row]
    assert cut, "the random tiny model should run into max_completion_length"
    assert inputs["completion_mask"][cut].sum() == 0  # TRL masked them out of the loss
    for i in cut:
        written = count_words(final_text(tok.decode(inputs["completion_ids"][i], skip_special_tokens=True)))
        labels = inputs["awareness_labels"][i]
        assert parse_count(tok.decode(labels[labels != IGNORE_INDEX])) == written
    trace = [json.loads(line) for line in (tmp_path / "out" / "rollouts.jsonl").read_text().splitlines()]
    assert len(trace) == 4 and [r["truncated"] for r in trace] == [i in cut for i in range(4)]
    for i, r in enumerate(trace):
        assert r["length"] == count_words(r["text"])  # recounted independently from the logged text
        assert r["reward/length_reward"] == pytest.approx(
            length_score(r["text"], r["target"], constraint=r["constraint"], degenerate_guard=True, refusal_floor=0.1,
                              truncated=r["truncated"]))
    assert trainer._metrics["train"]["truncated_rate"][-1] == pytest.approx(len(cut) / 4)


@pytest.mark.slow
def test_number_only_awareness_loss_is_the_count_tokens_share(tiny_model_dir, tmp_path):
    """awareness_loss_on="number" adds lambda x CE over the count's tokens, and the option is checked."""
    trainer = two_step_trainer(tiny_model_dir, tmp_path, awareness_loss_on="number")
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    mask = inputs["awareness_loss_mask"]
    assert mask.shape == inputs["awareness_labels"].shape and 0 < mask.sum() < (inputs["awareness_labels"] != -100).sum()
    with_awareness, _ = grads(trainer, inputs)
    trainer.args.awareness_lambda_max = 0.0
    grpo_only, _ = grads(trainer, inputs)
    trainer.model.zero_grad()
    awareness_loss(trainer.model, *(inputs[k] for k in AWARENESS_KEYS), loss_mask=mask).backward()
    expected = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    assert torch.allclose(with_awareness - grpo_only, expected, atol=1e-5)
    trainer.args.awareness_lambda_max = 1.0
    trainer.train()  # a whole run: the mask goes through TRL's buffering and shuffling (one micro-batch here)
    logged = [h["awareness_loss"] for h in trainer.state.log_history if "awareness_loss" in h]
    assert logged and all(math.isfinite(x) and x > 0 for x in logged)
    with pytest.raises(ValueError, match="awareness_loss_on"):
        LARFTConfig(output_dir=str(tmp_path), awareness_loss_on="digits", report_to="none")


@pytest.mark.slow
def test_rollout_reuse_trains_twice_on_one_generation(tiny_model_dir, tmp_path):
    """num_iterations 2 (TRL's rollout reuse): one generation batch feeds two optimizer steps, each
    with the policy loss against the generating policy's log-probs and the awareness loss."""
    trainer = two_step_trainer(tiny_model_dir, tmp_path, num_iterations=2)  # it writes metrics.jsonl itself
    generated, losses = [], []
    generate, compute = trainer._generate_and_score_completions, trainer._compute_loss

    def counting_generate(inputs):
        out = generate(inputs)
        generated.append(out)
        return out

    def recording_loss(model, inputs):
        losses.append(("old_per_token_logps" in inputs, any(k in inputs for k in AWARENESS_KEYS)))
        return compute(model, inputs)

    trainer._generate_and_score_completions, trainer._compute_loss = counting_generate, recording_loss
    trainer.train()
    assert trainer.state.global_step == 2
    assert len(generated) == 1
    assert losses == [(True, True), (True, True)]
    # metrics.jsonl has both steps: the reusing one with its time and losses, no rollout metrics
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert lines[0]["reward_mean"] is not None and lines[1]["reward_mean"] is None
    assert all(r["step_seconds"] and r["awareness_loss"] > 0 for r in lines)
