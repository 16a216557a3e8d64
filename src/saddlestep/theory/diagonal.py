"""Pesme & Flammarion (NeurIPS 2023), *Saddle-to-Saddle Dynamics in Diagonal Linear Networks*:
the α → 0 limit of β = u ⊙ v as a sequence of sign-constrained least-squares saddles."""

from __future__ import annotations

import numpy as np
import scipy.optimize

from ..prediction import Prediction
from ..tasks.regression import SampleRegression
from ._common import log_inv

def _constrained_ls(X, y, support):
    """argmin ½‖Xβ − y‖² with β_i ≥ 0 where support_i = +1, β_i ≤ 0 where support_i = −1, else β_i = 0."""
    beta = np.zeros(X.shape[1])
    free = np.flatnonzero(support)
    if free.size == 0:
        return beta
    lo = np.where(support[free] > 0, 0.0, -np.inf)
    hi = np.where(support[free] > 0, np.inf, 0.0)
    res = scipy.optimize.lsq_linear(X[:, free], y, bounds=(lo, hi), method="bvls", tol=1e-15)
    beta[free] = res.x
    return beta


def pesme_flammarion(task: SampleRegression, *, init_scale=None, max_steps: int = 100) -> Prediction:
    """Algorithm 1 of Pesme & Flammarion (2023): successive saddles and jump times of a diagonal
    linear network β = u ⊙ v on L(β) = 1/(2n)‖Xβ − y‖², in accelerated time t/ln(1/α).

    The sign vector s ∈ [−1, 1]^d integrates −∇L; a coordinate joins the support when s_i hits ±1
    and the next saddle is the sign-constrained least squares on the coordinates at ±1.

    **Arguments:**

    - `task`: a `SampleRegression` with one output.
    - `init_scale`: α, for physical times (NaN without it).
    - `max_steps`: a bound on the number of saddles.

    **Returns:** a `Prediction` with `method="closed-form:pesme-flammarion"`; `order` names the
    coordinate that hits ±1 at each step, `plateau_parameters` the β of each saddle.
    """
    if not isinstance(task, SampleRegression) or task.dims[1] != 1:
        raise ValueError("task: expected a SampleRegression with one output (y a vector)")
    X, y = np.asarray(task.X), np.asarray(task.Y)[:, 0]
    n, d = X.shape
    grad = lambda b: -X.T @ (y - X @ b) / n
    loss = lambda b: 0.5 * np.mean((y - X @ b) ** 2)
    scale = max(np.abs(grad(np.zeros(d))).max(), 1e-300)
    gtol = 1e-10 * scale
    # The support (coordinates with s_i = ±1) is tracked explicitly: s_i integrates −∇L and lands
    # on ±1 only up to rounding, so a test |s_i| == 1 loses support coordinates.
    beta, s, t = np.zeros(d), np.zeros(d), 0.0
    support = np.zeros(d, dtype=int)
    times, losses, order, saddles, signs = [], [], [], [], []
    for _ in range(max_steps):
        g = grad(beta)
        g = np.where(np.abs(g) > gtol, g, 0.0)
        on = support != 0
        # A support coordinate stays at its bound unless its saddle value is 0 and the gradient
        # pulls s_i inward (KKT of the constrained least squares: g_i = 0 where β_i ≠ 0).
        pinned = on & ((beta != 0) | (support * g <= 0))
        g = np.where(pinned, 0.0, g)
        support = np.where(on & ~pinned, 0, support)
        moving = g != 0
        if not moving.any():
            break
        # Time for each moving coordinate to reach the bound it moves toward.
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(g < 0, (1.0 - s) / -g, (s + 1.0) / g)
        delta = np.where(moving, delta, np.inf)
        dt = delta.min()
        if not np.isfinite(dt):
            break
        hit = np.flatnonzero(moving & (delta <= dt * (1 + 1e-12)))
        t += dt
        s = np.clip(s - dt * g, -1.0, 1.0)
        support[hit] = np.where(g[hit] < 0, 1, -1)
        s[hit] = support[hit]
        s[support != 0] = support[support != 0]
        beta = _constrained_ls(X, y, support)
        times.append(t)
        losses.append(loss(beta))
        order.append("+".join(f"β[{i}]" for i in hit))
        saddles.append(beta.copy())
        signs.append(s.copy())
    tau = np.asarray(times)
    L = log_inv(init_scale)
    return Prediction(
        "closed-form:pesme-flammarion",
        tau * L,
        tau,
        np.asarray(losses),
        order,
        initial_loss=loss(np.zeros(d)),
        init_scale=float("nan") if init_scale is None else float(init_scale),
        plateau_parameters=saddles,
        extra={"signs": signs},
    )
