"""Two-layer linear networks f(x) = A W x: reduced-rank-regression plateaus and the jump-time
recursion of Conjecture 4.1 (Kunin et al., *Alternating Gradient Flows*, 2025, §4)."""

from __future__ import annotations

import math
import warnings

import numpy as np
from jaxtyping import Float

from ..prediction import Prediction
from ..tasks.base import check_finite
from ..tasks.regression import PopulationRegression
from ._common import LOSS_MIDPOINT, log_inv, logistic_time, mode_labels, moments, whitened

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


def commuting_times(W, a, Sxx, Syx) -> np.ndarray | None:
    """The loss-midpoint times of a two-layer linear network's decoupled modes from its actual
    initialization W(0) (width × d), a(0) (out × width), at finite α (Saxe et al. 2014 with the
    silent-alignment start of Karkada et al. 2025's Result 3).

    Near zero, mode k's input and output projections c± = W v_k ± aᵀu_k grow and decay at rate
    σ_k, so its strength u_k = u_kᵀ a W v_k grows as ‖c₊/2‖²e^{2σ_k t} and then follows the aligned
    logistic u̇ = 2u(σ_k − λ_k u) to σ_k/λ_k; a later mode grows from the part of c₊ orthogonal, in
    hidden space, to the modes learned before it (the QR factor R_kk). The loss ½λ_k(σ_k/λ_k − u)²
    has fallen halfway at u = (1 − 1/√2)σ_k/λ_k.

    **Arguments:** `W`, `a`: the layers at initialization; `Sxx`, `Syx`: the task's moments.

    **Returns:** the times in the order of σ_k (the order learned), or None where Σxx does not
    commute with ΣyxᵀΣyx. A network of fewer hidden units than modes learns its first `width`
    modes so, one unit each: their times only (its later steps give up a mode for another,
    `narrow_commuting_steps`).
    """
    modes = _commuting_basis(Sxx, Syx)
    if modes is None:
        return None
    sig, lam, V = modes
    first = min(np.shape(W)[0], len(sig))
    sig, lam, V = sig[:first], lam[:first], V[:, :first]
    U = (np.asarray(Syx, float) @ V) / sig
    grow = (np.asarray(W, float) @ V + np.asarray(a, float).T @ U) / 2  # hidden × modes
    r = np.abs(np.diag(np.linalg.qr(grow, mode="r")))
    start = lam * r**2 / sig  # u_k(0)/(σ_k/λ_k), continued back from the exponential phase
    return np.array([logistic_time(min(max(y, 1e-300), 1.0), LOSS_MIDPOINT, 2 * s) for y, s in zip(start, sig)])


def _escape_rate(sig_i: float, lam_i: float, r_j: float, lam_j: float) -> float:
    """Growth rate of mode j's component on a hidden unit that carries mode i (fitted, balanced:
    a² = w² = σ_i/λ_i), with residual r_j along mode j: the top eigenvalue of the linearized flow
    [[−σ_i, r_j], [r_j, −σ_i λ_j/λ_i]] (σ_i = 0: a free unit, rate r_j)."""
    b = sig_i * lam_j / lam_i if sig_i > 0 else 0.0
    return 0.5 * (-(sig_i + b) + math.sqrt((sig_i - b) ** 2 + 4.0 * r_j**2))


def narrow_commuting_steps(sig, lam, width: int, max_steps: int = 100
                           ) -> tuple[list[tuple[float, int, int | None]], bool]:
    """The steps of a two-layer linear network with fewer hidden units than decoupled modes
    (Σxx commuting with ΣyxᵀΣyx), in the small-α limit: every mode's component on every hidden
    unit grows or decays exponentially, and its size α^{−ℓ} is followed by its exponent ℓ ≤ 0 in
    rescaled time τ = t/ln(1/α), as Pesme–Flammarion follow a diagonal network's coordinates.

    A free unit takes up the first mode whose component reaches ℓ = 0 (rate σ_j: the modes are
    learned at τ = 1/σ_j while units are free). Once every unit carries a mode, the state is a
    saddle when a mode j left out fits better (σ_j²/λ_j > σ_i²/λ_i): its component on the unit
    carrying i grows at the rate μ_ij of the linearized flow there (`_escape_rate`), from the size
    it had reached, and on reaching ℓ = 0 it takes the unit: mode i is given up (a swap; the
    loss falls by ½(σ_j²/λ_j − σ_i²/λ_i)). A mode fitted on one unit has no residual, so its
    components elsewhere decay or stay. With as many units as modes this is τ_k = 1/σ_k.

    Measured against the flow (slopes dt_k/d ln(1/α), random commuting problems with 3–4 modes):
    a swap is exact (slope errors ≤ 1e-3) while one mode left out grows on the occupied units
    (on one or several), but where two modes left out grow on occupied units at once, the flow's
    swaps come 5–20% later than this bookkeeping says (the competing components interact during
    the transitions). Swaps are therefore predicted only while at most one mode grows there; from
    then on only free units learn (`competing` is then True).

    **Arguments:** `sig`, `lam`: the modes' σ_k and λ_k (`commuting_modes`); `width`: the hidden
    units; `max_steps`: the most events.

    **Returns:** (the steps as (τ, the mode learned, the mode given up or None) in time order,
    `competing`: whether a later swap was left out).
    """
    sig, lam = np.asarray(sig, float), np.asarray(lam, float)
    r, w = len(sig), int(width)
    ell = np.full((w, r), -1.0)  # exponents: mode j's component on unit h is ~ α^{−ℓ}
    carry: list[int | None] = [None] * w
    tau, steps, competing = 0.0, [], False
    for _ in range(max_steps):
        learned = {c for c in carry if c is not None}
        rate = np.zeros((w, r))
        for h in range(w):
            si, li = (sig[carry[h]], lam[carry[h]]) if carry[h] is not None else (0.0, 1.0)
            for j in range(r):
                if j != carry[h]:
                    rate[h, j] = _escape_rate(si, li, 0.0 if j in learned else sig[j], lam[j])
        grow = (rate > 1e-12) & (ell < 0)
        occupied = np.array([c is not None for c in carry])
        competing = competing or int(grow[occupied].any(axis=0).sum()) > 1
        if competing:
            grow[occupied] = False  # learning on free units goes on; no more swaps
        if not grow.any():
            break
        wait = np.where(grow, -ell / np.where(grow, rate, 1.0), np.inf)
        h, j = np.unravel_index(int(np.argmin(wait)), wait.shape)
        dt = float(wait[h, j])
        mask = np.zeros_like(ell, dtype=bool)
        for k in range(w):
            if carry[k] is not None:
                mask[k, carry[k]] = True
        ell = np.where(mask, 0.0, np.minimum(ell + rate * dt, 0.0))
        tau += dt
        given_up = carry[h]
        carry[h] = int(j)
        ell[h, j] = 0.0
        steps.append((tau, int(j), given_up))
    return steps, competing


def _best_fit_level(sig, lam, width, s, loss_min) -> float:
    """The loss with the `width` best-fitting decoupled modes learned (the reduced-rank optimum)."""
    fit = np.sort(np.asarray(sig) ** 2 / np.asarray(lam))[::-1]
    return 0.5 * float(np.sum(np.asarray(s) ** 2) - np.sum(fit[:width])) + loss_min


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


def _warn_entries(task, T, Syx, labels, levels) -> None:
    """Warn where a step's drop grows along another mode than the one its plateau learns.

    `T` is the whitened target, `levels` the plateau after each step. Step k grows along the top
    singular pair u vᵀ of the residual A_{k−1} = P⊥ Σyx (the fastest dormant direction); with Σxx
    not commuting that need not be the rank-k optimum's new mode,
    which the flow then turns to over a time that grows more slowly than ln(1/α): in the α → 0 limit
    the turn is instant, at α = 1e-6 it spans the plateau (Σxx = R(15°) diag(4, 1) R(15°)ᵀ,
    Σyx = diag(3, 2): the flow rests near 1.95 after the first drop, above the predicted 0.9995,
    and its drop reads as mode 2)."""
    U = np.linalg.svd(T, full_matrices=False)[0]
    out = Syx.shape[0]
    odd = []
    for k, name in enumerate(labels):
        P = np.eye(out) - U[:, :k] @ U[:, :k].T
        u, _, vt = np.linalg.svd(P @ Syx, full_matrices=False)
        entry = mode_labels(task, [np.outer(u[:, 0], vt[0])])[0]
        if entry != name:
            odd.append(f"step {k + 1} ({name}, plateau {levels[k]:.4g}) grows along {entry}")
    if odd:
        warnings.warn(
            "task: Σxx does not commute with the teacher, and " + "; ".join(odd) + ": the flow turns to the "
            "predicted mode only after the drop, in a time that grows more slowly than ln(1/α), so at moderate α it "
            "rests above that plateau and its drop may be read as the other mode; the predicted times and "
            "levels are the α → 0 limit, which the flow's slopes approach slowly (8% off at α = 1e-4 … 1e-8, "
            "4% at 1e-6 … 1e-12 on a random case)",
            stacklevel=3,
        )


# Relative gap (μ_k − μ_{k+1})/μ_k of the whitened target's squared singular values below which
# a non-commuting cost phase is slow: measured 3% slope error at 8.5% (μ^½ = 4.59, 4.39) and
# 30% at 9.6% (the `conjecture_jump_times` example), ≤ 1.1% on random draws without such ties.
_SLOW_GAP = 0.15


def _warn_ties(s, labels) -> None:
    """Warn where the recursion's plateaus rest on nearly tied whitened singular values: the
    rank-k cost phase then relaxes at a rate ∝ μ_k − μ_{k+1}, slowly against the plateaus, and the
    flow's later times depart from the recursion by a few percent or more at every α."""
    near = [f"{labels[k]} and {labels[k + 1] if k + 1 < len(labels) else f'mode {k + 2}'} "
            f"({s[k]:.4g}, {s[k + 1]:.4g})"
            for k in range(min(len(labels), len(s) - 1))
            if s[k + 1] > 0 and 1.0 - (s[k + 1] / s[k]) ** 2 < _SLOW_GAP]
    if near:
        warnings.warn(
            "task: Σxx does not commute with the teacher, and the whitened singular values of "
            + "; ".join(near) + " are nearly tied: the cost phase between them is slow against the plateaus "
            "(the recursion assumes it instant), so the later jump times are approximate, by a few percent "
            "(3% at a 4% tie on a random case) and more for closer ties",
            stacklevel=3,
        )


def linear_network(task, *, init_scale=None, num_steps: int | None = None, width: int | None = None) -> Prediction:
    """Closed-form staircase of a two-layer linear network from small init: plateaus at the
    reduced-rank-regression losses ½Σ_{j>k} μ_j + L_min, learned in order of the whitened
    target's singular modes, at the rescaled times of Conjecture 4.1 (Kunin et al. 2025).

    With Σxx commuting with ΣyxᵀΣyx the modes decouple and are learned in the order of σ_k at
    τ_k = 1/σ_k; a network with fewer hidden units than modes then fills its units and, where a
    mode left out fits better than one learned, swaps them (`narrow_commuting_steps`).

    **Arguments:**

    - `task`: a `PopulationRegression` (or `SampleRegression`, through its sample moments).
    - `init_scale`: α, for physical times τ_k·ln(1/α) (NaN without it).
    - `num_steps`: how many steps to predict (default: all).
    - `width`: the network's hidden units (default: as many as the target's rank).

    **Returns:** a `Prediction` with `method="closed-form:conjecture-4.1"`; `extra["given_up"]`
    names, per step, a mode the step gives up (a swap), else None.
    """
    Sxx, Syx, loss_min = moments(task)
    T, _, _ = whitened(task)
    s = np.linalg.svd(T, compute_uv=False)
    modes = _commuting_basis(Sxx, Syx)
    given_up = None
    if modes is not None:
        # Decoupled modes in the flow's order (σ): each drop is its own ½σ_k²/λ_k, and each
        # step is named by the whitened mode it learns (the task's names).
        sig, lam, V = modes
        names = mode_labels(task, [np.outer(Syx @ v, v) / l for v, l in zip(V.T, lam)])
        fit = sig**2 / lam
        events, competing = narrow_commuting_steps(sig, lam, len(sig) if width is None else width)
        # (With a unit for every mode nothing competes: what `competing` flags then is rounding.)
        if competing and width is not None and width < len(sig):
            warnings.warn(
                f"width: a network of {width} hidden unit{'' if width == 1 else 's'} on {len(sig)} decoupled modes "
                "gives up a learned mode for a "
                "better-fitting one where several compete for its units; those later swaps are not predicted "
                f"(the last plateau, the best rank-{width} fit, is {_best_fit_level(sig, lam, width, s, loss_min):.6g})",
                stacklevel=2,
            )
        events = events[:num_steps]
        tau = np.array([e[0] for e in events])
        labels = [names[e[1]] for e in events]
        given_up = [None if e[2] is None else names[e[2]] for e in events]
        mu = np.array([fit[e[1]] - (0.0 if e[2] is None else fit[e[2]]) for e in events])
        total = float(np.sum(s**2))
        levels = np.concatenate([[0.5 * total], 0.5 * (total - np.cumsum(mu))]) + loss_min
        levels = np.maximum(levels, loss_min)
        s = np.sqrt(fit[[e[1] for e in events]])
    else:
        K = num_steps if width is None else (width if num_steps is None else min(num_steps, width))
        tau = conjecture_jump_times(Sxx, Syx, K)
        labels = [f"mode {k + 1}" for k in range(len(tau))]
        mu = s[: len(tau)] ** 2
        levels = np.array([0.5 * np.sum(s[k:] ** 2) + loss_min for k in range(len(tau) + 1)])
        _warn_entries(task, T, Syx, labels, levels[1:])
        _warn_ties(s, labels)
    L = log_inv(init_scale)
    return Prediction(
        "closed-form:conjecture-4.1",
        tau * L,
        tau,
        levels[1:],
        labels,
        initial_loss=float(levels[0]),
        init_scale=float("nan") if init_scale is None else float(init_scale),
        extra={"singular_values": s[: len(tau)].tolist(), "mu": np.asarray(mu).tolist(),
               **({"given_up": given_up} if given_up and any(g is not None for g in given_up) else {})},
    )
