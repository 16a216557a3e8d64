"""The stiff section: Tsit5, the implicit paths and `auto` against GD at its stability limit, on a
modular and a linear case."""

from __future__ import annotations

import math
import sys

import diffrax as dfx
import equinox as eqx
import jax
import numpy as np

from ..flow import simulate
from ..crossings import first_crossing
from ..steps import detect_steps, finest_record
from ..trajectory import Trajectory
from .common import _TSIT5_EVALS_PER_STEP, _warm_timed


_STIFF_TEMPLATE = {1: 10.0, 2: 2.5}  # p = 5, two frequencies; width 8: 120 parameters


def _modular_case(alpha: float, seed: int = 0):
    from ..models import QuadraticNetwork
    from ..tasks import fourier_template, ModularAddition

    task = ModularAddition(fourier_template(5, _STIFF_TEMPLATE))
    return QuadraticNetwork(5, 8, key=jax.random.PRNGKey(seed), init_scale=alpha), task


def _linear_case(alpha: float, seed: int = 0):
    from ..models import TwoLayer
    from ..tasks.regression import teacher_spectrum

    s = np.array([10.0, 1.0, 0.1, 0.01])  # spans 10³
    task = teacher_spectrum(jax.random.PRNGKey(1), 8, 8, s)
    return TwoLayer(8, 8, 8, "linear", key=jax.random.PRNGKey(seed), init_scale=alpha), task


def _crossings(traj: Trajectory, levels) -> np.ndarray:
    """Each feature's first crossing of its level (a scalar or one level per feature)."""
    from ..crossings import first_crossing

    F = np.asarray(traj.observables["features"])
    F = F[:, None] if F.ndim == 1 else F
    levels = np.broadcast_to(np.asarray(levels, dtype=float), F.shape[1:])
    return np.array([first_crossing(traj.times, F[:, k], levels[k]) for k in range(F.shape[1])], dtype=float)


def _lambda_max(model, task, iterations: int = 60) -> float:
    """λ_max(∇²L) at `model` by power iteration on HVPs."""
    from jax.flatten_util import ravel_pytree

    from ..models.base import parameters
    from ..stiff import StabilityBound

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
    from .. import stiff

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
                runs.append(_row(case, a, name, t_max, traj, wall, compile_s, _crossings(traj, levels).tolist(),
                                 rtol=rtol if name == "Tsit5" else irtol, **evals))
            if a in explicit:
                # GD at its stability limit: η = 1.9/λ_max, λ_max at the end of the flow (its largest).
                lr = 1.9 / _lambda_max(results["Tsit5"].final, task)
                gd_kw = {k: v for k, v in kw.items() if k not in ("rtol", "max_steps")}
                traj, compile_s, wall = _warm_timed(
                    lambda **o: simulate(model, task, learning_rate=lr, **{**gd_kw, **o}), t_max)
                results["GD (stability limit)"] = traj
                runs.append(_row(case, a, "GD (stability limit)", t_max, traj, wall, compile_s,
                                 _crossings(traj, levels).tolist(), setting=f"lr {lr:.3g} = 1.9/λ_max",
                                 grad=int(traj.stats["steps"]), hvp=0))
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


# Issue 18's large stiff case: the `modular` preset at its defaults (p = 20, width 18: 1,080
# parameters), where each implicit step costs hundreds of Hessian-vector products.
LARGE_PRESET = "modular"
# Tsit5 runs to the horizon, past the preset's own budget (1,000,000 steps), so that the speed-up
# is a measurement, not a bound: at α = 0.01 it takes 1,243,921 steps.
_TSIT5_LARGE_MAX_STEPS = 4_000_000


def run_stiff_large(*, quick: bool = False, alphas=None, overrides: dict | None = None, rtol: float = 1e-6,
                    implicit_rtol: float = 1e-7) -> dict:
    """The large stiff case: the `modular` preset (1,080 parameters at its defaults) at each α,
    Tsit5 against `auto` and the matrix-free implicit path, on the preset's horizon and stopping rule.

    **Arguments:** `quick` (α = 0.1 only; else 0.1 and 0.01), `alphas` (instead), `overrides`
    (preset `--set` values, e.g. a smaller `width` for a smoke run), `rtol` (Tsit5), `implicit_rtol`
    (the implicit solvers: equal accuracy, as in `run_stiff_bench`).

    **Returns:** `{"preset", "overrides", "n_params", "runs", "stiff_large_speedup",
    "stiff_large_alpha", "stiff_large_speedup_by_alpha"}`; the speed-up is Tsit5's wall over the
    best implicit wall at the smallest α, and a row holds steps, wall and the detected drop times
    (`detect_steps`) with their largest relative error against Tsit5's.
    """
    from ..models.base import parameters
    from ..presets import get_preset

    preset = get_preset(LARGE_PRESET)
    params = preset.parameters({k: str(v) for k, v in (overrides or {}).items()})
    alphas = list(alphas) if alphas is not None else ([0.1] if quick else [0.1, 0.01])
    runs, speedups, n_params = [], {}, None
    for a in alphas:
        setup = preset.setup(params, init_scale=a, seed=0)
        if n_params is None:
            n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(parameters(setup.model), eqx.is_inexact_array)))
        # The preset's horizon, save grid and stopping rule; the method and tolerance are the bench's.
        kw = {k: v for k, v in setup.simulate_kwargs.items() if k not in ("method", "rtol", "max_steps")}
        kw.update(t_max=setup.t_max, n_save=401, n_snapshots=2)
        methods = [("Tsit5", dict(solver=dfx.Tsit5(), rtol=rtol, max_steps=_TSIT5_LARGE_MAX_STEPS)),
                   ("auto", dict(solver="auto", rtol=implicit_rtol)),
                   ("implicit matrix-free", dict(solver="implicit", linear_solver="cg", rtol=implicit_rtol,
                                                 max_steps=_IMPLICIT_MAX_STEPS))]
        rows, trajs = {}, {}
        for name, extra in methods:
            traj, compile_s, wall = _warm_timed(
                lambda **o: simulate(setup.model, setup.task, **{**kw, **extra, **o}), setup.t_max)
            trajs[name] = traj
            rows[name] = _row("large", a, name, setup.t_max, traj, wall, compile_s,
                              [float(d.time) for d in detect_steps(traj)], rtol=extra["rtol"])
        # Every method against Tsit5 at the same loss levels, the midpoints of Tsit5's drops: when
        # each flow crosses them. (Each method's own detected drops, counted in the table, can
        # differ in number: sub-drops of 1e-4 of the loss show on Tsit5's dense step record and
        # not on an implicit solver's hundred steps, and move where a drop's tail ends.)
        levels = [0.5 * (d.loss_before + d.loss_after) for d in detect_steps(trajs["Tsit5"])]
        ref = _loss_crossings(trajs["Tsit5"], levels)
        for name, row in rows.items():
            rel = np.abs(_loss_crossings(trajs[name], levels) / ref - 1)
            row["drop_time_error_vs"] = "Tsit5"
            row["drop_time_error"] = float(np.max(rel)) if len(rel) and np.all(np.isfinite(rel)) else None
        best = min((r for n, r in rows.items() if n != "Tsit5"), key=lambda r: r["wall_s"])
        speedups[str(a)] = rows["Tsit5"]["wall_s"] / best["wall_s"]
        runs += rows.values()
    a_min = min(alphas)
    return {"preset": LARGE_PRESET, "overrides": dict(overrides or {}), "n_params": n_params, "runs": runs,
            "stiff_large_speedup": speedups[str(a_min)], "stiff_large_alpha": a_min,
            "stiff_large_speedup_by_alpha": speedups}


def _loss_crossings(traj: Trajectory, levels: list[float]) -> np.ndarray:
    """When the loss first falls through each level, on the finest record (save grid and steps)."""
    t, L = finest_record(traj)
    return np.array([first_crossing(t, L, level, falling=True) for level in levels])


def stiff_large_markdown(sec: dict) -> str:
    """The large stiff case's table of `bench.md`."""
    lines = ["", f"### Large stiff case: `{sec['preset']}` preset ({sec['n_params']} parameters)", "",
             f"**stiff_large_speedup = {sec['stiff_large_speedup']:.2f}** (Tsit5 / best implicit wall time, "
             f"α = {sec['stiff_large_alpha']:g}); by α: "
             + ", ".join(f"{a}: {v:.2f}" for a, v in sec["stiff_large_speedup_by_alpha"].items()), "",
             "Drops: those `detect_steps` finds. Tsit5's dense step record also resolves late drops of a few "
             "hundredths of a percent of the loss that the implicit path's long steps pass over. The error is "
             "when each flow crosses the midpoints of Tsit5's drops, against Tsit5's crossings.", "",
             "| α | method | steps | rejected | wall (s) | compile (s) | switch t | drops | drop-time error vs Tsit5 | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sec["runs"]:
        err = "—" if r.get("drop_time_error") is None else f"{r['drop_time_error']:.1e}"
        sw = "—" if r["t_switch"] < 0 else f"{r['t_switch']:.4g}"
        lines.append(f"| {r['init_scale']:g} | {r['method']} | {r['steps']} | {r['rejected']} | {r['wall_s']:.2f} | "
                     f"{r['compile_s']:.1f} | {sw} | {len(r['drop_times'])} | {err} | {r['status']} |")
    return "\n".join(lines) + "\n"


def _row(case: str, alpha: float, method: str, t_max: float, traj: Trajectory, wall: float, compile_s: float,
         drop_times: list[float], *, rtol: float | None = None, setting: str | None = None,
         grad: int | None = None, hvp: int | None = None) -> dict:
    """One run of the stiff tables (printed as it finishes); errors are added by the caller."""
    row = {"case": case, "init_scale": alpha, "method": method, "t_max": t_max}
    row.update({"rtol": rtol} if setting is None else {"setting": setting})
    row.update({
        "steps": int(traj.stats["steps"]), "rejected": int(traj.stats["rejected"]),
        "implicit_steps": int(traj.stats.get("implicit_steps", 0)), "t_switch": float(traj.stats.get("t_switch", -1.0)),
        "grad_evals": grad, "hvp_evals": hvp, "wall_s": wall, "compile_s": compile_s, "status": traj.status,
        "drop_times": drop_times,
    })
    _progress(row)
    return row


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
    rtols = (f"; rtol {sec['rtol']:g} (Tsit5, GD's reference), {sec['implicit_rtol']:g} (implicit, degree 3), "
             f"{sec.get('linear_implicit_rtol', sec['implicit_rtol']):g} (implicit, linear teacher): equal accuracy.")
    lines = ["", "## Stiff gradient flows (implicit solvers)", "", sec["case"] + rtols, "",
             speed, "",
             f"Evaluations are counted only where the timed run took ≤ {_COUNT_MAX_WALL_S:g} s (counting slows a run 10–100×)."
             " Errors are against Tsit5 where it runs, else against implicit dense: drop times (max relative)"
             " and the loss on the save grid (max, relative to the initial loss).", "",
             "| case | α | method | steps | rejected | grad evals | HVP evals | wall (s) | switch t "
             "| drop-time error | loss error | vs | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sec["runs"]:
        err = "—" if r.get("drop_time_error") is None else f"{r['drop_time_error']:.1e}"
        lerr = "—" if r.get("loss_error") is None else f"{r['loss_error']:.1e}"
        sw = "—" if r["t_switch"] < 0 else f"{r['t_switch']:.4g}"
        lines.append(f"| {r['case']} | {r['init_scale']:.0e} | {r['method']} | {r['steps']} | {r['rejected']} | "
                     f"{'—' if r['grad_evals'] is None else r['grad_evals']} | "
                     f"{'—' if r['hvp_evals'] is None else r['hvp_evals']} | {r['wall_s']:.2f} | {sw} | {err} | {lerr} | "
                     f"{r.get('drop_time_error_vs', '')} | {r['status']} |")
    lines += ["", "Steps against α (degree 3): steps ∝ α^(−e), slope b of steps ≈ a + b·ln(1/α), and steps / ln(1/α)"
              " (constant when steps grow like ln(1/α)).", "",
              "| method | α | steps | e | b | steps / ln(1/α) |", "|---|---|---|---|---|---|"]
    for m, f in sec["step_fits"].items():
        if f:
            lines.append(f"| {m} | {', '.join(f'{a:g}' for a in f['alphas'])} | {', '.join(map(str, f['steps']))} | "
                         f"{f['power_exponent']:.2f} | {f['log_slope']:.1f} | {', '.join(map(str, f['steps_per_log']))} |")
    return "\n".join(lines) + "\n"
