"""Closed forms for degree-3 (κ = 3) neurons: modular addition with quadratic networks and
attention-only linear transformers (Kunin et al. 2025, *Alternating Gradient Flows*).

For κ = 3 a dormant neuron's direction moves at speed ∝ ‖θ‖ ≈ α, so it barely turns during a
plateau: jump times depend on the initial directions, and the perfect-alignment time
(1/‖θ₀‖ − 1)/(3Ū*) is only a **lower bound** (the paper's plots draw it as such). The plateau
levels and the learned coefficients are exact.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float

from ..prediction import Prediction
from ..tasks.base import check_finite, check_positive as _positive
from ..clock import rescale




def alignment_time(utility, init_norm, kappa: int = 3):
    """Time for a perfectly aligned dormant neuron, on a frozen residual with normalized utility
    Ū, to grow from ‖θ₀‖ to norm 1 (AGF reference R9): (‖θ₀‖^{2−κ} − 1)/((κ−2)κŪ) for κ > 2,
    ln(1/‖θ₀‖)/(2Ū) for κ = 2. For κ = 3, ‖θ(t)‖ = ‖θ₀‖/(1 − 3Ū‖θ₀‖t).

    **Arguments:** `utility` Ū > 0 (array or number); `init_norm` ‖θ₀‖ ∈ (0, 1); `kappa` ≥ 2.

    **Returns:** the time(s), with Ū's shape (inf where Ū ≤ 0).
    """
    n0 = _positive("init_norm", init_norm)
    if n0 >= 1:
        raise ValueError(f"init_norm: expected a norm below 1 (a small initialization), got {n0}")
    u = np.asarray(utility, dtype=float)
    if kappa == 2:
        c = math.log(1.0 / n0)
    elif kappa > 2:
        c = (n0 ** (2 - kappa) - 1.0) / (kappa - 2)
    else:
        raise ValueError(f"kappa: expected an integer ≥ 2, got {kappa!r}")
    with np.errstate(divide="ignore"):
        return np.where(u > 0, c / (kappa * np.where(u > 0, u, 1.0)), np.inf)


# ------------------------------------------------------------------------------ modular addition
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
    order = sorted(keep, key=lambda xi: (-util[xi], xi))
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


# --------------------------------------------------------------------------- linear attention
def _spectrum(eigenvalues, N) -> tuple[np.ndarray, int]:
    lam = check_finite("eigenvalues", eigenvalues, (1, 2))
    if lam.ndim == 2:
        lam = np.linalg.eigvalsh((lam + lam.T) / 2)
    if np.any(lam < -1e-12 * max(1.0, np.abs(lam).max())):
        raise ValueError(f"eigenvalues: expected values ≥ 0, got {lam.tolist()}")
    if isinstance(N, bool) or int(N) != N or N < 1:
        raise ValueError(f"N: expected a positive integer, got {N!r}")
    lam = np.sort(np.maximum(lam, 0.0))[::-1]
    if lam.sum() <= 0:
        raise ValueError("eigenvalues: all zero; the inputs carry no signal")
    return lam, int(N)


def attention_coefficients(eigenvalues, N: int) -> Float[np.ndarray, " D"]:
    """The learned coefficient along each principal component, 1/(tr Λ + (N+1)λ_i), in decreasing
    order of λ_i (AGF reference §2.3, R5). `eigenvalues` may also be Λ itself.

    **Arguments:** `eigenvalues`, λ (or Λ); `N`, the context length.

    **Returns:** the coefficients, one per component.
    """
    lam, N = _spectrum(eigenvalues, N)
    return 1.0 / (lam.sum() + (N + 1) * lam)


def attention_levels(eigenvalues, N: int) -> tuple[np.ndarray, float]:
    """Plateau levels of ½E(y − ŷ)² after each principal component is learned (AGF reference R5):
    ℓ^(k) = ½(tr Λ − Σ_{i≤k} λ_i/(1 + (1 + tr Λ/λ_i)/N)). **Returns:** (levels, initial ½tr Λ).

    **Arguments:** `eigenvalues`, λ (or Λ); `N`, the context length.
    """
    lam, N = _spectrum(eigenvalues, N)
    tr = lam.sum()
    pos = lam > 0
    gain = np.where(pos, lam / (1.0 + (1.0 + tr / np.where(pos, lam, 1.0)) / N), 0.0)
    return 0.5 * (tr - np.cumsum(gain[pos])), 0.5 * float(tr)


def attention_utility_maxima(eigenvalues, N: int) -> Float[np.ndarray, " D"]:
    """Ū*_i = Nλ_i²/(3√3): a unit head aligned with the i-th principal component on the residual
    y_q (v = 1/√3, k = q = e_i/√3; AGF reference §2.3, R5).

    **Arguments:** `eigenvalues`, λ (or Λ); `N`, the context length.

    **Returns:** Ū*_i per component.
    """
    lam, N = _spectrum(eigenvalues, N)
    return N * lam**2 / (3.0 * math.sqrt(3.0))


def attention_prediction(eigenvalues, N: int, init_scale: float, init_norm: float | None = None) -> Prediction:
    """The closed-form staircase of in-context regression with linear attention: components in
    decreasing eigenvalue order, exact levels and coefficients, and the perfect-alignment
    **lower bounds** (1/‖θ₀‖ − 1)/(3Ū*_i) as times (`method="closed-form:attention-lower-bound"`).

    **Arguments:**

    - `eigenvalues`: the spectrum of Λ (or Λ).
    - `N`: context length.
    - `init_scale`: α.
    - `init_norm`: ‖θ₀‖ (default √3·α, the norm of a `LinearAttention` head at init).

    **Returns:** a `Prediction`; `extra` holds `coefficients`, `utility_maxima`, `lower_bound: True`.
    """
    alpha = _positive("init_scale", init_scale)
    n0 = math.sqrt(3.0) * alpha if init_norm is None else _positive("init_norm", init_norm)
    lam, N = _spectrum(eigenvalues, N)
    levels, initial = attention_levels(lam, N)
    k = levels.size
    util = attention_utility_maxima(lam, N)[:k]
    times = alignment_time(util, n0)
    return Prediction(
        "closed-form:attention-lower-bound",
        times,
        rescale(times, alpha),
        levels,
        [f"PC {i + 1}" for i in range(k)],
        initial_loss=initial,
        init_scale=alpha,
        extra={
            "coefficients": attention_coefficients(lam, N)[:k].tolist(),
            "utility_maxima": util.tolist(),
            "init_norm": n0,
            "lower_bound": True,
        },
    )
