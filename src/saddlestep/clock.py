"""The α clock: from small initialization α, a plateau lasts ∝ ln(1/α), so jump times are
compared in rescaled time τ = t / ln(1/α) (Saxe et al. 2014; Pesme & Flammarion 2023). Neurons
of degree κ > 2 escape in a time ∝ α^{2−κ} instead (a dormant neuron's norm obeys
d‖θ‖/dt ∝ ‖θ‖^{κ−1}; Kunin et al. 2025), so their clock's unit is α^{2−κ} (`unit`).

One rule everywhere: the clock exists for 0 < α < 1 only. For α ≥ 1 there is no small-α
limit (ln(1/α) ≤ 0), the validators refuse such an α for predictions, and these functions
return NaN rather than a clock that runs backwards.
"""

from __future__ import annotations

import math

import numpy as np


def log_inv(init_scale):
    """ln(1/α): the length of the α clock's unit.

    **Arguments:**

    - `init_scale`: α, a number or an array (None: an α-free prediction).

    **Returns:** ln(1/α), NaN where α ≥ 1 or α is None; a float for a scalar, else an array.
    Raises `ValueError` for α ≤ 0 or non-finite α.
    """
    if init_scale is None:
        return math.nan
    a = np.asarray(init_scale, dtype=float)
    if not np.all(np.isfinite(a) & (a > 0)):
        raise ValueError(f"init_scale: expected a positive finite number, got {init_scale!r}")
    with np.errstate(divide="ignore"):
        out = np.where(a < 1, np.log(1.0 / np.minimum(a, 1.0)), np.nan)
    return float(out) if out.ndim == 0 else out


def rescale(t, init_scale):
    """τ = t / ln(1/α) (NaN where the clock is undefined, α ≥ 1)."""
    return np.asarray(t, dtype=float) / log_inv(init_scale)


def unrescale(tau, init_scale):
    """t = τ · ln(1/α), the inverse of `rescale`."""
    return np.asarray(tau, dtype=float) * log_inv(init_scale)


def unit(init_scale, kappa: int | float | None = None):
    """The α clock's unit for neurons of degree κ: ln(1/α) for κ ≤ 2 (or κ unknown), α^{2−κ}
    for κ > 2 (1/α for the quadratic networks and linear attention, κ = 3).

    **Arguments:** `init_scale`, α (number or array); `kappa`, the neurons' degree or None.

    **Returns:** the unit, NaN where α ≥ 1 (as `log_inv`).
    """
    if kappa is None or kappa <= 2:
        return log_inv(init_scale)
    L = log_inv(init_scale)  # validates α and gives NaN where α ≥ 1
    out = np.where(np.isfinite(L), np.asarray(init_scale, dtype=float) ** (2.0 - kappa), np.nan)
    return float(out) if out.ndim == 0 else out
