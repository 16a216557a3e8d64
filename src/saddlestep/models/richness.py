"""Bias-free ReLU networks in the μP parameterization with richness γ (Atanasov, Meterez, Simon &
Pehlevan, "The optimization landscape of SGD across the feature learning strength", ICLR 2025)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractModel, check_init_scale, check_positive_int


def _forward(layers, x):
    # Hidden layers carry 1/√fan_in and the readout 1/fan_in (the μP readout), as in the
    # paper's code (StdLinear, FinalLinear).
    for w in layers[:-1]:
        x = jax.nn.relu(w @ x / jnp.sqrt(w.shape[1]))
    return layers[-1] @ x / layers[-1].shape[1]


class RichReLU(AbstractModel):
    """f(x) = h_θ(x)/γ, or (h_θ(x) − h_{θ₀}(x))/γ when centred, with h a bias-free μP ReLU MLP
    whose weights start N(0, α²) (α = 1 is the paper's standard initialization).

    h is L-homogeneous, so h_θ/γ = h_φ with φ = γ^{−1/L}θ: large γ is small initialization, and
    gradient flow in θ at time t is gradient flow in φ at time γ^{−2/L}t. With the paper's
    learning rate η = N·η₀·γ^{2/L} (N: the readout's fan-in), its step count times η₀ is
    τ = t/(N γ^{2/L}) (`rescaled_time`); in τ the plateau lasts ∝ ln γ (L = 2) or γ^{1−2/L}
    (L ≥ 3), and curves for different γ collapse after a shift.

    γ and the frozen initial copy are arrays (so a sweep over γ compiles once) read through
    `stop_gradient`, so gradient flow leaves them where they are.
    """

    layers: tuple[Float[Array, "..."], ...]
    initial: tuple[Float[Array, "..."], ...] | None
    gamma: Float[Array, ""]
    init_scale: Float[Array, ""]

    def __init__(
        self,
        dims: Sequence[int],
        *,
        key: PRNGKeyArray,
        gamma=1.0,
        centred: bool = False,
        init_scale=1.0,
    ):
        """**Arguments:**

        - `dims`: (d_0, d_1, …, d_L): input, hidden widths, output; depth L ≥ 2.
        - `key`: a JAX PRNG key.
        - `gamma`: the richness γ > 0 (the output is divided by it).
        - `centred`: subtract the network at initialization, so f ≡ 0 at t = 0.
        - `init_scale`: α > 0, the standard deviation of every weight.
        """
        dims = [check_positive_int(f"dims[{i}]", d) for i, d in enumerate(dims)]
        if len(dims) < 3:
            raise ValueError(
                f"dims: expected at least 3 widths (input, hidden…, output; depth ≥ 2), got {dims}"
            )
        if not isinstance(centred, bool):
            raise ValueError(f"centred: expected True or False, got {centred!r}")
        self.init_scale = check_init_scale(init_scale)
        try:
            self.gamma = check_init_scale(gamma)
        except ValueError:
            raise ValueError(f"gamma: expected a positive finite number, got {gamma!r}") from None
        keys = jax.random.split(key, len(dims) - 1)
        self.layers = tuple(
            self.init_scale * jax.random.normal(k, (d_out, d_in))
            for k, d_in, d_out in zip(keys, dims[:-1], dims[1:])
        )
        self.initial = tuple(self.layers) if centred else None

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def width(self) -> int:
        """N, the readout's fan-in (the paper's learning rate is N·η₀·γ^{2/L})."""
        return self.layers[-1].shape[-1]

    @property
    def centred(self) -> bool:
        return self.initial is not None

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        out = _forward(self.layers, x)
        if self.initial is not None:
            out = out - _forward(jax.lax.stop_gradient(self.initial), x)
        return out / jax.lax.stop_gradient(self.gamma)

    def rescaled_time(self, t):
        """τ = t/(N γ^{2/L}): gradient-flow time t in units of the paper's η₀ × steps."""
        return t / (self.width * jax.lax.stop_gradient(self.gamma) ** (2.0 / self.depth))

    def conserved(self):
        """Per hidden unit: ‖incoming row‖² − ‖outgoing column‖² of the raw weights (the layer
        multipliers are constants, so the rescaling symmetry, and Du, Hu & Lee's law, are those
        of the raw weights)."""
        return tuple(
            jnp.sum(cur**2, axis=1) - jnp.sum(nxt**2, axis=0)
            for cur, nxt in zip(self.layers[:-1], self.layers[1:])
        )
