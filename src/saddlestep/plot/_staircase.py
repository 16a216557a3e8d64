"""`staircase`: loss against time, drops marked, a prediction overlaid, runs coloured by α."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from ..prediction import Prediction
from ..steps import finest_record, Step, detect_steps, unshared_features
from ..trajectory import Trajectory
from ._scales import (
    LossAxis,
    TimeAxis,
    check_time,
    common_kappa,
    default_xlim,
    loss_axis,
    settle_time,
)

_MAX_MARKED = 8  # drop markers and one legend entry per curve up to this many curves
_MAX_LEGEND = 10  # above this many distinct α (or members) a colour bar replaces the legend


@dataclasses.dataclass
class _Curve:
    """One drawn loss curve: a single (unbatched) trajectory with its label, colour and steps."""

    traj: Trajectory
    label: str | None
    steps: list[Step]
    member: int | None = None  # index in its batch, if it came from one
    color: Any = None

    @property
    def alpha(self) -> float:
        return float(np.atleast_1d(np.asarray(self.traj.init_scale, dtype=float))[0])


def _default_label(tr: Trajectory) -> str:
    alpha = np.atleast_1d(np.asarray(tr.init_scale, dtype=float))[0]
    if tr.learning_rate is not None:
        return f"{tr.label}, α={alpha:.0e}"  # "adam, lr 1e-3, α=1e-06"
    return f"flow ({tr.label}), α={alpha:.0e}"


def _curves(trajectories, labels: Sequence[str] | None) -> list[_Curve]:
    """Flatten one trajectory, a list, or batched ones into single curves."""
    if isinstance(trajectories, Trajectory):
        trajectories = [trajectories]
    trajectories = list(trajectories)
    if not trajectories or not all(isinstance(t, Trajectory) for t in trajectories):
        raise ValueError("trajectories: expected a Trajectory or a non-empty list of Trajectory objects")
    if labels is not None and len(labels) != len(trajectories):
        raise ValueError(f"labels: expected {len(trajectories)} labels (one per trajectory), got {len(labels)}")
    curves = []
    for i, tr in enumerate(trajectories):
        base = labels[i] if labels is not None else None
        if tr.batch_size is None:
            curves.append(_Curve(tr, base or _default_label(tr), detect_steps(tr)))
            continue
        for j in range(tr.batch_size):
            m = tr[j]
            curves.append(_Curve(m, f"{base or _default_label(m)} [{j}]", detect_steps(m), member=j))
    return curves


def _distinct(values: Sequence[float]) -> list[float]:
    return sorted({float(f"{v:.6g}") for v in values})


def _colour(curves: list[_Curve]) -> tuple[str | None, Any]:
    """Give every curve a colour: by α when several α are drawn, by batch member when one α is
    drawn by a batch, else one colour per curve. Relabels curves for the legend.

    **Returns:** `(what, mappable)`: the colour bar's label and its `ScalarMappable`, or
    `(None, None)` when a legend tells the curves apart.
    """
    alphas = _distinct([c.alpha for c in curves])
    cmap = mpl.colors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 256)))  # no pale yellow
    if len(alphas) > 1:
        lo, hi = np.log10(alphas[0]), np.log10(alphas[-1])
        norm = mpl.colors.Normalize(lo, hi)
        seen = set()
        for c in curves:
            c.color = cmap(norm(np.log10(c.alpha)))
            if len(curves) > _MAX_MARKED:  # one legend entry per α
                key = float(f"{c.alpha:.6g}")
                c.label = None if key in seen else f"α={c.alpha:.0e}"
                seen.add(key)
        if len(curves) > _MAX_MARKED and len(alphas) > _MAX_LEGEND:
            for c in curves:
                c.label = None
            return "log₁₀ α (init scale)", mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
        return None, None
    members = [c.member for c in curves]
    if len(curves) > 1 and all(m is not None for m in members) and len(curves) > _MAX_LEGEND:
        norm = mpl.colors.Normalize(0, len(curves) - 1)
        for k, c in enumerate(curves):
            c.color, c.label = cmap(norm(k)), None
        return "batch member (seed order)", mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    palette = cycle if len(curves) <= len(cycle) else [plt.get_cmap("tab20")(k % 20) for k in range(len(curves))]
    for k, c in enumerate(curves):
        c.color = palette[k]
    return None, None


def _draw_curves(ax, curves: list[_Curve], axis: TimeAxis, ys: LossAxis, mark_steps: bool) -> None:
    many = len(curves) > _MAX_MARKED
    for c in curves:
        tr = c.traj
        # The save grid merged with the loss at every solver step: a run that converges long
        # before a far horizon, or drops faster than the grid's spacing, is drawn as the solver
        # saw it (and as `detect_steps` reads it), not as a few straight segments.
        t, L = finest_record(tr)
        keep = t > 0 if axis.time == "log" else np.ones(len(t), bool)
        x = axis(t[keep], c.alpha)
        style = "--" if tr.learning_rate is not None else "-"  # discrete training dashed over the flow
        ax.plot(x, ys(L[keep]), style, color=c.color, lw=1.6, label=c.label, alpha=0.5 if many else 0.9)
        if mark_steps and not many:
            for s in c.steps:
                y = ys(0.5 * (s.loss_before + s.loss_after))
                ax.plot([axis(s.time, c.alpha)], [y], "o", ms=4, color=c.color, mec="k", mew=0.5)


def _draw_prediction(ax, prediction: Prediction, axis: TimeAxis, ys: LossAxis, alpha: float, x0: float) -> None:
    times = axis.prediction_times(prediction, alpha)
    levels = np.asarray([prediction.initial_loss, *prediction.losses])
    known = np.isfinite(times)  # a step without a time (no bound) is left out
    times, levels = times[known], np.concatenate([levels[:1], levels[1:][known]])
    if not times.size:
        return
    end = max(ax.get_xlim()[1], float(times.max()))
    xs = np.concatenate([[x0], np.repeat(times, 2), [end]])
    y = ys(np.repeat(levels, 2))
    if ys.kind == "log" and ys.bottom is not None:
        y = np.maximum(y, ys.bottom)
    ax.plot(xs, y, "--", color="k", lw=1.1, label=f"prediction ({prediction.method})")
    for t_k in times:
        ax.axvline(t_k, color="k", lw=0.6, ls=":", alpha=0.6)


def _frame(ax, curves: list[_Curve], axis: TimeAxis, prediction: Prediction | None, alpha_p: float, xlim) -> float:
    """Set the time range (given, or the default that frames the staircase); returns the left end."""
    xs = [axis(finest_record(c.traj)[0], c.alpha) for c in curves]
    if axis.time == "log":
        positive = np.concatenate([x[x > 0] for x in xs])
        x0 = float(positive.min()) if positive.size else 1.0
    else:
        x0 = 0.0
    if xlim is None:
        events = []
        for c in curves:
            if c.steps:
                last = c.steps[-1]
                t, L = finest_record(c.traj)
                events.append(axis(last.time, c.alpha))
                events.append(axis(settle_time(t, L, last.time, last.loss_before), c.alpha))
        predicted = list(axis.prediction_times(prediction, alpha_p)) if prediction is not None else []
        x_end = max((float(x.max()) for x in xs if x.size), default=np.nan)
        xlim = default_xlim(x_end, x0, events, predicted, axis.time == "log")
        firsts = [axis(c.steps[0].time, c.alpha) for c in curves if c.steps]
        if axis.time == "log" and firsts and 0.1 * min(firsts) > x0:  # a decade of the first plateau
            x0 = 0.1 * min(firsts)
            xlim = (x0, xlim[1] if xlim is not None else max(x_end, ax.get_xlim()[1]))
    if xlim is not None:
        ax.set_xlim(*xlim)
    return x0


def _panel(ax, curves, axis: TimeAxis, ys: LossAxis, prediction, *, mark_steps, xlim, legend) -> None:
    """Draw one panel: curves, prediction, scales, labels."""
    if axis.time == "log":
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())  # short ranges: no crowded minor labels
    _draw_curves(ax, curves, axis, ys, mark_steps)
    alpha_p = curves[0].alpha
    x0 = _frame(ax, curves, axis, prediction, alpha_p, xlim)
    if prediction is not None and prediction.num_steps:
        _draw_prediction(ax, prediction, axis, ys, alpha_p, x0)
    ax.set_yscale(ys.scale)
    if ys.bottom is not None and ys.bottom > 0:
        ax.set_ylim(bottom=ys.bottom)
    ax.set_xlabel(axis.label([c.alpha for c in curves]))
    ax.set_ylabel(ys.label)
    ax.grid(alpha=0.25, which="both")
    if legend and ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8, loc="best")


def _check_overlay(prediction: Prediction, curves: list[_Curve], times: list[str]) -> None:
    """Say where the overlay cannot be read against the curves: another problem's prediction, or
    one made at another α drawn on a physical time axis (where its jumps sit at its own α's times)."""
    mismatch = unshared_features(prediction, [s for c in curves for s in c.steps])
    if mismatch:
        warnings.warn(f"staircase: {mismatch}: is the overlay a prediction of this problem?", stacklevel=3)
    alpha = prediction.init_scale
    physical = [t for t in times if t != "rescaled"]
    alphas = [a for a in _distinct([c.alpha for c in curves]) if math.isfinite(a)]
    if physical and alphas and math.isfinite(alpha) and not any(math.isclose(a, alpha, rel_tol=1e-5) for a in alphas):
        shown = ", ".join(f"{a:.3g}" for a in alphas[:3]) + (", …" if len(alphas) > 3 else "")
        warnings.warn(
            f"staircase: the prediction's times are for α = {alpha:.3g} and the runs are at α = {shown}: "
            f"on the {physical[0]!r} time axis its jumps are not where these runs' are predicted; "
            "predict at the runs' α, or draw time='rescaled'", stacklevel=3)


def staircase(
    trajectories: Trajectory | Sequence[Trajectory],
    prediction: Prediction | None = None,
    *,
    ax=None,
    time: str | None = None,
    xlim: tuple[float, float] | None = None,
    yscale: str = "auto",
    labels: Sequence[str] | None = None,
    mark_steps: bool = True,
    title: str | None = None,
):
    """The loss staircase against time, drops marked, a prediction overlaid.

    Without `ax` and `time`, two panels: physical time t on the left; on the right, rescaled
    time (t / ln(1/α), or t·α^{κ−2} for neurons of degree κ > 2) when several α are drawn, so
    the runs collapse onto one staircase, or log-time when one α is drawn, so the first
    plateau and the late steps show alike. With `ax` or `time`, one panel.

    The loss axis is chosen from the data: log of L when L > 0 spans a factor 3 or more,
    linear when it spans less, and log of L − L_ref (L_ref a tenth of the smallest plateau gap
    below the lowest loss) when the loss reaches zero or goes negative (word2vec's SGNS / QWEM losses). The time
    range ends a margin after the last detected drop (and its settling) and the last predicted
    jump, unless the staircase fills most of the record.

    Several α (a batched trajectory over α, or a list of runs) are coloured by α on a viridis
    scale, with a legend, or a colour bar when there are many; a batch at one α is coloured
    by member (seed order).

    **Arguments:**

    - `trajectories`: one trajectory or several (flow vs GD, several α); a batched trajectory
      draws each member.
    - `prediction`: a `Prediction` drawn as a dashed staircase with its jump times marked.
    - `ax`: a matplotlib `Axes` to draw into (one panel); default: a new figure.
    - `time`: `"t"` (physical), `"rescaled"` or `"log"` (log-scaled t); default: two panels.
    - `xlim`: the time range on the (first) panel's axis (default: framed on the staircase).
    - `yscale`: `"auto"`, or force `"log"`, `"shifted"` (L − L_min, log) or `"linear"`.
    - `labels`: legend labels, one per trajectory.
    - `mark_steps`: mark the detected drops (up to 8 curves).
    - `title`: the figure's (two panels) or the panel's title.

    **Returns:** the matplotlib `Figure` (the one holding `ax` when `ax` is given).
    """
    curves = _curves(trajectories, labels)
    _colour_and_axes = _colour(curves)
    if prediction is not None and not math.isfinite(prediction.initial_loss):
        # A prediction read from its file keeps no first plateau: the flow's, as `compare` takes it.
        first = next((c.steps[0].loss_before for c in curves if c.steps), math.nan)
        if not math.isfinite(first):
            loss = np.asarray(curves[0].traj.loss, dtype=float)
            first = float(loss[np.isfinite(loss)][0]) if np.isfinite(loss).any() else math.nan
        prediction = dataclasses.replace(prediction, initial_loss=first)
    plateaus = [(s.loss_before, s.loss_after) for c in curves for s in c.steps]
    losses = [c.traj.loss for c in curves]
    if prediction is not None and prediction.num_steps:
        losses.append(np.asarray([prediction.initial_loss, *prediction.losses]))
    ys = loss_axis(losses, plateaus, yscale)
    kappa = common_kappa([c.traj for c in curves])
    several_alpha = len(_distinct([c.alpha for c in curves])) > 1
    if ax is None and time is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
        times = ["t", "rescaled" if several_alpha else "log"]
    else:
        times = [check_time(time if time is not None else "rescaled")]
        fig, axes = (plt.subplots(figsize=(6, 4.2), constrained_layout=True) if ax is None else (ax.figure, ax))
        axes = [axes]
    if prediction is not None and prediction.num_steps:
        _check_overlay(prediction, curves, times)
    for k, (panel, tk) in enumerate(zip(axes, times)):
        _panel(panel, curves, TimeAxis(tk, kappa), ys, prediction, mark_steps=mark_steps,
               xlim=xlim if k == 0 else None, legend=k == len(axes) - 1)
    what, mappable = _colour_and_axes
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes), label=what)
    if title:
        fig.suptitle(title) if len(axes) > 1 else axes[0].set_title(title)
    return fig
