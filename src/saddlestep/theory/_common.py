"""Shared helpers for the closed forms: second moments of a regression task."""

from __future__ import annotations


import numpy as np

from ..clock import log_inv as log_inv  # noqa: F401 (theory modules import it from here)

from ..tasks.regression import PopulationRegression, SampleRegression


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


def whitened(task) -> tuple[np.ndarray, np.ndarray, float]:
    """(T, C, L_min): the whitened target T and the square root C of Σxx (Σxx = C Cᵀ, Σyx = T Cᵀ)."""
    if isinstance(task, PopulationRegression):
        return np.asarray(task.target), np.asarray(task.sqrt_cov), float(task.loss_min)
    Sxx, Syx, _ = moments(task)
    X, Y = np.asarray(task.X), np.asarray(task.Y)
    pop = PopulationRegression(Sxx, Syx, Y.T @ Y / X.shape[0])
    return np.asarray(pop.target), np.asarray(pop.sqrt_cov), float(pop.loss_min)
