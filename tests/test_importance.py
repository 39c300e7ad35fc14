"""Quantized CTranslate2 rollouts are importance-weighted: TRL's ratio modes, a gradient weighted
per token while every value TRL logs stays the policy's, and the wiring from the engine's
sampler log-probs to the loss."""

import math

import pytest
import torch
from datasets import Dataset

from helpers import grads, prompt_rows, tiny_trainer
from larft.importance import importance_weights, weight_gradient

POLICY = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, 0.0]])
SAMPLER = torch.tensor([[-1.5, -1.0, float("nan")], [-0.1, -1.0, -9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_token_modes_truncate_or_mask_each_ratio():
    ratio = torch.tensor([[math.exp(0.5), math.exp(-1.0), 1.0], [1.0, math.exp(-2.0), 1.0]])  # NaN, padding: 1
    assert torch.allclose(importance_weights(POLICY, SAMPLER, MASK, "token_truncate", None, 1.2),
                          ratio.clamp(max=1.2))
    masked = importance_weights(POLICY, SAMPLER, MASK, "token_mask", 0.2, 1.2)
    assert torch.allclose(masked, torch.tensor([[0.0, math.exp(-1.0), 1.0], [1.0, 0.0, 1.0]]))


def test_sequence_modes_use_each_rollouts_summed_log_ratio():
    summed = torch.tensor([[math.exp(-0.5)], [math.exp(-2.0)]])
    assert torch.allclose(importance_weights(POLICY, SAMPLER, MASK, "sequence_truncate", 0.5, 3.0),
                          summed.clamp(min=0.5))
    assert torch.allclose(importance_weights(POLICY, SAMPLER, MASK, "sequence_mask", 0.5, None),
                          torch.tensor([[math.exp(-0.5)], [0.0]]))
    with pytest.raises(ValueError, match="token_truncate"):
        importance_weights(POLICY, SAMPLER, MASK, "sequence", None, None)


def test_weight_gradient_keeps_values_and_scales_each_gradient():
    x = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    weighted = weight_gradient(x * 2.0, torch.tensor([0.5, 0.0, 3.0]))
    assert torch.equal(weighted.detach(), x.detach() * 2.0)
    weighted.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([1.0, 0.0, 6.0]))


def _int8_trainer(model_dir, out, **settings):
    base = {"max_steps": 1, "max_completion_length": 10, "learning_rate": 1e-3, "rollout_backend": "ct2",
            "rollout_compute_type": "int8", "top_p": 1.0, "awareness_lambda_max": 0.0, "beta": 0.0,
            "entropy_coef": 0.0, "bf16": False, "seed": 0}
    return tiny_trainer(model_dir, out, **{**base, **settings})


@pytest.mark.parametrize("level, loss_type", [("token", "dapo"), ("sequence", "grpo")])
def test_sampler_log_probs_weigh_the_gradient_as_trl_weighs_vllm_rollouts(tiny_model_dir, tmp_path, level, loss_type):
    """The oracle is TRL's own vLLM correction (the per-token loss times the ratio), switched on
    in the same trainer: larft's weighted gradient must equal it, per token (GRPO / DAPO) and for
    sequence-level importance sampling (GSPO)."""
    trainer = _int8_trainer(tiny_model_dir, tmp_path / "out", vllm_importance_sampling_clip_max=2.5,
                            importance_sampling_level=level, loss_type=loss_type)
    assert trainer.importance_sampling and trainer.rollout_func.sampler_logprobs
    assert trainer.args.vllm_importance_sampling_mode == "token_truncate"  # the quantized default
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions(list(Dataset.from_list(prompt_rows(2)).repeat(2)))
    sampler = inputs["sampling_per_token_logps"]
    mask = inputs["completion_mask"].bool()
    assert sampler.shape == mask.shape and bool((sampler[mask] < 0).all())
    with torch.no_grad():  # the engine's reported log-probs are the int8 copy's at the rollout temperature
        policy = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1), mask.size(1))[0]
    assert (policy - sampler)[mask].abs().max() < 0.5  # a quantized copy of the same policy, same temperature

    log_ratio = torch.empty_like(policy).uniform_(-0.7, 1.2, generator=torch.Generator().manual_seed(0))
    ratio = torch.exp(log_ratio).clamp(max=2.5)  # what token_truncate at 2.5 makes of it
    trainer.importance_sampling = False
    plain_grad, plain_loss = grads(trainer, inputs)
    trainer.use_vllm = True  # TRL's own correction: the per-token loss times importance_sampling_ratio
    trl_grad, _ = grads(trainer, {**inputs, "importance_sampling_ratio": ratio})
    trainer.use_vllm = False
    trainer.importance_sampling = True
    ours_grad, ours_loss = grads(trainer, {**inputs, "sampling_per_token_logps": policy - log_ratio})
    assert torch.allclose(ours_loss, plain_loss)  # the logged loss is the policy's own
    assert not torch.allclose(trl_grad, plain_grad, atol=1e-5)  # the ratios matter
    assert torch.allclose(ours_grad, trl_grad, atol=1e-6, rtol=1e-4)
    logged = trainer._metrics["train"]["sampling/importance_sampling_ratio/mean"][-1]
    expected = ratio[mask].mean() if level == "token" else ((ratio * mask).sum(1) / mask.sum(1))[:, None].expand_as(
        mask)[mask].mean()
    assert logged == pytest.approx(expected.item(), rel=1e-5)


def test_an_int8_run_trains_and_logs_the_sampler_gap(tiny_model_dir, tmp_path):
    trainer = _int8_trainer(tiny_model_dir, tmp_path / "out", max_steps=2, awareness_lambda_max=0.5,
                            awareness_warmup_ratio=0.0)
    trainer.train()
    logged = [r for r in trainer.state.log_history if "sampling/importance_sampling_ratio/mean" in r]
    assert len(logged) == 2
    assert all(0.0 <= r["sampling/sampling_logp_difference/mean"] < 0.5 for r in logged)
    assert all(math.isfinite(r["loss"]) for r in logged)


def test_truncating_samplers_and_vespo_are_refused_with_quantized_rollouts(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"top_p=0\.8.*top_p: 1\.0"):
        _int8_trainer(tiny_model_dir, tmp_path / "a", top_p=0.8)
    with pytest.raises(ValueError, match=r"top_k=5"):
        _int8_trainer(tiny_model_dir, tmp_path / "b", top_k=5)
    with pytest.raises(ValueError, match="vespo"):
        _int8_trainer(tiny_model_dir, tmp_path / "c", loss_type="vespo")
    uncorrected = _int8_trainer(tiny_model_dir, tmp_path / "d", top_p=0.8, vllm_importance_sampling_correction=False)
    assert not uncorrected.importance_sampling and not uncorrected.rollout_func.sampler_logprobs
    # the baselines sample with the same engine and correct nothing: nothing to refuse there
    from larft.config import LARFTConfig
    from larft.ct2_engine import choose_backend

    sampling = LARFTConfig(output_dir=str(tmp_path / "e"), rollout_backend="ct2", rollout_compute_type="int8",
                           report_to="none")
    assert sampling.top_p == 0.8 and choose_backend(sampling, str(tiny_model_dir)) == "ct2"
