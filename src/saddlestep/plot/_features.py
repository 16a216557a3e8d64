"""`features`: what the network learns over time, for any task and any neuron model."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..models.base import AbstractNeuronModel
from ..trajectory import Trajectory
from ._scales import TimeAxis, check_time

_MAX_LEGEND = 12


def neuron_norms(trajectory: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron norms ‖θ_i‖ at the snapshot times, and at the end of the run.

    **Arguments:** `trajectory`, a single trajectory of an `AbstractNeuronModel`.

    **Returns:** `(times, norms)`, of shapes `(n,)` and `(n, width)`.
    """
    if not isinstance(trajectory.snapshots, AbstractNeuronModel) or trajectory.snapshot_times is None:
        kind = type(trajectory.snapshots).__name__ if trajectory.snapshots is not None else "no snapshots"
        raise ValueError(
            f"trajectory: per-neuron norms need snapshots of an AbstractNeuronModel, got {kind}; "
            "pass what= the name of one of its observables instead"
        )
    times = np.asarray(trajectory.snapshot_times, dtype=float)
    idx = [i for i in range(len(times)) if np.isfinite(times[i])]
    norms = [np.asarray(trajectory.snapshot(i).neuron_norms(), dtype=float) for i in idx]
    times = list(times[idx])
    t_final = float(trajectory.t_final)
    if isinstance(trajectory.final, AbstractNeuronModel) and (not times or t_final > times[-1]):
        times.append(t_final)
        norms.append(np.asarray(trajectory.final.neuron_norms(), dtype=float))
    return np.asarray(times), np.stack(norms)


def _series(trajectory: Trajectory, what: str) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """`(name, times, values (n, k), labels)` of what to plot."""
    obs = trajectory.observables
    if what == "auto":
        if "features" in obs:
            what = "features"
        elif isinstance(trajectory.snapshots, AbstractNeuronModel):
            what = "norms"
        elif obs:
            what = min(obs)
        else:
            raise ValueError("trajectory: has no observables and its model is not an AbstractNeuronModel; nothing to plot")
    if what == "norms":
        t, v = neuron_norms(trajectory)
        return "norms", t, v, [f"neuron {i}" for i in range(v.shape[1])]
    if what not in obs:
        names = ", ".join(map(repr, ["norms", *sorted(obs)]))
        raise ValueError(f"what: {what!r} is not an observable of this trajectory; expected one of {names}")
    v = np.asarray(obs[what], dtype=float)
    v = v.reshape(v.shape[0], -1)
    labels = list(trajectory.feature_labels) if what == "features" else []
    if len(labels) != v.shape[1]:
        labels = [f"{what}[{j}]" for j in range(v.shape[1])]
    return what, np.asarray(trajectory.times, dtype=float), v, labels


def features(
    trajectory: Trajectory,
    *,
    what: str = "auto",
    rescaled: bool = True,
    time: str | None = None,
    ax=None,
    title: str | None = None,
):
    """What the network learns over time: the task's `features` observable (mode strengths, β
    coordinates, teacher overlaps), any other observable, or the per-neuron norms ‖θ_i‖.

    Per-neuron norms work for any `AbstractNeuronModel`, whatever the task: they are read from
    the trajectory's parameter snapshots and drawn on a log axis (dormant neurons stay near α,
    active ones grow to O(1)).

    **Arguments:**

    - `trajectory`: a single (unbatched) `Trajectory`.
    - `what`: `"auto"` (the `features` observable if recorded, else per-neuron norms for a
      neuron model, else the first observable), `"norms"`, or an observable's name.
    - `rescaled`: plot against rescaled time (t / ln(1/α), or t·α^{κ−2} for κ > 2) instead of t.
    - `time`: `"t"`, `"rescaled"` or `"log"`; overrides `rescaled`.
    - `ax`: a matplotlib `Axes` to draw into; default: a new figure.
    - `title`: the panel's title.

    **Returns:** the matplotlib `Figure` (the one holding `ax` when `ax` is given).
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory: expected a Trajectory, got {type(trajectory).__name__}")
    if trajectory.batch_size is not None:
        raise ValueError("trajectory: is batched; plot one member, e.g. features(trajectory[0])")
    axis = TimeAxis(check_time(time if time is not None else "rescaled" if rescaled else "t"), trajectory.degree)
    name, t, v, labels = _series(trajectory, what)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True) if ax is None else (ax.figure, ax)
    alpha = float(np.atleast_1d(np.asarray(trajectory.init_scale, dtype=float))[0])
    keep = np.isfinite(t) & ((t > 0) if axis.time == "log" else True)
    x = axis(t[keep], alpha)
    legend = v.shape[1] <= _MAX_LEGEND
    for j in range(v.shape[1]):
        ax.plot(x, v[keep, j], marker="." if name == "norms" else None, label=labels[j] if legend else None)
    if axis.time == "log":
        ax.set_xscale("log")
    if name == "norms" and np.all(v[keep] > 0):
        ax.set_yscale("log")
    ax.set_xlabel(axis.label([alpha]))
    ax.set_ylabel({"norms": "neuron norm ‖θ_i‖", "features": "feature strength"}.get(name, name))
    if legend:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.25, which="both")
    if title:
        ax.set_title(title)
    return fig
