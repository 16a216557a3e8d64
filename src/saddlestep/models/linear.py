"""Deep linear networks f(x) = W_L ⋯ W_1 x (Saxe, McClelland & Ganguli, 2014)."""

from __future__ import annotations

from collections.abc import Sequence

from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractLinearModel, check_init_scale, layer_stack


class DeepLinear(AbstractLinearModel):
    """Deep linear network f(x) = W_L ⋯ W_1 x.

    Entries of W_l are drawn i.i.d. N(0, α²/d_{l-1}), so every row of every layer has norm ≈ α.
    """

    layers: tuple[Float[Array, "..."], ...]
    init_scale: Float[Array, ""]

    def __init__(self, dims: Sequence[int], *, key: PRNGKeyArray, init_scale=1e-6):
        """**Arguments:**

        - `dims`: layer widths (d_0, d_1, …, d_L): input, hidden widths, output; depth L ≥ 2.
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

    def matrix(self) -> Float[Array, "out d"]:
        out = self.layers[0]
        for w in self.layers[1:]:
            out = w @ out
        return out

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        for w in self.layers:
            x = w @ x
        return x

    def conserved(self):
        """W_{l+1}ᵀ W_{l+1} − W_l W_lᵀ for each pair of adjacent layers (Arora et al., 2018)."""
        return tuple(
            nxt.T @ nxt - cur @ cur.T for cur, nxt in zip(self.layers[:-1], self.layers[1:])
        )


