"""Bias-free deep ReLU networks f(x) = W_L relu(W_{L-1} ⋯ relu(W_1 x))."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractModel, check_init_scale, layer_stack


class DeepReLU(AbstractModel):
    """Bias-free deep ReLU network; entries of W_l are N(0, α²/d_{l-1}).

    Bias-free ReLU layers are positively 1-homogeneous, so the network is L-homogeneous in its
    parameters (Bantzis, Simon & Jacot on escape directions).
    """

    layers: tuple[Float[Array, "..."], ...]
    init_scale: Float[Array, ""]

    def __init__(self, dims: Sequence[int], *, key: PRNGKeyArray, init_scale=1e-6):
        """**Arguments:**

        - `dims`: (d_0, d_1, …, d_L): input, hidden widths, output; depth L ≥ 2.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        """
        self.init_scale = check_init_scale(init_scale)
        self.layers = layer_stack(dims, key, self.init_scale)

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def kappa(self) -> int:
        """The degree of homogeneity in the parameters, L: plateaus from scale α last ∝ α^{2−L}
        for L ≥ 3, ∝ ln(1/α) for L = 2 (Saxe et al. 2014; Bantzis, Simon & Jacot)."""
        return self.depth

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        for w in self.layers[:-1]:
            x = jax.nn.relu(w @ x)
        return self.layers[-1] @ x

    def conserved(self):
        """Per hidden unit: ‖incoming row‖² − ‖outgoing column‖² (Du, Hu & Lee, 2018)."""
        return tuple(
            jnp.sum(cur**2, axis=1) - jnp.sum(nxt**2, axis=0)
            for cur, nxt in zip(self.layers[:-1], self.layers[1:])
        )
