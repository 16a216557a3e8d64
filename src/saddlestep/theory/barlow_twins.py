"""Closed-form dynamics of Barlow Twins with a linear or kernel encoder (Simon et al. 2023).

Loss ‖WΓWᵀ − I‖², flow dW/dt = −4(WΓWᵀ − I)WΓ (plain gradient flow on the simplified loss).
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float

from ..models.barlow_twins import AbstractEncoder
from ..prediction import Prediction
from ..tasks.barlow_twins import BarlowTwins, learnable
from ..tasks.base import AbstractTask
from ._common import LOSS_MIDPOINT, logistic_time

__all__ = ["barlow_twins_aligned", "barlow_twins_final", "learnable", "predict_barlow_twins"]


def barlow_twins_aligned(gamma, c0, t) -> Float[np.ndarray, "t k"]:
    """Embedding eigenvalues of the aligned solution (Simon et al. 2023, §3):
    dc_j/dt = 8γ_j c_j(1 − c_j), so c_j(t) = 1/(1 + (1/c_j(0) − 1)e^{−8γ_j t}).

    **Arguments:**

    - `gamma`: γ_j, the eigenvalues of Γ the rows of W are aligned with.
    - `c0`: c_j(0) = γ_j s_j(0)² (negative when γ_j < 0).
    - `t`: times (scalar or 1-D).

    **Returns:** c_j(t), shape (len(t), k).
    """
    g = np.asarray(gamma, dtype=float)[None, :]
    c = np.asarray(c0, dtype=float)[None, :]
    t = np.atleast_1d(np.asarray(t, dtype=float))[:, None]
    # c0 e^{8γt}/(1 + c0(e^{8γt} − 1)): no overflow for decaying modes, exact at t = 0.
    with np.errstate(over="ignore", invalid="ignore"):
        direct = c * np.exp(8 * g * t) / (1.0 + c * np.expm1(8 * g * t))
        late = 1.0 / (1.0 + (1.0 / c - 1.0) * np.exp(-8 * g * t))
    return np.where(np.isfinite(direct), direct, late)


def barlow_twins_final(gamma, d: int) -> Float[np.ndarray, "d p"]:
    """The final encoder W* = diag(γ_1^{-1/2}, …, γ_d^{-1/2}) [v_1 … v_d]ᵀ (up to a left
    rotation): a whitened projection onto the top eigenvectors of Γ (Simon et al. 2023, §3).
    Only modes with γ_j > 0 are learned; rows for the others are zero.

    **Arguments:**

    - `gamma`: Γ, symmetric p×p.
    - `d`: the embedding dimension.

    **Returns:** W*, (d, p).
    """
    G = np.asarray(gamma, dtype=float)
    lam, vec = np.linalg.eigh(0.5 * (G + G.T))
    lam, vec = lam[::-1][:d], vec[:, ::-1][:, :d]
    scale = np.where(lam > 0, 1.0 / np.sqrt(np.where(lam > 0, lam, 1.0)), 0.0)
    W = np.zeros((d, G.shape[0]))
    W[: len(lam)] = (vec * scale).T
    return W


def predict_barlow_twins(model: AbstractEncoder, task: BarlowTwins) -> Prediction:
    """The Barlow Twins staircase (Simon et al. 2023): eigenmodes of Γ are learned one at a
    time in the order of γ_j; mode j's embedding eigenvalue c_j rises from
    c_j(0) = γ_j‖W(0)v_j‖² to 1; each step drops the loss (1 − c_j)² by one, so the plateaus are
    d, d − 1, …, max(0, d − #{γ > 0}). A step's time is when its loss crosses the middle of its
    drop, as `detect_steps` times the flow's: c_j = 1 − 1/√2, at
    t_j = (ln(1/c_j(0) − 1) − ln(1 + √2))/(8γ_j); the half-rise times (c_j = ½) are kept in
    `extra["half_rise_times"]`. Exact for an aligned initialisation; from small random init, the
    silent-alignment approximation.

    **Arguments:**

    - `model`, `task`: the (model, task) convention of every predictor; the older order
      (task, model) is accepted.
    - `task`: a `BarlowTwins` task with the simplified loss.
    - `model`: the encoder at its initialisation.

    **Returns:** a `Prediction` with method `"closed-form:barlow-twins"`.
    """
    if isinstance(model, AbstractTask):  # the older order (task, model)
        model, task = task, model

    if task.kind != "simplified":
        raise ValueError("task: the closed form holds for the simplified loss ‖C − I‖², not the original one")
    task.validate(model)
    W0 = np.asarray(model.W)
    d = W0.shape[0]
    k = min(d, task.dim)
    gam = np.asarray(task.gamma_eigenvalues)[:k]
    vec = np.asarray(task.gamma_eigenvectors)[:, :k]
    # Mode j grows from the part of W(0)v_j orthogonal (in embedding space) to the modes
    # learned before it, which saturate their directions: c_j(0) = γ_j R_jj², W(0)V = QR.
    c0 = gam * np.diag(np.linalg.qr(W0 @ vec, mode="r"))[:k] ** 2
    modes = np.flatnonzero(learnable(np.asarray(task.gamma_eigenvalues))[:k]).tolist()
    half = np.array([logistic_time(c0[j], 0.5, 8 * gam[j]) for j in modes])
    times = np.array([logistic_time(c0[j], LOSS_MIDPOINT, 8 * gam[j]) for j in modes])
    order = np.argsort(times, kind="stable")
    initial = float(task.loss(model))
    alpha = float(model.init_scale)
    return Prediction(
        method="closed-form:barlow-twins",
        times=times[order],
        rescaled_times=times[order] / math.log(1.0 / alpha),
        losses=np.asarray([float(d - (i + 1)) for i in range(len(modes))]),
        order=[f"mode {modes[j] + 1}" for j in order],
        initial_loss=initial,
        init_scale=alpha,
        extra={
            "gamma": [float(gam[modes[j]]) for j in order],
            "c0": [float(c0[modes[j]]) for j in order],
            "half_rise_times": [float(half[j]) for j in order],
        },
    )
