"""Presets with degree-3 neurons (κ = 3): `modular` (quadratic network on modular addition) and
`attention` (attention-only linear transformer on in-context linear regression)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

from ..clock import rescale
from ..prediction import Prediction
from .base import load_npz, Preset, register, Setup

if TYPE_CHECKING:
    from ..tasks import InContextRegression


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


def _heatmap(traj, folder, key, ylabel, title, fname):
    import matplotlib.pyplot as plt

    P = np.asarray(traj.observables[key])
    t = np.asarray(traj.times)
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    # Log scale: dormant frequencies grow from O(α²) long before they show in the loss.
    top = max(float(P.max()), 1e-300)
    logP = np.log10(np.maximum(P, top * 1e-12))
    im = ax.imshow(logP.T, aspect="auto", origin="lower", extent=(t[0], t[-1], -0.5, P.shape[1] - 0.5),
                   cmap="magma", interpolation="nearest")
    ax.set_xlabel("time t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log10 power")
    fig.savefig(os.path.join(folder, fname), dpi=120)
    plt.close(fig)


def _feature_comparison(traj, folder, cache):
    """`feature_comparison.csv`: flow steps merged by feature against the (merged) prediction,
    always (`comparison.csv` merges only when the flow shows more steps than the prediction)."""
    from ..steps import feature_steps

    from ..steps import compare, detect_steps

    if "prediction" in cache:
        table = compare(feature_steps(detect_steps(traj)), cache["prediction"])
        table.to_csv(os.path.join(folder, "feature_comparison.csv"), index=False)


def _lower_bound_plot(traj, folder, bound: Prediction):
    """Loss with the closed-form levels and the perfect-alignment lower bounds, drawn as
    vertical lines with arrows pointing right (the true jump is later), as the paper does."""
    import matplotlib.pyplot as plt

    t, L = np.asarray(traj.times), np.asarray(traj.loss)
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.plot(t, L, color="C0", label="gradient flow")
    for v in bound.losses:
        ax.axhline(v, color="0.6", lw=0.8, ls=":")
    top = float(np.nanmax(L))
    for tb, lab in zip(bound.times, bound.order):
        if tb <= t[-1]:
            ax.axvline(tb, color="C3", lw=0.9, ls="--")
            ax.annotate("", xy=(tb + 0.06 * t[-1], 0.9 * top), xytext=(tb, 0.9 * top),
                        arrowprops=dict(arrowstyle="->", color="C3"))
            ax.text(tb, 0.95 * top, f" {lab}", color="C3", fontsize=8)
    ax.set_xlabel("time t")
    ax.set_ylabel("loss")
    ax.set_title("levels (dotted) and jump-time lower bounds (dashed →)")
    ax.legend(fontsize=8)
    fig.savefig(os.path.join(folder, "lower_bounds.png"), dpi=120)
    plt.close(fig)


def _coefficient_plot(traj, folder, task: InContextRegression):
    from ..theory import degree3

    import matplotlib.pyplot as plt

    t = np.asarray(traj.times)
    C = np.asarray(traj.observables["coefficients"])
    target = degree3.attention_coefficients(np.asarray(task.eigenvalues), task.N)
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for i in range(C.shape[1]):
        ax.plot(t, C[:, i], color=f"C{i}", label=f"PC {i + 1} (λ={float(task.eigenvalues[i]):.3g})")
        ax.axhline(target[i], color=f"C{i}", lw=0.8, ls=":")
    ax.set_xlabel("time t")
    ax.set_ylabel("coefficient e_iᵀΓe_i")
    ax.set_title("principal-component coefficients; dotted: 1/(tr Λ + (N+1)λ_i)")
    ax.legend(fontsize=8)
    fig.savefig(os.path.join(folder, "pc_coefficients.png"), dpi=120)
    plt.close(fig)


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
        _heatmap(traj, folder, "neuron_power", "frequency ξ", "Fourier power of the neurons over time", "fourier_power.png")
        _heatmap(traj, folder, "function_power", "output frequency ξ", "Fourier power of the function over time",
                 "function_power.png")
        _lower_bound_plot(traj, folder, bound)

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
        _coefficient_plot(traj, folder, task)
        _lower_bound_plot(traj, folder, bound)

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
