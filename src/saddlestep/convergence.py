"""Convergence of gradient flow to its α → 0 limit: the flow at several init scales, the slopes
dt_k/d ln(1/α) of its step times (dt_k/dα^{2−κ} for neurons of degree κ > 2), and how its
rescaled times extrapolate to the prediction."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .flow import budget_noted_by_caller, simulate
from .models.base import degree
from .prediction import Prediction
from .clock import log_inv, unit
from .crossings import first_crossing
from .outputs import atomic_write_text
from .progress import phase, say
from .steps import finest_record


def step_levels(prediction: Prediction) -> np.ndarray:
    """Loss levels that mark each predicted step: the midpoint of the plateaus on either side, where
    `detect_steps` times a drop and the closed forms time a step (so `converge`'s times and
    `comparison.csv`'s are the same crossing).

    A step merged from several activations (κ = 3 neurons joining a feature one after another,
    `extra["first_activation_losses"]`) is timed by its first, as the flow's merged drop is: its
    level is then the one between the plateau before and the plateau after that first activation.
    """
    before = np.concatenate([[prediction.initial_loss], prediction.losses[:-1]])
    first = prediction.extra.get("first_activation_losses")
    after = np.asarray(first if first is not None and len(first) == prediction.num_steps else prediction.losses,
                       dtype=float)
    if not np.all(np.isfinite(before)):
        raise ValueError("prediction: needs an initial_loss and finite plateau losses")
    return 0.5 * (before + after)


def converge(
    make_setup: Callable[[float], object],
    init_scales: Sequence[float],
    *,
    prediction: Prediction | None = None,
    simulate_kwargs: dict | None = None,
    figure: str | None = None,
    progress: bool = False,
    checkpoint: str | None = None,
) -> pd.DataFrame:
    """Run the flow at several init scales α and measure how its step times approach theory.

    Single-α ratios t_k/(τ_k ln(1/α)) carry O(1/ln(1/α)) errors, so the test is the slope
    dt_k/d ln(1/α) of a least-squares line through the step times, set against the predicted
    rescaled times τ_k (reference agf.md §5.1). For neurons of degree κ > 2 (the model's
    `kappa`) jump times grow like α^{2−κ}, so the clock's unit is α^{2−κ} (`clock.unit`): the
    slope is dt_k/dα^{2−κ} and τ_k = t_k α^{κ−2} of the prediction at its own α. Step k's time
    is when the loss crosses the midpoint of the predicted plateaus around it, as `detect_steps`
    times a drop. All runs share one compilation.

    **Arguments:**

    - `make_setup`: α ↦ an object with `model`, `task`, `t_max` (and optionally `predict`,
      `simulate_kwargs`), e.g. a preset's `Setup`; the same shapes for every α.
    - `init_scales`: at least two distinct α in (0, 1).
    - `prediction`: the rescaled times to compare with (default: the setup's `predict`, as the
      slope of its times over the same α, since at finite α its rescaled times can still drift
      with α (lower bounds: their times at the smallest α); or else AGF: its α → 0 limit for
      κ ≤ 2, its times at the smallest α for κ > 2).
    - `simulate_kwargs`: extra arguments for `simulate` (override the setup's).
    - `figure`: a path to save the convergence plot to (see `convergence_figure`).
    - `progress`: say on stderr which α's flow is running, and the flow's own progress
      (`saddlestep.progress`); off by default, as for every library call.
    - `checkpoint`: an existing folder where each finished flow's step times are kept (one file
      per α, keyed by α, the horizon and the predicted levels): a run killed midway and started
      again with the same folder runs only the flows it had not finished.

    **Returns:** a DataFrame with one row per (step, α): `step`, `feature`, `init_scale`,
    `log_inv` (ln(1/α)), `clock` (the unit: ln(1/α), or α^{2−κ}), `time`, `rescaled_time`
    (time/clock), `predicted`, `ratio` (single-α rescaled_time/predicted), `slope` (dt/dclock),
    `slope_error` ((slope − predicted)/predicted), `kind` (`"prediction"`, or `"lower-bound"` when
    the predicted times are lower bounds); `df.attrs["kappa"]` is the model's κ.
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
    kappa = degree(setups[0].model)
    own = None  # the predictor's own times at every α, when it is the default prediction
    if prediction is None:
        last = setups[-1]
        if getattr(last, "predict", None) is not None:
            prediction = last.predict()
            if not prediction.is_lower_bound and all(getattr(s, "predict", None) for s in setups):
                own = [s.predict() for s in setups]
        else:
            from . import agf

            # Tasks that are regressions in disguise (modular addition, in-context) say so.
            task = last.task.as_regression() if hasattr(last.task, "as_regression") else last.task
            prediction = agf.predict(last.model, task, limit=kappa is None or kappa <= 2)
    if not isinstance(prediction, Prediction):
        raise ValueError(f"prediction: expected a Prediction, got {type(prediction).__name__}")
    if prediction.num_steps == 0:
        raise ValueError("prediction: has no steps to compare with")
    if kappa is not None and kappa > 2:
        a_p = prediction.init_scale if math.isfinite(prediction.init_scale) else scales[-1]
        predicted = np.asarray(prediction.times) / unit(a_p, kappa)
    else:
        # A prediction timed at its own finite α keeps its α → 0 rescaled times, which the slope is.
        predicted = np.asarray(prediction.extra.get("limit_rescaled_times", prediction.rescaled_times), dtype=float)
    if own is not None and len({p.num_steps for p in own}) == 1 and not prediction.is_lower_bound:
        # A prediction at finite α (QWEM's, Saxe's from the init, AGF from random directions) has
        # rescaled times that still drift with α; the flow's slope is then set against the
        # predictor's own slope over the same α, not against its value at one α (which carries
        # that drift: 3× the error on qwem, 1–2% on a ReLU teacher by AGF).
        clocks = np.array([unit(a, kappa) for a in scales])
        times = np.array([p.times for p in own])
        predicted = np.array([np.polyfit(clocks, times[:, k], 1)[0] for k in range(times.shape[1])])
    levels = step_levels(prediction)
    t_max = max(float(s.t_max) for s in setups)
    rows = []
    for i, (a, setup) in enumerate(zip(scales, setups)):
        kw = dict(getattr(setup, "simulate_kwargs", None) or {})
        kw.update(simulate_kwargs or {})
        kw.setdefault("progress", None if progress else False)
        key = _flow_key(a, t_max, levels, kw)
        kept = None if checkpoint is None else _kept(checkpoint, i, key)
        if kept is not None:
            times, note = kept
            if progress:
                say(f"converge: the flow at α = {a:g} ({i + 1} of {len(scales)}) finished earlier (kept in {checkpoint})")
        else:
            with phase(f"converge: the flow at α = {a:g} ({i + 1} of {len(scales)})", enabled=progress):
                with budget_noted_by_caller():  # `_uncrossed` says so where it cost a step's time
                    traj = simulate(setup.model, setup.task, t_max=t_max, **kw)
            # The save grid merged with the solver steps: a drop much shorter than the grid's spacing
            # (all runs share the smallest α's horizon) was read 9% late off the grid alone.
            t_fine, loss_fine = finest_record(traj)
            times = np.array([first_crossing(t_fine, loss_fine, level, falling=True, interpolation="log")
                              for level in levels])
            missing = [k for k, t in enumerate(times) if not np.isfinite(t)]
            note = _uncrossed(a, traj, missing[0], levels, prediction.order) if missing else None
            if checkpoint is not None:
                _keep(checkpoint, i, key, times, note)
        if note is not None:
            warnings.warn(note, stacklevel=2)
        L, C = log_inv(a), unit(a, kappa)
        for k, t in enumerate(times):
            rows.append({
                "step": k + 1, "feature": prediction.order[k], "init_scale": a, "log_inv": L, "clock": C,
                "time": t, "rescaled_time": t / C, "predicted": predicted[k],
            })
    df = pd.DataFrame(rows)
    df["ratio"] = df["rescaled_time"] / df["predicted"]
    slopes = {}
    for k, group in df.groupby("step"):
        ok = np.isfinite(group["time"].to_numpy())
        if ok.sum() >= 2:
            slopes[k] = float(np.polyfit(group["clock"].to_numpy()[ok], group["time"].to_numpy()[ok], 1)[0])
        else:
            slopes[k] = math.nan
    df["slope"] = df["step"].map(slopes)
    df["slope_error"] = (df["slope"] - df["predicted"]) / df["predicted"]
    _warn_drift(df, slopes, predicted)
    # A lower bound is met by any slope above it: say so beside the number.
    df["kind"] = "lower-bound" if prediction.is_lower_bound else "prediction"
    df.attrs["kappa"] = kappa
    if figure is not None:
        import matplotlib.pyplot as plt

        fig = convergence_figure(df)
        fig.savefig(figure, dpi=120)
        plt.close(fig)
    return df


def _warn_drift(df: pd.DataFrame, slopes: dict, predicted) -> None:
    """Say where a slope error is a finite-α effect still settling: over three or more α the
    local slopes (between neighbouring α) of a step off by more than 2% still move by a quarter
    of that error or more (a diagonal network with n < d and noise: −69% at α = 1e-3 … 1e-7,
    heading to the prediction only by α = 1e-40)."""
    drifting = []
    for k, group in df.groupby("step"):
        g = group.sort_values("clock")
        ok = np.isfinite(g["time"].to_numpy())
        c, t = g["clock"].to_numpy()[ok], g["time"].to_numpy()[ok]
        pred = float(predicted[k - 1])
        if len(c) < 3 or not (pred > 0 and math.isfinite(slopes[k])):
            continue
        local = np.diff(t) / np.diff(c)
        gap = abs(slopes[k] - pred)
        if gap > 0.02 * pred and abs(local[-1] - local[0]) > 0.25 * gap:
            drifting.append(f"step {k} ({g['feature'].iloc[0]}): {local[0]:.4g} → {local[-1]:.4g} toward smaller α, "
                            f"predicted {pred:.4g}")
    if drifting:
        warnings.warn(
            "converge: the flow's local slopes still move with α at " + "; ".join(drifting) + ": those slope "
            "errors are finite-α effects not yet settled (smaller α, within the float64 floor, show where they go)",
            stacklevel=3,
        )


def _flow_key(alpha: float, t_max: float, levels, kwargs: dict) -> str:
    """What a kept flow's step times depend on, as one string (the model and task come with α
    from the caller's setups, the same for a rerun of the same command)."""
    plain = {k: repr(v) for k, v in sorted(kwargs.items()) if k != "progress"}
    return json.dumps([float(alpha).hex(), float(t_max).hex(), [float(v).hex() for v in levels], plain])


def _kept(folder: str, i: int, key: str) -> tuple[np.ndarray, str | None] | None:
    try:
        with open(os.path.join(folder, f"flow-{i}.json"), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != key:
        return None
    return np.array([float.fromhex(t) for t in doc["times"]]), doc.get("note")


def _keep(folder: str, i: int, key: str, times, note: str | None) -> None:
    # Exact floats (hex), so a resumed run's table is the uninterrupted one's, bit for bit.
    doc = {"key": key, "times": [float(t).hex() for t in times], "note": note}
    atomic_write_text(os.path.join(folder, f"flow-{i}.json"), json.dumps(doc) + "\n")


def _uncrossed(alpha: float, traj, k: int, levels, order) -> str:
    """Why the flow at `alpha` has no time for step k + 1 (its slope is then NaN): one line."""
    where = f"converge: the flow at α = {alpha:g}"
    step = f"step {k + 1}'s level {float(levels[k]):.4g} ({order[k]})"
    t_end = float(traj.t_final)
    if traj.status == "max_steps":
        return (f"{where} used its whole step budget at t = {t_end:.6g} before crossing {step}; its time is "
                f"NaN: raise max_steps (--set max_steps=…) or loosen rtol")
    if traj.status == "t_max":
        return f"{where} reached its horizon t = {t_end:.6g} before crossing {step}; its time is NaN: raise t_max (--set t_max=…)"
    if traj.status == "diverged":
        return f"{where} diverged at t = {t_end:.6g} before crossing {step}; its time is NaN"
    return (f"{where} settled at loss {float(np.asarray(traj.loss)[-1]):.4g}, above {step}: it does not take that "
            f"step at this α; its time is NaN")


def convergence_figure(df: pd.DataFrame, ax=None):
    """Rescaled step times against 1/ln(1/α) (α^{κ−2} for κ > 2), each step's line extrapolated
    to 0 (where its intercept is the slope dt_k/d ln(1/α)), with the prediction marked there.

    **Arguments:** `df` from `converge`; `ax` a matplotlib axis (default: a new figure).

    **Returns:** the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    for k, group in df.groupby("step"):
        x = 1.0 / group["clock" if "clock" in group else "log_inv"].to_numpy()
        y = group["rescaled_time"].to_numpy()
        line = ax.plot(x, y, "o", label=f"step {k}: {group['feature'].iloc[0]}")[0]
        ok = np.isfinite(y)
        if ok.sum() >= 2:
            # t = slope·u + c  ⇔  t/u = slope + c·(1/u), u the clock's unit.
            c, slope = np.polyfit(x[ok], y[ok], 1)
            xs = np.linspace(0.0, x[ok].max() * 1.05, 50)
            ax.plot(xs, slope + c * xs, "-", color=line.get_color(), lw=1)
        ax.plot([0.0], [group["predicted"].iloc[0]], "*", ms=12, color=line.get_color(), mec="k")
    kappa = df.attrs.get("kappa")
    if kappa is not None and kappa > 2:
        power = "α" if kappa == 3 else f"α^{kappa - 2}"
        ax.set_xlabel(f"{power}  (κ = {kappa})")
        ax.set_ylabel(f"rescaled jump time  t·{power}")
    else:
        ax.set_xlabel("1 / ln(1/α)")
        ax.set_ylabel("rescaled jump time  t / ln(1/α)")
    ax.set_xlim(left=-0.002)
    ax.set_title("flow → prediction (★) as α → 0")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
