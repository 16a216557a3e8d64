"""Two-layer networks f(x) = Σ_i a_i σ(w_iᵀx + b_i), viewed as a sum of neurons."""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractNeuronModel, check_init_scale, check_positive_int

Activation = Literal["relu", "quadratic", "linear", "tanh"]

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "quadratic": jnp.square,
    "linear": lambda z: z,
    "tanh": jnp.tanh,
}
# Degree of homogeneity of the neuron a·σ(wᵀx + b) in (w, b, a); tanh is not homogeneous.
_KAPPA = {"relu": 2, "quadratic": 3, "linear": 2, "tanh": None}


class TwoLayer(AbstractNeuronModel):
    """Two-layer network f(x) = Σ_i a_i σ(w_iᵀx + b_i).

    First-layer entries are N(0, α²/d) and second-layer entries N(0, α²/out), so every neuron
    θ_i = (w_i, b_i, a_i) starts with norm ≈ √2·α (the AGF convention, Kunin et al. 2025).
    Biases, when present, start at 0.
    """

    W: Float[Array, "width d"]
    a: Float[Array, "out width"]
    b: Float[Array, " width"] | None
    init_scale: Float[Array, ""]
    activation: Activation = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        width: int,
        out: int = 1,
        activation: Activation = "relu",
        *,
        bias: bool = False,
        key: PRNGKeyArray,
        init_scale=1e-6,
    ):
        """**Arguments:**

        - `d`: input dimension.
        - `width`: number of hidden neurons.
        - `out`: output dimension.
        - `activation`: `"relu"`, `"quadratic"`, `"linear"` or `"tanh"`.
        - `bias`: whether the hidden layer has a bias.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        """
        d = check_positive_int("d", d)
        width = check_positive_int("width", width)
        out = check_positive_int("out", out)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.init_scale = check_init_scale(init_scale)
        self.activation = activation
        k1, k2 = jax.random.split(key)
        self.W = self.init_scale * jax.random.normal(k1, (width, d)) / jnp.sqrt(d)
        self.a = self.init_scale * jax.random.normal(k2, (out, width)) / jnp.sqrt(out)
        self.b = jnp.zeros((width,)) if bias else None

    @property
    def kappa(self) -> int | None:
        return _KAPPA[self.activation]

    @property
    def width(self) -> int:
        return self.W.shape[-2]

    def neurons(self):
        n = {"w": self.W, "a": self.a.T}
        if self.b is not None:
            n["b"] = self.b
        return n

    def neuron_outputs(self, neurons, x):
        pre = neurons["w"] @ x
        if "b" in neurons:
            pre = pre + neurons["b"]
        return _ACTIVATIONS[self.activation](pre)[:, None] * neurons["a"]

    def with_neurons(self, neurons):
        new = eqx.tree_at(lambda m: (m.W, m.a), self, (neurons["w"], neurons["a"].T))
        if self.b is not None:
            new = eqx.tree_at(lambda m: m.b, new, neurons["b"])
        return new

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        pre = self.W @ x if self.b is None else self.W @ x + self.b
        return self.a @ _ACTIVATIONS[self.activation](pre)

    def matrix(self) -> Float[Array, "out d"]:
        """The end-to-end map β = A W; defined only for linear, bias-free networks."""
        if self.activation != "linear" or self.b is not None:
            raise ValueError(
                "model: a population (covariance) task needs a linear map; "
                f"this two-layer network has activation {self.activation!r}"
                + (" and a bias" if self.b is not None else "")
            )
        return self.a @ self.W

    def conserved(self):
        """Per neuron ‖a_i‖² − ‖w_i‖² − b_i² (conserved for relu, linear; and aᵀa − WWᵀ for linear)."""
        per_neuron = jnp.sum(self.a**2, axis=0) - jnp.sum(self.W**2, axis=1)
        if self.b is not None:
            per_neuron = per_neuron - self.b**2
        if self.activation == "linear" and self.b is None:
            return self.a.T @ self.a - self.W @ self.W.T
        if self.activation == "quadratic":
            # a·(wᵀx)² is 1-homogeneous in a and 2-homogeneous in w: 2‖a_i‖² − ‖w_i‖² is conserved.
            return per_neuron + jnp.sum(self.a**2, axis=0)
        return per_neuron
