"""The `modular` preset: a quadratic network on modular addition (κ = 3; Kunin et al. 2025)."""

from __future__ import annotations

import os

import numpy as np

from ._features import feature_comparison, predictor, summarize
from .base import load_npz, Preset, register, Setup


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
    repeated = sorted({int(f) for f in freqs if list(freqs).count(f) > 1})
    if repeated:
        raise ValueError(f"overrides frequencies: each frequency once, got {repeated[0]} more than once "
                         f"(give its whole magnitude in one entry)")
    bad = [f for f in freqs if not (float(f) == int(f) and 1 <= int(f) <= p // 2)]
    if bad:
        raise ValueError(f"overrides frequencies: expected integers in 1..{p // 2}, got {bad}")
    return fourier_template(p, {int(f): m for f, m in zip(freqs, mags)})


_VISIBLE = 1e-4


def _last_visible(bound) -> int:
    """The index of the last jump that, with the jumps after it, gives up more than `_VISIBLE` of
    the learnable loss."""
    levels = np.asarray(bound.losses, dtype=float)
    before = np.concatenate([[float(bound.initial_loss)], levels[:-1]]) - levels[-1]
    visible = np.flatnonzero(before > _VISIBLE * before[0])
    return int(visible[-1])


def _build_modular(params, *, init_scale, seed, data):
    import jax
    from ..models import QuadraticNetwork
    from .. import theory
    from ..tasks.modular import ModularAddition

    x = _modular_template(params, data)
    task = ModularAddition(x)
    p = task.p
    if params["width"] < 1:
        raise ValueError(f"overrides width: expected a positive integer, got {params['width']}")
    model = QuadraticNetwork(p, params["width"], key=jax.random.PRNGKey(seed), init_scale=init_scale)
    n0 = float(np.max(np.asarray(model.neuron_norms())))
    bound = theory.modular_prediction(np.asarray(task.template), init_scale, init_norm=n0)
    # Real jumps come later than the bounds (directions start unaligned): a few times the last
    # that shows on the staircase. κ = 3 jumps scale like 1/|x̂_ξ|, so a noise frequency on a
    # user's template (|x̂| ~ 1e-2 of the rest) would put the horizon 10³–10⁵ times further for a
    # drop of 1e-5 of the loss: the last jumps, when together they give up less than _VISIBLE of
    # the learnable loss, set none (the flow still learns them if they come before t_max).
    t_max = 8.0 * float(bound.times[_last_visible(bound)]) + 20.0
    # κ = 3 jumps scale like 1/|x̂_ξ|, so a template's weak frequencies (noise, on a user's data)
    # put the horizon decades past the first jumps: save on a log grid from a decade before the
    # first bound, where every jump has its own grid points and its features their label.
    # (Kept within (0, 0.1]: on a template scaled far up the bounds fall to rounding beside the
    # horizon's +20.)
    start = min(0.1, max(0.1 * float(np.min(bound.times)) / t_max, 1e-12))

    cache: dict = {}

    def write_extra(traj, folder):
        feature_comparison(traj, folder, cache)
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
        predict=predictor(model, task, params, lambda: bound, cache),
        simulate_kwargs={"converge_tol": 1e-6, "max_steps": 1_000_000, "save_spacing": "log", "save_start": start},
        summarize=lambda traj: summarize(traj, bound),
        write_extra=write_extra,
    )


register(
    Preset(
        name="modular",
        runtime_s=45,
        predictor="closed-form levels and jump-time lower bounds (--set predictor=agf: AGF)",
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
        data_sets=("p", "frequencies", "magnitudes"),
    )
)


