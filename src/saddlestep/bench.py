"""`saddlestep bench`: the flow against discrete gradient descent, side by side, on `linear`.

What it measures (engineering.md §2 has the method):

- accuracy and cost: the flow (Tsit5, rtol 1e-6) against GD (plain update, and `optax.sgd`) at
  learning rates where GD's drop times are off by 1e-3 and 1e-4 (GD's error is an O(η) bias, so
  η is calibrated from one coarse run); wall time, vector-field evaluations, errors, ratios;
- solver steps against ln(1/α);
- ensemble throughput (members/s) against batch size, and compile times.

Drop times are the crossings of each mode strength u_k through half its final value s_k/2,
interpolated by a local cubic, measured against a Dopri8 reference at rtol 1e-12. Runs are timed
on a coarse save grid (saving costs the flow more than its steps do); their accuracy is read from
a second run of the same method on a fine grid (the save grid changes no iterate or step).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import numpy as np
import optax

from .flow import simulate
from .presets import get_preset
from .outputs import atomic_write_text, check_out, output_folder
from .trajectory import Trajectory
from .clock import log_inv

PRESET = "linear"
_TSIT5_EVALS_PER_STEP = 6  # 7 stages, first same as last
_DOPRI8_EVALS_PER_STEP = 12


def _setup(seed: int, init_scale: float):
    preset = get_preset(PRESET)
    return preset.build(preset.parameters(), init_scale=init_scale, seed=seed, data=None)


def drop_times(traj: Trajectory, levels: np.ndarray) -> np.ndarray:
    """First crossing of each feature through its level (cubic through the 4 points around it).

    **Arguments:**

    - `traj`: a single trajectory with a `features` observable.
    - `levels`: one level per feature.

    **Returns:** the crossing times (NaN where a feature never crosses).
    """
    keep = np.isfinite(traj.times)
    t = np.asarray(traj.times)[keep]
    F = np.asarray(traj.observables["features"])[keep]
    out = np.full(len(levels), np.nan)
    for k, level in enumerate(levels):
        x = F[:, k] - level
        above = np.nonzero(x > 0)[0]
        if above.size == 0 or above[0] == 0:
            continue
        i = above[0]
        lo, hi = max(i - 2, 0), min(i + 2, len(t))
        ts, xs = t[lo:hi], x[lo:hi]
        guess = t[i - 1] + (t[i] - t[i - 1]) * -x[i - 1] / (x[i] - x[i - 1])
        if len(ts) == 4:
            # Root of the cubic through the 4 points nearest the crossing, in a centred variable.
            c = np.polyfit(ts - guess, xs, 3)
            roots = np.roots(c)
            roots = roots[np.isreal(roots)].real + guess
            roots = roots[(roots >= t[i - 1]) & (roots <= t[i])]
            out[k] = roots[0] if roots.size else guess
        else:
            out[k] = guess
    return out


def _timed(fn, repeats: int) -> tuple[Any, float, float]:
    """Run `fn` once (compiling), then `repeats` times; returns (result, first, best)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, first, best


def _warm_timed(run, t_max: float) -> tuple[Any, float, float]:
    """Compile `run` on a short horizon (t_max is traced: the long run reuses the executable),
    then time the long run once; returns (result, compile_s, wall_s). Runs of minutes are not
    repeated."""
    start = time.perf_counter()
    run(t_max=min(t_max, 1e-3 * t_max))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run()
    return result, compile_s, time.perf_counter() - start


def _device() -> dict:
    dev = jax.devices()[0]
    return {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}


def run_bench(
    out: str | os.PathLike,
    *,
    quick: bool = False,
    gd_targets: tuple[float, ...] = (1e-3, 1e-4),
    alphas: tuple[float, ...] | None = None,
    batches: tuple[int, ...] | None = None,
    stiff_alphas: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> dict:
    """Run the benchmark and write `bench.json` and `bench.md` into `out` (each atomically).

    **Arguments:**

    - `out`: the output folder (created if needed).
    - `quick`: a reduced configuration (under 3 minutes on 2 CPU cores).
    - `gd_targets`: drop-time errors at which GD is run.
    - `alphas`: init scales of the steps-against-ln(1/α) table (default 1e-3 … 1e-12).
    - `batches`: ensemble sizes of the throughput table (default by device and `quick`).
    - `stiff_alphas`: init scales of the `stiff` section's degree-3 case (default by `quick`).
    - `overwrite`: replace an earlier bench output at `out` (see `saddlestep.outputs`).

    **Returns:** the dictionary written to `bench.json`; its top-level `speedup_vs_gd` is GD's wall
    time at the tightest target (1e-4) over the flow's at rtol 1e-6.
    """
    from .runs import versions

    out = os.fspath(out)
    check_out(out, kind="bench", overwrite=overwrite)
    alpha = get_preset(PRESET).init_scale
    setup = _setup(0, alpha)
    model, task = setup.model, setup.task
    s = np.asarray(task.singular_values)
    levels = s / 2
    repeats = 1 if quick else 3
    n_fine = 20001
    # Quick: time each method on the fine grid it is measured on (one long run per GD setting,
    # the same save grid for all); full: time on a coarse grid, measure on a second, fine run.
    n_coarse = n_fine if quick else 201

    # Reference drop times; the horizon stops a little after the last drop for every method.
    ref = simulate(model, task, t_max=setup.t_max, solver=dfx.Dopri8(), rtol=1e-12, n_save=n_fine)
    t_ref = drop_times(ref, levels)
    t_max = 1.25 * float(np.nanmax(t_ref))
    ref = simulate(model, task, t_max=t_max, solver=dfx.Dopri8(), rtol=1e-12, n_save=n_fine)
    t_ref = drop_times(ref, levels)

    def error(traj):
        return float(np.max(np.abs(drop_times(traj, levels) / t_ref - 1)))

    rows = []

    def flow_run(n_save, rtol=1e-6):
        return simulate(model, task, t_max=t_max, rtol=rtol, n_save=n_save)

    traj, first, best = _timed(lambda: flow_run(n_coarse), repeats)
    steps = int(traj.stats["steps"])
    rows.append({
        "method": "flow Tsit5", "setting": "rtol 1e-6", "target_error": 1e-6,
        "error": error(traj if n_coarse == n_fine else flow_run(n_fine)), "wall_s": best, "compile_s": max(first - best, 0.0),
        "steps": steps, "vf_evals": _TSIT5_EVALS_PER_STEP * steps + 1,
    })

    def gd_run(lr, opt, n_save, horizon=t_max):
        return simulate(model, task, t_max=horizon, learning_rate=lr, optimizer=opt, n_save=n_save)

    for name, make in (("GD (lax loop)", None), ("GD (optax.sgd)", optax.sgd)):
        # GD's drop times are late by ≈ η s_k/2 (relative): calibrate η on a coarse run.
        # An optax optimizer bakes η in (one compilation per η); plain GD traces it. Each timed
        # run follows a short warm-up with the same optimizer object, so compiling is not timed.
        optimizer = lambda lr: None if make is None else make(lr)
        lr0 = 1e-3
        opt0 = optimizer(lr0)
        _, first, best = _timed(lambda: gd_run(lr0, opt0, n_coarse, 200 * lr0), 1)
        compile_s = max(first - best, 0.0)
        e0 = error(gd_run(lr0, opt0, n_fine))
        for target in gd_targets:
            lr = lr0 * target / e0
            if not quick:
                e = error(gd_run(lr, optimizer(lr), n_fine))
                if not 0.7 < e / target < 1.4:  # one correction where the bias is not yet linear
                    lr *= target / e
            opt = optimizer(lr)
            gd_run(lr, opt, n_coarse, 200 * lr)
            timed = [_timed(lambda: gd_run(lr, opt, n_coarse), 0) for _ in range(max(repeats, 1))]
            best = min(t[1] for t in timed)
            e = error(timed[0][0] if n_coarse == n_fine else gd_run(lr, opt, n_fine))
            steps = int(timed[0][0].stats["steps"])
            rows.append({
                "method": name, "setting": f"lr {lr:.3g}", "target_error": target, "error": e,
                "wall_s": best, "compile_s": compile_s, "steps": steps, "vf_evals": steps,
            })

    flow_row = rows[0]
    for row in rows:
        row["wall_ratio_vs_flow"] = row["wall_s"] / flow_row["wall_s"]
        row["evals_ratio_vs_flow"] = row["vf_evals"] / flow_row["vf_evals"]
    gd_tight = [r for r in rows if r["method"] == "GD (lax loop)" and r["target_error"] == min(gd_targets)][0]

    if alphas is None:
        alphas = [1e-3, 1e-6, 1e-9, 1e-12] if quick else [10.0 ** -k for k in range(3, 13)]
    scaling = []
    for a in alphas:
        st = _setup(0, a)
        start = time.perf_counter()
        tr = simulate(st.model, st.task, t_max=st.t_max, n_save=n_coarse, **st.simulate_kwargs)
        wall = time.perf_counter() - start
        scaling.append({"init_scale": a, "log_inv_alpha": log_inv(a), "steps": int(tr.stats["steps"]),
                        "rejected": int(tr.stats["rejected"]), "t_final": float(tr.t_final),
                        "status": tr.status, "wall_s": wall})
    x = np.array([r["log_inv_alpha"] for r in scaling])
    y = np.array([r["steps"] for r in scaling], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    # "At most linear": steps per unit ln(1/α) does not grow from the first α to the last.
    per_log = y / x

    if batches is None:
        if jax.devices()[0].platform == "gpu":
            batches = [1, 16, 64, 256, 1024, 4096, 16384]
        else:
            batches = [1, 4, 16] if quick else [1, 4, 16, 64, 256, 1024]
    throughput = _throughput(batches, alpha, t_max, n_coarse, repeats)
    stiff_section = run_stiff_bench(quick=quick, alphas=stiff_alphas)

    result = {
        "format": "saddlestep.bench/1",
        "quick": quick,
        "device": _device(),
        "dtype": "float64",
        "versions": versions(),
        "preset": PRESET,
        "init_scale": alpha,
        "t_max": t_max,
        "reference": {"solver": "Dopri8", "rtol": 1e-12, "drop_times": t_ref.tolist(),
                      "steps": int(ref.stats["steps"])},
        "gd_targets": sorted(gd_targets, reverse=True),
        "speedup_vs_gd": gd_tight["wall_s"] / flow_row["wall_s"],
        "evals_ratio_vs_gd": gd_tight["vf_evals"] / flow_row["vf_evals"],
        "accuracy_vs_cost": rows,
        "steps_vs_log_inv_alpha": {"runs": scaling, "slope": float(slope), "intercept": float(intercept),
                                    "steps_per_log_first": float(per_log[0]), "steps_per_log_last": float(per_log[-1]),
                                    "at_most_linear": bool(per_log[-1] <= per_log[0] * 1.05)},
        "throughput": throughput,
        "stiff": stiff_section,
        "stiff_speedup": stiff_section["stiff_speedup"],
        "compile_s": {
            "flow_single": flow_row["compile_s"],
            "flow_vmapped": max(r["compile_s"] for r in throughput),
            "gd": rows[1]["compile_s"],
            "optax": rows[-1]["compile_s"],
        },
    }
    with output_folder(out, kind="bench", overwrite=overwrite) as tmp:
        atomic_write_text(os.path.join(tmp, "bench.json"), json.dumps(result, indent=2) + "\n")
        atomic_write_text(os.path.join(tmp, "bench.md"), to_markdown(result) + stiff_markdown(stiff_section))
    return result


# ----------------------------------------------------------------------------- stiff section
_STIFF_TEMPLATE = {1: 10.0, 2: 2.5}  # p = 5, two frequencies; width 8: 120 parameters


def _modular_case(alpha: float, seed: int = 0):
    from .models import QuadraticNetwork
    from .tasks import fourier_template, ModularAddition

    task = ModularAddition(fourier_template(5, _STIFF_TEMPLATE))
    return QuadraticNetwork(5, 8, key=jax.random.PRNGKey(seed), init_scale=alpha), task


def _linear_case(alpha: float, seed: int = 0):
    from .models import TwoLayer
    from .tasks.regression import teacher_spectrum

    s = np.array([10.0, 1.0, 0.1, 0.01])  # spans 10³
    task = teacher_spectrum(jax.random.PRNGKey(1), 8, 8, s)
    return TwoLayer(8, 8, 8, "linear", key=jax.random.PRNGKey(seed), init_scale=alpha), task


def _crossings(traj: Trajectory, levels) -> np.ndarray:
    """Each feature's first crossing of its level (a scalar or one level per feature)."""
    from .steps import crossing_time

    F = np.asarray(traj.observables["features"])
    F = F[:, None] if F.ndim == 1 else F
    levels = np.broadcast_to(np.asarray(levels, dtype=float), F.shape[1:])
    return np.array([crossing_time(traj.times, F[:, k], levels[k]) for k in range(F.shape[1])], dtype=float)


def _lambda_max(model, task, iterations: int = 60) -> float:
    """λ_max(∇²L) at `model` by power iteration on HVPs."""
    from jax.flatten_util import ravel_pytree

    from .models.base import parameters
    from .stiff import StabilityBound

    params, static = eqx.partition(parameters(model), eqx.is_inexact_array)
    y, unravel = ravel_pytree(params)
    grad = jax.grad(lambda z: task.loss(eqx.combine(unravel(z), static)))
    return float(StabilityBound(iterations=iterations).lambda_max(y, grad))


# Evaluations are counted with host callbacks, one per gradient or HVP, which slow a run by
# 10–100×: only runs whose timed solve took at most this long are counted again.
_COUNT_MAX_WALL_S = 5.0
_IMPLICIT_MAX_STEPS = 20_000
_IMPLICIT_METHODS = ("implicit dense", "implicit matrix-free", "auto")


def run_stiff_bench(*, quick: bool = False, rtol: float = 1e-6, implicit_rtol: float = 1e-7,
                    linear_implicit_rtol: float = 1e-8, alphas=None,
                    cases: tuple[str, ...] = ("degree3", "linear-1e3")) -> dict:
    """The `stiff` section: degree-3 (modular addition, quadratic network) and a linear teacher
    whose singular values span 10³, at several α: Tsit5, implicit with a dense Newton solve,
    implicit matrix-free (CG on HVPs), automatic switching, and GD at its stability limit.

    **Arguments:**

    - `quick`: fewer α and no runs that take minutes.
    - `rtol`: tolerance of Tsit5.
    - `implicit_rtol`: tolerance of the implicit solvers. Tsit5 is stability-bound after the first
      drop, so its steps are far shorter than its tolerance asks and its drop times are ~1e-5
      accurate at rtol 1e-6; the accuracy-bound implicit solver matches that at rtol 1e-7 (at
      1e-6 it is ~1e-4 off). The comparison is at equal accuracy.
    - `linear_implicit_rtol`: the same for the linear teacher. Its later modes grow inside
      parameter entries that the first mode made O(1), where a per-entry tolerance allows an
      absolute error rtol·|θ_i| on a mode still far smaller: at 1e-7 the s = 0.1 mode's drop time
      is 5e-4 off at α = 1e-6, at 1e-8 1e-5 (Tsit5 at 1e-6 is stability-bound and far tighter).
    - `alphas`: run only the degree-3 case at these α, every method (a small smoke configuration).
    - `cases`: which cases to run (`"degree3"`, `"linear-1e3"`); the speed-up needs `"degree3"`.

    **Returns:** the section; `stiff_speedup` = Tsit5 wall / best stiff wall on the degree-3 case
    at the smallest α where Tsit5 runs.
    """
    from . import stiff

    # α where Tsit5 still finishes (its steps grow like 1/α², see below) and α for the implicit
    # solvers only; the κ = 2 linear teacher at its own α (plateaus ∝ ln(1/α)).
    explicit_alphas = [2e-1, 1e-1] if quick else [2e-1, 1e-1, 5e-2]
    implicit_alphas = explicit_alphas if quick else [2e-1, 1e-1, 5e-2, 1e-2, 1e-3, 1e-4]
    linear_alphas = [1e-2, 1e-4, 1e-6]
    count_max_wall = _COUNT_MAX_WALL_S
    if alphas is not None:  # a smoke configuration: short runs, all counted
        explicit_alphas = implicit_alphas = sorted({float(a) for a in alphas}, reverse=True)
        quick, count_max_wall = True, math.inf
    makers = {"degree3": (_modular_case, 40.0), "linear-1e3": (_linear_case, None)}
    runs = []
    for case, (make, t_fac) in makers.items():
        if case not in cases or (quick and case != "degree3"):
            continue
        if case == "degree3":
            alphas, explicit = sorted(set(explicit_alphas) | set(implicit_alphas), reverse=True), explicit_alphas
        else:
            alphas = explicit = linear_alphas
        for a in alphas:
            model, task = make(a)
            if t_fac is None:  # κ = 2: plateaus ∝ ln(1/α)/s
                s_min = float(np.min(np.asarray(task.singular_values)))
                t_max = 3.0 * math.log(1 / a) / s_min
                levels = np.asarray(task.singular_values) / 2
            else:
                t_max = t_fac / a
                levels = 0.5
            kw = dict(t_max=t_max, rtol=rtol, n_save=2001, n_snapshots=2, converge_tol=1e-9, max_steps=8_000_000)
            # An implicit run that needs this many steps has failed at its job: stop it there.
            implicit_max = dict(max_steps=_IMPLICIT_MAX_STEPS)
            irtol = implicit_rtol if case == "degree3" else linear_implicit_rtol
            methods = [("implicit dense", dict(solver="implicit", linear_solver="dense", rtol=irtol, **implicit_max)),
                       ("implicit matrix-free", dict(solver="implicit", linear_solver="cg", rtol=irtol, **implicit_max)),
                       ("auto", dict(solver="auto", rtol=irtol))]
            if a in explicit:
                methods.insert(0, ("Tsit5", dict(solver=dfx.Tsit5())))

            results = {}
            for name, extra in methods:
                traj, compile_s, wall = _warm_timed(lambda **o: simulate(model, task, **{**kw, **extra, **o}), t_max)
                if name != "Tsit5" and wall > count_max_wall:
                    evals = {"grad": None, "hvp": None}
                elif name != "Tsit5":
                    stiff.EVAL_COUNT.update(grad=0, hvp=0)
                    simulate(model, task, **{**kw, **extra}, count_evals=True)
                    evals = dict(stiff.EVAL_COUNT)
                    evals["grad"] += _TSIT5_EVALS_PER_STEP * int(traj.stats.get("explicit_steps", 0)) if name == "auto" else 0
                else:
                    evals = {"grad": _TSIT5_EVALS_PER_STEP * int(traj.stats["steps"]) + 1, "hvp": 0}
                results[name] = traj
                runs.append({
                    "case": case, "init_scale": a, "method": name, "t_max": t_max,
                    "rtol": rtol if name == "Tsit5" else irtol, "steps": int(traj.stats["steps"]), "rejected": int(traj.stats["rejected"]),
                    "implicit_steps": int(traj.stats.get("implicit_steps", 0)),
                    "t_switch": float(traj.stats.get("t_switch", -1.0)),
                    "grad_evals": evals["grad"], "hvp_evals": evals["hvp"],
                    "wall_s": wall, "compile_s": compile_s, "status": traj.status,
                    "drop_times": _crossings(traj, levels).tolist(),
                })
                _progress(runs[-1])
            if a in explicit:
                # GD at its stability limit: η = 1.9/λ_max, λ_max at the end of the flow (its largest).
                lr = 1.9 / _lambda_max(results["Tsit5"].final, task)
                gd_kw = {k: v for k, v in kw.items() if k not in ("rtol", "max_steps")}
                traj, compile_s, wall = _warm_timed(
                    lambda **o: simulate(model, task, learning_rate=lr, **{**gd_kw, **o}), t_max)
                results["GD (stability limit)"] = traj
                runs.append({
                    "case": case, "init_scale": a, "method": "GD (stability limit)", "t_max": t_max,
                    "setting": f"lr {lr:.3g} = 1.9/λ_max", "steps": int(traj.stats["steps"]), "rejected": 0,
                    "implicit_steps": 0, "t_switch": -1.0, "grad_evals": int(traj.stats["steps"]), "hvp_evals": 0,
                    "wall_s": wall, "compile_s": compile_s, "status": traj.status,
                    "drop_times": _crossings(traj, levels).tolist(),
                })
                _progress(runs[-1])
            ref_name = "Tsit5" if a in explicit else "implicit dense"
            ref_row = [r for r in runs if r["case"] == case and r["init_scale"] == a and r["method"] == ref_name][0]
            ref = results[ref_name]
            for r in runs:
                if r["case"] == case and r["init_scale"] == a:
                    rel = np.abs(np.asarray(r["drop_times"]) / np.asarray(ref_row["drop_times"]) - 1)
                    r["drop_time_error_vs"] = ref_name
                    r["drop_time_error"] = float(np.nanmax(rel)) if np.any(np.isfinite(rel)) else None
                    # Plateau levels: the loss on the common save grid, relative to the initial loss.
                    other = results[r["method"]]
                    n = min(len(other.loss), len(ref.loss))
                    dl = np.abs(np.asarray(other.loss[:n]) - np.asarray(ref.loss[:n])) / abs(float(ref.loss[0]))
                    r["loss_error"] = float(np.nanmax(dl)) if np.any(np.isfinite(dl)) else None

    def fit(method):
        rows = [r for r in runs if r["case"] == "degree3" and r["method"] == method]
        x = np.log([1 / r["init_scale"] for r in rows])
        y = np.array([r["steps"] for r in rows], dtype=float)
        if len(rows) < 2:
            return None
        # steps ∝ α^{−e}: the exponent e of a power law; and the slope b of steps ≈ a + b·ln(1/α).
        e = float(np.polyfit(x, np.log(y), 1)[0])
        b = float(np.polyfit(x, y, 1)[0])
        return {"alphas": [r["init_scale"] for r in rows], "steps": y.astype(int).tolist(),
                "power_exponent": e, "log_slope": b, "steps_per_log": (y / x).round(1).tolist()}

    fits = {m: fit(m) for m in ("Tsit5", *_IMPLICIT_METHODS)}
    a_speed, speedups, best_at = min(explicit_alphas), {}, {}
    if "degree3" in cases:
        for a in explicit_alphas:
            rows = [r for r in runs if r["case"] == "degree3" and r["init_scale"] == a]
            t = [r for r in rows if r["method"] == "Tsit5"][0]["wall_s"]
            best_at[a] = min((r for r in rows if r["method"] in _IMPLICIT_METHODS), key=lambda r: r["wall_s"])
            speedups[str(a)] = t / best_at[a]["wall_s"]
    return {
        "case": "modular addition p = 5, template |x̂[1]| = 10, |x̂[2]| = 2.5, quadratic network width 8 "
                "(120 parameters), t_max = 40/α; linear teacher s = 10, 1, 0.1, 0.01 (d = width = 8)",
        "rtol": rtol,
        "implicit_rtol": implicit_rtol,
        "linear_implicit_rtol": linear_implicit_rtol,
        "runs": runs,
        "step_fits": fits,
        "stiff_speedup": speedups.get(str(a_speed)),
        "stiff_speedup_alpha": a_speed,
        "stiff_speedup_best_method": best_at[a_speed]["method"] if best_at else None,
        "stiff_speedup_by_alpha": speedups,
    }


def _progress(row: dict) -> None:
    # The full stiff section runs for tens of minutes: one line per finished run.
    print(f"bench stiff: {row['case']} α={row['init_scale']:g} {row['method']}: {row['steps']} steps, "
          f"{row['wall_s']:.2f} s, {row['status']}", file=sys.stderr, flush=True)


def stiff_markdown(sec: dict) -> str:
    """The `stiff` tables of `bench.md`."""
    speed = ("stiff_speedup: not measured (no degree-3 case)" if sec["stiff_speedup"] is None else
             f"**stiff_speedup = {sec['stiff_speedup']:.1f}** (Tsit5 / {sec['stiff_speedup_best_method']} wall time, "
             f"degree 3, α = {sec['stiff_speedup_alpha']:g}); by α: "
             + ", ".join(f"{a}: {v:.1f}" for a, v in sec["stiff_speedup_by_alpha"].items()))
    lines = ["", "## Stiff gradient flows (implicit solvers)", "", sec["case"] + f"; rtol {sec['rtol']:g} (Tsit5, GD's reference), {sec['implicit_rtol']:g} (implicit, degree 3), {sec.get('linear_implicit_rtol', sec['implicit_rtol']):g} (implicit, linear teacher): equal accuracy.", "",
             speed, "",
             f"Evaluations are counted only where the timed run took ≤ {_COUNT_MAX_WALL_S:g} s (counting slows a run 10–100×)."
             " Errors are against Tsit5 where it runs, else against implicit dense: drop times (max relative)"
             " and the loss on the save grid (max, relative to the initial loss).", "",
             "| case | α | method | steps | rejected | grad evals | HVP evals | wall (s) | switch t | drop-time error | loss error | vs | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sec["runs"]:
        err = "—" if r.get("drop_time_error") is None else f"{r['drop_time_error']:.1e}"
        lerr = "—" if r.get("loss_error") is None else f"{r['loss_error']:.1e}"
        sw = "—" if r["t_switch"] < 0 else f"{r['t_switch']:.4g}"
        lines.append(f"| {r['case']} | {r['init_scale']:.0e} | {r['method']} | {r['steps']} | {r['rejected']} | "
                     f"{'—' if r['grad_evals'] is None else r['grad_evals']} | {'—' if r['hvp_evals'] is None else r['hvp_evals']} | {r['wall_s']:.2f} | {sw} | {err} | {lerr} | {r.get('drop_time_error_vs', '')} | {r['status']} |")
    lines += ["", "Steps against α (degree 3): steps ∝ α^(−e), slope b of steps ≈ a + b·ln(1/α), and steps / ln(1/α)"
              " (constant when steps grow like ln(1/α)).", "",
              "| method | α | steps | e | b | steps / ln(1/α) |", "|---|---|---|---|---|---|"]
    for m, f in sec["step_fits"].items():
        if f:
            lines.append(f"| {m} | {', '.join(f'{a:g}' for a in f['alphas'])} | {', '.join(map(str, f['steps']))} | "
                         f"{f['power_exponent']:.2f} | {f['log_slope']:.1f} | {', '.join(map(str, f['steps_per_log']))} |")
    return "\n".join(lines) + "\n"


def _throughput(batches, alpha, t_max, n_save, repeats) -> list[dict]:
    """Members per second of a vmapped ensemble over seeds, against a single solve."""
    setup = _setup(0, alpha)
    keys = jax.random.split(jax.random.PRNGKey(0), max(batches))
    params = get_preset(PRESET).parameters()
    d, width = params["d"], params["width"]
    build = lambda k: type(setup.model)(d, width, d, "linear", key=k, init_scale=alpha)
    kw = dict(t_max=t_max, n_save=n_save, n_snapshots=2)
    _, first, single = _timed(lambda: simulate(setup.model, setup.task, **kw), repeats)
    rows = []
    for b in batches:
        models = eqx.filter_vmap(build)(keys[:b])
        tr, first_b, best = _timed(lambda: simulate(models, setup.task, **kw), repeats)
        rows.append({
            "batch": b, "wall_s": best, "members_per_s": b / best, "compile_s": max(first_b - best, 0.0),
            "per_member_speedup_vs_single": single / (best / b),
            "max_steps": int(np.max(tr.stats["steps"])),
        })
    return rows


def to_markdown(r: dict) -> str:
    """The tables of `bench.md`."""
    dev = r["device"]
    lines = [
        f"# saddlestep bench ({'quick' if r['quick'] else 'full'})", "",
        f"Device: {dev['platform']} ({dev['kind']}), {dev['cpu_count']} CPU cores; {r['dtype']}; "
        f"jax {r['versions'].get('jax', '?')}, diffrax {r['versions'].get('diffrax', '?')}.",
        f"Preset `{r['preset']}`, α = {r['init_scale']:g}, horizon t = {r['t_max']:.4g}; drop-time error = "
        f"max_k |t_k/t_k,ref − 1| against Dopri8 at rtol 1e-12.", "",
        f"**speedup_vs_gd = {r['speedup_vs_gd']:.1f}** (GD wall time at {r['gd_targets'][-1]:.0e} error / flow wall time at rtol 1e-6); "
        f"vector-field evaluations ratio {r['evals_ratio_vs_gd']:.0f}.", "",
        "## Accuracy against cost", "",
        "| method | setting | target error | drop-time error | wall (ms) | VF evals | wall / flow | evals / flow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["accuracy_vs_cost"]:
        lines.append(
            f"| {row['method']} | {row['setting']} | {row['target_error']:.0e} | {row['error']:.2e} | "
            f"{1e3 * row['wall_s']:.1f} | {row['vf_evals']} | {row['wall_ratio_vs_flow']:.1f} | {row['evals_ratio_vs_flow']:.0f} |"
        )
    sc = r["steps_vs_log_inv_alpha"]
    lines += ["", "## Solver steps against ln(1/α) (Tsit5, rtol 1e-6, preset horizon)", "",
              "| α | ln(1/α) | steps | rejected | steps / ln(1/α) | status | wall (ms) |", "|---|---|---|---|---|---|---|"]
    for row in sc["runs"]:
        lines.append(f"| {row['init_scale']:.0e} | {row['log_inv_alpha']:.1f} | {row['steps']} | {row['rejected']} | "
                     f"{row['steps'] / row['log_inv_alpha']:.1f} | {row['status']} | {1e3 * row['wall_s']:.1f} |")
    lines += ["", f"Fit: steps ≈ {sc['intercept']:.0f} + {sc['slope']:.1f}·ln(1/α); at most linear: {sc['at_most_linear']}.",
              "", "## Ensemble throughput (vmap over seeds)", "",
              "| batch | wall (ms) | members/s | per-member speedup vs single | compile (s) | max steps |",
              "|---|---|---|---|---|---|"]
    for row in r["throughput"]:
        lines.append(f"| {row['batch']} | {1e3 * row['wall_s']:.1f} | {row['members_per_s']:.1f} | "
                     f"{row['per_member_speedup_vs_single']:.2f} | {row['compile_s']:.2f} | {row['max_steps']} |")
    c = r["compile_s"]
    lines += ["", "## Compile time (s)", "", "| flow single | flow vmapped (max) | GD | optax |", "|---|---|---|---|",
              f"| {c['flow_single']:.2f} | {c['flow_vmapped']:.2f} | {c['gd']:.2f} | {c['optax']:.2f} |", ""]
    return "\n".join(lines)
