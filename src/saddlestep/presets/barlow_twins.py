"""Presets of Barlow Twins: `barlow-twins` (scikit-learn digits) and `barlow-twins-synthetic`
(latent pairs); Simon et al. 2023."""

from __future__ import annotations

import os

import numpy as np

from ..clock import log_inv
from ._checks import check_choice, check_dimension
from .base import Preset, register, Setup, stretched_save


def _bt_setup(task, model, params):
    from ..theory.barlow_twins import barlow_twins_aligned, learnable, predict_barlow_twins

    d = model.W.shape[0]
    simplified = task.kind == "simplified"
    pred = predict_barlow_twins(model, task) if simplified else None
    if not simplified:
        import warnings

        warnings.warn(
            "overrides loss: loss=original has no prediction: its batch normalization makes the loss blind to "
            "the weights' scale, so small initialization gives no plateaus and the Γ-mode staircase of the "
            "simplified loss (the theory's case) need not happen; the run shows the flow only", stacklevel=2)
    gam = np.asarray(task.gamma_eigenvalues)
    pos = gam[learnable(gam)]
    if pos.size == 0:
        raise ValueError("Γ has no positive eigenvalue: the pairs are not positively correlated; nothing is learned")
    if pred is not None and pred.num_steps:
        t_auto = 1.3 * float(pred.times[-1]) + 3.0 / pred.extra["gamma"][-1]
    else:
        g = pos[: d].min()
        t_auto = 2.0 * log_inv(float(model.init_scale)) / (4 * g) + 3.0 / g
    t_max = t_auto

    def summarize(traj):
        return {"eigs_C": np.asarray(traj.observables["eigs_C"])[-1].tolist(), "d": d}

    def write_extra(traj, folder):
        theory = None
        if pred is not None and pred.num_steps:
            theory = barlow_twins_aligned(pred.extra["gamma"], pred.extra["c0"], traj.times)
        from .. import plot

        plot.save(plot.eigenvalue_curves(traj, "eigs_C", theory, ylabel="eigenvalues of C",
                                         title="embedding eigenvalues vs closed form"),
                  os.path.join(folder, "eigenvalues.png"))

    save = {"n_save": 1001, **(stretched_save(pred.times, t_max) if pred is not None else {})}
    return Setup(model, task, t_max, predict=(lambda: pred) if pred is not None else None,
                 simulate_kwargs=save,
                 summarize=summarize, write_extra=write_extra)


def _bt_task(xa, xb, params):
    from ..tasks.barlow_twins import BarlowTwins

    kind = check_choice(params, ("simplified", "original"))
    if kind == "original":
        return BarlowTwins(xa, xb, loss=kind, off_diagonal=params["off_diagonal"], scale=params["scale"])
    # The simplified loss has no λ and no prefactor: a changed one would do nothing, so it is refused.
    for name in ("off_diagonal", "scale"):
        if params[name] != _BT_LOSS[name]:
            raise ValueError(f"overrides {name}: applies to loss=original only (the simplified loss ‖C − I‖²_F "
                             f"has none), got {params[name]}; add --set loss=original to use it")
    return BarlowTwins(xa, xb, loss=kind)


def _build_barlow_twins(params, *, init_scale, seed, data):
    import jax
    from ..models.barlow_twins import LinearEncoder
    from ..tasks.barlow_twins import digit_pairs

    xa, xb, _ = digit_pairs(params["n"], shift=params["shift"], noise=params["noise"], seed=params["data_seed"])
    d = check_dimension(params, xa.shape[1], f"the input dimension {xa.shape[1]}")
    task = _bt_task(xa, xb, params)
    model = LinearEncoder(xa.shape[1], d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    return _bt_setup(task, model, params)


def _build_barlow_twins_synthetic(params, *, init_scale, seed, data):
    import jax
    from ..models.barlow_twins import LinearEncoder
    from ..tasks.barlow_twins import latent_pairs

    spectrum = params["spectrum"]
    if not any(float(g) > 0 for g in spectrum):
        # The empirical Γ of n noisy pairs still has tiny positive eigenvalues (≈ 1e-3 of the
        # spectrum's scale): the flow and the closed form would both "learn" that sampling noise.
        raise ValueError(f"overrides spectrum: expected at least one positive eigenvalue (a direction the two "
                         f"views share), got {', '.join(f'{float(g):g}' for g in spectrum)}: with none, only the "
                         "sampling noise of the pairs is learned")
    if params["m"] < len(spectrum):
        raise ValueError(f"overrides m: expected an input dimension ≥ len(spectrum) = {len(spectrum)}, got {params['m']}")
    xa, xb, _ = latent_pairs(spectrum, params["n"], params["m"], noise=params["noise"], seed=params["data_seed"])
    d = check_dimension(params, params["m"], f"m = {params['m']}")
    task = _bt_task(xa, xb, params)
    model = LinearEncoder(params["m"], d, key=jax.random.PRNGKey(seed), init_scale=init_scale)
    return _bt_setup(task, model, params)


_BT_LOSS = {"loss": "simplified", "off_diagonal": 0.0051, "scale": 1.0}


register(
    Preset(
        name="barlow-twins",
        runtime_s=7,
        predictor="closed form (Simon et al.; loss=simplified only)",
        description="linear Barlow Twins on scikit-learn digits, views = shifts + noise; eigenmodes of Γ in order",
        defaults={"n": 500, "d": 8, "shift": 1, "noise": 0.1, "data_seed": 0, **_BT_LOSS},
        rtol=1e-8,
        build=_build_barlow_twins,
        init_scale=1e-6,
    )
)

register(
    Preset(
        name="barlow-twins-synthetic",
        runtime_s=7,
        predictor="closed form (Simon et al.; loss=simplified only)",
        description="linear Barlow Twins on pairs from a latent model with Γ spectrum (1, .5, .25, .1, −.2)",
        defaults={"spectrum": (1.0, 0.5, 0.25, 0.1, -0.2), "m": 8, "n": 2000, "noise": 0.1, "d": 3,
                  "data_seed": 0, **_BT_LOSS},
        rtol=1e-8,
        build=_build_barlow_twins_synthetic,
        init_scale=1e-6,
    )
)
