"""Diagonal linear networks β = u ⊙ v or β = u² − v² (Pesme & Flammarion, 2023)."""

from __future__ import annotations

from typing import ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractLinearModel, AbstractNeuronModel, check_init_scale, check_positive_int


class DiagonalLinear(AbstractLinearModel, AbstractNeuronModel):
    """Diagonal linear network f(x) = ⟨β, x⟩ with β = u ⊙ v (default) or β = u² − v².

    Initialization is deterministic: for `"uv"`, u(0) = √2·α and v(0) = 0 (the
    Pesme–Flammarion convention, so u² − v² = 2α² is conserved); for `"squares"`,
    u(0) = v(0) = α (so u·v = α² is conserved). Each coordinate (u_i, v_i) is one neuron
    of degree κ = 2.
    """

    u: Float[Array, " d"]
    v: Float[Array, " d"]
    init_scale: Float[Array, ""]
    variant: Literal["uv", "squares"] = eqx.field(static=True)
    # Sign flips depend on resolving u² − v² = 2α² against O(1) entries.
    precision_floor: ClassVar[float] = 1e-8

    def __init__(
        self,
        d: int,
        *,
        key: PRNGKeyArray | None = None,
        init_scale=1e-6,
        variant: Literal["uv", "squares"] = "uv",
    ):
        """**Arguments:**

        - `d`: input dimension.
        - `key`: unused (the init is deterministic); accepted so every model is built alike.
        - `init_scale`: α > 0.
        - `variant`: `"uv"` for β = u ⊙ v or `"squares"` for β = u² − v².
        """
        d = check_positive_int("d", d)
        if variant not in ("uv", "squares"):
            raise ValueError(f"variant: expected 'uv' or 'squares', got {variant!r}")
        del key
        self.init_scale = check_init_scale(init_scale)
        self.variant = variant
        if variant == "uv":
            self.u = jnp.full((d,), jnp.sqrt(2.0)) * self.init_scale
            self.v = jnp.zeros((d,))
        else:
            self.u = jnp.ones((d,)) * self.init_scale
            self.v = jnp.ones((d,)) * self.init_scale

    @property
    def kappa(self) -> int:
        return 2

    def beta(self) -> Float[Array, " d"]:
        return self.u * self.v if self.variant == "uv" else self.u**2 - self.v**2

    def matrix(self) -> Float[Array, "1 d"]:
        return self.beta()[None, :]

    def neurons(self):
        return {"u": self.u, "v": self.v}

    def neuron_outputs(self, neurons, x):
        u, v = neurons["u"], neurons["v"]
        coef = u * v if self.variant == "uv" else u**2 - v**2
        return (coef * x)[:, None]

    def with_neurons(self, neurons):
        return eqx.tree_at(lambda m: (m.u, m.v), self, (neurons["u"], neurons["v"]))

    def conserved(self):
        """u² − v² (variant "uv") or u·v (variant "squares"), per coordinate."""
        return self.u**2 - self.v**2 if self.variant == "uv" else self.u * self.v
