"""Closed-form dynamics of the quartic word2vec loss (QWEM; Karkada et al. 2025, §3).

Time is the paper's: the flow dW/dt = ½(M* − WWᵀ)W, which is plain gradient flow on
`saddlestep.tasks.word2vec.QWEM` (SGNS normalisation) under Setting 3.1.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from ..models.word2vec import Embedding
from ..prediction import Prediction
from ..tasks.word2vec import AbstractCooccurrenceTask
from ..tasks.base import AbstractTask
from ._common import LOSS_MIDPOINT, logistic_time

__all__ = ["predict_qwem", "qwem_aligned", "qwem_closed_form", "qwem_final"]


def qwem_aligned(eigenvalues, s0_squared, t) -> Float[np.ndarray, "t k"]:
    """Squared singular values of the aligned solution (Karkada et al. 2025, Lemma 3.1):

        s_k²(t) = λ_k / (1 + (λ_k/s_k²(0) − 1) e^{−λ_k t}).

    For λ_k ≤ 0 the mode decays, d(s²)/dt = s²(λ − s²), whose solution is the same formula.

    **Arguments:**

    - `eigenvalues`: λ_k, the eigenvalues of M* the modes are aligned with.
    - `s0_squared`: s_k²(0) > 0.
    - `t`: times (scalar or 1-D).

    **Returns:** s_k²(t), shape (len(t), k).
    """
    lam = np.asarray(eigenvalues, dtype=float)[None, :]
    s0 = np.asarray(s0_squared, dtype=float)[None, :]
    t = np.atleast_1d(np.asarray(t, dtype=float))[:, None]
    # Written as s0 e^{λt} / (1 + s0 (e^{λt} − 1)/λ), finite for λ → 0 and for large λt.
    with np.errstate(over="ignore", invalid="ignore"):
        # Overflow to inf is expected for large λt: `late` takes over there.
        growth = np.where(np.abs(lam) > 0, np.expm1(lam * t) / np.where(lam == 0, 1.0, lam), t)
        direct = s0 * np.exp(lam * t) / (1.0 + s0 * growth)
        late = lam / (1.0 + (lam / s0 - 1.0) * np.exp(-lam * t))
    return np.where(np.isfinite(direct), direct, late)


def qwem_closed_form(target, W0, t) -> Float[np.ndarray, "t V V"]:
    """The exact WWᵀ(t) of dW/dt = ½(M* − WWᵀ)W from any W(0) (a matrix Riccati flow):

        W(t) = e^{M*t/2} W₀ G,  GGᵀ = [I + W₀ᵀ Φ(t) W₀]⁻¹,  Φ(t) = ∫₀ᵗ e^{M*s} ds.

    (Derived for saddlestep; it reduces to Lemma 3.1 of Karkada et al. 2025 for aligned W₀.)
    Evaluated one interval h ≤ 2/max|λ| at a time, from the state at the interval's start (the
    flow is a semigroup and commutes with W → WO): over long spans the one-shot formula mixes
    e^{λ_1 t} with e^{λ_d t} and loses every digit of the slow modes.

    **Arguments:**

    - `target`: M*, symmetric V×V.
    - `W0`: the initial embeddings, V×d.
    - `t`: times (scalar or 1-D), ≥ 0.

    **Returns:** WWᵀ at each time, shape (len(t), V, V).
    """
    from scipy.linalg import solve_triangular

    M = np.asarray(target, dtype=float)
    W0 = np.asarray(W0, dtype=float)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"target: expected a square matrix, got shape {M.shape}")
    if W0.ndim != 2 or W0.shape[0] != M.shape[0]:
        raise ValueError(f"W0: expected shape ({M.shape[0]}, d) to match target, got {W0.shape}")
    times = np.atleast_1d(np.asarray(t, dtype=float))
    if np.any(~np.isfinite(times)) or np.any(times < 0):
        raise ValueError(f"t: expected finite non-negative times, got {times}")
    lam, vec = np.linalg.eigh(0.5 * (M + M.T))
    h_max = 2.0 / max(np.abs(lam).max(), 1e-300)

    def advance(y, h):
        # Φ(h) in the eigenbasis: (e^{λh} − 1)/λ, with the limit h at λ = 0.
        x = lam * h
        D = np.where(np.abs(x) < 1e-300, h, np.expm1(x) / np.where(lam == 0, 1.0, lam))
        K = np.eye(y.shape[1]) + y.T @ (D[:, None] * y)
        C = np.linalg.cholesky(0.5 * (K + K.T))
        # y ← e^{Λh/2} y C⁻ᵀ, so that (y C⁻ᵀ)(y C⁻ᵀ)ᵀ = y K⁻¹ yᵀ.
        return solve_triangular(C, (np.exp(0.5 * x)[:, None] * y).T, lower=True).T

    y = vec.T @ W0
    now, out = 0.0, {}
    for time in np.sort(np.unique(times)):
        span = time - now
        n = int(np.ceil(span / h_max)) if span > 0 else 0
        for _ in range(n):
            y = advance(y, span / n)
        now = time
        W = vec @ y
        out[time] = W @ W.T
    return np.stack([out[time] for time in times])


def qwem_final(target, d: int) -> Float[np.ndarray, "V d"]:
    """The final embeddings W* = V*[:, :d] Λ[:d]₊^{1/2} (Karkada et al. 2025, Theorem 1;
    up to a right rotation), the best PSD rank-d approximation of M* (Eckart–Young).

    **Arguments:** `target`, M* (V, V); `d`, the embedding dimension.

    **Returns:** W*, (V, d).
    """
    M = np.asarray(target, dtype=float)
    lam, vec = np.linalg.eigh(0.5 * (M + M.T))
    lam, vec = lam[::-1][:d], vec[:, ::-1][:, :d]
    return vec * np.sqrt(np.clip(lam, 0.0, None))


# Eigenvalues of M* below this fraction of the largest are rounding of zeros.
_LAMBDA_TOL = 1e-10


def predict_qwem(model: Embedding, task: AbstractCooccurrenceTask) -> Prediction:
    """The QWEM staircase (Karkada et al. 2025, Lemma 3.1 and Result 3).

    Mode k (the k-th eigenvector v_k of M*, λ_k > 0 beyond rounding, k ≤ d, with s_k²(0) below
    its loss midpoint) rises sigmoidally from s_k²(0)
    to λ_k, and its loss ⅛(λ_k − s_k²)² falls halfway at s_k² = (1 − 1/√2)λ_k, at
    t_k = (ln(λ_k/s_k²(0) − 1) − ln(1 + √2))/λ_k: the step's time, as `detect_steps` times the
    flow's drops. The half-rise times ln(λ_k/s_k²(0) − 1)/λ_k (s_k² = λ_k/2; ≈ the paper's
    τ_k = ln(λ_k/s_k²(0))/λ_k) are kept in `extra["half_rise_times"]`. Here s_k(0) = |R_kk| with W(0)ᵀV*[:, :d] = QR: exact for the
    aligned initialisation (s_k(0)² = ‖W(0)ᵀv_k‖²); from a small random one, the
    silent-alignment approximation of Result 3, in which mode k grows from the part of its
    amplitude orthogonal to the modes already learned. After step k the
    embeddings are W = [√λ_1 v_1, …, √λ_k v_k, 0, …], and the plateau loss is the task's loss
    there (⅛ Σ_{j>k} λ_j² for QWEM under Setting 3.1; for SGNS an approximation).

    **Arguments:**

    - `model`, `task`: the (model, task) convention of every predictor; the older order
      (task, model) is accepted.
    - `task`: a `QWEM` or `SGNS` task (its M* gives the modes).
    - `model`: the `Embedding` at its initialisation.

    **Returns:** a `Prediction` with method `"closed-form:qwem"`.
    """
    if isinstance(model, AbstractTask):  # the older order (task, model)
        model, task = task, model

    task.validate(model)
    W0 = np.asarray(model.W)
    d = W0.shape[1]
    lam = np.asarray(task.eigenvalues)[:d]
    vec = np.asarray(task.eigenvectors)[:, :d]
    # Each mode grows from the part of its initial amplitude W(0)ᵀv_k orthogonal to the modes
    # learned before it (those saturate their embedding directions): the QR factorisation of
    # W(0)ᵀV* behind Result 3. For an aligned init R is diagonal and s_k(0)² = ‖W(0)ᵀv_k‖².
    s0 = np.diag(np.linalg.qr(W0.T @ vec, mode="r")) ** 2
    alpha = float(model.init_scale)
    # A mode is a step where its eigenvalue is positive beyond rounding and its loss has not
    # already fallen halfway at the init (s_k²(0) < (1 − 1/√2)λ_k): the others put a "step" at
    # t = 0 that the flow never shows (a rounding eigenvalue of repeated clusters, or a weak
    # mode the init already covers).
    top = max(float(np.max(np.abs(lam), initial=0.0)), 1e-300)
    modes = [k for k in range(d) if lam[k] > _LAMBDA_TOL * top and s0[k] < LOSS_MIDPOINT * lam[k]]
    start = [min(max(s0[k], 1e-300) / lam[k], 1.0) for k in modes]  # s_k²(0)/λ_k
    half = np.array([logistic_time(y0, 0.5, lam[k]) for y0, k in zip(start, modes)])
    times = np.array([logistic_time(y0, LOSS_MIDPOINT, lam[k]) for y0, k in zip(start, modes)])
    order = np.argsort(times, kind="stable")
    learned, losses, plateaus = [], [], []
    for j in order:
        learned.append(modes[j])
        W = np.zeros_like(W0)
        for slot, k in enumerate(learned):
            W[:, slot] = np.sqrt(lam[k]) * vec[:, k]
        plateau = eqx.tree_at(lambda m: m.W, model, jnp.asarray(W))
        losses.append(float(task.loss(plateau)))
        plateaus.append(W)
    return Prediction(
        method="closed-form:qwem",
        times=times[order],
        rescaled_times=times[order] / math.log(1.0 / alpha),
        losses=np.asarray(losses),
        order=[f"mode {modes[j] + 1}" for j in order],
        initial_loss=float(task.loss(model)),
        init_scale=alpha,
        plateau_parameters=plateaus,
        extra={
            "eigenvalues": [float(lam[modes[j]]) for j in order],
            "s0_squared": [float(s0[modes[j]]) for j in order],
            "tau": [float(math.log(lam[modes[j]] / s0[modes[j]]) / lam[modes[j]]) for j in order],
            "half_rise_times": [float(half[j]) for j in order],
        },
    )
