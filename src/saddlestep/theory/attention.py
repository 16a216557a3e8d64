"""Closed forms for attention-only linear transformers on in-context linear regression (κ = 3;
Kunin et al. 2025, *Alternating Gradient Flows*).

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
