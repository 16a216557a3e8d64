"""Linear and kernel encoders f(x) = W φ(x), the models of the Barlow Twins theory (Simon et al. 2023)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractLinearModel, check_init_scale, check_positive_int


class AbstractEncoder(AbstractLinearModel):
    """An encoder linear in its parameters, f(x) = W φ(x) with W ∈ R^{d×p}.

    The Barlow Twins loss of such an encoder depends on the data only through the p×p
    cross-correlation Γ of the features (Simon et al. 2023, §3): C = WΓWᵀ.
    Entries of W start i.i.d. N(0, α²/p), so each of the d output rows has norm ≈ α.
    """

    W: eqx.AbstractVar[Float[Array, "d p"]]

    def matrix(self) -> Float[Array, "d p"]:
        return self.W

    def __call__(self, x: Float[Array, " p"]) -> Float[Array, " d"]:
        return self.W @ x


def _init(key, d, p, init_scale, directions):
    if directions is None:
        return init_scale * jax.random.normal(key, (d, p)) / jnp.sqrt(p)
    D = np.asarray(directions, dtype=np.float64)
    if D.shape != (d, p):
        raise ValueError(f"directions: expected shape {(d, p)}, got {D.shape}")
    if not np.all(np.isfinite(D)):
        raise ValueError("directions: contains NaN or infinite values")
    return init_scale * jnp.asarray(D)


class LinearEncoder(AbstractEncoder):
    """The linear encoder f(x) = W x of Simon et al. (2023), W ∈ R^{d×m}."""

    W: Float[Array, "d m"]
    init_scale: Float[Array, ""]

    def __init__(self, m: int, d: int, *, key: PRNGKeyArray, init_scale=1e-6, directions=None):
        """**Arguments:**

        - `m`: the input dimension.
        - `d`: the embedding dimension.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        - `directions`: optional d×m matrix D; W(0) = α·D (aligned init). Default: random.
        """
        m = check_positive_int("m", m)
        d = check_positive_int("d", d)
        self.init_scale = check_init_scale(init_scale)
        self.W = _init(key, d, m, self.init_scale, directions)


class KernelEncoder(AbstractEncoder):
    """The kernel (infinite-width, NTK-linearised) encoder f(x) = W φ(x) of Simon et al. (2023, §4),
    written in the N-dimensional span of the training features.

    With the N×N Gram matrix K of the N = 2n training inputs (both views), the input of this
    model is the whitened kernel vector ψ(x) = K^{-1/2} k_x, k_x = (K(x_a, x))_a (see
    `saddlestep.tasks.barlow_twins.kernel_features`). The map ψ is an isometry from span(φ(x_a)) onto
    R^N, so gradient flow on W ∈ R^{d×N} is exactly the feature-space gradient flow of the
    kernel model started inside that span.
    """

    W: Float[Array, "d N"]
    init_scale: Float[Array, ""]

    def __init__(self, n_anchors: int, d: int, *, key: PRNGKeyArray, init_scale=1e-6, directions=None):
        """**Arguments:**

        - `n_anchors`: N, the number of training inputs the kernel is evaluated on (2n for n pairs).
        - `d`: the embedding dimension.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        - `directions`: optional d×N matrix D; W(0) = α·D. Default: random.
        """
        n_anchors = check_positive_int("n_anchors", n_anchors)
        d = check_positive_int("d", d)
        self.init_scale = check_init_scale(init_scale)
        self.W = _init(key, d, n_anchors, self.init_scale, directions)
