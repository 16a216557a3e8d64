"""Two-layer linear networks f(x) = A W x: reduced-rank-regression plateaus and the jump-time
recursion of Conjecture 4.1 (Kunin et al., *Alternating Gradient Flows*, 2025, §4)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from ..prediction import Prediction
from ..tasks.base import check_finite
from ..tasks.regression import PopulationRegression
from ._common import log_inv, mode_labels, moments, whitened

_RANK_TOL = 1e-12


def _rank(s: np.ndarray) -> int:
    return int(np.sum(s > _RANK_TOL * max(1.0, s.max(initial=0.0))))


def commuting_modes(Sxx, Syx) -> tuple[np.ndarray, np.ndarray] | None:
    """(σ_k, λ_k) of the decoupled modes when Σxx commutes with ΣyxᵀΣyx, in the flow's order
    (decreasing σ: mode k grows at rate σ_k from small init); None when they do not commute.

    Each mode's right singular vector v_k of Σyx is an eigenvector of Σxx, λ_k = v_kᵀΣxx v_k.
    """
    modes = _commuting_basis(Sxx, Syx)
    return None if modes is None else modes[:2]


def _commuting_basis(Sxx, Syx) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """`commuting_modes` and each mode's right singular vector v_k (the columns, (d, r))."""
    Sxx, Syx = np.asarray(Sxx, float), np.asarray(Syx, float)
    G = Syx.T @ Syx
    scale = max(np.abs(Sxx).max(), 1e-300) * max(np.abs(G).max(), 1e-300)
    if np.abs(Sxx @ G - G @ Sxx).max() > 1e-10 * scale:
        return None
    # Joint eigenbasis: Σxx + c·G with a generic c separates both spectra.
    c = np.pi / max(np.abs(G).max(), 1e-300) * max(np.abs(Sxx).max(), 1e-300)
    _, V = np.linalg.eigh(Sxx + c * G)
    sig = np.linalg.norm(Syx @ V, axis=0)
    lam = np.einsum("ik,ij,jk->k", V, Sxx, V)
    keep = sig > _RANK_TOL * max(1.0, sig.max(initial=0.0))
    sig, lam, V = sig[keep], lam[keep], V[:, keep]
    order = np.argsort(-sig, kind="stable")
    return sig[order], lam[order], V[:, order]


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

    When Σxx commutes with ΣyxᵀΣyx (e.g. whitened inputs) the modes decouple and the times are
    exactly τ_k = 1/σ_k(Σyx), in decreasing σ: the flow's plateaus are then the fits of the modes
    learned so far (a saddle of the rank-k problem), not the rank-k reduced-rank optimum, which
    would learn the modes in the order of σ_k²/λ_k. The recursion below assumes (i) each plateau
    is the rank-k reduced-rank optimum, reached fast against ln(1/α), and (ii) the k-th learned
    mode grows at σ_{k−j+1} of the residual during plateau j. (i) fails at practical α when the
    cost phase has a slow direction: Σxx = diag(1, .3, .1), B = default_rng(248) 3×3 normal,
    Σyx = BΣxx has whitened singular values 0.466, 0.443 nearly tied, and the rank-2 cost phase
    relaxes at rate 0.013 (time ≈ 80 against plateaus of ≈ 35 at α = 1e-10); the flow lingers at
    0.107 (not 0.098) and its third slope is 5.75–5.88 (drifting down with α) against 4.42. No
    closed form holds there; the α → 0 value is this recursion.

    **Arguments:** `Sxx` (d, d), `Syx` (out, d); `num_steps` (default: the rank of the target).

    **Returns:** τ_1 < τ_2 < … (infinite where a mode never grows).
    """
    Sxx = check_finite("Sxx", Sxx, 2)
    Syx = check_finite("Syx", Syx, 2)
    modes = commuting_modes(Sxx, Syx)
    if modes is not None:
        sig = modes[0]
        K = len(sig) if num_steps is None else min(int(num_steps), len(sig))
        return 1.0 / sig[:K]
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
    modes = _commuting_basis(Sxx, Syx)
    labels = [f"mode {k + 1}" for k in range(len(tau))]
    if modes is not None:
        # Decoupled modes in the flow's order (σ): each drop is its own ½σ_k²/λ_k, and each
        # step is named by the whitened mode it learns (the task's names).
        sig, lam, V = (m[..., : len(tau)] for m in modes)
        labels = mode_labels(task, [np.outer(Syx @ v, v) / l for v, l in zip(V.T, lam)])
        mu = sig**2 / lam
        total = float(np.sum(s**2))
        levels = np.concatenate([[0.5 * total], 0.5 * (total - np.cumsum(mu))]) + loss_min
        levels = np.maximum(levels, loss_min)
        s = np.sqrt(mu)
    else:
        levels = np.array([0.5 * np.sum(s[k:] ** 2) + loss_min for k in range(len(tau) + 1)])
    L = log_inv(init_scale)
    return Prediction(
        "closed-form:conjecture-4.1",
        tau * L,
        tau,
        levels[1:],
        labels,
        initial_loss=float(levels[0]),
        init_scale=float("nan") if init_scale is None else float(init_scale),
        extra={"singular_values": s[: len(tau)].tolist(), "mu": (s[: len(tau)] ** 2).tolist()},
    )
