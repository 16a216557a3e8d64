"""Saxe, McClelland & Ganguli (ICLR 2014): per-mode closed form of deep linear networks with
whitened (or commuting) inputs and balanced, aligned initialization."""

from __future__ import annotations

import math

import numpy as np
import scipy.integrate

from ..prediction import Prediction
from ._common import LOSS_MIDPOINT, log_inv, mode_labels, moments, whitened


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or int(depth) != depth or depth < 2:
        raise ValueError(f"depth: expected an integer ≥ 2, got {depth!r}")
    return int(depth)


def saxe_mode(s: float, u0: float, t, *, lam: float = 1.0):
    """Mode strength u(t) of a two-layer linear network, u̇ = 2u(s − λu) (Saxe et al. 2014):
    u(t) = (s/λ) e^{2st} / (e^{2st} − 1 + s/(λu₀)).

    **Arguments:** `s` singular value of Σyx; `u0` initial strength; `t` time(s); `lam` the input
    variance λ along the mode (1 for whitened inputs).

    **Returns:** u(t), shaped like `t`.
    """
    t = np.asarray(t, dtype=float)
    e = np.exp(2.0 * s * t)
    return (s / lam) * e / (e - 1.0 + s / (lam * u0))


def saxe_time(s: float, u0: float, u: float, *, depth: int = 2, lam: float = 1.0) -> float:
    """Time for a mode to grow from u₀ to u under u̇ = L u^{2−2/L}(s − λu) (balanced depth-L
    network, Saxe et al. 2014; L = 2 in closed form: ln(u(s − λu₀)/(u₀(s − λu)))/(2s)).

    **Arguments:** `s`, the singular value; `u0`, `u`, the start and end strengths (0 < u₀ < u < s/λ);
    `depth` L ≥ 2; `lam`, the input variance along the mode.

    **Returns:** the time.
    """
    depth = _check_depth(depth)
    if depth == 2:
        return math.log(u * (s - lam * u0) / (u0 * (s - lam * u))) / (2.0 * s)
    # Substitute u = e^z so the integrand stays O(1) across many decades.
    f = lambda z: math.exp(z) / (depth * math.exp(z * (2 - 2 / depth)) * (s - lam * math.exp(z)))
    val, _ = scipy.integrate.quad(f, math.log(u0), math.log(u), limit=500, epsrel=1e-12)
    return val


def saxe(task, *, init_scale, depth: int = 2, u0: float | None = None) -> Prediction:
    """Saxe's staircase: mode k rises from u₀ = α^depth (aligned, balanced init with every layer's
    factor α) to s/λ, and the loss falls to ½Σ_{j>k} s_j²/λ_j + L_min. A step's time is when its
    loss ½λ(s/λ − u)² has fallen halfway, u = (1 − 1/√2)s/λ, as `detect_steps` times the flow's
    drops; the half-height times (u = s/(2λ); ln(s/(λu₀) − 1)/(2s) at depth 2) are kept in
    `extra["half_rise_times"]`.

    Needs inputs whose covariance commutes with the teacher (whitened inputs are the usual case).

    **Arguments:** `task` (regression); `init_scale` α; `depth` L ≥ 2; `u0` to override α^L.

    **Returns:** a `Prediction` with `method="closed-form:saxe"` (times are physical).
    """
    depth = _check_depth(depth)
    L = log_inv(init_scale)
    Sxx, Syx, loss_min = moments(task)
    U, sig, Vt = np.linalg.svd(Syx, full_matrices=False)
    r = int(np.sum(sig > 1e-12 * max(1.0, sig.max(initial=0.0))))
    V = Vt[:r].T
    lam = np.einsum("ik,ij,jk->k", V, Sxx, V)
    if np.abs(Sxx @ V - V * lam).max(initial=0.0) > 1e-8 * max(1.0, np.abs(Sxx).max()):
        raise ValueError("task: Saxe's closed form needs an input covariance that commutes with the teacher")
    u0 = float(init_scale) ** depth if u0 is None else float(u0)
    T, _, _ = whitened(task)
    sw = np.linalg.svd(T, compute_uv=False)
    # Modes decouple, so each drops at its own time; sorted by it, which is the order of the
    # growth rates σ_k (not of the drops σ_k²/λ_k).
    def reach(fraction):
        return np.array([
            saxe_time(sig[k], u0, fraction * sig[k] / lam[k], depth=depth, lam=lam[k])
            if u0 < fraction * sig[k] / lam[k] else 0.0
            for k in range(r)
        ])

    times, half = reach(LOSS_MIDPOINT), reach(0.5)
    order = np.argsort(times, kind="stable")
    times, half = times[order], half[order]
    drops = sig[order] ** 2 / lam[order]
    total = float(np.sum(sw**2))
    levels = 0.5 * (total - np.cumsum(drops)) + loss_min
    return Prediction(
        "closed-form:saxe",
        times,
        times / L,
        np.maximum(levels, loss_min),
        mode_labels(task, [np.outer(U[:, k], V[:, k]) for k in order]),
        initial_loss=0.5 * total + loss_min,
        init_scale=float(init_scale),
        extra={"depth": depth, "u0": u0, "half_rise_times": half.tolist()},
    )
