"""`first_crossing` against curves whose crossing times are known in closed form."""

import math

import numpy as np
import pytest

from saddlestep.crossings import first_crossing


@pytest.mark.parametrize("seed", range(5))
def test_cubic_crossing_is_fourth_order_on_random_logistics(seed):
    rng = np.random.default_rng(seed)
    c, w, frac = rng.uniform(2, 8), rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.8)
    exact = c + w * math.log(frac / (1 - frac))  # the logistic reaches `frac` here
    errors = []
    for n in (101, 201, 401):
        t = np.sort(np.concatenate([[0.0, 10.0], rng.uniform(0, 10, n - 2)]))  # non-uniform grid
        up = 1 / (1 + np.exp(-(t - c) / w))
        errors.append(abs(first_crossing(t, up, frac) - exact))
        # The falling curve 1 − logistic crosses 1 − frac at the same time.
        assert first_crossing(t, 1 - up, 1 - frac, falling=True) == pytest.approx(first_crossing(t, up, frac), abs=1e-12)
    assert errors[-1] < 1e-6
    linear = abs(first_crossing(t, up, frac, interpolation="linear") - exact)
    assert errors[-1] < linear


def test_log_interpolation_is_exact_for_exponential_decay():
    t = np.linspace(0, 5, 11)
    rate = 2.7
    for level in (0.5, 1e-3, 1e-5):
        assert first_crossing(t, np.exp(-rate * t), level, falling=True, interpolation="log") == pytest.approx(
            math.log(1 / level) / rate, rel=1e-12)


def test_no_crossing_start_and_non_finite_samples():
    t = np.linspace(0, 1, 21)
    v = t.copy()
    assert math.isnan(first_crossing(t, v, 2.0))  # never reached
    assert math.isnan(first_crossing(t, v, -1.0))  # already past at the start
    assert math.isnan(first_crossing(t, v, 0.2, start=10))  # past where the search starts
    v_nan = v.copy()
    v_nan[5] = np.nan
    assert first_crossing(t, v_nan, 0.525, interpolation="linear") == pytest.approx(0.525)
    with pytest.raises(ValueError, match="interpolation"):
        first_crossing(t, v, 0.5, interpolation="spline")
