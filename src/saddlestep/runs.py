"""One preset run, end to end: build, simulate, detect steps, predict, write the run folder."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import warnings
from typing import Any

import numpy as np

from . import methods as _methods
from .flow import budget_noted_by_caller, simulate
from .prediction import Prediction
from .presets import get_preset, Setup
from .presets.base import extend_horizon
from .progress import phase, reporting
from .tasks.base import evaluate_observables
from .steps import compare, detect_steps, finest_record, steps_table, Step
from .outputs import atomic_write_text, check_out, converge_checkpoint, output_folder, remove_checkpoint
from .validate import check_init_scale, check_seed
from .trajectory import Trajectory

_PACKAGES = ("saddlestep", "jax", "jaxlib", "diffrax", "equinox", "optax", "optimistix", "lineax", "numpy")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a run depends on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@dataclasses.dataclass
class RunResult:
    """What `run_preset` produced (also written to the run folder)."""

    setup: Setup
    trajectory: Trajectory
    steps: list[Step]
    prediction: Prediction | None
    summary: dict[str, Any]
    folder: str | None


BUILD_QUIET_S = 3.0


def prepare(preset_name: str, *, init_scale=None, seed=0, data=None, overrides=None, progress: bool = False):
    """Resolve a preset's parameters and build its `Setup` (raises `ValueError` on bad input).

    With `progress`, says what it is doing (building, and predicting when the prediction sets the
    horizon) in plain lines on stderr (`saddlestep.progress`).
    """
    preset = get_preset(preset_name)
    init_scale = preset.init_scale if init_scale is None else check_init_scale(init_scale)
    seed = check_seed(seed)
    if data is not None and preset.data_help is None:
        raise ValueError(f"data: preset {preset_name!r} takes no data file")
    params = preset.parameters(overrides, data=data)
    # Bad data fails while building: the line waits, so such an error stays one line.
    with phase(f"{preset_name}: building the model and task (α={init_scale:g}, seed {seed})", enabled=progress,
               delay=BUILD_QUIET_S):
        try:
            setup = preset.setup(params, init_scale=init_scale, seed=seed, data=data)
        except ValueError as err:
            raise _as_override(err, params, data) from None
    if setup.settle is not None and setup.predict is not None and params.get("t_max") == "auto":
        with phase(f"{preset_name}: predicting, to set the horizon", enabled=progress):
            extend_horizon(setup, params)
    return preset, effective_parameters(preset, params, setup, data), setup, init_scale, seed


def effective_parameters(preset, params: dict[str, Any], setup: Setup, data: str | None) -> dict[str, Any]:
    """What a run records as its parameters: those it used (not those a `data` file replaced),
    with the horizon and the flow's step budget it ran with, and the data file."""
    out = {**preset.recorded(params, data), "t_max": setup.t_max}
    if "learning_rate" not in out:  # discrete training has no step budget
        out["max_steps"] = setup.simulate_kwargs.get("max_steps", _methods.MAX_STEPS)
    if data is not None and "data" not in out:  # a preset's own `data` names a built-in set
        out["data"] = os.path.abspath(data)
    return out


def _as_override(err: ValueError, params: dict[str, Any], data=None) -> ValueError:
    """A library error naming a preset parameter (`window: expected …`) as the override it is
    (`overrides window: …`, which the CLI shows as `--set window: …`). With a data file, `data:`
    names that file (`--data`), not a preset's own `data` parameter (deep-relu's built-in sets)."""
    message = str(err)
    key = message.split(":", 1)[0]
    if key == "data" and data is not None:
        return err
    return ValueError(f"overrides {message}") if key in params and ":" in message else err


def run_preset(
    preset_name: str,
    *,
    init_scale=None,
    seed=0,
    data=None,
    overrides=None,
    out: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> RunResult:
    """Run a preset and, with `out`, write its run folder atomically.

    **Arguments:**

    - `preset_name`: a registered preset (`saddlestep list`).
    - `init_scale`: α (default: the preset's).
    - `seed`: the model's initialization seed.
    - `data`: a user data file (what the preset accepts: see `saddlestep list`).
    - `overrides`: `{parameter: text}` as given to `--set`.
    - `out`: the run folder to write, whole or not at all; None writes nothing. An existing
      folder is refused unless it is an earlier saddlestep run and `overwrite` is set (see
      `saddlestep.outputs`).
    - `overwrite`: replace an earlier run folder at `out` (never files saddlestep did not write).
    - `progress`: say what each phase is doing on stderr — a bar on a terminal, a few plain
      lines elsewhere (default: yes; False: silent).

    **Returns:** a `RunResult`.
    """
    if out is not None:
        check_out(out, kind="run", overwrite=overwrite)
    show = progress is not False
    with reporting(show):
        return _run_preset(preset_name, init_scale, seed, data, overrides, out, overwrite, show)


def _told(caught: list[warnings.WarningMessage]) -> list[str]:
    """saddlestep's own warnings among those caught (precision, AGF, tolerances), each once; a
    library's deprecation notices are not the run's business."""
    lines: list[str] = []
    for w in caught:
        line = " ".join(str(w.message).split())
        if issubclass(w.category, UserWarning) and line not in lines:
            lines.append(line)
    return lines


def _run_preset(preset_name, init_scale, seed, data, overrides, out, overwrite, show) -> RunResult:
    # What the run warns about goes into summary.json (and the CLI's "warning:" lines), not
    # only past on stderr.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preset, params, setup, init_scale, seed = prepare(
            preset_name, init_scale=init_scale, seed=seed, data=data, overrides=overrides, progress=show
        )
        start = time.perf_counter()
        method = setup.simulate_kwargs.get("method")
        what = (f"training with {_methods.method_name(method, 0)} (learning rate {float(method.learning_rate):g})"
                if isinstance(method, _methods.Discrete) else "integrating the flow")
        with phase(f"{preset.name}: compiling and {what} to t_max = {setup.t_max:.4g}", enabled=show):
            with budget_noted_by_caller():  # summarize's note names the --set
                traj = simulate(setup.model, setup.task, t_max=setup.t_max, progress=None if show else False,
                                **setup.simulate_kwargs)
        wall = time.perf_counter() - start
        if not np.isfinite(np.asarray(traj.loss, dtype=float)).any():
            where = "the data's scale (--data)" if data is not None else "the problem's scale"
            raise ValueError(f"the flow's loss overflowed float64 from its start ({traj.status} at t = "
                             f"{float(traj.t_final):.3g}): {where} is too large; rescale it")
        predicting = setup.predict is not None and not getattr(setup.predict, "done", False)
        with phase(f"{preset.name}: detecting steps" + (" and predicting" if predicting else ""), enabled=show):
            summary, steps, prediction = summarize(preset.name, params, setup, init_scale, seed, traj, wall, data=data)
    summary["warnings"] = [*_told(caught), *summary["warnings"]]
    folder = None
    if out is not None:
        with phase(f"{preset.name}: writing {os.path.abspath(out)}", enabled=show):
            folder = write_run_folder(out, summary, traj, steps, prediction, setup, overwrite=overwrite)
    return RunResult(setup, traj, steps, prediction, summary, folder)


def data_record(path: str | None) -> dict[str, Any] | None:
    """What a `--data` run actually read: the file, its content digest and its arrays' shapes."""
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    arrays = {}
    if path.endswith(".npz") or path.endswith(".npy"):
        try:
            loaded = np.load(path, allow_pickle=False, mmap_mode=None)
            if isinstance(loaded, np.ndarray):
                arrays = {"": list(loaded.shape)}
            else:
                with loaded as f:
                    arrays = {k: list(f[k].shape) for k in f.files}
        except (OSError, ValueError, EOFError):
            arrays = {}
    return {"path": os.path.abspath(path), "sha256": h.hexdigest(), "arrays": arrays}


def summarize(
    preset_name: str, params: dict, setup: Setup, init_scale: float, seed: int, traj: Trajectory, wall: float,
    *, data: str | None = None,
) -> tuple[dict[str, Any], list[Step], Prediction | None]:
    """The `summary.json` of a finished run, with its detected steps and the preset's prediction.

    **Returns:** `(summary, steps, prediction)`; `prediction` is None when the preset has no predictor.
    """
    steps = detect_steps(traj)
    final_loss = _final_loss(traj, setup)
    prediction = setup.predict() if setup.predict is not None else None
    predict_s = float(getattr(setup.predict, "seconds", 0.0))
    summary = {
        "preset": preset_name,
        "init_scale": init_scale,
        "seed": seed,
        "parameters": _jsonable(params),
        "versions": versions(),
        "wall_time_s": wall,
        "command": list(sys.argv),
        "data": data_record(data),
        "timing": {"simulate_s": wall, "predict_s": predict_s},
        "solver": {
            "name": traj.method,
            "steps": int(traj.stats["steps"]),
            "accepted": int(traj.stats["accepted"]),
            "rejected": int(traj.stats["rejected"]),
            "status": traj.status,
            "t_final": float(traj.t_final),
            "phases": _solver_phases(traj),
        },
        "steps": [s.to_json() for s in steps],
        "observables_final": _final_observables(traj, setup, final_loss),
    }
    if prediction is not None:
        summary["prediction"] = prediction.to_json()
    # One line for each way the run fell short (printed by the CLI, kept in summary.json).
    notes, t_final = [], float(traj.t_final)
    if traj.status == "max_steps":
        budget = setup.simulate_kwargs.get("max_steps", _methods.MAX_STEPS)
        advice = f"raise it (--set max_steps={2 * budget}) or loosen rtol"
        if params.get("solver") == "explicit" and budget >= 1000 and 0 < 10 * t_final < float(setup.t_max):
            # At this pace (over a budget past the first transients) the horizon needs over 10×
            # the budget: an explicit solver held to small steps by stability, where the
            # implicit path takes large ones.
            advice = (f"at this pace t_max = {float(setup.t_max):.4g} needs over {10 * budget} steps: the flow is "
                      f"stiff for the explicit solver; try --set solver=auto (or raise --set max_steps={2 * budget})")
        notes.append(f"the solver used its whole step budget ({budget} steps) at t = {t_final:.6g}; {advice}")
    elif traj.status == "diverged":
        notes.append(f"the run diverged at t = {t_final:.6g}")
    if prediction is not None and prediction.num_steps and traj.status in ("t_max", "max_steps"):
        late = int(np.sum(prediction.times > t_final))
        loss = np.asarray(traj.loss, dtype=float)
        final = final_loss
        target = float(prediction.losses[-1])
        start = prediction.initial_loss if math.isfinite(prediction.initial_loss) else float(loss[0])
        last = max((s.time for s in steps), default=0.0)
        # (A flow with no drop at all has not started: that is time, or α, not capacity; one at or
        # below the last predicted plateau fell short of nothing, whatever steps it took.)
        short = final - target > _SHORTFALL * (start - target)
        missed = (_missed_steps(compare(steps, prediction), last, t_final)
                  if traj.status == "t_max" and steps and short else [])
        # What lets the run go on: the horizon, or (out of steps first) the step budget.
        more = "raise --set t_max" if traj.status == "t_max" else "raise --set max_steps (above)"
        if missed:
            # The flow went on plateau long past these steps: more time would not show them.
            listed = ", ".join(f"{feature} (predicted by t = {t:.4g})" for feature, t in missed[:3])
            others = f" and {len(missed) - 3} more" if len(missed) > 3 else ""
            notes.append(
                f"{listed}{others} never showed in the flow, which ran on to t = {t_final:.6g} with no drop "
                f"after t = {last:.4g}, at loss {final:.4g} (last predicted plateau {target:.4g}): the model "
                f"may lack the capacity the prediction assumes (e.g. --set width), not the time"
            )
        elif late:
            notes.append(
                f"the run ended ({traj.status}) at t = {t_final:.6g} before the last predicted step at "
                f"t = {float(np.max(prediction.times)):.6g} ({late} predicted step(s) not reached); {more}"
            )
        elif final - target > 0.1 * (start - target):
            # Every predicted time passed (lower bounds come early), yet the loss is far from
            # the last predicted plateau: the run stopped short of steps it should show.
            notes.append(
                f"the run ended ({traj.status}) at t = {t_final:.6g} at loss {final:.4g}, short of the last "
                f"predicted plateau {target:.4g}; {more} to see the remaining steps"
            )
        elif _still_falling(traj, final, target, prediction):
            notes.append(
                f"the run ended ({traj.status}) at t = {t_final:.6g} with the loss still falling ({final:.4g}; the "
                f"last predicted plateau {target:.4g}): its last step may be unfinished, its plateau not yet "
                f"reached; {more}"
            )
    summary["warnings"] = notes
    return summary, steps, prediction


# A predicted step the flow never showed, though it stayed on its last plateau this many times
# longer than both that step's predicted time and its own last drop, is not a matter of t_max.
_PAST = 10.0
# ... and only while the flow rests this fraction of the predicted decrease above the last
# predicted plateau.
_SHORTFALL = 0.05


def _still_falling(traj: Trajectory, final: float, target: float, prediction: Prediction) -> bool:
    """Whether a run cut off by its horizon or budget still had a visible part of its last drop
    to go: above the last predicted plateau by over 5% of the last predicted drop, and falling by
    over a tenth of that excess in the last e-fold of time (a modular run at α = 0.1 ended at
    0.0288 on its way to 1e-6, the last step's plateau read mid-drop)."""
    levels = np.concatenate([[prediction.initial_loss], np.asarray(prediction.losses, dtype=float)])
    drops = -np.diff(levels[np.isfinite(levels)])
    if not drops.size or not final - target > 0.05 * float(drops[-1]):
        return False
    t, loss = finest_record(traj)
    t_final = float(traj.t_final)
    keep = np.isfinite(t) & np.isfinite(loss)
    t, loss = t[keep], loss[keep]
    if len(t) < 2 or t[0] > t_final / math.e:
        return False
    earlier = float(np.interp(t_final / math.e, t, loss))
    return earlier - final > 0.1 * (final - target)


def _missed_steps(table, last: float, t_final: float) -> list[tuple[str, float]]:
    """(feature, predicted time) of the predicted steps with no simulated counterpart in
    `table` (`compare`'s) whose predicted times, and the flow's last drop at `last`, lie `_PAST`×
    before the end of the run."""
    rows = table[table["kind"] == "unmatched-predicted"]
    return [(str(r.feature_predicted), float(r.time_predicted)) for r in rows.itertuples()
            if _PAST * max(float(r.time_predicted), last) <= t_final]


def _solver_phases(traj: Trajectory) -> list[dict[str, Any]]:
    """Which solver ran when: one entry per phase (the stiff path switches Tsit5 → implicit)."""
    return traj.phases


def _final_loss(traj: Trajectory, setup: Setup) -> float:
    """The loss at `t_final`, of the final model: a stop event or the step budget can end a run
    between two save points, where the save grid's last loss is an earlier one."""
    if traj.final is not None:
        return float(setup.task.loss(traj.final))
    loss = np.asarray(traj.loss, dtype=float)
    return float(loss[np.isfinite(loss)][-1]) if np.isfinite(loss).any() else math.nan


def _final_observables(traj: Trajectory, setup: Setup, final_loss: float) -> dict[str, Any]:
    """The loss and the task's observables at `t_final` (of the final model, as `_final_loss`);
    observables the task does not compute are the save grid's last."""
    out: dict[str, Any] = {"loss": final_loss}
    fresh = evaluate_observables(setup.task, traj.final) if traj.final is not None else {}
    for k, v in traj.observables.items():
        v = np.asarray(fresh[k]) if k in fresh else np.asarray(v)[-1]
        out[k] = v.tolist() if v.ndim > 0 else float(v)
    if setup.summarize is not None:
        out.update(_jsonable(setup.summarize(traj)))
    return out


def write_run_folder(
    out: str,
    summary: dict,
    traj: Trajectory,
    steps: list[Step],
    prediction: Prediction | None,
    setup: Setup | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Write a run folder whole or not at all (`saddlestep.outputs.output_folder`).

    **Returns:** the folder's absolute path.
    """
    from . import plot  # matplotlib only when a folder is written

    with output_folder(out, kind="run", overwrite=overwrite) as tmp:
        atomic_write_text(os.path.join(tmp, "summary.json"), json.dumps(summary, indent=2) + "\n")
        traj.save(os.path.join(tmp, "trajectory.npz"))
        steps_table(steps).to_csv(os.path.join(tmp, "steps.csv"), index=False)
        fig = plot.staircase(traj, prediction=prediction, title=f"{summary['preset']}  α={summary['init_scale']:g}  seed={summary['seed']}")
        fig.savefig(os.path.join(tmp, "staircase.png"), dpi=120)
        plot.plt.close(fig)
        if prediction is not None:
            atomic_write_text(os.path.join(tmp, "prediction.json"), prediction.dumps() + "\n")
            compare(steps, prediction).to_csv(os.path.join(tmp, "comparison.csv"), index=False)
        if setup is not None and setup.write_extra is not None:
            setup.write_extra(traj, tmp)
    return os.path.abspath(out)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def converge_preset(
    preset_name: str, init_scales, *, seed=0, data=None, overrides=None, out: str | None = None, overwrite: bool = False,
    progress: bool | None = None,
):
    """`saddlestep converge`: the preset's flow at several α against its prediction.

    Writes `convergence.csv` (one row per step and α, with slopes dt_k/d ln(1/α), or against
    α^{2−κ} for degree κ > 2: `convergence.converge`) and
    `convergence.png` into `out`, whole or not at all. With `progress` (on unless False), says
    on stderr which α's flow is running.

    **Returns:** the DataFrame of `saddlestep.convergence.converge`.
    """
    from .convergence import converge, convergence_figure
    from .plot import plt

    try:
        scales = [float(a) for a in init_scales]
    except (TypeError, ValueError):
        raise ValueError(f"init_scales: expected comma-separated numbers, got {init_scales!r}") from None
    for a in scales:
        check_init_scale(a, "init_scales")
    if out is not None:
        check_out(out, kind="converge", overwrite=overwrite)

    def make_setup(alpha):
        return prepare(preset_name, init_scale=alpha, seed=seed, data=data, overrides=overrides)[2]

    show = progress is not False
    checkpoint = None if out is None else converge_checkpoint(out)
    try:
        with reporting(show):
            df = converge(make_setup, scales, progress=show, checkpoint=checkpoint)
    except BaseException:
        # Killed: the finished flows stay for the rerun; refused before any flow: nothing stays.
        if checkpoint is not None and not any(n.startswith("flow-") for n in os.listdir(checkpoint)):
            remove_checkpoint(checkpoint)
        raise
    if out is not None:
        with output_folder(out, kind="converge", overwrite=overwrite) as tmp:
            df.to_csv(os.path.join(tmp, "convergence.csv"), index=False)
            fig = convergence_figure(df)
            fig.savefig(os.path.join(tmp, "convergence.png"), dpi=120)
            plt.close(fig)
        remove_checkpoint(checkpoint)
    return df
