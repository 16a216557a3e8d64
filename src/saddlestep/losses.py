"""Loss functions as pure array functions: word2vec (SGNS), its quartic form (QWEM), Barlow Twins.

Models and tasks import these; this module imports nothing else from saddlestep.

Normalisation of the word2vec family. Every word2vec-like loss here is written in the
normalisation of the SGNS loss itself, so that the exact logistic loss and its quartic
approximation share one time axis: with x = w_i·w_j,

    L_sgns = Σ_ij Ψ⁺_ij P_ij log(1 + e^{−x_ij}) + k Ψ⁻_ij P_i P_j log(1 + e^{x_ij}),

and its Taylor expansion to second order in x (fourth in W) is, up to a constant,

    L_qwem = ⅛ Σ_ij G_ij (x_ij − M*_ij)²,   G = Ψ⁺P + kΨ⁻PP,   M* = 2(Ψ⁺P − kΨ⁻PP)/G.

This is ½ × the loss of Karkada et al. (2025, §2), so plain gradient flow on it,
dW/dt = ½(M* − WWᵀ)W under Setting 3.1 (G ≡ 1), runs on the paper's time axis: step times
τ_k = ln(λ_k/s_k(0)²)/λ_k are the paper's, and loss plateaus are half the paper's ¼‖WWᵀ − M*‖².
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "barlow_twins",
    "barlow_twins_original",
    "check_cooccurrence",
    "cross_correlation",
    "qwem",
    "qwem_target",
    "sgns",
]


def check_cooccurrence(P, name: str = "P") -> np.ndarray:
    """Validate a joint co-occurrence distribution: square, symmetric, non-negative, sums to 1.

    **Arguments:**

    - `P`: the V×V matrix of joint probabilities P_ij.
    - `name`: the argument name used in error messages.

    **Returns:** `P` as a float64 numpy array.
    """
    try:
        P = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a V×V matrix of numbers, got {type(P).__name__}") from None
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise ValueError(f"{name}: expected a square V×V co-occurrence matrix with V ≥ 2, got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if P.min() < 0:
        raise ValueError(f"{name}: expected a probability matrix, found a negative entry {P.min():.3g}")
    total = P.sum()
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name}: expected a probability matrix whose entries sum to 1, got sum {total:.6g}")
    if not np.allclose(P, P.T, rtol=1e-8, atol=1e-12):
        raise ValueError(f"{name}: expected a symmetric co-occurrence matrix (P_ij = P_ji)")
    if np.any(P.sum(axis=1) <= 0):
        raise ValueError(f"{name}: every word must occur (found a row of zeros)")
    return P


def qwem_target(P, psi_pos=None, psi_neg=None, negatives: float = 1.0):
    """The target M* and weights G of the quartic word2vec loss (Karkada et al. 2025, §2).

    With unigram frequencies P_i = Σ_j P_ij:

        G = Ψ⁺P + kΨ⁻P_iP_j,   M* = 2(Ψ⁺P − kΨ⁻P_iP_j)/G.

    The default reweighting Ψ± = (P + kP_iP_j)⁻¹ is Setting 3.1 (G ≡ 1, M* = 2 tanh((PMI − ln k)/2)),
    under which the loss is unweighted matrix factorisation.

    **Arguments:**

    - `P`: V×V joint co-occurrence probabilities (symmetric, non-negative, summing to 1).
    - `psi_pos`, `psi_neg`: V×V non-negative reweighting coefficients Ψ±, or None for Setting 3.1.
    - `negatives`: the negative weight k > 0.

    **Returns:** `(M_star, G)`, two V×V float64 numpy arrays.
    """
    P = check_cooccurrence(P)
    k = float(negatives)
    if not (k > 0 and np.isfinite(k)):
        raise ValueError(f"negatives: expected a positive number, got {negatives!r}")
    Pi = P.sum(axis=1)
    PP = np.outer(Pi, Pi)
    if psi_pos is None and psi_neg is None:
        # Setting 3.1: every pair weighted equally; M* computed in the stable tanh form.
        G = np.ones_like(P)
        M = (P - k * PP) / (0.5 * (P + k * PP))
        return M, G
    if psi_pos is None or psi_neg is None:
        raise ValueError("psi_pos, psi_neg: give both reweighting matrices or neither")
    out = []
    for name, psi in (("psi_pos", psi_pos), ("psi_neg", psi_neg)):
        psi = np.asarray(psi, dtype=np.float64)
        if psi.shape != P.shape:
            raise ValueError(f"{name}: expected shape {P.shape} to match P, got {psi.shape}")
        if not np.all(np.isfinite(psi)) or psi.min() < 0:
            raise ValueError(f"{name}: expected finite non-negative weights")
        out.append(psi)
    pos, neg = out[0] * P, k * out[1] * PP
    G = pos + neg
    if np.any(G <= 0):
        raise ValueError("psi_pos, psi_neg: every pair needs a positive total weight Ψ⁺P + kΨ⁻PP")
    return 2 * (pos - neg) / G, G


def sgns(
    gram: Float[Array, "V V"],
    pos_weight: Float[Array, "V V"],
    neg_weight: Float[Array, "V V"],
) -> Float[Array, ""]:
    """The skip-gram negative-sampling loss on tied embeddings (Mikolov et al. 2013).

    L = Σ_ij a_ij log(1 + e^{−x_ij}) + b_ij log(1 + e^{x_ij}) − ln 2 · Σ_ij (a_ij + b_ij),
    with x = WWᵀ, a = Ψ⁺P and b = kΨ⁻P_iP_j. The constant makes L(W = 0) = 0.

    **Arguments:**

    - `gram`: x = WWᵀ.
    - `pos_weight`: a = Ψ⁺P, the weight of each pair as a positive.
    - `neg_weight`: b = kΨ⁻P_iP_j, its weight as a negative.

    **Returns:** the scalar loss.
    """
    # softplus(−x) − ln 2 is computed without cancellation near x = 0, where plateaus sit.
    shifted = lambda z: jnp.logaddexp(0.0, z) - jnp.log(2.0)
    return jnp.sum(pos_weight * shifted(-gram) + neg_weight * shifted(gram))


def qwem(
    gram: Float[Array, "V V"],
    target: Float[Array, "V V"],
    weights: Float[Array, "V V"] | None = None,
) -> Float[Array, ""]:
    """The quartic word2vec loss (QWEM; Karkada et al. 2025, Prop. 2), in SGNS normalisation.

    L = ⅛ Σ_ij G_ij (x_ij − M*_ij)², the second-order expansion of `sgns` in x up to the
    constant ⅛ Σ G M*², which is kept so that L ≥ 0.

    **Arguments:**

    - `gram`: x = WWᵀ.
    - `target`: M*.
    - `weights`: G (None for Setting 3.1, G ≡ 1).

    **Returns:** the scalar loss.
    """
    r = gram - target
    if weights is None:
        return 0.125 * jnp.sum(r * r)
    return 0.125 * jnp.sum(weights * r * r)


def cross_correlation(
    za: Float[Array, "n d"], zb: Float[Array, "n d"]
) -> Float[Array, "d d"]:
    """Symmetrised, unnormalised cross-correlation C = (1/2n) Σ_i (z_i z_i′ᵀ + z_i′ z_iᵀ).

    **Arguments:** `za`, `zb`: embeddings of the two views, (n, d) each.

    **Returns:** C, (d, d).
    """
    c = za.T @ zb / za.shape[0]
    return 0.5 * (c + c.T)


def barlow_twins(C: Float[Array, "d d"]) -> Float[Array, ""]:
    """The simplified Barlow Twins loss ‖C − I‖²_F (Simon et al. 2023, §3).

    Barlow Twins with off-diagonal weight λ = 1, a symmetrised C and no batch normalisation:
    rotation-invariant in embedding space, hence exactly solvable.

    **Arguments:**

    - `C`: the symmetric d×d cross-correlation of the embeddings (see `cross_correlation`).

    **Returns:** the scalar loss.
    """
    return jnp.sum((C - jnp.eye(C.shape[0], dtype=C.dtype)) ** 2)


def barlow_twins_original(
    za: Float[Array, "n d"],
    zb: Float[Array, "n d"],
    off_diagonal: float = 0.0051,
    scale: float = 1.0,
    eps: float = 1e-5,
) -> Float[Array, ""]:
    """The original Barlow Twins loss (Zbontar et al. 2021): batch-normalised embeddings,
    C = z̃_aᵀ z̃_b / n, L = scale · [Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²].

    **Arguments:**

    - `za`, `zb`: the embeddings of the two views, (n, d) each.
    - `off_diagonal`: λ (0.0051 in the paper's code).
    - `scale`: an overall prefactor (0.024 in the paper's code); it rescales time.
    - `eps`: added to each variance, as batch-norm does (PyTorch's default 1e-5); at small init it,
      not the variance, sets the normalisation.

    **Returns:** the scalar loss.
    """
    norm = lambda z: (z - z.mean(axis=0)) / jnp.sqrt(z.var(axis=0) + eps)
    c = norm(za).T @ norm(zb) / za.shape[0]
    diag = jnp.diagonal(c)
    on = jnp.sum((1.0 - diag) ** 2)
    off = jnp.sum(c**2) - jnp.sum(diag**2)
    return scale * (on + off_diagonal * off)
