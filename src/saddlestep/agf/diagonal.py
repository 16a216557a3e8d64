"""AGF for diagonal linear networks on a sample (`models.diagonal.DiagonalLinear`)."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jaxtyping import Array, Float

from . import _numerics as nx, _quadratic as quad
from ..models.diagonal import DiagonalLinear
from ..tasks.regression import SampleRegression
from .problem import AbstractAGFProblem, register, require_sample


class DiagonalProblem(AbstractAGFProblem):
    """Diagonal linear network on a sample: neuron i = (u_i, v_i), U_i = g_i u_i v_i (or
    g_i(u_i² − v_i²)) with g = Xᵀr/n, a quadratic utility (closed-form phases); the cost phase is
    least squares on the active coordinates with each held to its sign (coordinates pinned at 0
    leave), which makes AGF Pesme & Flammarion's limit process (reference agf.md §1.7, §2.1)."""

    template: DiagonalLinear
    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    Q: Float[Array, "2 2"]
    kappa: int = eqx.field(static=True, default=2)
    loss_floor: float = eqx.field(static=True, default=-math.inf)
    labels: tuple = eqx.field(static=True, default=())
    atol: ClassVar[float] = 1e-12
    rtol: ClassVar[float] = 1e-8
    min_step: ClassVar[float] = 1e-5

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

    def utility(self, x, rstate):
        return quad.utility(x, rstate)

    def growth_rate(self, x, rstate):
        return quad.growth_rate(rstate)

    def advance(self, x, S, c, dormant, rstate, horizon):
        return quad.advance(x, S, c, dormant, rstate, horizon)

    def initial(self):
        theta = np.stack([np.asarray(self.template.u), np.asarray(self.template.v)], axis=1)
        unit, log_norm = nx.unit_rows(theta)
        return nx.log(unit @ np.asarray(self.Q)), log_norm

    def start(self, params, active):
        X, y = np.asarray(self.X), np.asarray(self.y)
        r = y - X @ np.where(active, self._beta(params), 0.0)
        g = X.T @ r / X.shape[0]
        # U_i = g_i u_i v_i = ½θᵀKθ has K's eigenvalues ±g_i; U_i = g_i(u_i² − v_i²) has ±2g_i.
        g = g if self.template.variant == "uv" else 2.0 * g
        return quad.QuadraticState(np.stack([g, -g], axis=1), np.asarray(self.Q)), 0.5 * float(np.mean(r**2))

    def enter(self, params, new, active, rstate):
        return params

    def cost(self, params, active, order):
        # Gradient flow on β = u ⊙ v cannot move a coordinate through 0 (u² − v² is conserved and
        # β_i = 0 is a saddle of its neuron), so the cost phase is least squares with each active
        # coordinate held to the sign it entered with: a non-negative least squares on the
        # sign-flipped columns (Pesme & Flammarion 2023, Algorithm 1). A coordinate the
        # constraint pins at 0 leaves. (Unconstrained OLS and then dropping the coordinates whose
        # sign flipped, as the AGF notebook does, differs from this on random sparse problems:
        # 13 against 18 steps, and plateau losses that rose, on seed 24 of the random family.)
        X, y = np.asarray(self.X), np.asarray(self.y)
        ref = np.sign(self._beta(params))
        active = active & (ref != 0)
        beta = np.zeros(X.shape[1])
        idx = np.flatnonzero(active)
        if idx.size:
            z = scipy.optimize.nnls(X[:, idx] * ref[idx], y, maxiter=50 * max(idx.size, 10))[0]
            beta[idx] = ref[idx] * z
        active = active & (beta != 0)
        root = np.sqrt(np.abs(beta))
        if self.template.variant == "uv":
            out = np.stack([np.sign(beta) * root, root], axis=1)
        else:
            out = np.stack([np.where(beta > 0, root, 0.0), np.where(beta < 0, root, 0.0)], axis=1)
        return out, active

    def to_params(self, x, rstate):
        return quad.to_params(x, rstate)

    def rebase(self, x, old, new):
        return x  # one fixed basis

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        return x, S  # coordinates do not rotate into each other

    def ties(self, x, crossed, dormant):
        return crossed

    def exhausted(self, x, dormant, rstate):
        return quad.exhausted(x, dormant, rstate)

    def model(self, params):
        return self.template.with_neurons({"u": jnp.asarray(params[:, 0]), "v": jnp.asarray(params[:, 1])})

    def label(self, before, after, crossed):
        return "+".join(self.labels[i] for i in np.flatnonzero(crossed))


def _diagonal(model, task):
    require_sample(task)
    if task.dims[1] != 1:
        raise ValueError("task: a diagonal network needs one output (y a vector)")
    return DiagonalProblem(model, task)


register(DiagonalLinear, _diagonal)
