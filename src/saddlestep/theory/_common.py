"""Shared helpers for the closed forms: second moments of a regression task, and the
alignment time of a dormant neuron (any κ)."""

from __future__ import annotations

import math

import numpy as np

from ..clock import log_inv as log_inv  # noqa: F401 (theory modules import it from here)

from ..tasks.base import check_positive as _positive
from ..tasks.regression import PopulationRegression, SampleRegression


# Where a mode's loss (1 − y)² has fallen halfway, y being its fraction learned: a closed form's
# step is timed there, as `detect_steps` times the flow's drops (at the loss's midpoint crossing),
# not at the feature's half-rise y = ½, which comes ln(1 + √2)/rate later on a logistic rise.
LOSS_MIDPOINT = 1.0 - 1.0 / math.sqrt(2.0)


def logistic_time(y0: float, y: float, rate: float) -> float:
    """When the logistic y(t) = 1/(1 + (1/y₀ − 1)e^{−rate·t}) reaches `y` (0 if it starts past it).

    **Arguments:** `y0` ∈ (0, 1), the start; `y` ∈ (0, 1), the level; `rate` > 0.

    **Returns:** (ln(1/y₀ − 1) − ln(1/y − 1))/rate, at least 0.
    """
    if y0 >= y:
        return 0.0
    return (math.log(1.0 / y0 - 1.0) - math.log(1.0 / y - 1.0)) / rate


def moments(task) -> tuple[np.ndarray, np.ndarray, float]:
    """(Σxx, Σyx, L_min) of a population or sample regression task."""
    if isinstance(task, PopulationRegression):
        C = np.asarray(task.sqrt_cov)
        T = np.asarray(task.target)
        return C @ C.T, T @ C.T, float(task.loss_min)
    if isinstance(task, SampleRegression):
        X, Y = np.asarray(task.X), np.asarray(task.Y)
        n = X.shape[0]
        Sxx, Syx, Syy = X.T @ X / n, Y.T @ X / n, Y.T @ Y / n
        pop = PopulationRegression(Sxx, Syx, Syy)
        return Sxx, Syx, float(pop.loss_min)
    raise ValueError(
        f"task: expected a PopulationRegression or SampleRegression, got {type(task).__name__}"
    )


def _population(task) -> PopulationRegression:
    """The task as a population regression (a sample one through its sample moments)."""
    if isinstance(task, PopulationRegression):
        return task
    Sxx, Syx, _ = moments(task)
    X, Y = np.asarray(task.X), np.asarray(task.Y)
    return PopulationRegression(Sxx, Syx, Y.T @ Y / X.shape[0])


def whitened(task) -> tuple[np.ndarray, np.ndarray, float]:
    """(T, C, L_min): the whitened target T and the square root C of Σxx (Σxx = C Cᵀ, Σyx = T Cᵀ)."""
    pop = _population(task)
    return np.asarray(pop.target), np.asarray(pop.sqrt_cov), float(pop.loss_min)


def mode_labels(task, maps) -> list[str]:
    """The task's name ("mode k", k the rank of the whitened target's singular value) of each
    rank-one map β = u vᵀ a network learns: the whitened mode it projects on most.

    The flow learns decoupled modes in the order of their growth rates σ (commuting Σxx), the
    task names them in the order of their whitened strengths σ/√λ, so the two differ whenever an
    input direction of large variance carries a weaker mode.

    **Arguments:** `task` (population or sample regression); `maps`, (out, d) arrays.

    **Returns:** one label per map.
    """
    pop = _population(task)
    left, right, C = np.asarray(pop.left), np.asarray(pop.right), np.asarray(pop.sqrt_cov)
    labels = []
    for beta in maps:
        strengths = np.einsum("ik,ij,jk->k", left, np.asarray(beta) @ C, right)
        labels.append(f"mode {int(np.argmax(np.abs(strengths))) + 1}")
    return labels


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
