"""Two-layer quadratic network on pairs of inputs, f(a, b) = Σ_i w_i (⟨u_i, x_a⟩ + ⟨v_i, x_b⟩)²."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractNeuronModel, check_init_scale, check_positive_int


class QuadraticNetwork(AbstractNeuronModel):
    """The quadratic network of modular addition (Kunin et al. 2025, §2.4 of the AGF reference):

    f(x_a, x_b) = Σ_i w_i (⟨u_i, x_a⟩ + ⟨v_i, x_b⟩)²,   u_i, v_i ∈ R^p, w_i ∈ R^out.

    The input is the concatenation (x_a, x_b) ∈ R^{2p}. A neuron θ_i = (u_i, v_i, w_i) is
    homogeneous of degree κ = 3. As in the paper's code, u, v ~ N(0, α²/2p) and w ~ N(0, α²/out),
    so ‖θ_i(0)‖ ≈ √2·α.
    """

    U: Float[Array, "width p"]
    V: Float[Array, "width p"]
    W: Float[Array, "width out"]
    init_scale: Float[Array, ""]

    def __init__(self, p: int, width: int, out: int | None = None, *, key: PRNGKeyArray, init_scale=1e-2):
        """**Arguments:**

        - `p`: length of each of the two inputs.
        - `width`: number of neurons.
        - `out`: output dimension (default `p`, as in modular addition).
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        """
        p = check_positive_int("p", p)
        width = check_positive_int("width", width)
        out = p if out is None else check_positive_int("out", out)
        self.init_scale = check_init_scale(init_scale)
        ku, kv, kw = jax.random.split(key, 3)
        self.U = self.init_scale * jax.random.normal(ku, (width, p)) / jnp.sqrt(2 * p)
        self.V = self.init_scale * jax.random.normal(kv, (width, p)) / jnp.sqrt(2 * p)
        self.W = self.init_scale * jax.random.normal(kw, (width, out)) / jnp.sqrt(out)

    @property
    def kappa(self) -> int:
        return 3

    @property
    def width(self) -> int:
        return self.U.shape[0]

    @property
    def p(self) -> int:
        return self.U.shape[1]

    def neurons(self):
        return {"u": self.U, "v": self.V, "w": self.W}

    def neuron_outputs(self, neurons, x):
        p = neurons["u"].shape[1]
        pre = neurons["u"] @ x[:p] + neurons["v"] @ x[p:]
        return pre[:, None] ** 2 * neurons["w"]

    def neuron_factors(self):
        return ((("u", "v"), 2), (("w",), 1))

    def with_neurons(self, neurons):
        return eqx.tree_at(lambda m: (m.U, m.V, m.W), self, (neurons["u"], neurons["v"], neurons["w"]))

    def __call__(self, x: Float[Array, " 2p"]) -> Float[Array, " out"]:
        pre = self.U @ x[: self.p] + self.V @ x[self.p :]
        return self.W.T @ pre**2

    def conserved(self):
        """Per neuron ‖u_i‖² + ‖v_i‖² − 2‖w_i‖²: the neuron is 2-homogeneous in (u, v) and
        1-homogeneous in w, so Euler's identity gives d‖(u,v)‖²/dt = 4U_i = 2·d‖w‖²/dt."""
        return jnp.sum(self.U**2, axis=1) + jnp.sum(self.V**2, axis=1) - 2 * jnp.sum(self.W**2, axis=1)
