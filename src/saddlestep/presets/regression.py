"""Presets on regression tasks: `linear`, `deep-linear`, `diagonal`, `relu`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .base import load_npz, Preset, register, sample_scales, Setup

if TYPE_CHECKING:
    from ..tasks import PopulationRegression


def _population_from_data(path: str) -> PopulationRegression:
    from ..tasks import PopulationRegression
    from ..tasks.base import check_finite

    data = load_npz(path, one_of=(("Sxx", "Syx"), ("X", "Y")))
    if {"Sxx", "Syx"} <= set(data) and {"X", "Y"} <= set(data):
        raise ValueError(f"data: {path!r} holds both moments (Sxx, Syx) and samples (X, Y); keep one of the two, "
                         f"so it is clear which the run learns")
    if "Sxx" in data:
        try:
            return PopulationRegression(data["Sxx"], data["Syx"], data.get("Syy"))
        except ValueError as err:  # name the file the moments came from
            raise ValueError(f"data: {err}") from None
    X = check_finite("X", data["X"], 2)
    Y = check_finite("Y", data["Y"], (1, 2))
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"data: Y has {Y.shape[0]} rows but X has {X.shape[0]}")
    n = X.shape[0]
    # ½E‖y − βx‖² over the sample equals the population loss with the sample moments.
    with np.errstate(over="ignore", invalid="ignore"):
        moments = {"X": X.T @ X / n, "Y": Y.T @ Y / n, "X, Y": Y.T @ X / n}
    for name, m in moments.items():
        if not np.all(np.isfinite(m)):
            raise ValueError(f"data: the second moments of {name} overflow float64 (|X| up to {np.abs(X).max():.3g}, "
                             f"|Y| up to {np.abs(Y).max():.3g}); rescale the data")
    return PopulationRegression(moments["X"], moments["X, Y"], moments["Y"])


def _linear_task(params, data) -> PopulationRegression:
    import jax
    from ..tasks import teacher_spectrum

    if data is not None:
        return _population_from_data(data)
    d = params["d"]
    return teacher_spectrum(jax.random.PRNGKey(params["teacher_seed"]), d, d, params["singular_values"])


def _smallest_mode(task: PopulationRegression) -> float:
    s = np.asarray(task.singular_values)
    s = s[s > 1e-12 * max(1.0, s.max(initial=0.0))]
    if s.size == 0:
        raise ValueError("data: the target has no signal (all singular values are zero)")
    return float(s.min())


def _build_linear(params, *, init_scale, seed, data):
    import jax
    from .. import theory as _theory
    from ..models import TwoLayer

    task = _linear_task(params, data)
    d, out = task.dims
    model = TwoLayer(d, params["width"], out, "linear", key=jax.random.PRNGKey(seed), init_scale=init_scale)
    s_min = _smallest_mode(task)
    t_max = 2.0 * math.log(1.0 / init_scale) / s_min + 20.0 / s_min
    return Setup(model, task, t_max, predict=lambda: _theory.predict_linear(model, task), settle=20.0 / s_min)


def _build_deep_linear(params, *, init_scale, seed, data):
    import jax
    from ..models import DeepLinear

    task = _linear_task(params, data)
    d, out = task.dims
    depth = params["depth"]
    if depth < 2:
        raise ValueError(f"overrides depth: expected an integer ≥ 2, got {depth}")
    dims = [d] + [params["width"]] * (depth - 1) + [out]
    model = DeepLinear(dims, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    s_min = _smallest_mode(task)
    if depth == 2:
        plateau = math.log(1.0 / init_scale) / s_min
    else:  # u̇ = L s u^{2−2/L} from u₀ ≈ α^L escapes after ≈ α^{−(L−2)}/((L−2)s).
        plateau = init_scale ** (-(depth - 2)) / ((depth - 2) * s_min)
    t_max = 3.0 * plateau + 20.0 / s_min
    return Setup(model, task, t_max)


def _build_diagonal(params, *, init_scale, seed, data):
    import jax
    from .. import agf as _agf
    from ..models import DiagonalLinear
    from ..tasks import SampleRegression, sparse_regression

    if data is not None:
        arrays = load_npz(data, required=("X", "y"))
        X, y = np.asarray(arrays["X"]), np.asarray(arrays["y"])
        if X.ndim == 2 and y.ndim >= 1 and y.shape[0] != X.shape[0]:
            # Named as the file names it (SampleRegression would say Y, shaped (n, 1)).
            raise ValueError(f"data: y has {y.shape[0]} entries, expected one per row of X {X.shape}")
        task = SampleRegression(X, y)
        if task.dims[1] != 1:
            raise ValueError(f"data: y must be a vector (one target per row), got shape {arrays['y'].shape}")
    else:
        d, k = params["d"], len(params["beta_star"])
        if k > d:
            raise ValueError(f"overrides beta_star: {k} nonzero coefficients exceed d = {d}")
        rng = np.random.default_rng(params["teacher_seed"])
        beta = np.zeros(d)
        beta[rng.choice(d, size=k, replace=False)] = params["beta_star"]
        task = sparse_regression(
            jax.random.PRNGKey(params["teacher_seed"]), params["n"], d, beta, noise=params["noise"]
        )
    d = task.dims[0]
    model = DiagonalLinear(d, key=jax.random.PRNGKey(seed), init_scale=init_scale, variant=params["variant"])
    X, y = np.asarray(task.X), np.asarray(task.Y)[:, 0]
    if not np.any(np.abs(X.T @ y) > 1e-12 * max(1.0, float(np.abs(y).max()))):
        raise ValueError("data: y carries no signal that X can fit")
    # AGF's diagonal phases are exact and cheap: its last jump sets the horizon. A bound from the
    # data alone (the smallest least-squares coefficient) can be 10³× too long for n < d.
    try:
        prediction = _agf.predict(model, task)
    except ValueError:
        prediction = None
    if prediction is not None and prediction.num_steps:
        auto = 2.5 * float(prediction.times[-1]) + 20.0
    else:
        coef = np.linalg.lstsq(X, y, rcond=None)[0]
        scale = np.abs(coef)[np.abs(coef) > 1e-3 * np.abs(coef).max(initial=0.0)]
        lam_top = max(np.linalg.eigvalsh(X.T @ X / X.shape[0]).max(), 1e-12)
        auto = 4.0 * math.log(1.0 / init_scale) / (scale.min() * lam_top**0.5 * 0.25) + 50.0
    t_max = auto
    predict = None if prediction is None else (lambda: prediction)
    return Setup(model, task, t_max, predict=predict)


def _build_relu(params, *, init_scale, seed, data):
    import jax
    from .. import agf as _agf
    from ..models import TwoLayer
    from ..tasks import relu_teacher, SampleRegression

    if data is not None:
        arrays = load_npz(data, required=("X", "Y"))
        # A teacher of one's own (its neurons' w and a), when the file has one, names each step by
        # the teacher neuron it learns, in the flow and in the prediction alike.
        teacher = {k: arrays[k] for k in ("teacher_w", "teacher_a") if k in arrays}
        try:
            task = SampleRegression(arrays["X"], arrays["Y"], **teacher)
        except ValueError as err:
            if str(err).startswith("teacher_w, teacher_a:"):
                raise ValueError(f"data: {err}") from None
            raise
        rms_x, rms_y = sample_scales(task.X, task.Y)
        # A neuron's growth rate scales like |x|·|y| (bias-free: a constant Y is learnable too).
        scale = rms_x * rms_y
    else:
        task = relu_teacher(
            jax.random.PRNGKey(params["teacher_seed"]),
            params["d"],
            params["teacher_norms"],
            n=params["n"],
            inputs=params["inputs"],
        )
        # Teachers of either sign: the slowest plateau is set by the smallest |a*_j|.
        scale = min(abs(float(v)) for v in params["teacher_norms"])
        if not scale > 0:
            raise ValueError("overrides teacher_norms: expected nonzero teacher norms")
    d, out = task.dims
    model = TwoLayer(d, params["width"], out, "relu", key=jax.random.PRNGKey(seed), init_scale=init_scale)
    t_max = 3.0 * math.log(1.0 / init_scale) / scale + 20.0 / scale
    return Setup(model, task, t_max, predict=lambda: _agf.predict(model, task), settle=20.0 / scale)


_LINEAR_DATA = "an .npz with Sxx, Syx[, Syy] (second moments) or X, Y (samples; rows are examples)"

register(
    Preset(
        name="linear",
        runtime_s=7,
        predictor="closed form (Saxe; exact for commuting Σxx, Σyx, else the Conjecture 4.1 recursion)",
        description="two-layer linear network, whitened rank-5 teacher s = 10, 5, 2.5, 1.25, 0.625 (Saxe)",
        defaults={
            "d": 20,
            "width": 20,
            "singular_values": (10.0, 5.0, 2.5, 1.25, 0.625),
            "teacher_seed": 0,
        },
        build=_build_linear,
        init_scale=1e-6,
        data_help=_LINEAR_DATA,
        data_sets=("d", "singular_values", "teacher_seed"),
    )
)

register(
    Preset(
        name="deep-linear",
        runtime_s=8,
        predictor="",
        description="deep linear network (depth 3), same teacher; plateaus ∝ α^{-(L-2)}",
        defaults={
            "d": 20,
            "width": 20,
            "depth": 3,
            "singular_values": (10.0, 5.0, 2.5, 1.25, 0.625),
            "teacher_seed": 0,
        },
        build=_build_deep_linear,
        init_scale=1e-2,
        data_help=_LINEAR_DATA,
        data_sets=("d", "singular_values", "teacher_seed"),
    )
)

register(
    Preset(
        name="diagonal",
        runtime_s=7,
        predictor="AGF (Pesme–Flammarion's algorithm: exact small-α limit)",
        description="diagonal linear network β = u⊙v on sparse regression (Pesme–Flammarion)",
        defaults={
            "n": 30,
            "d": 50,
            "beta_star": (3.0, -2.0, 1.0),
            "noise": 0.0,
            "variant": "uv",
            "teacher_seed": 0,
        },
        build=_build_diagonal,
        init_scale=1e-6,
        data_help="an .npz with X (n, d) and y (n,)",
        data_sets=("n", "d", "beta_star", "noise", "teacher_seed"),
    )
)

register(
    Preset(
        name="relu",
        runtime_s=15,
        predictor="AGF",
        # Orthogonal inputs with teachers of opposite signs: each teacher is one clean step, at
        # AGF's rescaled time 2/|a*_j| (flow slopes agree to 0.01%). With Gaussian inputs the
        # ReLU features overlap: most neurons learn one mixture and later drops merge.
        description="two-layer ReLU teacher–student: 2 teacher neurons of opposite signs, orthogonal inputs",
        defaults={
            "d": 10,
            "width": 20,
            "teacher_norms": (3.0, -1.5),
            "n": 512,
            "inputs": "orthogonal",
            "teacher_seed": 0,
        },
        build=_build_relu,
        init_scale=1e-6,
        data_help="an .npz with X (n, d) and Y (n, out)[, teacher_w (m, d) and teacher_a (m, out): steps named by teacher neuron]",
        data_sets=("d", "teacher_norms", "n", "inputs", "teacher_seed"),
        # rtol stays 1e-6 although ReLU steps are set by sliding chatter (steps ∝ 1/rtol) and
        # rtol 1e-4 takes 20-100× fewer: at 1e-4 the first drop is right to ~1e-4, but on some
        # random Gaussian teachers a later plateau is reached along another path (loss 0.0068
        # against 0.0122, second drop 7% late; `saddlestep bench`'s relu section and
        # docs/performance.md have the measurements).
    )
)
