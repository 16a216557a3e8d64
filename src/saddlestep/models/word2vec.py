"""Tied word embeddings W ∈ R^{V×d}, the model of word2vec-like losses (Karkada et al. 2025)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractNeuronModel, check_init_scale, check_positive_int


class Embedding(AbstractNeuronModel):
    """A tied embedding table W ∈ R^{V×d}: row i is word i's vector w_i, and the model of the
    co-occurrence statistics is the Gram matrix WWᵀ (the context embeddings equal the word
    embeddings, W′ = W, as in Karkada et al. 2025).

    As a network it is the symmetric factorisation x ↦ WWᵀx = Σ_k w_k (w_kᵀx), a sum of d
    neurons (the columns w_k of W), each homogeneous of degree κ = 2.

    Entries of W start i.i.d. N(0, α²/d), so every word vector has norm ≈ α (the convention of
    the QWEM code); `directions` instead starts W aligned, W(0) = α·D.
    """

    W: Float[Array, "V d"]
    init_scale: Float[Array, ""]

    def __init__(
        self,
        vocab_size: int,
        d: int,
        *,
        key: PRNGKeyArray,
        init_scale=1e-6,
        directions=None,
    ):
        """**Arguments:**

        - `vocab_size`: V, the number of words.
        - `d`: the embedding dimension.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        - `directions`: optional V×d matrix D; W(0) = α·D (e.g. the top eigenvectors of M*
          for the aligned initialisation of Karkada et al., Lemma 3.1). Default: random.
        """
        vocab_size = check_positive_int("vocab_size", vocab_size)
        d = check_positive_int("d", d)
        if d > vocab_size:
            raise ValueError(f"d: expected an embedding dimension at most vocab_size = {vocab_size}, got {d}")
        self.init_scale = check_init_scale(init_scale)
        if directions is None:
            self.W = self.init_scale * jax.random.normal(key, (vocab_size, d)) / jnp.sqrt(d)
        else:
            D = np.asarray(directions, dtype=np.float64)
            if D.shape != (vocab_size, d):
                raise ValueError(f"directions: expected shape {(vocab_size, d)}, got {D.shape}")
            if not np.all(np.isfinite(D)):
                raise ValueError("directions: contains NaN or infinite values")
            self.W = self.init_scale * jnp.asarray(D)

    @property
    def vocab_size(self) -> int:
        return self.W.shape[-2]

    @property
    def d(self) -> int:
        return self.W.shape[-1]

    def gram(self) -> Float[Array, "V V"]:
        """WWᵀ, the model's estimate of the target M*."""
        return self.W @ self.W.T

    def sv2(self) -> Float[Array, " d"]:
        """The squared singular values of W, descending (the eigenvalues of WᵀW)."""
        return jnp.linalg.eigvalsh(self.W.T @ self.W)[::-1]

    @property
    def kappa(self) -> int:
        return 2

    def neurons(self) -> Float[Array, "d V"]:
        return self.W.T

    def neuron_outputs(self, neurons, x):
        return neurons * (neurons @ x)[:, None]

    def with_neurons(self, neurons) -> Embedding:
        return eqx.tree_at(lambda m: m.W, self, neurons.T)

    def __call__(self, x: Float[Array, " V"]) -> Float[Array, " V"]:
        return self.W @ (self.W.T @ x)

    def conserved(self):
        """Nothing is conserved beyond the symmetry W → WO; the Gram matrix WᵀW is not."""
        return {}
