"""Convergence of gradient flow to its α → 0 limit: the flow at several init scales, the slopes
dt_k/d ln(1/α) of its step times, and how its rescaled times extrapolate to the prediction."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .flow import simulate
from .prediction import Prediction
from .clock import log_inv
from .crossings import first_crossing


def step_levels(prediction: Prediction, floor: float | None = None) -> np.ndarray:
    """Loss levels that mark each predicted step: the geometric mean (above the floor) of the
    plateaus on either side; a last plateau at the floor counts as 10⁻³ of the one before."""
    before = np.concatenate([[prediction.initial_loss], prediction.losses[:-1]])
    after = prediction.losses
    if not np.all(np.isfinite(before)):
        raise ValueError("prediction: needs an initial_loss and finite plateau losses")
    if floor is None:
        floor = min(0.0, float(np.min(after)))
    hi = np.maximum(before - floor, 1e-300)
    lo = np.maximum(after - floor, 1e-3 * hi)
    return floor + np.sqrt(hi * lo)


def converge(
    make_setup: Callable[[float], object],
    init_scales: Sequence[float],
    *,
    prediction: Prediction | None = None,
    simulate_kwargs: dict | None = None,
    figure: str | None = None,
) -> pd.DataFrame:
    """Run the flow at several init scales α and measure how its step times approach theory.

    Single-α ratios t_k/(τ_k ln(1/α)) carry O(1/ln(1/α)) errors, so the test is the slope
    dt_k/d ln(1/α) of a least-squares line through the step times, set against the predicted
    rescaled times τ_k (reference agf.md §5.1). Step k's time is when the loss crosses the
    geometric mean of the predicted plateaus around it. All runs share one compilation.

    **Arguments:**

    - `make_setup`: α ↦ an object with `model`, `task`, `t_max` (and optionally `predict`,
      `simulate_kwargs`), e.g. a preset's `Setup`; the same shapes for every α.
    - `init_scales`: at least two distinct α in (0, 1).
    - `prediction`: the rescaled times to compare with (default: the setup's `predict` at the
      smallest α, or else AGF's α → 0 limit from that setup's initialization).
    - `simulate_kwargs`: extra arguments for `simulate` (override the setup's).
    - `figure`: a path to save the convergence plot to (see `convergence_figure`).

    **Returns:** a DataFrame with one row per (step, α): `step`, `feature`, `init_scale`,
    `log_inv` (ln(1/α)), `time`, `rescaled_time`, `predicted`, `ratio` (single-α
    rescaled_time/predicted), `slope`, `slope_error` ((slope − predicted)/predicted).
    """
    if not callable(make_setup):
        raise ValueError(f"make_setup: expected a function of the init scale, got {type(make_setup).__name__}")
    try:
        scales = sorted({float(a) for a in init_scales}, reverse=True)
    except (TypeError, ValueError):
        raise ValueError(f"init_scales: expected a list of numbers, got {init_scales!r}") from None
    if len(scales) < 2:
        raise ValueError(f"init_scales: need at least two distinct init scales to fit a slope, got {list(init_scales)!r}")
    if not all(0 < a < 1 and math.isfinite(a) for a in scales):
        raise ValueError(f"init_scales: expected values in (0, 1), got {scales}")
    setups = [make_setup(a) for a in scales]
    for name in ("model", "task", "t_max"):
        if not hasattr(setups[0], name):
            raise ValueError(f"make_setup: its result lacks `{name}` (return a Setup)")
    if prediction is None:
        last = setups[-1]
        if getattr(last, "predict", None) is not None:
            prediction = last.predict()
        else:
            from . import agf

            prediction = agf.predict(last.model, last.task, limit=True)
    if not isinstance(prediction, Prediction):
        raise ValueError(f"prediction: expected a Prediction, got {type(prediction).__name__}")
    if prediction.num_steps == 0:
        raise ValueError("prediction: has no steps to compare with")
    floor = setups[0].task.loss_floor(setups[0].model)
    levels = step_levels(prediction, floor)
    t_max = max(float(s.t_max) for s in setups)
    rows = []
    for a, setup in zip(scales, setups):
        kw = dict(getattr(setup, "simulate_kwargs", None) or {})
        kw.update(simulate_kwargs or {})
        traj = simulate(setup.model, setup.task, t_max=t_max, **kw)
        times = np.array([first_crossing(traj.times, traj.loss, level, falling=True, interpolation="log")
                          for level in np.atleast_1d(levels)])
        L = log_inv(a)
        for k, t in enumerate(times):
            rows.append({
                "step": k + 1, "feature": prediction.order[k], "init_scale": a, "log_inv": L,
                "time": t, "rescaled_time": t / L, "predicted": prediction.rescaled_times[k],
            })
    df = pd.DataFrame(rows)
    df["ratio"] = df["rescaled_time"] / df["predicted"]
    slopes = {}
    for k, group in df.groupby("step"):
        ok = np.isfinite(group["time"].to_numpy())
        if ok.sum() >= 2:
            slopes[k] = float(np.polyfit(group["log_inv"].to_numpy()[ok], group["time"].to_numpy()[ok], 1)[0])
        else:
            slopes[k] = math.nan
    df["slope"] = df["step"].map(slopes)
    df["slope_error"] = (df["slope"] - df["predicted"]) / df["predicted"]
    if figure is not None:
        import matplotlib.pyplot as plt

        fig = convergence_figure(df)
        fig.savefig(figure, dpi=120)
        plt.close(fig)
    return df


def convergence_figure(df: pd.DataFrame, ax=None):
    """Rescaled step times against 1/ln(1/α), each step's line extrapolated to 1/ln(1/α) = 0
    (where its intercept is the slope dt_k/d ln(1/α)), with the prediction marked there.

    **Arguments:** `df` from `converge`; `ax` a matplotlib axis (default: a new figure).

    **Returns:** the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    for k, group in df.groupby("step"):
        x = 1.0 / group["log_inv"].to_numpy()
        y = group["rescaled_time"].to_numpy()
        line = ax.plot(x, y, "o", label=f"step {k}: {group['feature'].iloc[0]}")[0]
        ok = np.isfinite(y)
        if ok.sum() >= 2:
            # t = slope·ln(1/α) + c  ⇔  t/ln(1/α) = slope + c·(1/ln(1/α)).
            c, slope = np.polyfit(x[ok], y[ok], 1)
            xs = np.linspace(0.0, x[ok].max() * 1.05, 50)
            ax.plot(xs, slope + c * xs, "-", color=line.get_color(), lw=1)
        ax.plot([0.0], [group["predicted"].iloc[0]], "*", ms=12, color=line.get_color(), mec="k")
    ax.set_xlabel("1 / ln(1/α)")
    ax.set_ylabel("rescaled jump time  t / ln(1/α)")
    ax.set_xlim(left=-0.002)
    ax.set_title("flow → prediction (★) as α → 0")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
