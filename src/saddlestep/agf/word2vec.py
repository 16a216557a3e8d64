"""AGF for tied embeddings f(x) = WWᵀx on a sample (`models.embedding.Embedding`)."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from . import _numerics as nx, _quadratic as quad
from ..models.word2vec import Embedding
from ..tasks.regression import SampleRegression
from .neuron import NeuronProblem, _residual
from .problem import AbstractAGFProblem, register, require_sample


class EmbeddingProblem(AbstractAGFProblem):
    """Tied embeddings f(x) = WWᵀx on a sample: neuron k is column w_k, U_k = w_kᵀ sym(XᵀR/n) w_k
    is quadratic (K = (XᵀR + RᵀX)/n), and W → WO leaves the function unchanged, so the linear
    network's closed-form phases and absorption apply (Karkada et al. 2025 in AGF's view). The
    cost phase is the general BFGS one of `NeuronProblem`."""

    general: NeuronProblem
    kappa: int = eqx.field(static=True, default=2)
    loss_floor: float = eqx.field(static=True, default=-math.inf)
    atol: ClassVar[float] = 1e-12
    rtol: ClassVar[float] = 1e-8
    min_step: ClassVar[float] = 1e-5

    def __init__(self, model: Embedding, task: SampleRegression):
        self.general = NeuronProblem(model, task)
        self.kappa = 2
        self.loss_floor = self.general.loss_floor

    def initial(self):
        flat, log_norm = self.general.initial()
        rstate, _ = self.start(np.zeros_like(flat), np.zeros(flat.shape[0], bool))
        return nx.log(flat @ rstate.Q), log_norm

    def start(self, params, active):
        r, loss = _residual(self.general, jnp.asarray(params), jnp.asarray(active, dtype=float))
        X, R = np.asarray(self.general.task.X), np.asarray(r)
        K = (X.T @ R + R.T @ X) / X.shape[0]
        lam, Q = np.linalg.eigh(0.5 * (K + K.T))
        return quad.QuadraticState(np.broadcast_to(lam, (params.shape[0], lam.size)).copy(), Q), float(loss)

    def cost(self, params, active, order):
        return self.general.cost(params, active, order)

    def utility(self, x, rstate):
        return quad.utility(x, rstate)

    def growth_rate(self, x, rstate):
        return quad.growth_rate(rstate)

    def advance(self, x, S, c, dormant, rstate, horizon):
        return quad.advance(x, S, c, dormant, rstate, horizon)

    def enter(self, params, new, active, rstate):
        return params

    def to_params(self, x, rstate):
        return quad.to_params(x, rstate)

    def rebase(self, x, old, new):
        return quad.rebase(x, old, new)

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        # W → WO leaves the function unchanged: a crossing neuron collects its mode.
        return quad.absorb_symmetric(x, S, log_norm0, crossed, dormant)

    def ties(self, x, crossed, dormant):
        return crossed

    def exhausted(self, x, dormant, rstate):
        return quad.exhausted(x, dormant, rstate)

    def model(self, params):
        return self.general.model(params)

    def label(self, before, after, crossed):
        return self.general.label(before, after, crossed)



def _embedding(model, task):
    require_sample(task)
    return EmbeddingProblem(model, task)


register(Embedding, _embedding)
