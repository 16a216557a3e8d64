"""Positive pairs for Barlow Twins, and the Barlow Twins task (Simon et al. 2023).

Pairs come from a synthetic latent model with a prescribed cross-correlation spectrum, or from
real images: scikit-learn's bundled 8×8 digits with random shifts and pixel noise. For a linear
(or kernel) encoder the loss depends on the pairs only through their symmetrised feature
cross-correlation Γ = (1/2n) Σ_i (x_i x_i′ᵀ + x_i′ x_iᵀ).
"""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import losses
from ..models.barlow_twins import AbstractEncoder
from .base import AbstractTask, check_finite


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def latent_pairs(spectrum, n: int, m: int | None = None, *, noise: float = 0.0, seed: int = 0):
    """Positive pairs from a shared latent: x = Q z + σξ, x′ = Q S z + σξ′, z ~ N(0, diag|γ|),
    S = diag(sign γ), Q ∈ R^{m×r} with orthonormal columns, ξ, ξ′ independent.

    The population cross-correlation is then exactly Γ = Q diag(γ) Qᵀ: independent view noise
    drops out, and a latent whose sign flips between the views gives a negative eigenvalue.

    **Arguments:**

    - `spectrum`: the r eigenvalues γ of Γ (any signs).
    - `n`: the number of pairs.
    - `m`: the input dimension (≥ r; default r).
    - `noise`: σ ≥ 0, the standard deviation of the independent per-view noise.
    - `seed`: seed of the numpy generator.

    **Returns:** `(xa, xb, gamma)`: the two views, (n, m) each, and the population Γ, (m, m).
    """
    gam = check_finite("spectrum", spectrum, 1)
    r = len(gam)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected a positive number of pairs, got {n!r}")
    m = r if m is None else m
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < r:
        raise ValueError(f"m: expected an input dimension ≥ len(spectrum) = {r}, got {m!r}")
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"noise: expected a non-negative number, got {noise!r}")
    rng = _rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    Q = Q[:, :r]
    z = rng.standard_normal((n, r)) * np.sqrt(np.abs(gam))
    xa = z @ Q.T + noise * rng.standard_normal((n, m))
    xb = (z * np.sign(gam)) @ Q.T + noise * rng.standard_normal((n, m))
    return xa, xb, (Q * gam) @ Q.T


def _shift(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = img[ys, xs]
    return out


def digit_pairs(n: int = 500, *, shift: int = 1, noise: float = 0.1, seed: int = 0):
    """Positive pairs from scikit-learn's bundled handwritten digits (1797 images, 8×8):
    each view is the same image shifted by a random (dy, dx) ∈ [−shift, shift]² (zero fill)
    plus Gaussian pixel noise. Pixels are scaled to [0, 1] and the mean image is subtracted,
    since the simplified loss has no centring.

    **Arguments:**

    - `n`: the number of pairs (distinct images, at most 1797).
    - `shift`: the largest shift in pixels (0: no shifts).
    - `noise`: the standard deviation of the pixel noise.
    - `seed`: seed of the numpy generator.

    **Returns:** `(xa, xb, labels)`: two views (n, 64) and the digit of each pair.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    total = len(digits.images)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
        raise ValueError(f"n: expected a number of pairs between 1 and {total}, got {n!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 0 <= shift < 8:
        raise ValueError(f"shift: expected an integer between 0 and 7 pixels, got {shift!r}")
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"noise: expected a non-negative number, got {noise!r}")
    rng = _rng(seed)
    images = digits.images / 16.0
    mean = images.mean(axis=0)
    pick = rng.choice(total, size=n, replace=False)
    views = []
    for _ in range(2):
        s = rng.integers(-shift, shift + 1, size=(n, 2))
        v = np.stack([_shift(images[i], *s[j]) for j, i in enumerate(pick)]) - mean
        views.append(v.reshape(n, -1) + noise * rng.standard_normal((n, 64)))
    return views[0], views[1], digits.target[pick]


def rbf_kernel(X, Y, bandwidth: float = 1.0) -> np.ndarray:
    """K(x, y) = exp(−‖x − y‖²/(2 bandwidth²)) for every row of X against every row of Y.

    **Arguments:** `X` (n, p), `Y` (m, p), `bandwidth` > 0.

    **Returns:** the kernel matrix (n, m).
    """
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    sq = (X**2).sum(1)[:, None] + (Y**2).sum(1)[None, :] - 2 * X @ Y.T
    return np.exp(-np.maximum(sq, 0.0) / (2 * bandwidth**2))


def kernel_features(K, K_cross=None, *, ridge: float = 1e-10):
    """Whitened kernel features ψ(x) = K^{-1/2} k_x, the inputs of a `KernelEncoder`.

    With K the N×N Gram matrix of the training inputs (for n pairs: x_1..x_n, x_1′..x_n′),
    the training inputs map to the columns of K^{1/2}, and
    Γ_ψ = (1/2n) K^{1/2} Z K^{1/2} has the nonzero eigenvalues of the feature-space Γ
    (Simon et al. 2023, §4).

    **Arguments:**

    - `K`: the N×N Gram matrix (symmetric positive semi-definite).
    - `K_cross`: optionally, k_x for new inputs, (N, q).
    - `ridge`: eigenvalues of K below ridge·max are treated as zero.

    **Returns:** ψ of the training inputs, (N, N) (row a is ψ(x_a)), or of the new inputs, (q, N).
    """
    K = check_finite("K", K, 2)
    if K.shape[0] != K.shape[1] or not np.allclose(K, K.T, atol=1e-10 * max(1.0, np.abs(K).max())):
        raise ValueError(f"K: expected a symmetric N×N Gram matrix, got shape {K.shape}")
    lam, U = np.linalg.eigh(0.5 * (K + K.T))
    keep = lam > ridge * max(lam.max(), 0.0)
    if K_cross is None:
        return (U * np.sqrt(np.where(keep, lam, 0.0))) @ U.T
    Kx = check_finite("K_cross", K_cross, 2)
    if Kx.shape[0] != K.shape[0]:
        raise ValueError(f"K_cross: expected {K.shape[0]} rows to match K, got shape {Kx.shape}")
    inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
    return ((U * inv_sqrt) @ U.T @ Kx).T


def cross_correlation_matrix(xa, xb) -> np.ndarray:
    """Γ = (1/2n) Σ_i (x_i x_i′ᵀ + x_i′ x_iᵀ), the symmetrised cross-correlation of the pairs.

    **Arguments:** `xa`, `xb`: the two views, (n, p) each.

    **Returns:** Γ, (p, p), symmetric.
    """
    g = np.asarray(xa).T @ np.asarray(xb) / len(xa)
    return 0.5 * (g + g.T)


# An eigenvalue of Γ below this fraction of the largest is zero up to rounding (a Γ of rank n from
# n pairs has its other eigenvalues at ~1e-16 of the largest): no mode grows there.
_GAMMA_TOL = 1e-10


def learnable(gamma) -> np.ndarray:
    """Which eigenvalues γ_j of Γ are modes Barlow Twins learns: positive beyond rounding."""
    gamma = np.asarray(gamma, dtype=float)
    return gamma > _GAMMA_TOL * max(float(np.max(np.abs(gamma), initial=0.0)), 1e-300)


class BarlowTwins(AbstractTask):
    """Barlow Twins on positive pairs, for an encoder linear in its parameters, f(x) = Wφ(x).

    - `loss="simplified"` (the theory case of Simon et al. 2023): L = ‖C − I‖²_F with
      C = WΓWᵀ the symmetrised, unnormalised cross-correlation; gradient flow is
      dW/dt = −4(WΓWᵀ − I)WΓ.
    - `loss="original"` (the ablation, Zbontar et al. 2021): batch-normalised embeddings,
      off-diagonal weight λ and a prefactor; needs the pairs themselves.

    Observables: `eigs_C`, the eigenvalues of C (descending), and `features`, the embedding
    eigenvalue c_j = γ_j‖Wv_j‖² along each of the top-d eigenvectors v_j of Γ (1 when learned).
    """

    gamma: Float[Array, "p p"]
    xa: Float[Array, "n p"] | None
    xb: Float[Array, "n p"] | None
    gamma_eigenvalues: Float[Array, " p"]
    gamma_eigenvectors: Float[Array, "p p"]
    off_diagonal: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    def __init__(
        self,
        xa=None,
        xb=None,
        *,
        gamma=None,
        loss: Literal["simplified", "original"] = "simplified",
        off_diagonal: float | None = None,
        scale: float | None = None,
    ):
        """**Arguments:**

        - `xa`, `xb`: the two views of n positive pairs, (n, p) each (features φ(x) for a
          kernel encoder: see `kernel_features`).
        - `gamma`: instead of pairs, the p×p cross-correlation Γ itself (population form;
          simplified loss only).
        - `loss`: `"simplified"` or `"original"`.
        - `off_diagonal`: λ of the original loss (default 0.0051, the paper's code).
        - `scale`: the prefactor of the original loss (default 1).

        The simplified loss has neither: giving `off_diagonal` or `scale` with it is an error,
        not a setting silently ignored.
        """
        if loss not in ("simplified", "original"):
            raise ValueError(f"loss: expected 'simplified' or 'original', got {loss!r}")
        for name, value in (("off_diagonal", off_diagonal), ("scale", scale)):
            if loss == "simplified" and value is not None:
                raise ValueError(f"{name}: applies to loss='original' only (the simplified loss ‖C − I‖²_F has no "
                                 f"{'off-diagonal weight' if name == 'off_diagonal' else 'prefactor'}), got {value!r}")
        off_diagonal = 0.0051 if off_diagonal is None else off_diagonal
        scale = 1.0 if scale is None else scale
        if gamma is not None:
            if xa is not None or xb is not None:
                raise ValueError("gamma: give either the pairs xa, xb or gamma, not both")
            if loss != "simplified":
                raise ValueError("loss: the original loss (batch-normalised) needs the pairs xa, xb, not gamma")
            G = check_finite("gamma", gamma, 2)
            if G.shape[0] != G.shape[1] or not np.allclose(G, G.T, atol=1e-12 * max(1.0, np.abs(G).max())):
                raise ValueError(f"gamma: expected a symmetric p×p matrix, got shape {G.shape}")
            G = 0.5 * (G + G.T)
            self.xa = self.xb = None
        else:
            if xa is None or xb is None:
                raise ValueError("xa, xb: expected the two views of the positive pairs (or gamma)")
            xa = check_finite("xa", xa, 2)
            xb = check_finite("xb", xb, 2)
            if xa.shape != xb.shape:
                raise ValueError(f"xb: expected shape {xa.shape} to match xa, got {xb.shape}")
            if loss == "original" and xa.shape[0] < 2:
                raise ValueError("xa: the original loss normalises over the batch; expected at least 2 pairs")
            G = cross_correlation_matrix(xa, xb)
            keep = loss == "original"
            self.xa = jnp.asarray(xa) if keep else None
            self.xb = jnp.asarray(xb) if keep else None
        off_diagonal, scale = float(off_diagonal), float(scale)
        if not (off_diagonal >= 0 and np.isfinite(off_diagonal)):
            raise ValueError(f"off_diagonal: expected a non-negative number, got {off_diagonal!r}")
        if not (scale > 0 and np.isfinite(scale)):
            raise ValueError(f"scale: expected a positive number, got {scale!r}")
        lam, vec = np.linalg.eigh(G)
        self.gamma = jnp.asarray(G)
        self.gamma_eigenvalues = jnp.asarray(lam[::-1].copy())
        self.gamma_eigenvectors = jnp.asarray(vec[:, ::-1].copy())
        self.off_diagonal = off_diagonal
        self.scale = scale
        self.kind = loss

    @property
    def dim(self) -> int:
        """p, the input (feature) dimension."""
        return self.gamma.shape[0]

    def correlation(self, model) -> Float[Array, "d d"]:
        """C = WΓWᵀ, the symmetrised cross-correlation of the embeddings."""
        return model.W @ self.gamma @ model.W.T

    def loss(self, model):
        if self.kind == "simplified":
            return losses.barlow_twins(self.correlation(model))
        return losses.barlow_twins_original(
            self.xa @ model.W.T, self.xb @ model.W.T, self.off_diagonal, self.scale
        )

    def observables(self, model):
        d = model.W.shape[0]
        k = min(d, self.dim)
        proj = model.W @ self.gamma_eigenvectors[:, :k]
        c = self.gamma_eigenvalues[:k] * jnp.sum(proj * proj, axis=0)
        return {"eigs_C": jnp.linalg.eigvalsh(self.correlation(model))[::-1], "features": c}

    def feature_labels(self, model):
        return [f"mode {j + 1}" for j in range(min(model.W.shape[0], self.dim))]

    def validate(self, model):
        if not isinstance(model, AbstractEncoder):
            raise ValueError(f"model: Barlow Twins needs a LinearEncoder or KernelEncoder, got {type(model).__name__}")
        if model.W.shape[1] != self.dim:
            raise ValueError(f"model: takes inputs of dimension {model.W.shape[1]}, but the pairs have dimension {self.dim}")

    def loss_floor(self, model):
        if self.kind != "simplified":
            return None
        d = model.W.shape[0]
        positive = int(np.sum(learnable(self.gamma_eigenvalues)))
        return float(max(0, d - positive))
