"""In-context linear regression with anisotropic inputs, for attention-only linear transformers."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..models.base import AbstractModel, check_positive_int
from .base import AbstractTask, check_finite
from .regression import _check_psd, SampleRegression


def _gamma(model: AbstractModel) -> Float[Array, "D D"]:
    if hasattr(model, "attention_matrix"):
        return model.attention_matrix()
    raise ValueError(
        f"model: in-context regression needs a linear-attention model (one with attention_matrix()), "
        f"got {type(model).__name__}"
    )


class InContextRegression(AbstractTask):
    """In-context linear regression (Kunin et al. 2025, §2.3 of the AGF reference): a context of
    N pairs (x_n, y_n = wᵀx_n) and a query x_q, with x ~ N(0, Λ), task vector w ~ N(0, I_D);
    L = ½ E (y_q − ŷ_q)².

    **Population form** (default). A linear-attention model predicts ŷ_q = x_qᵀ Γ A w with
    A = Σ_n x_n x_nᵀ, so the expectation is exact in Γ:
    L(Γ) = ½ [tr Λ − 2N tr(ΛΓΛ) + tr(Γᵀ Λ Γ G)],   G = E[A²] = N(N+1)Λ² + N tr(Λ) Λ.
    **Large-sample form** (`samples=n`): the mean over n drawn contexts.

    Observables: `"coefficients"`, e_iᵀ Γ e_i along each principal component e_i of Λ (eigenvalues
    in decreasing order), and `"features"`, the same scaled by tr Λ + (N+1)λ_i so that it is 1
    when the component is learned (coefficient 1/(tr Λ + (N+1)λ_i)).
    """

    cov: Float[Array, "D D"]
    eigenvalues: Float[Array, " D"]
    eigenvectors: Float[Array, "D D"]
    N: int = eqx.field(static=True)
    X: Float[Array, "n tokens"] | None
    y: Float[Array, " n"] | None

    def __init__(self, cov, N: int, *, samples: int | None = None, key: PRNGKeyArray | None = None):
        """**Arguments:**

        - `cov`: the input covariance Λ, a (D, D) positive semi-definite matrix, or its
          eigenvalues (D,) for an axis-aligned Λ.
        - `N`: the context length.
        - `samples`: for the large-sample form, the number of contexts to draw (default:
          population form).
        - `key`: PRNG key for the drawn contexts (needed with `samples`).
        """
        c = check_finite("cov", cov, (1, 2))
        if c.ndim == 1:
            if np.any(c < 0):
                raise ValueError(f"cov: eigenvalues must be ≥ 0, got {c.tolist()}")
            c = np.diag(c)
        c = _check_psd("cov", c)
        c = (c + c.T) / 2
        if np.trace(c) <= 0:
            raise ValueError("cov: is zero; the inputs carry no signal")
        self.N = check_positive_int("N", N)
        lam, vec = np.linalg.eigh(c)
        lam, vec = lam[::-1], vec[:, ::-1]
        # A fixed sign per eigenvector, so that coefficients are reproducible.
        vec = vec * np.where(vec[np.argmax(np.abs(vec), axis=0), np.arange(vec.shape[1])] < 0, -1.0, 1.0)
        self.cov = jnp.asarray(c)
        self.eigenvalues = jnp.asarray(np.maximum(lam, 0.0))
        self.eigenvectors = jnp.asarray(vec)
        if samples is None:
            self.X = self.y = None
        else:
            samples = check_positive_int("samples", samples)
            if key is None:
                raise ValueError("key: a PRNG key is needed to draw the contexts (samples was given)")
            self.X, self.y = _draw(key, c, self.N, samples)

    @property
    def dim(self) -> int:
        return self.cov.shape[0]

    def _G(self):
        lam = self.cov
        return self.N * (self.N + 1) * lam @ lam + self.N * jnp.trace(lam) * lam

    def loss(self, model):
        if self.X is not None:
            pred = jax.vmap(model)(self.X)[:, 0]
            return 0.5 * jnp.mean((self.y - pred) ** 2)
        Gam, lam = _gamma(model), self.cov
        return 0.5 * (
            jnp.trace(lam) - 2 * self.N * jnp.trace(lam @ Gam @ lam) + jnp.trace(Gam.T @ lam @ Gam @ self._G())
        )

    def coefficients(self, model) -> Float[Array, " D"]:
        """e_iᵀ Γ e_i along the principal components of Λ."""
        E = self.eigenvectors
        return jnp.einsum("ik,ij,jk->k", E, _gamma(model), E)

    def observables(self, model):
        c = self.coefficients(model)
        scale = jnp.trace(self.cov) + (self.N + 1) * self.eigenvalues
        return {"features": c * scale, "coefficients": c}

    def feature_labels(self, model):
        return [f"PC {i + 1}" for i in range(self.dim)]

    def validate(self, model):
        try:
            Gam = jax.eval_shape(_gamma, model)
        except ValueError:
            raise
        if Gam.shape != (self.dim, self.dim):
            raise ValueError(
                f"model: attends over inputs of dimension {Gam.shape[0]}, but the task has D = {self.dim}"
            )

    def loss_floor(self, model):
        if self.X is not None:
            return None
        lam = np.asarray(self.eigenvalues)
        lam = lam[lam > 0]
        N, tr = self.N, float(lam.sum())
        drops = lam / (1 + (1 + tr / lam) / N)  # = Nλ²/(Nλ + λ + tr), increasing in λ
        # Rank-one heads give Γ a rank of at most H: H heads fit the H components that drop most.
        if model is not None and hasattr(model, "neuron_norms"):
            drops = np.sort(drops)[::-1][: len(model.neuron_norms())]
        return float(0.5 * (tr - np.sum(drops)))

    def as_regression(self) -> SampleRegression:
        """A `SampleRegression` whose loss equals this task's for every linear-attention model.

        In the population form this is an exact quadrature: ŷ = ⟨Γ, x_q sᵀ⟩ with s = Aw is linear
        regression on x_q ⊗ s, so 4D² one-token contexts with x_q = ±√D Λ^{1/2}e_i and
        s = ±√D G^{1/2}e_j reproduce its second moments Λ ⊗ G, targets ⟨Γ*, x_q sᵀ⟩ reproduce
        E[y x_q sᵀ] = NΛ², and two contexts with zero input carry the unexplained ½E[y²] − ….
        """
        if self.X is not None:
            return SampleRegression(np.asarray(self.X), np.asarray(self.y))
        D, N = self.dim, self.N
        lam = np.asarray(self.cov)
        G = np.asarray(self._G())
        root = lambda m: (lambda w, v: (v * np.sqrt(np.maximum(w, 0.0))) @ v.T)(*np.linalg.eigh(m))
        gam_opt = N * lam @ np.linalg.pinv(G)
        M = 4 * D * D
        rho = ((M + 2) / M) ** 0.25  # rescales the quadrature to weight M/(M + 2)
        xs = rho * np.sqrt(D) * np.concatenate([root(lam), -root(lam)], axis=1).T
        ss = rho * np.sqrt(D) * np.concatenate([root(G), -root(G)], axis=1).T
        xq = np.repeat(xs, 2 * D, axis=0)
        s = np.tile(ss, (2 * D, 1))
        y = np.einsum("ni,ij,nj->n", xq, gam_opt, s)
        ones, zeros = np.ones((M, 1)), np.zeros((M, 1))
        X = np.concatenate([s, ones, xq, zeros], axis=1)  # one context token (s, 1), then (x_q, 0)
        floor = self.loss_floor(None)
        c = np.sqrt(max(floor, 0.0) * (M + 2))
        X = np.concatenate([X, np.zeros((2, X.shape[1]))])
        y = np.concatenate([y, [c, -c]])
        return SampleRegression(X, y)


def _draw(key, cov, N, n):
    D = cov.shape[0]
    kx, kw, kq = jax.random.split(key, 3)
    w_, v_ = np.linalg.eigh(cov)
    root = (v_ * np.sqrt(np.maximum(w_, 0.0))) @ v_.T
    x = np.asarray(jax.random.normal(kx, (n, N, D))) @ root
    xq = np.asarray(jax.random.normal(kq, (n, D))) @ root
    w = np.asarray(jax.random.normal(kw, (n, D)))
    y = np.einsum("nkd,nd->nk", x, w)
    tokens = np.concatenate([x, y[..., None]], axis=-1)
    query = np.concatenate([xq, np.zeros((n, 1))], axis=-1)[:, None]
    X = np.concatenate([tokens, query], axis=1).reshape(n, -1)
    return jnp.asarray(X), jnp.asarray(np.einsum("nd,nd->n", xq, w))
