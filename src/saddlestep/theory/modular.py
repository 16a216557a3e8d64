"""Closed forms for modular addition with quadratic networks (κ = 3; Kunin et al. 2025,
*Alternating Gradient Flows*).

For κ = 3 a dormant neuron's direction moves at speed ∝ ‖θ‖ ≈ α, so it barely turns during a
plateau: jump times depend on the initial directions, and the perfect-alignment time
(1/‖θ₀‖ − 1)/(3Ū*) is only a **lower bound** (the paper's plots draw it as such). The plateau
levels and the learned coefficients are exact.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float

from ..clock import rescale
from ..prediction import Prediction
from ..tasks.base import check_finite, check_positive as _positive
from ._common import alignment_time


def _template(template) -> np.ndarray:
    x = check_finite("template", template, 1)
    if x.size < 3:
        raise ValueError(f"template: expected length p ≥ 3, got {x.size}")
    return x - x.mean()


def modular_utility_maxima(template) -> Float[np.ndarray, " k"]:
    """Ū*_ξ = max over unit neurons at frequency ξ of mean_ab⟨f_i(a,b), y_{a+b}⟩, for ξ = 0 … ⌊p/2⌋
    (AGF reference §2.4, R7): √(2/27)·p^{−3/2}|x̂[ξ]|³, and 2/(3√3)·p^{−3/2}|x̂[p/2]|³ at the
    Nyquist frequency of an even p (a real, one-dimensional frequency); 0 at ξ = 0.
    The maximizer has ‖u‖² = ‖v‖² = ‖w‖² = 1/3, all three pure frequency ξ.

    **Arguments:** `template`, the mean-centred x ∈ R^p.

    **Returns:** Ū*_ξ for ξ = 0 … ⌊p/2⌋.
    """
    x = _template(template)
    p = x.size
    mag = np.abs(np.fft.fft(x))[: p // 2 + 1]
    out = math.sqrt(2.0 / 27.0) * p**-1.5 * mag**3
    if p % 2 == 0:
        out[-1] = 2.0 / (3.0 * math.sqrt(3.0)) * p**-1.5 * mag[-1] ** 3
    out[0] = 0.0
    return out


def modular_utility_max(template) -> float:
    """max over unit neurons of the utility at the start, max_ξ Ū*_ξ (AGF reference R7).

    **Arguments:** `template`, the mean-centred x ∈ R^p.

    **Returns:** the largest Ū*_ξ.
    """
    return float(np.max(modular_utility_maxima(template)))


def modular_levels(template) -> tuple[list[int], np.ndarray, float]:
    """Plateau levels of ½E‖·‖² for modular addition (AGF reference §2.4, R6): frequencies are
    learned in decreasing order of Ū*_ξ (of |x̂[ξ]|), each removing its whole power
    P_ξ = (|x̂[ξ]|² + |x̂[−ξ]|²)/p from the residual; ℓ^(k) = ½ Σ_{j>k} P_{ξ_j}.

    **Returns:** (frequencies in the order learned, the level after each, the initial level).

    **Arguments:** `template`, the mean-centred x ∈ R^p.
    """
    x = _template(template)
    p = x.size
    mag2 = np.abs(np.fft.fft(x)) ** 2 / p
    power = np.array([mag2[xi] + (mag2[-xi] if 2 * xi != p else 0.0) for xi in range(p // 2 + 1)])
    util = modular_utility_maxima(x)
    keep = [xi for xi in range(1, p // 2 + 1) if power[xi] > 1e-12 * power.max()]
    # Equal magnitudes tie to rounding (the FFT's last digits): the lower frequency first.
    tied = np.round(util / max(float(util.max()), 1e-300), 10)
    order = sorted(keep, key=lambda xi: (-tied[xi], xi))
    initial = 0.5 * float(power.sum())
    levels = initial - 0.5 * np.cumsum([power[xi] for xi in order])
    return order, np.maximum(levels, 0.0), initial


def modular_lower_bounds(template, init_norm: float) -> tuple[list[int], np.ndarray]:
    """The paper's jump-time lower bounds τ_ξ ≥ (1/‖θ₀‖ − 1)/(3Ū*_ξ) (gradient-flow time of
    ½E‖·‖², η = 1): a neuron perfectly aligned with ξ from t = 0 (AGF reference R6: 7.6364,
    61.091, 488.73 for the p = 20 template at ‖θ₀‖ = √2·0.01).

    **Returns:** (frequencies in the order learned, their lower bounds).

    **Arguments:** `template`, the mean-centred x ∈ R^p; `init_norm`, ‖θ_i(0)‖.
    """
    order, _, _ = modular_levels(template)
    util = modular_utility_maxima(template)
    return order, alignment_time(util[order], init_norm)


def modular_prediction(template, init_scale: float, init_norm: float | None = None) -> Prediction:
    """The closed-form staircase of modular addition: exact plateau levels and order, with the
    perfect-alignment **lower bounds** as times (`method="closed-form:modular-lower-bound"`).

    **Arguments:**

    - `template`: x ∈ R^p (its mean is removed).
    - `init_scale`: α (for rescaled times t/ln(1/α)).
    - `init_norm`: ‖θ₀‖ (default √2·α, the norm of a `QuadraticNetwork` neuron at init).

    **Returns:** a `Prediction`; `extra` holds `utility_maxima` and `lower_bound: True`.
    """
    alpha = _positive("init_scale", init_scale)
    n0 = math.sqrt(2.0) * alpha if init_norm is None else _positive("init_norm", init_norm)
    order, levels, initial = modular_levels(template)
    _, times = modular_lower_bounds(template, n0)
    util = modular_utility_maxima(template)
    return Prediction(
        "closed-form:modular-lower-bound",
        times,
        rescale(times, alpha),
        levels,
        [f"ξ={xi}" for xi in order],
        initial_loss=initial,
        init_scale=alpha,
        extra={"utility_maxima": [float(util[xi]) for xi in order], "init_norm": n0, "lower_bound": True},
    )
