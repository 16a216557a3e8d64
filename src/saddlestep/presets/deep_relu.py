"""Presets on deep ReLU networks: `deep-relu-escape` (the first saddle escape, Bantzis, Simon &
Jacot 2025) and `richness` (the γ-parameterized μP network, Atanasov et al. 2025)."""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING

import numpy as np

from .base import load_npz, Preset, register, sample_scales, Setup

if TYPE_CHECKING:
    from ..tasks import SampleRegression


def _task(params, data) -> SampleRegression:
    import jax
    import jax.numpy as jnp
    from ..models import DeepReLU
    from ..tasks import digits, SampleRegression

    if data is not None:
        arrays = load_npz(data, required=("X", "Y"))
        task = SampleRegression(arrays["X"], arrays["Y"])
        sample_scales(task.X, task.Y)
        return task
    if params["data"] == "digits":
        return digits(params["n"], seed=params["data_seed"])
    if params["data"] == "teacher":
        # A random deep ReLU teacher of the student's depth, on Gaussian inputs.
        d = 20
        k1, k2 = jax.random.split(jax.random.PRNGKey(params["data_seed"]))
        dims = [d] + [params["width"]] * (params["depth"] - 1) + [5]
        teacher = DeepReLU(dims, key=k1, init_scale=1.0)
        X = np.asarray(jax.random.normal(k2, (params["n"], d)))
        Y = np.asarray(jax.vmap(teacher)(jnp.asarray(X)))
        return SampleRegression(X, Y - Y.mean(axis=0))
    raise ValueError(f"overrides data: expected 'digits' or 'teacher', got {params['data']!r}")


def _check_depth(depth) -> int:
    if depth < 2:
        raise ValueError(f"overrides depth: expected an integer ≥ 2, got {depth}")
    return depth


def _stop_kwargs(fraction: float, task=None, model=None, plateau: float | None = None) -> dict:
    """Stop once ℒ ≤ f·ℒ(0) (f = 0: never); with a predicted `plateau` after the escape below that
    level, not before the flow is within `_NEAR` of the drop above it: a stop in mid-drop (on
    data with a strong signal) left the step's midpoint, where `compare` and `converge` time it,
    uncrossed, and its plateau the stop level."""
    if not 0 <= fraction < 1:
        raise ValueError(f"overrides stop_loss_fraction: expected a number in [0, 1), got {fraction}")
    if fraction == 0:
        return {}
    if plateau is not None and math.isfinite(plateau):
        start = float(task.loss(model))
        if 0 <= plateau < start:
            fraction = min(fraction, (plateau + _NEAR * (start - plateau)) / start)
    # loss_floor = 0 with converge_tol = f stops the flow once ℒ ≤ f·ℒ(0).
    return {"loss_floor": 0.0, "converge_tol": fraction}


# How close to the predicted plateau (a fraction of the drop to it) the escape run goes on.
_NEAR = 0.05


# ----------------------------------------------------------------------------- deep-relu-escape
def _build_escape(params, *, init_scale, seed, data):
    import jax
    from ..models import DeepReLU
    from ..trajectory import atomic_write_text

    from ..theory.deep_relu import basin_direction, escape_direction, parameter_norm, predict_escape

    depth = _check_depth(params["depth"])
    task = _task(params, data)
    d, out = task.dims
    dims = [d] + [params["width"]] * (depth - 1) + [out]
    model = DeepReLU(dims, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    escape = escape_direction(model, task, key=jax.random.PRNGKey(seed + 1), restarts=params["restarts"])
    basin = basin_direction(model, task)
    if not basin.speed > 0:
        raise ValueError("data: no escape direction with positive speed (the targets carry no signal)")
    # A random initialization first aligns, which multiplies the aligned escape time by an
    # α-free factor (≈ 9 at L = 3 and 30–50 at L = 4 on digits): leave room for it.
    t_aligned = basin.escape_time(parameter_norm(model))
    t_max = 60.0 * t_aligned + 100.0 / basin.speed
    kwargs = {"n_snapshots": 1001, "max_steps": 100_000}

    def summarize(traj):
        flow = _pre_drop(traj, task)
        from ..theory.deep_relu import direction_cosine, function_cosine, gap_ratio

        return {
            "escape_speed": escape.speed,
            "basin_speed": basin.speed,
            # null where a layer has no second singular value (a one-output last layer): JSON has no inf.
            "escape_singular_value_ratios": _finite(escape.singular_value_ratios()),
            "flow_singular_value_ratios": _finite([gap_ratio(s) for s in _svals(flow)]),
            # Parameter cosines, and the outputs' (blind to the escape direction's symmetries).
            "cosine_flow_basin": direction_cosine(flow, basin),
            "cosine_flow_optimal": direction_cosine(flow, escape),
            "function_cosine_flow_basin": _finite([function_cosine(model, task, flow, basin)])[0],
            "function_cosine_flow_optimal": _finite([function_cosine(model, task, flow, escape)])[0],
        }

    def write_extra(traj, folder):
        from .. import plot

        fig = plot.layer_spectra(escape.singular_values, escape.singular_value_ratios(), _svals(_pre_drop(traj, task)))
        plot.save(fig, os.path.join(folder, "singular_values.png"))
        atomic_write_text(os.path.join(folder, "escape.json"), json.dumps(summarize(traj), indent=2) + "\n")

    setup = Setup(
        model,
        task,
        t_max,
        predict=lambda: predict_escape(model, task, escape=escape),
        simulate_kwargs=kwargs,
        summarize=summarize,
        write_extra=write_extra,
    )
    # The stop level needs the predicted plateau: predicted once here, kept (and timed) by the Setup.
    kwargs.update(_stop_kwargs(params["stop_loss_fraction"], task, model, float(setup.predict().losses[0])))
    return setup


def _pre_drop(traj, task):
    """The last snapshot before the loss has fallen by 1%: θ just before the first drop."""
    times = np.asarray(traj.snapshot_times)
    valid = [i for i in range(len(times)) if np.isfinite(times[i])]
    losses = [float(task.loss(traj.snapshot(i))) for i in valid]
    before = [i for i, v in zip(valid, losses) if v >= 0.99 * losses[0]]
    return traj.snapshot(before[-1])


def _finite(values) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _svals(model):
    return [np.linalg.svd(np.asarray(w), compute_uv=False) for w in model.layers]


register(
    Preset(
        name="deep-relu-escape",
        runtime_s=80,
        predictor="lower bound (escape time along u* = argmax G)",
        description="deep ReLU (depth 3) on digits: first escape along u* = argmax G; t ∝ ε^{-(L-2)}",
        defaults={
            "depth": 3,
            "width": 16,
            "n": 256,
            "data": "digits",
            "data_seed": 0,
            "restarts": 8,
            "stop_loss_fraction": 0.8,
        },
        rtol=1e-7,
        build=_build_escape,
        init_scale=1e-3,
        data_help="an .npz with X (n, d) and Y (n, out), centred targets",
        data_sets=("n", "data", "data_seed"),
    )
)


# ----------------------------------------------------------------------------- richness
def _rich_batch(dims, seed, gammas, centred, init_scale):
    import jax
    import jax.numpy as jnp
    from ..models import RichReLU

    key = jax.random.PRNGKey(seed)
    models = [RichReLU(dims, key=key, gamma=g, centred=centred, init_scale=init_scale) for g in gammas]
    return jax.tree.map(lambda *x: jnp.stack(x), *models)


def _plateau_law(gammas, depth):
    g = np.asarray(gammas, dtype=float)
    return np.log(g) if depth == 2 else g ** (1 - 2 / depth)


def _build_richness(params, *, init_scale, seed, data):
    import jax
    from ..models import RichReLU
    from ..trajectory import atomic_write_text

    from ..flow import simulate

    depth = _check_depth(params["depth"])
    gamma = params["gamma"]
    if not gamma > 0:
        raise ValueError(f"overrides gamma: expected a positive number, got {gamma}")
    gammas = tuple(params["gammas"])
    if len(gammas) < 2 or min(gammas) <= 0:
        raise ValueError(f"overrides gammas: expected at least two positive values, got {gammas}")
    task = _task(params, data)
    d, out = task.dims
    width = params["width"]
    dims = [d] + [width] * (depth - 1) + [out]
    model = RichReLU(dims, key=jax.random.PRNGKey(seed), gamma=gamma, centred=params["centred"],
                     init_scale=init_scale)
    # In τ = t/(N γ^{2/L}) the plateau is O(γ^{1−2/L}) (or O(ln γ)); t_max is generous and the
    # flow stops itself at the requested loss.
    t_max = 1e4 * width * max(gamma, 1.0)
    kwargs = {"max_steps": 100_000}
    kwargs.update(_stop_kwargs(params["stop_loss_fraction"]))
    law = "ln γ" if depth == 2 else f"γ^{1 - 2 / depth:.3g}"

    def write_extra(traj, folder):
        from .. import plot

        # The γ sweep at the run's own α and seed (it was built at α = 1 whatever --init-scale said).
        batch = _rich_batch(dims, seed, gammas, params["centred"], init_scale)
        gs = np.asarray(gammas)
        # First pass: each γ stops at a 10% drop, which marks the end of its plateau.
        first = simulate(batch, task, t_max=1e4 * width * gs.max(), rtol=params["rtol"], n_save=11,
                         n_snapshots=2, loss_floor=0.0, converge_tol=0.9)
        tau_p = np.asarray(first.t_final) / (width * gs ** (2 / depth))
        # Second pass: the curves, to twice each plateau (one run per γ keeps each grid fine).
        curves = []
        for i, g in enumerate(gs):
            single = jax.tree.map(lambda x: x[i], batch)
            tr = simulate(single, task, t_max=2.0 * float(np.asarray(first.t_final)[i]),
                          rtol=params["rtol"], n_save=801, n_snapshots=2, max_steps=100_000)
            curves.append((tr.times / (width * g ** (2 / depth)), tr.loss))
        plot.save(plot.plateau_collapse(curves, gs, tau_p, depth=depth, law=law),
                  os.path.join(folder, "richness_collapse.png"))
        A, B = np.polyfit(_plateau_law(gs, depth), tau_p, 1)
        report = {
            "init_scale": float(init_scale),
            "gammas": gs.tolist(),
            "plateau_tau": tau_p.tolist(),
            "law": law,
            "fit": {"slope": float(A), "offset": float(B)},
            "fit_rel_residuals": ((A * _plateau_law(gs, depth) + B - tau_p) / tau_p).tolist(),
        }
        atomic_write_text(os.path.join(folder, "richness.json"), json.dumps(report, indent=2) + "\n")

    return Setup(model, task, t_max, simulate_kwargs=kwargs,
                 summarize=lambda traj: {"tau_final": float(model.rescaled_time(traj.t_final))},
                 write_extra=write_extra)


register(
    Preset(
        name="richness",
        runtime_s=16,
        predictor="",
        description="μP ReLU MLP with output/γ (Atanasov et al.): plateau ∝ γ^{1-2/L}, curves collapse",
        defaults={
            "depth": 3,
            "width": 16,
            "n": 128,
            "data": "digits",
            "data_seed": 0,
            "gamma": 100.0,
            "gammas": (10.0, 100.0, 1000.0),
            "centred": False,
            "stop_loss_fraction": 0.8,
        },
        rtol=1e-7,
        build=_build_richness,
        # α = 1 is the paper's init, but run folders report t/ln(1/α), undefined at α = 1.
        init_scale=0.5,
        data_help="an .npz with X (n, d) and Y (n, out), centred targets",
        data_sets=("n", "data", "data_seed"),
    )
)
