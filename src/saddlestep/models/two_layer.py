"""Two-layer networks f(x) = Σ_i a_i σ(w_iᵀx + b_i), viewed as a sum of neurons."""

from __future__ import annotations

from collections.abc import Callable
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

    A custom σ is any elementwise JAX function with the neuron's degree κ:
    `TwoLayer(d, width, activation=lambda z: z**3, kappa=4)`. For σ homogeneous of degree p
    (σ(cz) = cᵖσ(z), c > 0) the neuron a·σ(wᵀx) has κ = p + 1: leaky ReLU 2, z² 3, z³ 4.
    Give `kappa=None` for a σ that is not homogeneous (tanh, GELU): the flow runs, but AGF and
    the rescaled clocks that need κ do not apply.
    """

    W: Float[Array, "width d"]
    a: Float[Array, "out width"]
    b: Float[Array, " width"] | None
    init_scale: Float[Array, ""]
    activation: Activation | Callable[[Array], Array] = eqx.field(static=True)
    degree: int | None = eqx.field(static=True)

    def __init__(
        self,
        d: int,
        width: int,
        out: int = 1,
        activation: Activation | Callable[[Array], Array] = "relu",
        *,
        kappa: int | None | str = "from-name",
        bias: bool = False,
        key: PRNGKeyArray,
        init_scale=1e-6,
    ):
        """**Arguments:**

        - `d`: input dimension.
        - `width`: number of hidden neurons.
        - `out`: output dimension.
        - `activation`: `"relu"`, `"quadratic"`, `"linear"`, `"tanh"`, or an elementwise
          callable σ (then `kappa` is required).
        - `kappa`: the neuron's degree of homogeneity, 1 + σ's degree (None: not homogeneous);
          known for the named activations.
        - `bias`: whether the hidden layer has a bias.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        """
        d = check_positive_int("d", d)
        width = check_positive_int("width", width)
        out = check_positive_int("out", out)
        if callable(activation):
            if kappa == "from-name":
                raise ValueError("kappa: a custom activation needs its degree κ (1 + σ's degree; None if not homogeneous)")
            if kappa is not None and (isinstance(kappa, bool) or not isinstance(kappa, int) or kappa < 1):
                raise ValueError(f"kappa: expected a positive integer or None, got {kappa!r}")
            self.degree = kappa
        elif activation in _ACTIVATIONS:
            if kappa not in ("from-name", _KAPPA[activation]):
                raise ValueError(f"kappa: {activation!r} has κ = {_KAPPA[activation]}, got {kappa!r}")
            self.degree = _KAPPA[activation]
        else:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}"
            )
        self.init_scale = check_init_scale(init_scale)
        self.activation = activation
        k1, k2 = jax.random.split(key)
        self.W = self.init_scale * jax.random.normal(k1, (width, d)) / jnp.sqrt(d)
        self.a = self.init_scale * jax.random.normal(k2, (out, width)) / jnp.sqrt(out)
        self.b = jnp.zeros((width,)) if bias else None

    @property
    def kappa(self) -> int | None:
        return self.degree

    @property
    def activation_name(self) -> str:
        """The activation's name for labels (a custom σ's `__name__`)."""
        if isinstance(self.activation, str):
            return self.activation
        return getattr(self.activation, "__name__", type(self.activation).__name__)

    def _sigma(self, z):
        return self.activation(z) if callable(self.activation) else _ACTIVATIONS[self.activation](z)

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
        return self._sigma(pre)[:, None] * neurons["a"]

    def neuron_factors(self):
        # σ homogeneous of degree κ − 1 in its pre-activation, so in (w, b); linear in a.
        if self.degree is None or self.degree < 2:
            return None
        return (((("w", "b") if self.b is not None else ("w",)), self.degree - 1), (("a",), 1))

    def with_neurons(self, neurons):
        new = eqx.tree_at(lambda m: (m.W, m.a), self, (neurons["w"], neurons["a"].T))
        if self.b is not None:
            new = eqx.tree_at(lambda m: m.b, new, neurons["b"])
        return new

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        pre = self.W @ x if self.b is None else self.W @ x + self.b
        return self.a @ self._sigma(pre)

    def matrix(self) -> Float[Array, "out d"]:
        """The end-to-end map β = A W; defined only for linear, bias-free networks."""
        if self.activation != "linear" or self.b is not None:
            raise ValueError(
                "model: a population (covariance) task needs a linear map; "
                f"this two-layer network has activation {self.activation_name!r}"
                + (" and a bias" if self.b is not None else "")
            )
        return self.a @ self.W

    def conserved(self):
        """Per neuron (κ − 1)‖a_i‖² − ‖w_i‖² − b_i²: conserved whenever σ is homogeneous of degree
        κ − 1 (a σ(cw) = c^{κ−1} a σ(w), so gradient flow balances the layers that way); and
        aᵀa − WWᵀ for linear networks. Empty for a non-homogeneous σ."""
        per_neuron = jnp.sum(self.a**2, axis=0) - jnp.sum(self.W**2, axis=1)
        if self.b is not None:
            per_neuron = per_neuron - self.b**2
        if self.activation == "linear" and self.b is None:
            return self.a.T @ self.a - self.W @ self.W.T
        if self.degree is None:
            return {}
        # a·σ(wᵀx) is 1-homogeneous in a and (κ−1)-homogeneous in w: (κ−1)‖a_i‖² − ‖w_i‖² is conserved.
        return per_neuron + (self.degree - 2) * jnp.sum(self.a**2, axis=0)
