"""lambda(t): the weight of the awareness loss over training (LARFT paper, section 5).

Linear warm-up from 0 to lambda_max over the first `warmup_ratio` of the steps, then
lambda_max * cos(pi/2 * p) with p going 0 -> 1 over the remaining steps.
"""

from __future__ import annotations

import math


def awareness_lambda(step: int, total_steps: int, lambda_max: float, warmup_ratio: float = 0.1) -> float:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    step = min(max(step, 0), total_steps)
    warmup_steps = warmup_ratio * total_steps
    if step < warmup_steps:
        return lambda_max * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return lambda_max * math.cos(math.pi / 2 * progress)
