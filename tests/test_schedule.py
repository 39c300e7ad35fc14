import math

import pytest

from larft.schedule import awareness_lambda


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (5, 0.5), (10, 1.0), (55, math.cos(math.pi / 4)), (100, 0.0)],
)
def test_warmup_then_cosine_to_zero(step, expected):
    assert awareness_lambda(step, 100, 1.0) == pytest.approx(expected, abs=1e-12)


def test_scales_with_lambda_max_and_is_monotone_after_warmup():
    values = [awareness_lambda(s, 100, 0.01) for s in range(101)]
    assert max(values) == pytest.approx(0.01)
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        awareness_lambda(0, 0, 1.0)
    with pytest.raises(ValueError):
        awareness_lambda(0, 10, 1.0, warmup_ratio=1.0)
