"""Regression tasks: teacher–student in population form, sample form, and sparse regression."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..models.base import AbstractLinearModel, AbstractModel, AbstractNeuronModel
from .base import AbstractTask, check_finite

_PSD_TOL = 1e-10


def _check_psd(name: str, m: np.ndarray) -> np.ndarray:
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {m.shape}")
    if not np.allclose(m, m.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(m).max())):
        raise ValueError(f"{name}: expected a symmetric matrix")
    eig = np.linalg.eigvalsh(m)
    if eig.min() < -_PSD_TOL * max(1.0, abs(eig.max())):
        raise ValueError(
            f"{name}: expected a positive semi-definite matrix, smallest eigenvalue {eig.min():.3g}"
        )
    return m


def _linear_map(model: AbstractModel) -> Float[Array, "out d"]:
    if isinstance(model, AbstractLinearModel) or hasattr(model, "matrix"):
        return model.matrix()
    raise ValueError(
        f"model: a population (covariance) task needs a linear model, got {type(model).__name__}"
    )


class PopulationRegression(AbstractTask):
    """Linear regression in population form, L(β) = ½ E‖y − βx‖², from second moments.

    With Σxx = Q Λ Qᵀ and C = Q Λ^{1/2}, the loss is evaluated as
    L = ½‖βC − T‖² + L_min with T = Σyx Q Λ^{-1/2} (the whitened target), which avoids the
    cancellation of the expanded form near the optimum. The features are the singular modes
    of T; for whitened inputs T = Σyx and the mode strength u_kᵀβv_k is Saxe's.
    """

    sqrt_cov: Float[Array, "d d"]
    target: Float[Array, "out d"]
    loss_min: Float[Array, ""]
    left: Float[Array, "out r"]
    right: Float[Array, "d r"]
    singular_values: Float[Array, " r"]

    def __init__(self, Sxx, Syx, Syy=None, *, left=None, right=None):
        """**Arguments:**

        - `Sxx`: input covariance E[xxᵀ], (d, d), positive semi-definite.
        - `Syx`: cross-covariance E[yxᵀ], (out, d).
        - `Syy`: output covariance E[yyᵀ], (out, out); default: the noiseless Σyx Σxx⁺ Σxy.
        - `left`, `right`: singular vectors (out, r) and (d, r) of the whitened target to use
          for the mode strengths; default: computed by SVD.
        """
        Sxx = _check_psd("Sxx", check_finite("Sxx", Sxx, 2))
        Syx = check_finite("Syx", Syx, 2)
        if Syx.shape[1] != Sxx.shape[0]:
            raise ValueError(
                f"Syx: expected shape (out, {Sxx.shape[0]}) to match Sxx {Sxx.shape}, got {Syx.shape}"
            )
        lam, Q = np.linalg.eigh(Sxx)
        keep = lam > _PSD_TOL * max(1.0, lam.max())
        lam = np.where(keep, lam, 0.0)
        sqrt_cov = Q * np.sqrt(lam)
        target = np.where(keep, (Syx @ Q) / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
        residual_x = Syx @ Q[:, ~keep]
        if residual_x.size and np.abs(residual_x).max() > 1e-8 * max(1.0, np.abs(Syx).max()):
            raise ValueError("Syx: has a component outside the range of Sxx (not a valid joint covariance)")
        explained = target @ target.T
        if Syy is None:
            loss_min = 0.0
        else:
            Syy = _check_psd("Syy", check_finite("Syy", Syy, 2))
            if Syy.shape != (Syx.shape[0], Syx.shape[0]):
                raise ValueError(
                    f"Syy: expected shape {(Syx.shape[0],) * 2} to match Syx {Syx.shape}, got {Syy.shape}"
                )
            schur = Syy - explained
            _check_psd("Syy − Σyx Σxx⁺ Σxy (the joint covariance)", (schur + schur.T) / 2)
            loss_min = 0.5 * float(np.trace(schur))
        u, s, vt = np.linalg.svd(target, full_matrices=False)
        r = int(np.sum(s > 1e-12 * max(1.0, s.max(initial=0.0))))
        if left is not None or right is not None:
            if left is None or right is None:
                raise ValueError("left, right: give both singular-vector matrices or neither")
            left = check_finite("left", left, 2)
            right = check_finite("right", right, 2)
            if left.shape[0] != Syx.shape[0] or right.shape[0] != Syx.shape[1] or left.shape[1] != right.shape[1]:
                raise ValueError(
                    f"left, right: expected shapes ({Syx.shape[0]}, r) and ({Syx.shape[1]}, r), "
                    f"got {left.shape} and {right.shape}"
                )
            sv = np.einsum("ik,ij,jk->k", left, target, right)
        else:
            left, right, sv = u[:, :r], vt[:r].T, s[:r]
        self.sqrt_cov = jnp.asarray(sqrt_cov)
        self.target = jnp.asarray(target)
        self.loss_min = jnp.asarray(loss_min)
        self.left = jnp.asarray(left)
        self.right = jnp.asarray(right)
        self.singular_values = jnp.asarray(sv)

    @property
    def dims(self) -> tuple[int, int]:
        """(input dimension, output dimension)."""
        return self.target.shape[1], self.target.shape[0]

    def loss(self, model):
        beta = _linear_map(model)
        return 0.5 * jnp.sum((beta @ self.sqrt_cov - self.target) ** 2) + self.loss_min

    def mode_strengths(self, model) -> Float[Array, " r"]:
        """u_kᵀ (βC) v_k for each singular mode k of the whitened target."""
        return jnp.einsum("ik,ij,jk->k", self.left, _linear_map(model) @ self.sqrt_cov, self.right)

    def observables(self, model):
        return {"features": self.mode_strengths(model)}

    def feature_labels(self, model):
        return [f"mode {k + 1}" for k in range(self.left.shape[1])]

    def validate(self, model):
        d, out = self.dims
        try:
            beta = jax.eval_shape(_linear_map, model)
        except ValueError:
            raise
        if beta.shape != (out, d):
            raise ValueError(
                f"model: maps {beta.shape[1]} inputs to {beta.shape[0]} outputs, "
                f"but the task has d = {d}, out = {out}"
            )

    def loss_floor(self, model):
        return float(self.loss_min)


class SampleRegression(AbstractTask):
    """Regression on a finite sample, L(θ) = 1/(2n) Σ_i ‖y_i − f(x_i)‖².

    The `"features"` observable is β (flattened) for linear models, or, when a two-layer teacher
    is given, each teacher neuron's overlap m_j with the student (1 when learned exactly).
    """

    X: Float[Array, "n d"]
    Y: Float[Array, "n out"]
    teacher_w: Float[Array, "m d"] | None
    teacher_a: Float[Array, "m out"] | None

    def __init__(self, X, Y, *, teacher_w=None, teacher_a=None):
        """**Arguments:**

        - `X`: inputs, (n, d).
        - `Y`: targets, (n, out) or (n,).
        - `teacher_w`, `teacher_a`: optional two-layer teacher (m, d) and (m, out), for observables.
        """
        X = check_finite("X", X, 2)
        Y = check_finite("Y", Y, (1, 2))
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.shape[0] != X.shape[0]:
            raise ValueError(
                f"Y: expected {X.shape[0]} rows to match X {X.shape}, got shape {Y.shape}"
            )
        self.X = jnp.asarray(X)
        self.Y = jnp.asarray(Y)
        if (teacher_w is None) != (teacher_a is None):
            raise ValueError("teacher_w, teacher_a: give both or neither")
        if teacher_w is not None:
            teacher_w = check_finite("teacher_w", teacher_w, 2)
            teacher_a = check_finite("teacher_a", teacher_a, 2)
            if teacher_w.shape[1] != X.shape[1] or teacher_a.shape != (teacher_w.shape[0], Y.shape[1]):
                raise ValueError(
                    f"teacher_w, teacher_a: expected shapes (m, {X.shape[1]}) and (m, {Y.shape[1]}), "
                    f"got {teacher_w.shape} and {teacher_a.shape}"
                )
            self.teacher_w = jnp.asarray(teacher_w)
            self.teacher_a = jnp.asarray(teacher_a)
        else:
            self.teacher_w = self.teacher_a = None

    @property
    def dims(self) -> tuple[int, int]:
        return self.X.shape[1], self.Y.shape[1]

    def loss(self, model):
        pred = jax.vmap(model)(self.X)
        return 0.5 * jnp.mean(jnp.sum((self.Y - pred) ** 2, axis=-1))

    def teacher_overlaps(self, model) -> Float[Array, " m"]:
        """m_j = Σ_i (a_i·a*_j)(w_i·w*_j)₊ cos⁸₊(w_i, w*_j) / (‖a*_j‖²‖w*_j‖²) for a two-layer student."""
        n = model.neurons()
        w, a = n["w"], n["a"]
        tw, ta = self.teacher_w, self.teacher_a
        dots = w @ tw.T
        cos = dots / (jnp.linalg.norm(w, axis=1)[:, None] * jnp.linalg.norm(tw, axis=1)[None] + 1e-300)
        if self._even(model):
            # σ(−z) = σ(z): w and −w are one neuron, and a student may learn a teacher as either.
            dots, cos = jnp.abs(dots), jnp.abs(cos)
        weight = jnp.maximum(dots, 0.0) * jnp.maximum(cos, 0.0) ** 8
        return jnp.sum((a @ ta.T) * weight, axis=0) / (
            jnp.sum(ta**2, axis=1) * jnp.sum(tw**2, axis=1)
        )

    def _even(self, model) -> bool:
        """Whether the student's neurons are even in their input weights, σ(−w·x) = σ(w·x) (a
        quadratic activation): tried on fixed directions and inputs, never the data (which may be
        traced), so it is evaluated eagerly also inside a traced function (σ is static)."""
        d = self.X.shape[1]
        with jax.ensure_compile_time_eval():
            probe = {"w": jnp.asarray(np.stack([np.linspace(0.3, 1.1, d), np.cos(np.arange(d) + 0.5)])),
                     "a": jnp.ones((2, 1))}
            x = jnp.asarray(np.stack([np.linspace(-1.0, 0.7, d), np.sin(np.arange(d) + 1.0)]))
            try:
                up = np.asarray(jax.vmap(lambda v: model.neuron_outputs(probe, v))(x))
                down = np.asarray(jax.vmap(lambda v: model.neuron_outputs({**probe, "w": -probe["w"]}, v))(x))
            except (TypeError, ValueError, KeyError, jax.errors.ConcretizationTypeError):
                return False  # neurons of another shape (a bias the probe lacks, …): not known to be even
        scale = float(np.max(np.abs(up)))
        return scale > 0 and bool(np.allclose(up, down, rtol=1e-9, atol=1e-12 * scale))

    def _feature_kind(self, model) -> str | None:
        if self.teacher_w is not None and isinstance(model, AbstractNeuronModel) and self._two_layer_view(model):
            return "teacher"
        if isinstance(model, AbstractLinearModel):
            return "beta"
        return None

    def _two_layer_view(self, model) -> bool:
        """Whether the neurons read as (w_i ∈ R^d, a_i ∈ R^out): what teacher overlaps need. A
        model of one's own with other neuron shapes simply has no teacher features."""
        n = model.neurons()
        if not (isinstance(n, dict) and "w" in n and "a" in n):
            return False
        w, a = n["w"], n["a"]
        d, out = self.dims
        return w.ndim == 2 and w.shape[1] == d and a.ndim == 2 and a.shape == (w.shape[0], out)

    def observables(self, model):
        kind = self._feature_kind(model)
        if kind == "teacher":
            return {"features": self.teacher_overlaps(model)}
        if kind == "beta":
            return {"features": model.matrix().reshape(-1)}
        return {}

    def feature_labels(self, model):
        kind = self._feature_kind(model)
        if kind == "teacher":
            return [f"teacher {j + 1}" for j in range(self.teacher_w.shape[0])]
        if kind == "beta":
            d, out = self.dims
            if out == 1:
                return [f"β[{i}]" for i in range(d)]
            return [f"β[{o},{i}]" for o in range(out) for i in range(d)]
        return []

    def validate(self, model):
        d, out = self.dims
        try:
            y = jax.eval_shape(model, jax.ShapeDtypeStruct((d,), self.X.dtype))
        except Exception as err:  # shape errors surface as TypeError/ValueError from jnp
            raise ValueError(f"model: does not accept inputs of dimension d = {d} ({err})") from None
        if y.shape != (out,):
            raise ValueError(f"model: outputs shape {y.shape}, but the task's targets have {out} columns")

    def loss_floor(self, model):
        if self._feature_kind(model) == "beta":
            X, Y = np.asarray(self.X), np.asarray(self.Y)
            coef, *_ = np.linalg.lstsq(X, Y, rcond=None)
            return float(0.5 * np.mean(np.sum((Y - X @ coef) ** 2, axis=-1)))
        if self.teacher_w is not None:
            return 0.0
        return None


def teacher_spectrum(
    key: PRNGKeyArray,
    d: int,
    out: int,
    singular_values: Sequence[float],
    *,
    input_cov=None,
    left=None,
    right=None,
) -> PopulationRegression:
    """Teacher–student linear regression y = S x with S = U diag(s) Vᵀ.

    **Arguments:**

    - `key`: PRNG key for the random orthonormal singular vectors (when not given).
    - `d`, `out`: input and output dimensions.
    - `singular_values`: the teacher's singular values s_k > 0 (rank = their number), in any
      order: mode k is the k-th largest.
    - `input_cov`: Σxx (default: whitened, the identity).
    - `left`, `right`: given singular vectors (out, r) and (d, r), orthonormal columns.

    **Returns:** a `PopulationRegression` with Σyx = S Σxx and Σyy = S Σxx Sᵀ.
    """
    s = check_finite("singular_values", singular_values, 1)
    if np.any(s <= 0):
        raise ValueError(f"singular_values: expected positive numbers (the teacher's rank is their count), "
                         f"got {s.tolist()}")
    r = s.size
    if r > min(d, out):
        raise ValueError(f"singular_values: rank {r} exceeds min(d, out) = {min(d, out)}")
    k1, k2 = jax.random.split(key)
    if left is None:
        left = np.linalg.qr(np.asarray(jax.random.normal(k1, (out, out))))[0][:, :r]
    if right is None:
        right = np.linalg.qr(np.asarray(jax.random.normal(k2, (d, d))))[0][:, :r]
    left = check_finite("left", left, 2)
    right = check_finite("right", right, 2)
    if left.shape[1] != r or right.shape[1] != r:
        raise ValueError(f"left, right: expected {r} columns, one per singular value, got {left.shape} and {right.shape}")
    # "mode k" is the k-th largest singular value, in whatever order they were given.
    order = np.argsort(-s, kind="stable")
    s, left, right = s[order], left[:, order], right[:, order]
    S = left @ np.diag(s) @ right.T
    Sxx = np.eye(d) if input_cov is None else check_finite("input_cov", input_cov, 2)
    if Sxx.shape != (d, d):
        raise ValueError(f"input_cov: expected shape {(d, d)}, got {Sxx.shape}")
    whitened = input_cov is None
    return PopulationRegression(
        Sxx, S @ Sxx, S @ Sxx @ S.T, left=left if whitened else None, right=right if whitened else None
    )


def sparse_regression(
    key: PRNGKeyArray, n: int, d: int, beta_star: Sequence[float], *, noise: float = 0.0
) -> SampleRegression:
    """Sparse regression y = Xβ* + noise with Gaussian X, for diagonal networks.

    **Arguments:** `key`; `n` samples; dimension `d`; `beta_star` of length d; `noise` std.

    **Returns:** a `SampleRegression` with targets y (n, 1).
    """
    beta = check_finite("beta_star", beta_star, 1)
    if beta.size != d:
        raise ValueError(f"beta_star: expected length d = {d}, got {beta.size}")
    k1, k2 = jax.random.split(key)
    X = np.asarray(jax.random.normal(k1, (n, d)))
    y = X @ beta + noise * np.asarray(jax.random.normal(k2, (n,)))
    return SampleRegression(X, y)


def relu_teacher(
    key: PRNGKeyArray,
    d: int,
    teacher_norms: Sequence[float],
    *,
    n: int = 512,
    inputs: str = "gaussian",
) -> SampleRegression:
    """Two-layer ReLU teacher f*(x) = Σ_j a*_j relu(w*_jᵀx) with orthonormal w*_j.

    **Arguments:**

    - `key`: PRNG key.
    - `d`: input dimension.
    - `teacher_norms`: a*_j for each teacher neuron (distinct values give a definite order).
    - `n`: number of samples (for Gaussian inputs).
    - `inputs`: `"gaussian"` (x ~ N(0, I)) or `"orthogonal"` (x ∈ {±√d e_i}: 2d orthogonal points).

    **Returns:** a `SampleRegression` carrying the teacher (for the `teacher j` overlap features).
    """
    a_star = check_finite("teacher_norms", teacher_norms, 1)
    m = a_star.size
    if m > d:
        raise ValueError(f"teacher_norms: {m} teacher neurons need d ≥ {m}, got d = {d}")
    k1, k2 = jax.random.split(key)
    if inputs == "gaussian":
        X = np.asarray(jax.random.normal(k1, (n, d)))
        W = np.linalg.qr(np.asarray(jax.random.normal(k2, (d, d))))[0][:, :m].T
    elif inputs == "orthogonal":
        X = np.sqrt(d) * np.concatenate([np.eye(d), -np.eye(d)])
        W = np.eye(d)[:m]
    else:
        raise ValueError(f"inputs: expected 'gaussian' or 'orthogonal', got {inputs!r}")
    Y = np.maximum(X @ W.T, 0.0) @ a_star[:, None]
    return SampleRegression(X, Y, teacher_w=W, teacher_a=a_star[:, None])
