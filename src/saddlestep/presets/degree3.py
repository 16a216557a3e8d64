"""Presets with degree-3 neurons (κ = 3): `modular` (quadratic network on modular addition) and
`attention` (attention-only linear transformer on in-context linear regression)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..clock import rescale
from ..prediction import Prediction
from .base import load_npz, Preset, register, Setup

# ----------------------------------------------------------------------------- feature merging
def _label_and_merge(pred: Prediction, task) -> Prediction:
    """Label each AGF step by the task feature that grows most across it (from the plateau
    models), then merge consecutive steps with the same feature (see `feature_steps`)."""
    if not pred.num_steps or pred.plateau_parameters is None:
        return pred
    feats = [np.asarray(task.observables(m)["features"]) for m in pred.plateau_parameters]
    labels = task.feature_labels(pred.plateau_parameters[0])
    prev = np.zeros_like(feats[0])
    order = []
    for f in feats:
        order.append(labels[int(np.argmax(f - prev))])
        prev = f
    keep_t, keep_l, keep_o, keep_p, first = [], [], [], [], []
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and order[j + 1] == order[k]:
            j += 1
        before = pred.initial_loss if k == 0 else pred.losses[k - 1]
        mid = 0.5 * (before + pred.losses[j])
        at = next((i for i in range(k, j + 1) if pred.losses[i] <= mid), j)
        keep_t.append(pred.times[at])
        keep_l.append(pred.losses[j])
        keep_o.append(order[k])
        keep_p.append(pred.plateau_parameters[j])
        first.append(pred.times[k])
        k = j + 1
    alpha = pred.init_scale
    extra = dict(pred.extra, activation_times=[float(t) for t in pred.times], activation_features=order,
                 first_activation=[float(t) for t in first])
    return Prediction(pred.method, keep_t, rescale(keep_t, alpha), keep_l, keep_o,
                      initial_loss=pred.initial_loss, init_scale=alpha, plateau_parameters=keep_p, extra=extra)


def _predictor(model, task, params, closed_form, cache):
    def predict() -> Prediction:
        bound = closed_form()
        if params["predictor"] == "lower-bound":
            cache["prediction"] = bound
            return bound
        from .. import agf  # the engine is only needed when predicting

        pred = _label_and_merge(agf.predict(model, task.as_regression()), task)
        extra = dict(pred.extra, lower_bounds=[float(t) for t in bound.times], lower_bound_order=bound.order,
                     theory_levels=[float(v) for v in bound.losses])
        cache["prediction"] = dataclasses.replace(pred, extra=extra)
        return cache["prediction"]

    if params["predictor"] not in ("agf", "lower-bound"):
        raise ValueError(f"overrides predictor: expected 'agf' or 'lower-bound', got {params['predictor']!r}")
    return predict


# ----------------------------------------------------------------------------- plots and files
def _summarize(traj, bound: Prediction):
    from ..steps import feature_steps

    from ..steps import detect_steps

    merged = feature_steps(detect_steps(traj))
    return {
        "feature_steps": [s.to_json() for s in merged],
        "theory": {"order": bound.order, "levels": [float(v) for v in bound.losses],
                   "lower_bounds": [float(t) for t in bound.times], **{k: v for k, v in bound.extra.items() if k != "lower_bound"}},
    }


def _feature_comparison(traj, folder, cache):
    """`feature_comparison.csv`: flow steps merged by feature against the (merged) prediction,
    always (`comparison.csv` merges only when the flow shows more steps than the prediction)."""
    from ..steps import feature_steps

    from ..steps import compare, detect_steps

    if "prediction" in cache:
        table = compare(feature_steps(detect_steps(traj)), cache["prediction"])
        table.to_csv(os.path.join(folder, "feature_comparison.csv"), index=False)


# ----------------------------------------------------------------------------------- modular
def _modular_template(params, data) -> np.ndarray:
    from ..tasks.modular import fourier_template

    if data is not None:
        arrays = load_npz(data, required=("template",))
        x = np.asarray(arrays["template"], dtype=float)
        if x.ndim != 1 or x.size < 3:
            raise ValueError(f"data: template must be a vector of length p ≥ 3, got shape {x.shape}")
        if np.ptp(x) == 0:
            raise ValueError("data: template is constant; after removing its mean there is nothing to learn")
        return x
    freqs, mags = params["frequencies"], params["magnitudes"]
    if len(freqs) != len(mags):
        raise ValueError(f"overrides magnitudes: expected {len(freqs)} values, one per frequency, got {len(mags)}")
    p = params["p"]
    if p < 3:
        raise ValueError(f"overrides p: expected an integer ≥ 3, got {p}")
    bad = [f for f in freqs if not (float(f) == int(f) and 1 <= int(f) <= p // 2)]
    if bad:
        raise ValueError(f"overrides frequencies: expected integers in 1..{p // 2}, got {bad}")
    return fourier_template(p, {int(f): m for f, m in zip(freqs, mags)})


def _build_modular(params, *, init_scale, seed, data):
    import jax
    from ..models import QuadraticNetwork
    from ..tasks.modular import ModularAddition
    from ..theory import degree3

    x = _modular_template(params, data)
    task = ModularAddition(x)
    p = task.p
    if params["width"] < 1:
        raise ValueError(f"overrides width: expected a positive integer, got {params['width']}")
    model = QuadraticNetwork(p, params["width"], key=jax.random.PRNGKey(seed), init_scale=init_scale)
    n0 = float(np.max(np.asarray(model.neuron_norms())))
    bound = degree3.modular_prediction(np.asarray(task.template), init_scale, init_norm=n0)
    # Real jumps come later than the bounds (directions start unaligned): a few times the last.
    t_max = 8.0 * float(bound.times[-1]) + 20.0

    cache: dict = {}

    def write_extra(traj, folder):
        _feature_comparison(traj, folder, cache)
        from .. import plot

        plot.save(plot.power_heatmap(traj, "neuron_power", ylabel="frequency ξ",
                                     title="Fourier power of the neurons over time"),
                  os.path.join(folder, "fourier_power.png"))
        plot.save(plot.power_heatmap(traj, "function_power", ylabel="output frequency ξ",
                                     title="Fourier power of the function over time"),
                  os.path.join(folder, "function_power.png"))
        plot.save(plot.lower_bounds(traj, bound), os.path.join(folder, "lower_bounds.png"))

    return Setup(
        model, task, t_max,
        predict=_predictor(model, task, params, lambda: bound, cache),
        simulate_kwargs={"converge_tol": 1e-6, "max_steps": 1_000_000},
        summarize=lambda traj: _summarize(traj, bound),
        write_extra=write_extra,
    )


register(
    Preset(
        name="modular",
        runtime_s=45,
        predictor="AGF (--set predictor=lower-bound: closed-form lower bounds)",
        description="quadratic network on modular addition, p = 20 template |x̂| = 10, 5, 2.5 at ξ = 1, 3, 5 (κ = 3)",
        defaults={
            "p": 20,
            "frequencies": (1, 3, 5),
            "magnitudes": (10.0, 5.0, 2.5),
            "width": 18,
            "predictor": "lower-bound",
        },
        solver="auto",
        build=_build_modular,
        init_scale=0.1,
        data_help="an .npz with key template (length p; its mean is removed)",
    )
)


# --------------------------------------------------------------------------------- attention
def _build_attention(params, *, init_scale, seed, data):
    import jax
    from ..models import LinearAttention
    from ..tasks.in_context import InContextRegression
    from ..theory import degree3

    lam = np.asarray(params["eigenvalues"], dtype=float)
    if np.any(lam < 0) or lam.sum() <= 0:
        raise ValueError(f"overrides eigenvalues: expected values ≥ 0, not all zero, got {params['eigenvalues']}")
    D = lam.size
    lam = lam * params["trace"] / lam.sum() if params["trace"] > 0 else lam
    # A random eigenbasis, so that the heads must find the principal components.
    Q = np.linalg.qr(np.asarray(jax.random.normal(jax.random.PRNGKey(params["basis_seed"]), (D, D))))[0]
    cov = Q @ np.diag(lam) @ Q.T
    if params["samples"] < 0:
        raise ValueError(f"overrides samples: expected 0 (population form) or a positive integer, got {params['samples']}")
    samples = params["samples"] or None
    task = InContextRegression(cov, params["N"], samples=samples, key=jax.random.PRNGKey(params["basis_seed"] + 1))
    model = LinearAttention(D, params["heads"], key=jax.random.PRNGKey(seed), init_scale=init_scale)
    n0 = float(np.max(np.asarray(model.neuron_norms())))
    bound = degree3.attention_prediction(lam, params["N"], init_scale, init_norm=n0)
    t_max = 6.0 * float(bound.times[-1]) + 20.0

    cache: dict = {}

    def write_extra(traj, folder):
        _feature_comparison(traj, folder, cache)
        from .. import plot

        target = degree3.attention_coefficients(np.asarray(task.eigenvalues), task.N)
        plot.save(plot.coefficients(traj, np.asarray(task.eigenvalues), target),
                  os.path.join(folder, "pc_coefficients.png"))
        plot.save(plot.lower_bounds(traj, bound), os.path.join(folder, "lower_bounds.png"))

    return Setup(
        model, task, t_max,
        predict=_predictor(model, task, params, lambda: bound, cache),
        simulate_kwargs={"max_steps": 1_000_000},
        summarize=lambda traj: _summarize(traj, bound),
        write_extra=write_extra,
    )


register(
    Preset(
        name="attention",
        runtime_s=16,
        predictor="AGF (--set predictor=lower-bound: closed-form lower bounds)",
        description="linear attention, H = 5 rank-one heads, in-context regression D = 4, N = 32, λ ∝ 1, 1/2, 1/3, 1/4 (κ = 3)",
        defaults={
            "eigenvalues": (1.0, 1 / 2, 1 / 3, 1 / 4),
            "trace": 2.0,
            "N": 32,
            "heads": 5,
            "samples": 0,
            "basis_seed": 0,
            "predictor": "agf",
        },
        rtol=1e-7, solver="auto",
        build=_build_attention,
        init_scale=1e-3,
    )
)
