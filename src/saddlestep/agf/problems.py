"""What the AGF engine needs from a model–task pair: utilities of dormant directions, the cost
phase over active neurons, and the coordinates the directions live in.

Directions are stored in problem coordinates x = Qᵀθ̄ with Q orthogonal. For neurons whose
utility is a quadratic form (diagonal and linear networks), Q diagonalizes it, so a component
that is tiny next to the others (a not-yet-learned mode, the α² tilt of a diagonal neuron) has
an entry of its own and keeps its relative precision at any α (reference agf.md §5.1(b, c)).
"""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, PyTree

from ..models.base import AbstractNeuronModel
from ..models.diagonal import DiagonalLinear
from ..models.embedding import Embedding
from ..models.two_layer import TwoLayer
from ..tasks.regression import PopulationRegression, SampleRegression

_SNAP = 1e-9


def _flatten(neurons: PyTree) -> tuple[np.ndarray, tuple, tuple]:
    leaves, treedef = jax.tree.flatten(neurons)
    width = leaves[0].shape[0]
    shapes = tuple(tuple(leaf.shape[1:]) for leaf in leaves)
    flat = np.concatenate([np.asarray(leaf, dtype=float).reshape(width, -1) for leaf in leaves], axis=1)
    return flat, treedef, shapes


def _unflatten(flat, treedef, shapes) -> PyTree:
    width = flat.shape[0]
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[:, start : start + size].reshape((width,) + shape))
        start += size
    return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------- log-magnitudes
# Directions of quadratic-utility neurons are stored as complex logarithms z = ln|x| + iπ[x < 0]:
# a not-yet-learned mode can shrink to e^-5000 relative to the learned ones at α = 1e-100 and
# must still grow back, which plain floats (underflow below e^-745) cannot represent.


def _log(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        return np.log(np.abs(x)) + 1j * np.pi * (x < 0)


def _sign(z) -> np.ndarray:
    return np.where(np.cos(np.imag(z)) < 0, -1.0, 1.0)


def _exp(z) -> np.ndarray:
    """The float value of log-magnitudes (tiny entries underflow to 0)."""
    with np.errstate(under="ignore"):
        return _sign(z) * np.exp(np.real(z))


def _logsum(z, axis) -> np.ndarray:
    """ln Σ exp(z) along `axis` for signed log-magnitudes (exact zeros are −∞)."""
    z = np.asarray(z)
    m = np.max(np.real(z), axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(under="ignore", invalid="ignore"):
        s = np.sum(_sign(z) * np.exp(np.real(z) - m), axis=axis, keepdims=True)
    return np.squeeze(_log(s) + m, axis=axis)


def _lognorm(z, axis=-1) -> np.ndarray:
    """ln‖x‖ (real) of log-magnitudes."""
    return 0.5 * np.real(_logsum(2.0 * np.real(z), axis))


def _logmatmul(z, A) -> np.ndarray:
    """Log-magnitudes of x @ Aᵀ for rows x given as log-magnitudes."""
    return _logsum(np.asarray(z)[:, None, :] + _log(A)[None, :, :], axis=2)


class AbstractAGFProblem(eqx.Module):
    """A model–task pair seen as a sum of neurons, in the coordinates the AGF engine integrates.

    `utility` is traced (it runs inside the Diffrax solve); the other methods run in NumPy
    between phases. Parameters are (width, p) arrays of flattened neurons.
    """

    kappa: eqx.AbstractVar[int]
    loss_floor: eqx.AbstractVar[float]

    @property
    def atol(self) -> float:
        """Absolute tolerance of the utility-phase solve on the directions."""
        return 1e-12

    @property
    def rtol(self) -> float:
        """Default relative tolerance of the utility-phase solve."""
        return 1e-8

    @property
    def min_step(self) -> float:
        """Smallest step of the utility-phase solve, as a fraction of max_i c_i (0: none)."""
        return 1e-5

    @property
    def closed_form(self) -> bool:
        """True when `advance` solves a utility phase exactly (no ODE solve)."""
        return False

    def advance(self, x, S, c, dormant, rstate, horizon):
        """Closed-form utility phase: (duration, x, S, whether a neuron reached its threshold
        within `horizon`), the directions renormalized."""
        raise NotImplementedError

    @abc.abstractmethod
    def utility(self, x: Float[Array, "width p"], rstate: PyTree[Array]) -> Float[Array, " width"]:
        """U_i(x_i; r) = E⟨f_i(x; θ_i), r(x)⟩ for each row of directions `x` (problem coordinates)."""

    @abc.abstractmethod
    def initial(self) -> tuple[np.ndarray, np.ndarray]:
        """(directions x (width, p) in problem coordinates, ln‖θ_i(0)‖ (width,))."""

    @abc.abstractmethod
    def start(self, params: np.ndarray, active: np.ndarray) -> tuple[PyTree, float]:
        """(residual state for `utility`, restricted loss) given the active neurons' parameters."""

    @abc.abstractmethod
    def cost(self, params: np.ndarray, active: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Minimize the restricted loss over the active neurons from `params` (the new ones at
        norm 1). `order` ranks neurons by activation. **Returns:** (parameters, still active)."""

    @abc.abstractmethod
    def to_params(self, x: np.ndarray, rstate) -> np.ndarray:
        """Unit-norm parameters θ̄ = Q x of directions in problem coordinates."""

    @abc.abstractmethod
    def model(self, params: np.ndarray) -> AbstractNeuronModel:
        """The model with these neuron parameters."""

    @abc.abstractmethod
    def label(self, before: np.ndarray, after: np.ndarray, crossed: np.ndarray) -> str:
        """The feature learned in a step, from the parameters on the plateaus before and after."""

    def enter(self, params: np.ndarray, new: np.ndarray, active: np.ndarray, rstate) -> np.ndarray:
        """The cost phase's start: `params` holds the active neurons and the `new` ones at norm 1
        along their directions (default: enter there)."""
        return params

    def rebase(self, x: np.ndarray, old, new) -> np.ndarray:
        """Re-express directions when the utility's basis changes (default: fixed basis)."""
        return x

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        """Hook for hidden-unit symmetries (linear networks); default: nothing to absorb."""
        return x, S

    def ties(self, x, crossed, dormant) -> np.ndarray:
        """Neurons that activate with those that `crossed` (default: only those)."""
        return crossed

    def exhausted(self, x, dormant, rstate) -> bool:
        """True when no dormant neuron can ever gain utility (known only for quadratic utilities)."""
        return False


# ----------------------------------------------------------------------------- quadratic utilities
class _AbstractQuadratic(AbstractAGFProblem):
    """Neurons whose utility is a quadratic form, U_i = ½ θᵀKθ, in the eigenbasis `Q` of K (held in
    rstate with the eigenvalues `lam` (width, p)). A dormant neuron then obeys the linear ODE
    θ̇ = Kθ (κ = 2, reference agf.md §1.4), so each utility phase is solved in closed form:
    x_k(t) ∝ x_k(0) e^{λ_k t} and S(t) = S(0) + ln‖e^{Λt}x(0)‖. Directions are stored as complex
    log-magnitudes (`_log`), so no component underflows at any α.

    `symmetric`: the hidden units can be rotated into each other without changing the function
    (linear networks, tied embeddings); an activation then collects every dormant neuron's share
    of the mode it carries (`absorb`).
    """

    symmetric: eqx.AbstractClassVar[bool]

    @property
    def closed_form(self) -> bool:
        return True

    def utility(self, x, rstate):
        return 0.5 * jnp.sum(jnp.asarray(rstate["lam"]) * x**2, axis=1)

    def advance(self, x, S, c, dormant, rstate, horizon):
        lam = np.asarray(rstate["lam"])
        a = np.real(x)
        need = np.asarray(c) - np.asarray(S)
        grows = np.isfinite(a) & (lam > 0)
        can = dormant & np.any(grows, axis=1)
        tau = np.full(x.shape[0], np.inf)
        if can.any():
            aa, ll, D = a[can], lam[can], np.maximum(need[can], 0.0)
            # ½ln Σ e^{2(a_k + λ_k t)} is convex and 0 at t = 0, so it reaches D > 0 once; any
            # single term bounds it from below, which gives a start to the right of the root,
            # from where Newton's iterates decrease monotonically onto it.
            with np.errstate(invalid="ignore", divide="ignore"):
                hi = np.where(grows[can], (D[:, None] - aa) / np.where(ll > 0, ll, 1.0), np.inf)
            t = np.maximum(np.min(hi, axis=1), 0.0)
            for _ in range(200):
                e = 2.0 * (aa + ll * t[:, None])
                m = np.max(e, axis=1, keepdims=True)
                with np.errstate(under="ignore", invalid="ignore"):
                    w = np.exp(e - m)
                g = 0.5 * (np.log(np.sum(w, axis=1)) + m[:, 0])
                slope = np.sum(w * ll, axis=1) / np.sum(w, axis=1)
                step = np.where(slope > 0, (g - D) / np.where(slope > 0, slope, 1.0), 0.0)
                t_new = np.maximum(t - np.maximum(step, 0.0), 0.0)
                if np.all(np.abs(t_new - t) <= 1e-15 * np.maximum(t, 1e-300)):
                    t = t_new
                    break
                t = t_new
            tau[can] = t
        dt = float(np.min(tau, initial=np.inf))
        if not dt <= horizon:
            return horizon, x, S, False
        grown = np.where(dormant[:, None], x + lam * dt, x)
        gain = np.where(dormant, _lognorm(grown), 0.0)
        return dt, grown - gain[:, None], np.where(dormant, S + gain, S), True

    def to_params(self, x, rstate):
        return _exp(x) @ np.asarray(rstate["Q"]).T

    def rebase(self, x, old, new):
        P = np.asarray(new["Q"]).T @ np.asarray(old["Q"])
        # Overlaps that vanish in exact arithmetic (modes shared by both bases) come out
        # O(1e-16): zero them, or they would swamp components far smaller than that.
        P = np.where(np.abs(P) < _SNAP, 0.0, P)
        return _logmatmul(x, P)

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        if not self.symmetric:
            return x, S
        x, S = np.array(x), np.array(S, dtype=float)
        pool = dormant.copy()
        for i in np.flatnonzero(crossed):
            m = int(np.argmax(np.real(x[i])))
            logn = log_norm0 + S
            ln = np.minimum(logn - logn[i], 50.0)  # ln of each norm relative to neuron i's
            v = np.where(pool, ln + x[:, m], -np.inf)
            g = v - _lognorm(v, axis=0)
            # The rotated hidden unit Σ_j g_j θ_j carries all of mode m; the others keep the rest.
            combined = _logsum(g[:, None] + ln[:, None] + x, axis=0)
            pool[i] = False
            J = np.flatnonzero(pool)  # each row on its own, all at once
            z = _logsum(np.stack([ln[J, None] + x[J], g[J, None] + combined[None, :] + 1j * np.pi]), axis=0)
            z[:, m] = -np.inf
            size = _lognorm(z, axis=1)
            ok = np.isfinite(size)
            J, z, size = J[ok], z[ok], size[ok]
            x[J] = z - size[:, None]
            S[J] = size + logn[i] - log_norm0[J]
        return x, S

    def exhausted(self, x, dormant, rstate):
        lam = np.asarray(rstate["lam"])
        scale = max(np.abs(lam).max(initial=0.0), 1e-300)
        grow = (lam > 1e-10 * scale) & np.isfinite(np.real(x))
        return not np.any(grow[dormant])


class DiagonalProblem(_AbstractQuadratic):
    """Diagonal linear network on a sample: neuron i = (u_i, v_i), U_i = g_i u_i v_i (or
    g_i(u_i² − v_i²)) with g = Xᵀr/n; the cost phase is least squares on the active coordinates,
    then coordinates whose sign flipped leave (Kunin et al. 2025, diagonal-linear-network code)."""

    template: DiagonalLinear
    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    Q: Float[Array, "2 2"]
    kappa: int = eqx.field(static=True, default=2)
    loss_floor: float = eqx.field(static=True, default=-math.inf)
    labels: tuple = eqx.field(static=True, default=())
    symmetric: ClassVar[bool] = False

    def __init__(self, model: DiagonalLinear, task: SampleRegression):
        self.template = model
        self.X = jnp.asarray(task.X)
        self.y = jnp.asarray(task.Y)[:, 0]
        # u⊙v = ((u+v)² − (u−v)²)/4: the 45° basis diagonalizes the utility; u² − v² is already diagonal.
        r = 1.0 / math.sqrt(2.0)
        self.Q = jnp.asarray([[r, r], [r, -r]]) if model.variant == "uv" else jnp.eye(2)
        self.kappa = 2
        floor = task.loss_floor(model)
        self.loss_floor = -math.inf if floor is None else float(floor)
        self.labels = tuple(task.feature_labels(model))

    def _beta(self, params):
        u, v = params[:, 0], params[:, 1]
        return u * v if self.template.variant == "uv" else u**2 - v**2

    def initial(self):
        theta = np.stack([np.asarray(self.template.u), np.asarray(self.template.v)], axis=1)
        norm = np.linalg.norm(theta, axis=1)
        return _log((theta / norm[:, None]) @ np.asarray(self.Q)), np.log(norm)

    def start(self, params, active):
        X, y = np.asarray(self.X), np.asarray(self.y)
        r = y - X @ np.where(active, self._beta(params), 0.0)
        g = X.T @ r / X.shape[0]
        return {"lam": np.stack([g, -g], axis=1), "Q": np.asarray(self.Q)}, 0.5 * float(np.mean(r**2))

    def cost(self, params, active, order):
        X, y = np.asarray(self.X), np.asarray(self.y)
        ref = np.sign(self._beta(params))
        active = active.copy()
        while True:
            beta = np.zeros(X.shape[1])
            idx = np.flatnonzero(active)
            if idx.size:
                beta[idx] = np.linalg.lstsq(X[:, idx], y, rcond=None)[0]
            flipped = active & (np.sign(beta) != ref) & (ref != 0)
            if not flipped.any():
                break
            active &= ~flipped
        root = np.sqrt(np.abs(beta))
        if self.template.variant == "uv":
            out = np.stack([np.sign(beta) * root, root], axis=1)
        else:
            out = np.stack([np.where(beta > 0, root, 0.0), np.where(beta < 0, root, 0.0)], axis=1)
        return out, active

    def rebase(self, x, old, new):
        return x  # one fixed basis

    def model(self, params):
        return self.template.with_neurons({"u": jnp.asarray(params[:, 0]), "v": jnp.asarray(params[:, 1])})

    def label(self, before, after, crossed):
        return "+".join(self.labels[i] for i in np.flatnonzero(crossed))


# ----------------------------------------------------------------------------- linear-network frames
# The dormant neurons of a linear network are kept as the singular components of their block
# Θ_D = diag(e^ρ) W (rows: neurons; W orthonormal rows, ρ log-norms). Rows e^-500 apart must keep
# their relative precision, so the rotations are one-sided Jacobi on (ρ, W) (relatively accurate
# on graded rows, Demmel & Veselić 1992), re-applied every time the rows' growth spreads by e^_H
# (as in Lyapunov-exponent QR), before they turn parallel to rounding.
_H = 8.0
_ORTH_TOL = 1e-15


def _pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Round-robin rounds of disjoint pairs covering every pair of n rows once."""
    m = n + (n % 2)
    idx = list(range(m))
    rounds = []
    for _ in range(m - 1):
        r = np.array(idx[: m // 2])
        s = np.array(idx[m // 2 :][::-1])
        keep = (r < n) & (s < n)
        rounds.append((r[keep], s[keep]))
        idx = [idx[0], idx[-1]] + idx[1:-1]
    return rounds


def _orthogonalize(rho, W):
    """The hidden-unit rotation that makes the rows diag(e^ρ)W mutually orthogonal: (ρ, W) of the
    singular components, largest first. Exact zero rows (ρ = −∞) are left as they are."""
    rho = np.asarray(rho, dtype=float).copy()
    W = np.asarray(W, dtype=float).copy()
    live = np.isfinite(rho)
    out_rho, out_W = rho[~live], W[~live]
    rho, W = rho[live], W[live]
    n = rho.size
    if n:
        norm = np.linalg.norm(W, axis=1)
        rho, W = rho + np.log(norm), W / norm[:, None]
    rounds = _pairs(n)
    for _ in range(60):
        rotated = False
        for r, s in rounds:
            # Work on each pair with r the larger row, in units of it: the pair's Gram matrix is
            # [[1, e·cos], [e·cos, e²]] with e = e^{ρ_s − ρ_r} ≤ 1, so nothing overflows.
            big = rho[r] >= rho[s]
            r, s = np.where(big, r, s), np.where(big, s, r)
            cos = np.sum(W[r] * W[s], axis=1)
            go = np.abs(cos) > _ORTH_TOL
            if not go.any():
                continue
            rotated = True
            r, s, cos = r[go], s[go], cos[go]
            e = np.exp(rho[s] - rho[r])
            z = (1.0 - e**2) / (2.0 * cos)
            u = -np.where(z >= 0, 1.0, -1.0) / (np.abs(z) + np.sqrt(z**2 + e**2))  # tan θ / e
            cs = 1.0 / np.sqrt(1.0 + (e * u) ** 2)
            Wr = cs[:, None] * (W[r] - (e**2 * u)[:, None] * W[s])
            Ws = cs[:, None] * (u[:, None] * W[r] + W[s])
            for rows, new in ((r, Wr), (s, Ws)):
                norm = np.linalg.norm(new, axis=1)
                rho[rows] += np.log(norm)
                W[rows] = new / norm[:, None]
        if not rotated:
            break
    order = np.argsort(-rho, kind="stable")
    return np.concatenate([rho[order], out_rho]), np.concatenate([W[order], out_W])


def _log_top(rho, W, lam, t):
    """(ln σ₁, d ln σ₁/dt) of diag(e^ρ) W e^{Λt}."""
    top = float(np.max(rho))
    with np.errstate(under="ignore"):
        B = np.exp(rho - top)[:, None] * W * np.exp(lam * t)
    _, s, vt = np.linalg.svd(B, full_matrices=False)
    return top + math.log(s[0]), float(np.sum(lam * vt[0] ** 2))


class LinearProblem(_AbstractQuadratic):
    """Two-layer linear network f = Σ_i a_i w_iᵀx on second moments: U_i = a_iᵀ M w_i with
    M = Σyx − βΣxx, the quadratic form K = [[0, M], [Mᵀ, 0]] on θ_i = (a_i, w_i); the cost phase
    is reduced-rank regression (Kunin et al. 2025, §4).

    The hidden units can be rotated into each other without changing the function (gradient
    flow is equivariant to it), so the dormant neurons are kept as the singular components of
    their block: the top one activates when σ₁ reaches 1 and carries all of its mode, which
    leaves each other dormant neuron with only not-yet-learned modes (Conjecture 4.1).
    """

    template: TwoLayer
    task: PopulationRegression
    Sxx: Float[Array, "d d"]
    Syx: Float[Array, "out d"]
    kappa: int = eqx.field(static=True, default=2)
    loss_floor: float = eqx.field(static=True, default=-math.inf)
    symmetric: ClassVar[bool] = True

    def __init__(self, model: TwoLayer, task):
        if isinstance(task, SampleRegression):
            X, Y = np.asarray(task.X), np.asarray(task.Y)
            n = X.shape[0]
            task = PopulationRegression(X.T @ X / n, Y.T @ X / n, Y.T @ Y / n)
        self.template = model
        self.task = task
        C, T = np.asarray(task.sqrt_cov), np.asarray(task.target)
        self.Sxx = jnp.asarray(C @ C.T)
        self.Syx = jnp.asarray(T @ C.T)
        self.kappa = 2
        self.loss_floor = float(task.loss_min)

    @property
    def _out(self) -> int:
        return self.Syx.shape[0]

    @staticmethod
    def _basis(M):
        out, d = M.shape
        K = np.zeros((out + d, out + d))
        K[:out, out:] = M
        K[out:, :out] = M.T
        lam, Q = np.linalg.eigh(K)
        return lam, Q

    def _beta(self, params, active):
        a, w = params[:, : self._out], params[:, self._out :]
        return (a * active[:, None]).T @ w

    def initial(self):
        theta = np.concatenate([np.asarray(self.template.a).T, np.asarray(self.template.W)], axis=1)
        norm = np.linalg.norm(theta, axis=1)
        _, Q = self._basis(np.asarray(self.Syx))
        # Dormant neurons are the singular components of the dormant block (see `advance`).
        rho, W = _orthogonalize(np.log(norm), (theta / norm[:, None]) @ Q)
        null = rho < rho[0] - 30.0  # beyond the rank (width > a + w): exactly zero
        rho[null], W[null] = -np.inf, 0.0
        return _log(W), rho

    def advance(self, x, S, c, dormant, rstate, horizon):
        """The utility phase with the dormant neurons kept as the singular components of their
        block (a hidden-unit rotation, to which gradient flow is equivariant): the first to
        activate is the top one, when σ₁ of the block reaches 1. Growing the rows apart in one
        go would leave them parallel to rounding (all dominated by the top mode), losing the
        not-yet-learned modes that later steps grow from; so the block is re-rotated whenever
        its growth spreads by e^_H, and log-norms ρ are carried separately."""
        lam = np.asarray(rstate["lam"])[0]
        D = np.flatnonzero(dormant & np.isfinite(c))
        if not D.size:
            return horizon, x, S, False
        # σ₁ bounds every row's norm, so the rows' own first crossing bounds σ₁'s from above.
        t_ub, _, _, hit = super().advance(x, S, c, dormant & np.isfinite(c), rstate, horizon)
        if not hit:
            return horizon, x, S, False
        rho, W = np.asarray(S - c)[D], _exp(x[D])
        spread = float(lam.max() - lam.min())
        dt_max = _H / spread if spread > 0 else math.inf
        t = 0.0
        while True:
            step = min(dt_max, t_ub - t)
            last = t + step >= t_ub
            if last or _log_top(rho, W, lam, step)[0] >= 0.0:
                # ln σ₁ is convex in time (a supremum of log-sum-exps), so Newton from the
                # right of the root decreases monotonically onto it.
                tau = step
                for _ in range(100):
                    g, slope = _log_top(rho, W, lam, tau)
                    new = max(tau - g / slope, 0.0) if slope > 0 else tau
                    done = abs(new - tau) <= 1e-15 * max(tau, 1e-300)
                    tau = new
                    if done:
                        break
                with np.errstate(under="ignore"):
                    rho, W = _orthogonalize(rho, W * np.exp(lam * tau))
                rho[0] = 0.0  # σ₁ = 1: the top neuron sits exactly on its threshold
                t += tau
                break
            with np.errstate(under="ignore"):
                rho, W = _orthogonalize(rho, W * np.exp(lam * step))
            t += step
        x, S = np.array(x), np.array(S, dtype=float)
        x[D], S[D] = _log(W), rho + c[D]
        return t, x, S, True

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        # The other dormant rows are orthogonal to the top one, in mode and hidden space: it
        # already carries all of its mode, and nothing is left to collect.
        return x, S

    def start(self, params, active):
        T, C = np.asarray(self.task.target), np.asarray(self.task.sqrt_cov)
        k = int(active.sum())
        u, s, _ = np.linalg.svd(T, full_matrices=False)
        r = min(k, int(np.sum(s > 1e-12 * max(1.0, s.max(initial=0.0)))))
        # The cost phase is exact RRR, so the residual is P⊥_{U_r} Σyx (no rounding from βΣxx).
        M = np.asarray(self.Syx) - u[:, :r] @ (u[:, :r].T @ np.asarray(self.Syx))
        lam, Q = self._basis(M)
        width = params.shape[0]
        loss = 0.5 * float(np.sum(s[r:] ** 2)) + float(self.task.loss_min)
        return {"lam": np.broadcast_to(lam, (width, lam.size)).copy(), "Q": Q}, loss

    def cost(self, params, active, order):
        T, C = np.asarray(self.task.target), np.asarray(self.task.sqrt_cov)
        u, s, vt = np.linalg.svd(T, full_matrices=False)
        idx = np.flatnonzero(active)
        idx = idx[np.argsort(order[idx])]
        r = min(idx.size, int(np.sum(s > 1e-12 * max(1.0, s.max(initial=0.0)))))
        beta = (u[:, :r] * s[:r]) @ vt[:r] @ np.linalg.pinv(C)
        # A balanced factorization of β over the active neurons, in activation order.
        pb, sb, qbt = np.linalg.svd(beta, full_matrices=False)
        out = np.zeros_like(params)
        for j, i in enumerate(idx[:r]):
            out[i, : self._out] = np.sqrt(sb[j]) * pb[:, j]
            out[i, self._out :] = np.sqrt(sb[j]) * qbt[j]
        return out, active.copy()

    def model(self, params):
        out = self._out
        return self.template.with_neurons({"w": jnp.asarray(params[:, out:]), "a": jnp.asarray(params[:, :out])})

    def label(self, before, after, crossed):
        labels = self.task.feature_labels(self.template)
        if not labels:
            return "mode"
        # `PopulationRegression.mode_strengths` u_kᵀ(βC)v_k, in NumPy: no model built, no JAX.
        C, U, V = (np.asarray(a) for a in (self.task.sqrt_cov, self.task.left, self.task.right))
        out = self._out
        strength = [np.einsum("ik,ij,jk->k", U, (q[:, :out].T @ q[:, out:]) @ C, V)
                    for q in (np.asarray(before), np.asarray(after))]
        return labels[int(np.argmax(np.abs(strength[1] - strength[0])))]


# ----------------------------------------------------------------------------- general neurons
class NeuronProblem(AbstractAGFProblem):
    """Any neuron model on a sample: U_i = mean_x ⟨f_i(x; θ_i), r(x)⟩; the cost phase minimizes the
    restricted loss with BFGS (optimistix) over the active neurons, dormant ones held at zero.

    An active neuron leaves when it collapses (norm below `collapse`) or its output turns against
    what it was when the phase began (negative correlation): it becomes dormant again and keeps
    its accumulated utility.
    """

    template: AbstractNeuronModel
    task: SampleRegression
    treedef: object = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)
    kappa: int = eqx.field(static=True)
    loss_floor: float = eqx.field(static=True)
    collapse: float = eqx.field(static=True, default=1e-3)
    align: float = eqx.field(static=True, default=1e-4)

    def __init__(self, model: AbstractNeuronModel, task: SampleRegression, *, collapse: float = 1e-3, align: float = 1e-4):
        self.template = model
        self.task = task
        _, self.treedef, self.shapes = _flatten(model.neurons())
        self.kappa = int(model.kappa)
        floor = task.loss_floor(model)
        self.loss_floor = -math.inf if floor is None else float(floor)
        self.collapse = collapse
        self.align = align

    def _outputs(self, flat):
        neurons = _unflatten(flat, self.treedef, self.shapes)
        return jax.vmap(lambda xi: self.template.neuron_outputs(neurons, xi))(self.task.X)  # (n, H, out)

    def utility(self, x, rstate):
        return jnp.einsum("nho,no->h", self._outputs(x), rstate["r"]) / self.task.X.shape[0]

    def initial(self):
        flat, _, _ = _flatten(self.template.neurons())
        norm = np.linalg.norm(flat, axis=1)
        return flat / norm[:, None], np.log(norm)

    def start(self, params, active):
        r, loss = _residual(self, jnp.asarray(params), jnp.asarray(active, dtype=float))
        return {"r": r}, float(loss)

    def _merge(self, params, active):
        # Active neurons with one direction are one neuron (κ-homogeneity), and gradient flow
        # keeps them so: a cost phase that let them split would learn later features at once.
        lead = np.arange(params.shape[0])
        idx = np.flatnonzero(active)
        unit = params / np.maximum(np.linalg.norm(params, axis=1, keepdims=True), 1e-300)
        for n, i in enumerate(idx):
            for j in idx[:n]:
                if lead[j] == j and unit[i] @ unit[j] > 1 - self.align:
                    lead[i] = j
                    break
        weight = np.zeros(params.shape[0])
        np.add.at(weight, lead[idx], np.linalg.norm(params[idx], axis=1) ** self.kappa)
        merged = np.zeros_like(params)
        keep = idx[lead[idx] == idx]
        merged[keep] = unit[keep] * weight[keep, None] ** (1.0 / self.kappa)
        return merged, lead, weight

    def enter(self, params, new, active, rstate):
        # For κ > 2 a neuron entering at norm 1 overshoots (f scales as ‖θ‖^κ: loss 18 against
        # 11.9 on the modular preset), and the cost phase can then settle at a higher loss than
        # before. Enter instead at the best scale along each new direction, the others held:
        # f_i = s_i f(θ̄_i) is linear in s_i = c_i^κ, so this is least squares on the residual.
        if self.kappa == 2 or not new.any():
            return params
        idx = np.flatnonzero(new)
        unit = np.zeros_like(params)
        unit[idx] = params[idx]
        F = np.asarray(_outputs_jit(self, jnp.asarray(unit)))[:, idx, :]  # (n, k, out)
        A = np.moveaxis(F, 1, 2).reshape(-1, idx.size)
        s = np.linalg.lstsq(A, np.asarray(rstate["r"]).reshape(-1), rcond=None)[0]
        if self.kappa % 2 == 0:
            s = np.maximum(s, 0.0)  # c^κ ≥ 0
        out = params.copy()
        out[idx] = params[idx] * (np.sign(s) * np.abs(s) ** (1.0 / self.kappa))[:, None]
        return out

    def cost(self, params, active, order):
        ref = np.asarray(_outputs_jit(self, jnp.asarray(params)))
        active = active.copy()
        members = active.copy()
        share = np.linalg.norm(params, axis=1) ** self.kappa
        params, lead, weight = self._merge(params, active)
        share = np.where(members, share / np.maximum(weight[lead], 1e-300), 0.0)
        active = active & (lead == np.arange(params.shape[0]))
        entry = active.copy()
        for _ in range(params.shape[0] + 1):
            out = np.asarray(_minimize(self, jnp.asarray(params), jnp.asarray(active, dtype=float)))
            out = out * active[:, None]
            now = np.asarray(_outputs_jit(self, jnp.asarray(out)))
            corr = np.einsum("nho,nho->h", now, ref)
            # For odd κ, θ → −θ flips the output, so a sign change is no deactivation; and κ > 2
            # neurons enter poorly aligned (directions barely turn during a plateau), so the
            # optimum's output may well be anti-correlated with the entering one.
            flipped = (corr < 0) if self.kappa % 2 == 0 else np.zeros_like(active)
            gone = active & ((np.linalg.norm(out, axis=1) < self.collapse) | flipped)
            if not gone.any():
                break
            active &= ~gone
        if self.kappa > 2:
            # The entry (`enter`) is no worse than the plateau before it; a phase that ends above
            # it (a neuron dropped) is refused: all stay, minimized from the entry, or the entry.
            mask = jnp.asarray(entry, dtype=float)
            bar = float(_residual(self, jnp.asarray(params), mask)[1])
            if float(_residual(self, jnp.asarray(out), jnp.asarray(active, dtype=float))[1]) > bar * (1 + 1e-6):
                out = np.asarray(_minimize(self, jnp.asarray(params), mask)) * entry[:, None]
                if float(_residual(self, jnp.asarray(out), mask)[1]) > bar:
                    out = params * entry[:, None]
                active = entry
        # Each merged neuron's solution back to its members, in their shares of f (κ-homogeneity).
        still = members & active[lead]
        return out[lead] * (share ** (1.0 / self.kappa))[:, None] * still[:, None], still

    def to_params(self, x, rstate):
        return np.asarray(x)

    def ties(self, x, crossed, dormant):
        # Dormant neurons pointing where a crossing one points grew at the same rate since they
        # aligned, so in rescaled time they cross together: in gradient flow they join the same
        # drop (two neurons with one direction are one neuron, by homogeneity).
        x = np.asarray(x)
        cos = x[dormant] @ x[crossed].T
        out = crossed.copy()
        out[np.flatnonzero(dormant)[np.any(cos > 1 - self.align, axis=1)]] = True
        return out

    def model(self, params):
        return self.template.with_neurons(_unflatten(jnp.asarray(params), self.treedef, self.shapes))

    def label(self, before, after, crossed):
        # The task feature that grows most across the step (as `detect_steps` labels a drop).
        labels = self.task.feature_labels(self.template)
        f0 = self.task.observables(self.model(before)).get("features")
        f1 = self.task.observables(self.model(after)).get("features")
        if labels and f0 is not None:
            change = np.abs(np.asarray(f1) - np.asarray(f0))
            if change.max() > 0:
                return labels[int(np.argmax(change))]
        return "+".join(f"neuron {i}" for i in np.flatnonzero(crossed))


class EmbeddingProblem(_AbstractQuadratic):
    """Tied embeddings f(x) = WWᵀx on a sample: neuron k is column w_k, U_k = w_kᵀ sym(XᵀR/n) w_k
    is quadratic (K = (XᵀR + RᵀX)/n), and W → WO leaves the function unchanged, so the linear
    network's closed-form phases and absorption apply (Karkada et al. 2025 in AGF's view). The
    cost phase is the general BFGS one of `NeuronProblem`."""

    general: NeuronProblem
    kappa: int = eqx.field(static=True, default=2)
    loss_floor: float = eqx.field(static=True, default=-math.inf)
    symmetric: ClassVar[bool] = True

    def __init__(self, model: Embedding, task: SampleRegression):
        self.general = NeuronProblem(model, task)
        self.kappa = 2
        self.loss_floor = self.general.loss_floor

    def initial(self):
        flat, log_norm = self.general.initial()
        rstate, _ = self.start(np.zeros_like(flat), np.zeros(flat.shape[0], bool))
        return _log(flat @ rstate["Q"]), log_norm

    def start(self, params, active):
        r, loss = _residual(self.general, jnp.asarray(params), jnp.asarray(active, dtype=float))
        X, R = np.asarray(self.general.task.X), np.asarray(r)
        K = (X.T @ R + R.T @ X) / X.shape[0]
        lam, Q = np.linalg.eigh(0.5 * (K + K.T))
        return {"lam": np.broadcast_to(lam, (params.shape[0], lam.size)).copy(), "Q": Q}, float(loss)

    def cost(self, params, active, order):
        return self.general.cost(params, active, order)

    def model(self, params):
        return self.general.model(params)

    def label(self, before, after, crossed):
        return self.general.label(before, after, crossed)


@eqx.filter_jit
def _outputs_jit(problem: NeuronProblem, flat):
    return problem._outputs(flat)


@eqx.filter_jit
def _residual(problem: NeuronProblem, params, mask):
    f = jnp.sum(problem._outputs(params * mask[:, None]), axis=1)
    r = problem.task.Y - f
    return r, 0.5 * jnp.mean(jnp.sum(r**2, axis=-1))


@eqx.filter_jit
def _minimize(problem: NeuronProblem, params, mask):
    def loss(p, m):
        f = jnp.sum(problem._outputs(p * m[:, None]), axis=1)
        return 0.5 * jnp.mean(jnp.sum((problem.task.Y - f) ** 2, axis=-1))

    sol = optx.minimise(
        loss, optx.BFGS(rtol=1e-12, atol=1e-14), params * mask[:, None], args=mask,
        max_steps=20_000, throw=False,
    )
    return sol.value


def make_problem(model, task) -> AbstractAGFProblem:
    """The AGF view of a model–task pair, or a `ValueError` naming what does not fit.

    **Arguments:** `model`, a neuron-view model at its initialization; `task`, its task.

    **Returns:** the `AbstractAGFProblem` the engine runs (diagonal, linear, embedding or general).
    """
    if not isinstance(model, AbstractNeuronModel):
        raise ValueError(
            f"model: AGF needs a model with a neuron view (an AbstractNeuronModel such as "
            f"TwoLayer or DiagonalLinear), got {type(model).__name__}"
        )
    if np.ndim(np.asarray(model.init_scale)) != 0:
        raise ValueError("model: expected one model, got a batch (predict each member separately)")
    kappa = model.kappa
    if kappa is None or kappa < 2:
        raise ValueError(
            f"model: AGF needs neurons homogeneous of degree κ ≥ 2, got κ = {kappa} "
            f"({getattr(model, 'activation', type(model).__name__)})"
        )
    task.validate(model)
    if isinstance(model, TwoLayer) and model.activation == "linear" and model.b is None:
        if isinstance(task, (PopulationRegression, SampleRegression)):
            return LinearProblem(model, task)
    if isinstance(task, PopulationRegression):
        raise ValueError(
            "task: a population (covariance) task gives AGF utilities only for linear two-layer "
            "networks; use a SampleRegression for this model"
        )
    if not isinstance(task, SampleRegression):
        raise ValueError(f"task: AGF supports regression tasks, got {type(task).__name__}")
    if isinstance(model, Embedding):
        return EmbeddingProblem(model, task)
    if isinstance(model, DiagonalLinear):
        if task.dims[1] != 1:
            raise ValueError("task: a diagonal network needs one output (y a vector)")
        return DiagonalProblem(model, task)
    return NeuronProblem(model, task)
