"""Importance-sampling correction for rollouts sampled by another engine than the policy (quantized
CTranslate2): each token's policy-gradient term weighted by the policy's probability of that token
over the sampler's, truncated or masked as TRL does for vLLM (`vllm_importance_sampling_mode`,
`_clip_min`, `_clip_max`), which TRL applies to vLLM rollouts only."""

from __future__ import annotations

import math

import torch

MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_weights(policy_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor, mode: str,
                       clip_min: float | None = None, clip_max: float | None = None) -> torch.Tensor:
    """exp(log pi_policy - log pi_sampler) per token (`token_*`, shape (B, T)) or per rollout
    (`sequence_*`, the sum over its tokens, shape (B, 1)); `*_truncate` clamps it to [clip_min,
    clip_max], `*_mask` zeroes it outside. Masked positions and tokens the sampler could not score
    (NaN) count as a ratio of 1: TRL's semantics."""
    if mode not in MODES:
        raise ValueError(f"importance sampling mode {mode!r}: expected one of {', '.join(MODES)}")
    diff = torch.nan_to_num((policy_logps.detach() - sampler_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return ratio if clip_min is None and clip_max is None else torch.clamp(ratio, min=clip_min, max=clip_max)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def weight_gradient(logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`logps` unchanged in value, with the gradient through each position multiplied by its weight.

    Every GRPO-family loss TRL builds is, per token, a function of the policy's log-prob whose
    gradient is the policy-gradient term; weighting that gradient is the correction, applied to
    each of TRL's losses without writing one of them again (the values it logs and clips on stay
    the policy's own)."""
    detached = logps.detach()
    return detached + weights.detach() * (logps - detached)
