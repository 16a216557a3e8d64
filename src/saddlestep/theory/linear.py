"""Two-layer linear networks f(x) = A W x: reduced-rank-regression plateaus and the jump-time
recursion of Conjecture 4.1 (Kunin et al., *Alternating Gradient Flows*, 2025, §4)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from ..prediction import Prediction
from ..tasks.base import check_finite
from ..tasks.regression import PopulationRegression
from ._common import log_inv, moments, whitened

_RANK_TOL = 1e-12


def _rank(s: np.ndarray) -> int:
    return int(np.sum(s > _RANK_TOL * max(1.0, s.max(initial=0.0))))


def reduced_rank_regression(task, rank: int) -> tuple[Float[np.ndarray, "out d"], float]:
    """The best map of rank ≤ `rank`: β_k = P_{U_k} Σyx Σxx⁺ with U_k the top-k eigenvectors of
    Σyx Σxx⁺ Σxy (Anderson, 1951; the AGF cost phase of a linear network).

    **Arguments:** `task` (population or sample regression); `rank` k ≥ 0.

    **Returns:** (β_k, loss ½Σ_{j>k} μ_j + L_min).
    """
    if isinstance(rank, bool) or int(rank) != rank or rank < 0:
        raise ValueError(f"rank: expected a non-negative integer, got {rank!r}")
    T, C, loss_min = whitened(task)
    u, s, vt = np.linalg.svd(T, full_matrices=False)
    k = min(int(rank), _rank(s))
    best = (u[:, :k] * s[:k]) @ vt[:k]  # best rank-k approximation of βC ≈ T
    beta = best @ np.linalg.pinv(C)
    return beta, 0.5 * float(np.sum(s[k:] ** 2)) + loss_min


def conjecture_jump_times(Sxx, Syx, num_steps: int | None = None) -> Float[np.ndarray, " k"]:
    """Rescaled jump times τ_k of Conjecture 4.1 (Kunin et al. 2025):
    Σ_{j=1..k} σ_{k−j+1}(A_{j−1}) (τ_j − τ_{j−1}) = 1, with A_j = P⊥_{U_j} Σyx the residual
    cross-covariance after j reduced-rank-regression modes. Physical times are τ_k·ln(1/‖θ(0)‖).

    When Σxx commutes with Σyx (e.g. whitened inputs) this is τ_k = 1/σ_k(Σyx).

    **Arguments:** `Sxx` (d, d), `Syx` (out, d); `num_steps` (default: the rank of the target).

    **Returns:** τ_1 < τ_2 < … (infinite where a mode never grows).
    """
    Sxx = check_finite("Sxx", Sxx, 2)
    Syx = check_finite("Syx", Syx, 2)
    task = PopulationRegression(Sxx, Syx)
    T = np.asarray(task.target)
    U, s, _ = np.linalg.svd(T, full_matrices=False)
    r = _rank(s)
    K = r if num_steps is None else min(int(num_steps), r)
    out = Syx.shape[0]
    # sig[j] = singular values of A_j, padded with zeros.
    sig = []
    for j in range(K):
        P = np.eye(out) - U[:, :j] @ U[:, :j].T
        sv = np.linalg.svd(P @ Syx, compute_uv=False)
        sig.append(np.concatenate([sv, np.zeros(K + 1)]))
    tau = np.zeros(K + 1)
    for k in range(1, K + 1):
        done = sum(sig[j - 1][k - j] * (tau[j] - tau[j - 1]) for j in range(1, k))
        rate = sig[k - 1][0]
        tau[k] = tau[k - 1] + (1.0 - done) / rate if rate > 0 else np.inf
    return tau[1:]


def linear_network(task, *, init_scale=None, num_steps: int | None = None) -> Prediction:
    """Closed-form staircase of a two-layer linear network from small init: plateaus at the
    reduced-rank-regression losses ½Σ_{j>k} μ_j + L_min, learned in order of the whitened
    target's singular modes, at the rescaled times of Conjecture 4.1 (Kunin et al. 2025).

    **Arguments:**

    - `task`: a `PopulationRegression` (or `SampleRegression`, through its sample moments).
    - `init_scale`: α, for physical times τ_k·ln(1/α) (NaN without it).
    - `num_steps`: how many steps to predict (default: the rank of the target).

    **Returns:** a `Prediction` with `method="closed-form:conjecture-4.1"`.
    """
    Sxx, Syx, loss_min = moments(task)
    tau = conjecture_jump_times(Sxx, Syx, num_steps)
    T, _, _ = whitened(task)
    s = np.linalg.svd(T, compute_uv=False)
    levels = np.array([0.5 * np.sum(s[k:] ** 2) + loss_min for k in range(len(tau) + 1)])
    L = log_inv(init_scale)
    return Prediction(
        "closed-form:conjecture-4.1",
        tau * L,
        tau,
        levels[1:],
        [f"mode {k + 1}" for k in range(len(tau))],
        initial_loss=float(levels[0]),
        init_scale=float("nan") if init_scale is None else float(init_scale),
        extra={"singular_values": s[: len(tau)].tolist(), "mu": (s[: len(tau)] ** 2).tolist()},
    )
