"""The labeled result of a sweep (`sweep.nc`): an xarray Dataset assembled from its run folders."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..trajectory import STATUSES, Trajectory
from .grid import _label, run_name


def collect(out: str | os.PathLike, grid: Mapping[str, Sequence], names: Sequence[str] | None = None):
    """Assemble the labeled result of a sweep from its run folders.

    **Arguments:**

    - `out`: the sweep folder.
    - `grid`: `{key: [values]}`, the axes in order.
    - `names`: the run folder of each grid point in `itertools.product` order (default: `run_name`).

    **Returns:** an `xarray.Dataset` with dims (*grid axes, `save`, [`feature`,] `detected_step`):
    `time`, `rescaled_time`, `loss`, `features` on the save grid; `t_final`, `solver_steps`,
    `status` (index into the `status` attribute's list), `wall_time_s`; per detected step, in
    each run's own order, `drop_time`, `drop_rescaled_time`, `loss_before`, `loss_after`
    (NaN-padded) and `drop_feature` (its label, "" if none); where the preset predicts, per
    predicted step (dim `predicted_step`) `predicted_time`, `predicted_rescaled_time`,
    `predicted_loss`, and `matched_time`, `matched_rescaled_time`: the run's step that `compare`
    pairs with it (NaN where none). Detected step j can be a different feature in different runs
    (a drop merged or missed at one α or seed); predicted step k is the same feature in every
    run, so slopes against ln(1/α) are fitted on `matched_time`. The method is in
    `attrs["prediction_method"]`.
    """
    from ..prediction import Prediction
    from ..steps import matched_times, Step

    import xarray as xr

    axes = list(grid)
    shape = tuple(len(grid[k]) for k in axes)
    points = [dict(zip(axes, c)) for c in itertools.product(*grid.values())]
    names = [run_name(p) for p in points] if names is None else list(names)
    runs = []
    for name in names:
        folder = os.path.join(os.fspath(out), "runs", name)
        summary = _read_summary(os.path.join(folder, "summary.json"))
        runs.append((summary, Trajectory.load(os.path.join(folder, "trajectory.npz"))))
    n_save = max(len(t.times) for _, t in runs)
    n_drop = max([len(s["steps"]) for s, _ in runs] + [1])
    n_feat = max(np.asarray(t.observables.get("features", np.zeros((1, 0)))).reshape(len(t.times), -1).shape[1] for _, t in runs)
    predictions = [s.get("prediction") for s, _ in runs]
    n_pred = max([len(p["times"]) for p in predictions if p] + [0])

    def empty(*tail):
        return np.full((len(runs), *tail), np.nan)

    time_, loss, rescaled = empty(n_save), empty(n_save), empty(n_save)
    feats = empty(n_save, n_feat)
    drops = {k: empty(n_drop) for k in ("time", "rescaled_time", "loss_before", "loss_after")}
    drop_feature = np.full((len(runs), n_drop), "", dtype=object)
    predicted = {k: empty(n_pred) for k in ("times", "rescaled_times", "losses", "matched")}
    t_final, wall = empty(), empty()
    steps = np.zeros(len(runs), np.int32)
    status = np.zeros(len(runs), np.int32)
    for i, (summary, traj) in enumerate(runs):
        n = len(traj.times)
        time_[i, :n], loss[i, :n], rescaled[i, :n] = traj.times, traj.loss, traj.rescaled_times
        if n_feat and "features" in traj.observables:
            f = np.asarray(traj.observables["features"]).reshape(n, -1)
            feats[i, :n, : f.shape[1]] = f
        for j, step in enumerate(summary["steps"]):
            for k in drops:
                drops[k][i, j] = np.nan if step[k] is None else step[k]
            drop_feature[i, j] = step.get("feature") or ""
        for k in ("times", "rescaled_times", "losses"):
            values = (predictions[i] or {}).get(k) or []
            predicted[k][i, : len(values)] = [np.nan if v is None else v for v in values]
        doc = predictions[i]
        if doc and doc["times"]:
            pred = Prediction.from_json(doc)
            number = lambda v: math.nan if v is None else float(v)
            found = [Step(time=number(st["time"]), rescaled_time=number(st["rescaled_time"]),
                          loss_before=number(st["loss_before"]), loss_after=number(st["loss_after"]),
                          feature=st.get("feature"), start=math.nan, end=math.nan) for st in summary["steps"]]
            predicted["matched"][i, : pred.num_steps] = matched_times(found, pred)
        t_final[i] = summary["solver"]["t_final"]
        wall[i] = summary["wall_time_s"]
        steps[i] = summary["solver"]["steps"]
        status[i] = STATUSES.index(summary["solver"]["status"])

    dims = tuple(axes)
    grid_shape = lambda a: a.reshape(*shape, *a.shape[1:])
    variables = {
        "time": (dims + ("save",), grid_shape(time_)),
        "rescaled_time": (dims + ("save",), grid_shape(rescaled)),
        "loss": (dims + ("save",), grid_shape(loss)),
        "t_final": (dims, grid_shape(t_final)),
        "solver_steps": (dims, grid_shape(steps)),
        "status": (dims, grid_shape(status), {"flag_values": list(range(len(STATUSES))), "flag_meanings": " ".join(STATUSES)}),
        "wall_time_s": (dims, grid_shape(wall)),
        "drop_time": (dims + ("detected_step",), grid_shape(drops["time"])),
        "drop_rescaled_time": (dims + ("detected_step",), grid_shape(drops["rescaled_time"])),
        "loss_before": (dims + ("detected_step",), grid_shape(drops["loss_before"])),
        "loss_after": (dims + ("detected_step",), grid_shape(drops["loss_after"])),
        "drop_feature": (dims + ("detected_step",), grid_shape(drop_feature)),
    }
    if n_feat:
        variables["features"] = (dims + ("save", "feature"), grid_shape(feats))
    if n_pred:
        # The preset's prediction for each run (AGF or closed form), beside the detected drops.
        variables["predicted_time"] = (dims + ("predicted_step",), grid_shape(predicted["times"]))
        variables["predicted_rescaled_time"] = (dims + ("predicted_step",), grid_shape(predicted["rescaled_times"]))
        variables["predicted_loss"] = (dims + ("predicted_step",), grid_shape(predicted["losses"]))
        variables["matched_time"] = (dims + ("predicted_step",), grid_shape(predicted["matched"]))
        clock = np.array([[np.log(1.0 / s["init_scale"]) if 0 < s["init_scale"] < 1 else np.nan] for s, _ in runs])
        variables["matched_rescaled_time"] = (dims + ("predicted_step",), grid_shape(predicted["matched"] / clock))
    coords = {k: _coordinate([_label(v) if isinstance(v, (tuple, list)) else v for v in grid[k]]) for k in axes}
    labels = {tuple(t.feature_labels) for _, t in runs}
    if n_feat and len(labels) == 1 and len(next(iter(labels))) == n_feat:
        coords["feature"] = list(next(iter(labels)))
    dataset = xr.Dataset(variables, coords=coords)
    methods = sorted({p["method"] for p in predictions if p})
    if methods:
        dataset.attrs["prediction_method"] = ", ".join(methods)
    return dataset


def _coordinate(values: list) -> list | np.ndarray:
    """A grid axis as `sweep.nc` can hold it: netCDF3 has no 64-bit integers, so integers beyond
    int32 (seeds up to 2³² − 1) are stored as float64, exact below 2⁵³."""
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        if any(not -(2**31) <= int(v) < 2**31 for v in values):
            return np.asarray(values, dtype=np.float64)
    return values


def load(out: str | os.PathLike):
    """Read `OUT/sweep.nc` written by `sweep`.

    **Returns:** an `xarray.Dataset`.
    """
    import xarray as xr

    path = os.path.join(os.fspath(out), "sweep.nc")
    if not os.path.exists(path):
        raise ValueError(f"out: {path} does not exist (has the sweep finished?)")
    with open(path, "rb") as f:
        return xr.open_dataset(io.BytesIO(f.read()), engine="scipy").load()


def _read_summary(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"out: {path} is not a readable run summary ({type(err).__name__}: {err}); "
            f"delete that run folder to recompute it"
        ) from None
    if not isinstance(summary, dict):
        raise ValueError(f"out: {path} is not a run summary; delete that run folder to recompute it")
    return summary
