"""AGF for two-layer linear networks (`models.two_layer.TwoLayer` with a linear activation; with a
bias, on a sample), on second moments."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _numerics as nx, _quadratic as quad
from ..models.two_layer import TwoLayer
from ..tasks.regression import PopulationRegression, SampleRegression
from .problem import AbstractAGFProblem, register


class LinearProblem(AbstractAGFProblem):
    """Two-layer linear network f = Σ_i a_i w_iᵀx on second moments: U_i = a_iᵀ M w_i with
    M = Σyx − βΣxx, the quadratic form K = [[0, M], [Mᵀ, 0]] on θ_i = (a_i, w_i); the cost phase
    is gradient flow's limit from where the new neuron entered (`_fit`): reduced-rank regression
    in general position (Kunin et al. 2025, §4), the learned modes' saddle where Σxx and Σyx
    commute (there modes are learned in the order of σ(Σyx), not of σ(Σyx Σxx^{-1/2})).

    The hidden units can be rotated into each other without changing the function (gradient
    flow is equivariant to it), so the dormant neurons are kept as the singular components of
    their block: the top one activates when σ₁ reaches 1 and carries all of its mode, which
    leaves each other dormant neuron with only not-yet-learned modes (Conjecture 4.1).

    A hidden bias b is one more input weight: the network is the bias-free one with w_i' = (w_i,
    b_i) on inputs (x, 1), so a sample's moments are taken of (x, 1) (the neuron-by-neuron
    problem would treat rotation-equivalent units as separate features).
    """

    template: TwoLayer
    task: PopulationRegression
    Sxx: Float[Array, "d d"]
    Syx: Float[Array, "out d"]
    kappa: int = eqx.field(static=True, default=2)
    loss_floor: float = eqx.field(static=True, default=-math.inf)
    bias: bool = eqx.field(static=True, default=False)
    atol: ClassVar[float] = 1e-12
    rtol: ClassVar[float] = 1e-8
    min_step: ClassVar[float] = 1e-5
    shared_space: ClassVar[bool] = True

    def __init__(self, model: TwoLayer, task):
        self.bias = model.b is not None
        if self.bias and not isinstance(task, SampleRegression):
            raise ValueError("model: a linear network with a bias needs a sample (SampleRegression), not moments")
        if isinstance(task, SampleRegression):
            X, Y = np.asarray(task.X), np.asarray(task.Y)
            n = X.shape[0]
            if self.bias:
                X = np.concatenate([X, np.ones((n, 1))], axis=1)
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
        parts = [np.asarray(self.template.a).T, np.asarray(self.template.W)]
        if self.bias:
            parts.append(np.asarray(self.template.b)[:, None])
        theta = np.concatenate(parts, axis=1)
        unit, log_norm = nx.unit_rows(theta)
        _, Q = self._basis(np.asarray(self.Syx))
        # Dormant neurons are the singular components of the dormant block (see `advance`).
        rho, W = nx.orthogonalize(log_norm, unit @ Q)
        null = rho < rho[0] - 30.0  # beyond the rank (width > a + w): exactly zero
        rho[null], W[null] = -np.inf, 0.0
        return nx.log(W), rho

    def advance(self, x, S, c, dormant, rstate, horizon):
        """The utility phase with the dormant neurons kept as the singular components of their
        block (a hidden-unit rotation, to which gradient flow is equivariant): the first to
        activate is the top one, when σ₁ of the block reaches 1. Growing the rows apart in one
        go would leave them parallel to rounding (all dominated by the top mode), losing the
        not-yet-learned modes that later steps grow from; so the block is re-rotated whenever
        its growth spreads by e^H, and log-norms ρ are carried separately."""
        lam = np.asarray(rstate.lam)[0]
        D = np.flatnonzero(dormant & np.isfinite(c))
        if not D.size:
            return horizon, x, S, False
        # σ₁ bounds every row's norm, so the rows' own first crossing bounds σ₁'s from above.
        t_ub, _, _, hit = quad.advance(x, S, c, dormant & np.isfinite(c), rstate, horizon)
        if not hit:
            return horizon, x, S, False
        rho, W = np.asarray(S - c)[D], nx.exp(x[D])
        spread = float(lam.max() - lam.min())
        dt_max = nx.H / spread if spread > 0 else math.inf
        t = 0.0
        while True:
            step = min(dt_max, t_ub - t)
            last = t + step >= t_ub
            if last or nx.log_top(rho, W, lam, step)[0] >= 0.0:
                # ln σ₁ is convex in time (a supremum of log-sum-exps), so Newton from the
                # right of the root decreases monotonically onto it.
                tau = step
                for _ in range(100):
                    g, slope = nx.log_top(rho, W, lam, tau)
                    new = max(tau - g / slope, 0.0) if slope > 0 else tau
                    done = abs(new - tau) <= 1e-15 * max(tau, 1e-300)
                    tau = new
                    if done:
                        break
                with np.errstate(under="ignore"):
                    rho, W = nx.orthogonalize(rho, W * np.exp(lam * tau))
                rho[0] = 0.0  # σ₁ = 1: the top neuron sits exactly on its threshold
                t += tau
                break
            with np.errstate(under="ignore"):
                rho, W = nx.orthogonalize(rho, W * np.exp(lam * step))
            t += step
        x, S = np.array(x), np.array(S, dtype=float)
        x[D], S[D] = nx.log(W), rho + c[D]
        return t, x, S, True

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        # The other dormant rows are orthogonal to the top one, in mode and hidden space: it
        # already carries all of its mode, and nothing is left to collect.
        return x, S

    def utility(self, x, rstate):
        return quad.utility(x, rstate)

    def growth_rate(self, x, rstate):
        return quad.growth_rate(rstate)

    def to_params(self, x, rstate):
        return quad.to_params(x, rstate)

    def rebase(self, x, old, new):
        return quad.rebase(x, old, new)

    def ties(self, x, crossed, dormant):
        return crossed

    def exhausted(self, x, dormant, rstate):
        return quad.exhausted(x, dormant, rstate)

    def enter(self, params, new, active, rstate):
        # A neuron reaches its threshold aligned with one singular pair of the residual up to
        # components e^{-Δσ·t} that vanish as α → 0 (at α = 1e-10 still ~1e-3); gradient flow
        # leaves those for later saddles, so the cost phase starts from the pure pair.
        Q = np.asarray(rstate.Q)
        out = params.copy()
        for i in np.flatnonzero(new):
            coef = Q.T @ params[i]
            m = int(np.argmax(np.abs(coef)))
            out[i] = np.sign(coef[m]) * Q[:, m]
        return out

    def _whitened(self, params, active):
        """(a (k, out), z = Cᵀw (k, d)) of the active neurons."""
        C = np.asarray(self.task.sqrt_cov)
        p = params[active]
        return p[:, : self._out], p[:, self._out :] @ C

    def _fit(self, params, active):
        """The cost phase's limit in whitened coordinates B = βC: gradient flow on (a_i, z_i),
        ȧ = (T − B)z, ż = Λ(T − B)ᵀa, keeps z in the smallest subspace R that holds the z_i and
        Λ Tᵀ a_i and is invariant under Λ and Λ TᵀT (and a in T R + span a_i); within it every
        local minimum of ½‖B − T‖² over rank ≤ k is global (Eckart–Young), so B = [T R]_k Rᵀ.
        In general position R is everything (reduced-rank regression); where Σxx and Σyx
        commute it is the learned modes only, and the flow stays on their saddle.
        **Returns:** (B, k)."""
        T = np.asarray(self.task.target)
        lam = np.sum(np.asarray(self.task.sqrt_cov) ** 2, axis=0)  # CᵀC = Λ
        a, z = self._whitened(params, active)
        k = a.shape[0]
        if k == 0:
            return np.zeros_like(T), 0
        # Every candidate is scaled by its operator's norm, so rounding of an exact zero stays
        # below `_span`'s threshold instead of being normalized into a direction.
        scale = max(float(lam.max(initial=0.0)), 1e-300)
        gain = scale * max(float(np.linalg.norm(T, 2)) ** 2, 1e-300)
        norm_a = np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
        norm_z = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-300)
        seeds = np.concatenate([z / norm_z, (lam[None, :] * (a @ T)) / (norm_a * scale * max(float(np.linalg.norm(T, 2)), 1e-300))])
        R = _span(seeds.T)
        clusters = _clusters(lam, scale)
        for _ in range(lam.size + 1):
            parts = [R, lam[:, None] * (T.T @ (T @ R)) / gain]
            parts += [np.where(c[:, None], R, 0.0) for c in clusters]
            R_new = _span(np.concatenate(parts, axis=1))
            if R_new.shape[1] == R.shape[1]:
                break
            R = R_new
        u, s, vt = np.linalg.svd(T @ R, full_matrices=False)
        r = min(k, int(np.sum(s > 1e-12 * max(1.0, s.max(initial=0.0)))))
        return (u[:, :r] * s[:r]) @ vt[:r] @ R.T, k

    def start(self, params, active):
        T, C = np.asarray(self.task.target), np.asarray(self.task.sqrt_cov)
        B, _ = self._fit(params, active)
        # The residual from the cost phase's exact limit (not from βΣxx, which rounds).
        E = T - B
        lam, Q = self._basis(E @ C.T)
        width = params.shape[0]
        loss = 0.5 * float(np.sum(E**2)) + float(self.task.loss_min)
        return quad.QuadraticState(np.broadcast_to(lam, (width, lam.size)).copy(), Q), loss

    def cost(self, params, active, order):
        C = np.asarray(self.task.sqrt_cov)
        idx = np.flatnonzero(active)
        idx = idx[np.argsort(order[idx])]
        B, _ = self._fit(params, active)
        beta = B @ np.linalg.pinv(C)
        # A balanced factorization of β over the active neurons, in activation order.
        pb, sb, qbt = np.linalg.svd(beta, full_matrices=False)
        r = int(np.sum(sb > 1e-12 * max(1.0, sb.max(initial=0.0))))
        out = np.zeros_like(params)
        for j, i in enumerate(idx[:r]):
            out[i, : self._out] = np.sqrt(sb[j]) * pb[:, j]
            out[i, self._out :] = np.sqrt(sb[j]) * qbt[j]
        return out, active.copy()

    def model(self, params):
        out = self._out
        if self.bias:
            return self.template.with_neurons({"w": jnp.asarray(params[:, out:-1]), "b": jnp.asarray(params[:, -1]),
                                               "a": jnp.asarray(params[:, :out])})
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


def _span(V, tol=1e-8):
    """Orthonormal basis of the columns of V, each already scaled so that 1 is its natural size:
    directions below `tol` are rounding of exact zeros (invariant subspaces) and are dropped."""
    if V.shape[1] == 0:
        return np.zeros((V.shape[0], 0))
    U, s, _ = np.linalg.svd(V, full_matrices=False)
    return U[:, s > tol]


def _clusters(lam, scale, tol=1e-10):
    """Masks of the eigen-coordinates of Σxx with one eigenvalue (Λ-invariant subspaces)."""
    order = np.argsort(lam)
    out, start = [], 0
    for j in range(1, lam.size + 1):
        if j == lam.size or lam[order[j]] - lam[order[j - 1]] > tol * scale:
            mask = np.zeros(lam.size, bool)
            mask[order[start:j]] = True
            out.append(mask)
            start = j
    return out


def _linear(model, task):
    if model.activation == "linear" and (
        isinstance(task, SampleRegression) or (model.b is None and isinstance(task, PopulationRegression))
    ):
        return LinearProblem(model, task)
    return None  # another activation: the generic neuron problem


register(TwoLayer, _linear)
