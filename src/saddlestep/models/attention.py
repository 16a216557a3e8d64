"""Attention-only linear transformer with H rank-one heads, for in-context linear regression."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractNeuronModel, check_init_scale, check_positive_int


class LinearAttention(AbstractNeuronModel):
    """Linear attention with separate rank-one key/query per head (Zhang, Singh, Latham & Saxe
    2025; the AGF setting of Kunin et al. 2025, §2.3 of the AGF reference):

    ŷ_q = Σ_h v_h (Σ_n y_n x_nᵀ k_h)(x_qᵀ q_h) = x_qᵀ Γ Σ_n y_n x_n,   Γ = Σ_h v_h q_h k_hᵀ.

    The input is a context of N tokens (x_n, y_n) ∈ R^{D+1} followed by the query (x_q, 0),
    as an (N+1, D+1) array or flattened; any N works. A head θ_h = (v_h, k_h, q_h) is a neuron,
    homogeneous of degree κ = 3. Init as in the paper's code (value weights |N|): v_h = α|N(0,1)|,
    k_h, q_h ~ N(0, α²/D), so each factor has norm ≈ α and ‖θ_h(0)‖ ≈ √3·α.
    """

    v: Float[Array, " heads"]
    K: Float[Array, "heads D"]
    Q: Float[Array, "heads D"]
    init_scale: Float[Array, ""]

    def __init__(self, D: int, heads: int, *, key: PRNGKeyArray, init_scale=1e-2):
        """**Arguments:**

        - `D`: input dimension of the regression.
        - `heads`: number of heads H.
        - `key`: a JAX PRNG key.
        - `init_scale`: α > 0.
        """
        D = check_positive_int("D", D)
        heads = check_positive_int("heads", heads)
        self.init_scale = check_init_scale(init_scale)
        kv, kk, kq = jax.random.split(key, 3)
        self.v = self.init_scale * jnp.abs(jax.random.normal(kv, (heads,)))
        self.K = self.init_scale * jax.random.normal(kk, (heads, D)) / jnp.sqrt(D)
        self.Q = self.init_scale * jax.random.normal(kq, (heads, D)) / jnp.sqrt(D)

    @property
    def kappa(self) -> int:
        return 3

    @property
    def heads(self) -> int:
        return self.K.shape[0]

    @property
    def dim(self) -> int:
        return self.K.shape[1]

    def _split(self, x):
        tokens = jnp.reshape(x, (-1, self.dim + 1))
        context, query = tokens[:-1], tokens[-1, :-1]
        return context[:, -1] @ context[:, :-1], query  # s = Σ_n y_n x_n, x_q

    def neurons(self):
        return {"v": self.v, "k": self.K, "q": self.Q}

    def neuron_outputs(self, neurons, x):
        s, xq = self._split(x)
        return (neurons["v"] * (neurons["k"] @ s) * (neurons["q"] @ xq))[:, None]

    def neuron_factors(self):
        return ((("v",), 1), (("k",), 1), (("q",), 1))

    def with_neurons(self, neurons):
        return eqx.tree_at(lambda m: (m.v, m.K, m.Q), self, (neurons["v"], neurons["k"], neurons["q"]))

    def attention_matrix(self) -> Float[Array, "D D"]:
        """Γ = Σ_h v_h q_h k_hᵀ, so that ŷ_q = x_qᵀ Γ Σ_n y_n x_n."""
        return jnp.einsum("h,hi,hj->ij", self.v, self.Q, self.K)

    def __call__(self, x: Float[Array, " tokens"]) -> Float[Array, " 1"]:
        s, xq = self._split(x)
        return (xq @ self.attention_matrix() @ s)[None]

    def conserved(self):
        """Per head v_h² − ‖k_h‖² and v_h² − ‖q_h‖²: the head is 1-homogeneous in each factor."""
        v2 = self.v**2
        return {"v2_minus_k2": v2 - jnp.sum(self.K**2, axis=1), "v2_minus_q2": v2 - jnp.sum(self.Q**2, axis=1)}
