"""Staircase plots: loss against time and rescaled time, drops marked, predictions overlaid."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .prediction import Prediction
from .steps import detect_steps
from .trajectory import Trajectory


def _prediction_curve(prediction: Prediction, t_end: float, rescaled: bool):
    times = prediction.rescaled_times if rescaled else prediction.times
    levels = [prediction.initial_loss, *prediction.losses]
    xs = np.concatenate([[0.0], np.repeat(times, 2), [t_end]])
    ys = np.repeat(levels, 2)
    return xs, ys


def staircase(
    trajectories: Trajectory | Sequence[Trajectory],
    *,
    labels: Sequence[str] | None = None,
    prediction: Prediction | None = None,
    mark_steps: bool = True,
    title: str | None = None,
):
    """Log loss against time (left) and against rescaled time t/ln(1/α) (right).

    **Arguments:**

    - `trajectories`: one trajectory or several (flow vs GD, several α); a batched trajectory
      draws each member.
    - `labels`: legend labels, one per trajectory.
    - `prediction`: a `Prediction` drawn as a dashed staircase with its jump times marked.
    - `mark_steps`: mark the detected drops.
    - `title`: figure title.

    **Returns:** the matplotlib `Figure`.
    """
    if isinstance(trajectories, Trajectory):
        trajectories = [trajectories]
    flat, names = [], []
    for i, tr in enumerate(trajectories):
        base = labels[i] if labels is not None else _default_label(tr)
        if tr.batch_size is None:
            flat.append(tr)
            names.append(base)
        else:
            for j in range(tr.batch_size):
                flat.append(tr[j])
                names.append(f"{base} [{j}]" if j == 0 else None)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    floor = np.inf
    plateau_min = np.inf
    for k, (tr, name) in enumerate(zip(flat, names)):
        c = colors[k % len(colors)] if len(trajectories) > 1 or len(flat) == 1 else colors[0]
        keep = np.isfinite(tr.times) & np.isfinite(tr.loss) & (tr.loss > 0)
        floor = min(floor, np.min(tr.loss[keep], initial=np.inf))
        for ax, x in zip(axes, (tr.times, tr.rescaled_times)):
            style = "--" if tr.learning_rate is not None else "-"  # discrete training dashed over the flow
            ax.plot(x[keep], tr.loss[keep], style, color=c, lw=1.6, label=name, alpha=0.9 if len(flat) < 8 else 0.5)
        steps = detect_steps(tr)
        plateau_min = min([plateau_min] + [s.loss_before for s in steps if s.loss_before > 0])
        if mark_steps and len(flat) <= 8:
            for s in steps:
                for ax, x in zip(axes, (s.time, s.rescaled_time)):
                    ax.plot([x], [0.5 * (s.loss_before + s.loss_after)], "o", ms=4, color=c, mec="k", mew=0.5)
    if prediction is not None and prediction.num_steps:
        for ax, rescaled in zip(axes, (False, True)):
            end = ax.get_xlim()[1]
            xs, ys = _prediction_curve(prediction, end, rescaled)
            ys = np.maximum(ys, floor if np.isfinite(floor) else 1e-300)
            ax.plot(xs, ys, "--", color="k", lw=1.1, label=f"prediction ({prediction.method})")
            for t_k in prediction.rescaled_times if rescaled else prediction.times:
                ax.axvline(t_k, color="k", lw=0.6, ls=":", alpha=0.6)
    axes[0].set_xlabel("time t")
    axes[1].set_xlabel("rescaled time t / ln(1/α)")
    # Show the staircase, not decades of exponential convergence after the last step.
    bottom = max(floor, 1e-2 * plateau_min) if np.isfinite(plateau_min) else None
    for ax in axes:
        ax.set_yscale("log")
        if bottom is not None and np.isfinite(bottom) and bottom > 0:
            ax.set_ylim(bottom=bottom)
        ax.set_ylabel("loss")
        ax.grid(alpha=0.25, which="both")
    axes[1].legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    return fig


def _default_label(tr: Trajectory) -> str:
    alpha = np.atleast_1d(np.asarray(tr.init_scale, dtype=float))[0]
    if tr.learning_rate is not None:
        return f"{tr.method} η={tr.learning_rate:g}, α={alpha:.0e}"
    return f"flow ({tr.method}), α={alpha:.0e}"


def features(trajectory: Trajectory, *, rescaled: bool = True, title: str | None = None):
    """The `features` observable (mode strengths, β coordinates, teacher overlaps) over time.

    **Arguments:** `trajectory`, a single `Trajectory` with a `features` observable; `rescaled`,
    plot against t/ln(1/α) instead of t; `title`.

    **Returns:** the matplotlib `Figure`.
    """
    F = trajectory.observables.get("features")
    if F is None:
        raise ValueError("trajectory: has no 'features' observable")
    x = trajectory.rescaled_times if rescaled else trajectory.times
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    F = np.asarray(F).reshape(len(x), -1)
    labels = trajectory.feature_labels or [str(i) for i in range(F.shape[1])]
    for j in range(F.shape[1]):
        ax.plot(x, F[:, j], label=labels[j] if F.shape[1] <= 12 else None)
    ax.set_xlabel("rescaled time t / ln(1/α)" if rescaled else "time t")
    ax.set_ylabel("feature strength")
    if F.shape[1] <= 12:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.25)
    if title:
        ax.set_title(title)
    return fig
