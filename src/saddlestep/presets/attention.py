"""The `attention` preset: an attention-only linear transformer on in-context linear regression
(κ = 3; Kunin et al. 2025)."""

from __future__ import annotations

import os

import numpy as np

from ._features import feature_comparison, predictor, summarize
from .base import Preset, register, Setup


def _build_attention(params, *, init_scale, seed, data):
    import jax
    from ..models import LinearAttention
    from .. import theory
    from ..tasks.attention import InContextRegression

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
    # One principal component per rank-one head: the bounds stop at the H-th.
    bound = theory.predict_attention(model, task, init_norm=n0)
    # The horizon covers the bounds of all D components, not only the H learned: a head that
    # starts far from its component can jump 10× after its bound (PC 2 at t = 4,331 against 398
    # with D = 3, H = 2), and the run stops at the H heads' floor (`loss_floor`) anyway.
    every = theory.attention_prediction(lam, params["N"], init_scale, init_norm=n0)
    t_max = 6.0 * float(every.times[-1]) + 20.0
    # κ = 3 jumps scale like 1/λ, decades apart for a weak component, while two close components
    # drop a few percent apart (65.6 and 81.7 for λ ∝ 1, .95, .3, .1): a uniform grid (spacing
    # 12.8 there) left the second drop unnamed. A log grid from a decade before the first bound
    # gives every drop its own points, as `modular`'s does.
    start = min(0.1, max(0.1 * float(np.min(every.times)) / t_max, 1e-12))

    cache: dict = {}

    def write_extra(traj, folder):
        feature_comparison(traj, folder, cache)
        from .. import plot

        target = theory.attention_coefficients(np.asarray(task.eigenvalues), task.N)
        plot.save(plot.coefficients(traj, np.asarray(task.eigenvalues), target),
                  os.path.join(folder, "pc_coefficients.png"))
        plot.save(plot.lower_bounds(traj, bound), os.path.join(folder, "lower_bounds.png"))

    return Setup(
        model, task, t_max,
        predict=predictor(model, task, params, lambda: bound, cache),
        simulate_kwargs={"max_steps": 1_000_000, "save_spacing": "log", "save_start": start},
        summarize=lambda traj: summarize(traj, bound),
        write_extra=write_extra,
        # The bounds are the population's: on drawn contexts (`samples`) AGF's last step can come
        # after 6× the last bound (PC 3 at 6,330 against a horizon of 4,835 at 400 contexts, D = 3),
        # so an AGF prediction extends the horizon to cover it (`predicted_horizon`).
        settle=20.0,
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
