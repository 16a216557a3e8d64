"""`saddlestep bench`'s `relu` section: the flow of a two-layer ReLU network on a finite sample
against gradient descent at equal drop-time accuracy (and, in the full bench, the deep ReLU
networks of the `richness` and `deep-relu-escape` presets the same way).

A ReLU network's vector field is only Lipschitz: it has a kink wherever a neuron's pre-activation
on a sample changes sign. Neurons settle on those surfaces and slide along them (a Filippov
sliding mode), so an explicit solver crosses one at almost every step. The embedded error
estimate of such a step is first order in h (a jump of the field times h), not fifth, and the
step size is set by the tolerance alone: steps ∝ 1/rtol (measured: 466, 2,489, 19,026 and
1.59 million steps at rtol 1e-4, 1e-5, 1e-6 and 1e-8 over the first two drops of the full case
below). The chatter does not reach the first drop's time, which is as accurate at rtol 1e-4 as at
1e-6, but a loose tolerance can send a later plateau along another path on some problems, so the
`relu` preset keeps rtol 1e-6. This section measures the flow at several tolerances against GD
whose learning rate is calibrated to the same drop-time error (GD's error is an O(η) bias).

Drop times are the crossings of the loss through the midpoint of the plateaus around each drop
of a Tsit5 reference at `REFERENCE_RTOL`, interpolated by a local cubic on a fine save grid;
runs are timed on a coarse grid (saving changes no iterate).
"""

from __future__ import annotations

import numpy as np

from ..crossings import first_crossing
from ..flow import simulate
from ..methods import Discrete, Explicit
from ..presets import get_preset
from ..steps import detect_steps, Step
from .common import _timed, calibrate_lr

# The issue-18 case: a Gaussian teacher–student with three teacher neurons; and a small one.
FULL_CASE = {"inputs": "gaussian", "n": 400, "d": 10, "width": 32, "teacher_norms": (3.0, 2.0, 1.0)}
QUICK_CASE = {"inputs": "gaussian", "n": 100, "d": 6, "width": 12, "teacher_norms": (2.5, 1.5)}
FULL_ALPHA, QUICK_ALPHA = 1e-4, 1e-3
REFERENCE_RTOL = 1e-7
# Below this the reference itself (and the crossing interpolation) cannot tell errors apart.
ERROR_FLOOR = 1e-5
_FINE, _COARSE = 20001, 201
_DROPS = 2  # the horizon ends a quarter past the second drop of the reference


def _case(quick: bool, case: dict | None, init_scale: float | None):
    preset = get_preset("relu")
    params = preset.parameters()
    params.update(case if case is not None else (QUICK_CASE if quick else FULL_CASE))
    alpha = init_scale if init_scale is not None else (QUICK_ALPHA if quick else FULL_ALPHA)
    setup = preset.setup(params, init_scale=alpha, seed=0, data=None)
    return setup.model, setup.task, setup.t_max, alpha, preset.rtol


def drop_levels(traj, count: int) -> tuple[list[float], float]:
    """The midpoints of the first `count` drops of `traj` (where `detect_steps` times them), and
    a horizon a quarter past the last of them."""
    steps = [s for s in detect_steps(traj)[:count] if isinstance(s, Step)]  # one run: a flat list
    if not steps:
        raise RuntimeError("bench relu: the reference shows no drop")
    return [0.5 * (s.loss_before + s.loss_after) for s in steps], 1.25 * steps[-1].time


def loss_crossings(traj, levels) -> np.ndarray:
    """When the loss first falls through each level (cubic interpolation)."""
    return np.array([first_crossing(traj.times, traj.loss, lv, falling=True) for lv in levels])


def versus_gd(model, task, horizon: float, *, rtols: tuple[float, ...], quick: bool, gd_lr0: float,
              drops: int = _DROPS, flow_kwargs: dict | None = None, reference_rtol: float = REFERENCE_RTOL) -> dict:
    """The flow at each of `rtols` against GD calibrated to the same drop-time error.

    **Arguments:** `model`, `task`; `horizon`, a time past the first `drops` drops; `rtols`;
    `quick`, one timing run instead of the best of two; `gd_lr0`, GD's calibration learning rate;
    `flow_kwargs`, what else `simulate` takes for both (a preset's `loss_floor`, `converge_tol`);
    `reference_rtol`, the Tsit5 reference's tolerance.

    **Returns:** `{"t_max", "reference", "gd_calibration", "rows"}` (a row per rtol).
    """
    kw = dict(flow_kwargs or {}, n_snapshots=2)
    repeats = 1 if quick else 2
    flow = lambda rtol, t_max, n, max_steps=200_000: simulate(
        model, task, t_max=t_max, method=Explicit(max_steps=max_steps), rtol=rtol, n_save=n, **kw)
    levels, t_max = drop_levels(flow(min(rtols), horizon, _FINE), drops)
    ref = flow(reference_rtol, t_max, _FINE, max_steps=5_000_000)  # ∝ 1/rtol: sliding at the kinks
    t_ref = loss_crossings(ref, levels)

    def error(traj) -> float:
        return float(np.max(np.abs(loss_crossings(traj, levels) / t_ref - 1)))

    gd = lambda lr, n: simulate(model, task, t_max=t_max, method=Discrete(lr), n_save=n, **kw)
    gd(gd_lr0, _COARSE)  # compile once: the learning rate is traced
    e0 = error(gd(gd_lr0, _FINE))
    rows = []
    for rtol in rtols:
        traj, _, wall = _timed(lambda: flow(rtol, t_max, _COARSE), repeats)
        e_flow = error(flow(rtol, t_max, _FINE))
        target = max(e_flow, ERROR_FLOOR)
        lr, e_gd = calibrate_lr(lambda lr: error(gd(lr, _FINE)), gd_lr0, e0, target)
        # GD is compiled already (its learning rate is traced): one timed run; GD's runs are long.
        gd_traj, gd_wall, _ = _timed(lambda: gd(lr, _COARSE), 0)
        rows.append({
            "rtol": rtol, "steps": int(traj.stats["steps"]), "rejected": int(traj.stats["rejected"]),
            # "max_steps": the flow spent its budget (past the drops, or their times would be NaN).
            "status": traj.status,
            "wall_s": wall, "error": e_flow, "gd_target": target, "gd_lr": lr, "gd_error": e_gd,
            "gd_steps": int(gd_traj.stats["steps"]), "gd_wall_s": gd_wall, "speedup": gd_wall / wall,
        })
    return {"t_max": t_max,
            "reference": {"solver": "Tsit5", "rtol": reference_rtol, "steps": int(ref.stats["steps"]),
                          "drop_times": t_ref.tolist()},
            "gd_calibration": {"lr": gd_lr0, "error": e0}, "rows": rows}


def run_relu_bench(quick: bool = True, *, rtols: tuple[float, ...] | None = None, case: dict | None = None,
                   init_scale: float | None = None, gd_lr0: float = 1e-3, presets: bool | None = None) -> dict:
    """The flow against GD at equal drop-time accuracy on a two-layer ReLU teacher–student (and,
    in the full bench, on the deep ReLU presets of `PRESETS_VS_GD`).

    **Arguments:**

    - `quick`: the small case (`QUICK_CASE`) instead of the full one (`FULL_CASE`, n = 400,
      width 32, α = 1e-4).
    - `rtols`: the flow's tolerances (default 1e-4, 1e-5, 1e-6; quick 1e-4, 1e-6); the `relu`
      preset's own is added when missing.
    - `case`, `init_scale`: another `relu` preset configuration and α.
    - `gd_lr0`: GD's calibration learning rate.
    - `presets`: also measure the presets of `PRESETS_VS_GD` at their defaults (default: not in quick).

    **Returns:** `{"case", "init_scale", "t_max", "reference", "gd_calibration", "rows",
    "preset_rtol", "relu_speedup_vs_gd", "presets"}`; a row holds the flow's rtol, steps, wall
    time and drop-time error, and GD's learning rate, error, steps and wall time at that error
    (floored at `ERROR_FLOOR`); `relu_speedup_vs_gd` is GD's wall over the flow's at the preset's
    rtol; `presets` maps each preset of `PRESETS_VS_GD` to the same comparison (None when not run).
    """
    model, task, horizon, alpha, preset_rtol = _case(quick, case, init_scale)
    rtols = tuple(rtols if rtols is not None else ((1e-4, 1e-6) if quick else (1e-4, 1e-5, 1e-6)))
    if preset_rtol not in rtols:
        rtols = (preset_rtol, *rtols)
    # The horizon: a quarter past the second drop (later ReLU drops are slow and merge).
    section = versus_gd(model, task, horizon, rtols=rtols, quick=quick, gd_lr0=gd_lr0)
    headline = next(r for r in section["rows"] if r["rtol"] == preset_rtol)
    deep = ({name: run_preset_vs_gd(name) for name in PRESETS_VS_GD}
            if (not quick if presets is None else presets) else None)
    return {
        "case": {k: list(v) if isinstance(v, tuple) else v for k, v in
                 (case if case is not None else (QUICK_CASE if quick else FULL_CASE)).items()},
        "init_scale": alpha, **section, "preset_rtol": preset_rtol, "relu_speedup_vs_gd": headline["speedup"],
        "presets": deep,
    }


# Presets with ReLU kinks that the full bench also measures against GD, with GD's calibration
# learning rate (μP `richness` is stable at lr of order 10; `deep-relu-escape` at order 1).
PRESETS_VS_GD = {"richness": 30.0, "deep-relu-escape": 1.0}


def run_preset_vs_gd(name: str, gd_lr0: float | None = None) -> dict:
    """A deep ReLU preset (`richness`: μP on digits; `deep-relu-escape`: standard init on digits),
    stopped after its first escape, at its defaults: the flow at the preset's rtol and 10× looser,
    against GD at the same accuracy (reference: Tsit5 at a tenth of the preset's rtol).

    **Returns:** `{"preset", "init_scale", "preset_rtol", "t_max", "reference", "gd_calibration",
    "rows", "speedup"}` (`speedup`: GD over the flow at the preset's rtol).
    """
    preset = get_preset(name)
    setup = preset.setup(preset.parameters(), init_scale=preset.init_scale, seed=0, data=None)
    kw = {k: v for k, v in setup.simulate_kwargs.items() if k in ("loss_floor", "converge_tol")}
    rtols = (preset.rtol, 10 * preset.rtol)
    lr0 = PRESETS_VS_GD[name] if gd_lr0 is None else gd_lr0
    out = versus_gd(setup.model, setup.task, setup.t_max, rtols=rtols, quick=False, gd_lr0=lr0, drops=1,
                    flow_kwargs=kw, reference_rtol=preset.rtol / 10)
    return {"preset": name, "init_scale": preset.init_scale, "preset_rtol": preset.rtol, **out,
            "speedup": out["rows"][0]["speedup"]}


def relu_markdown(section: dict) -> str:
    """The `relu` table of `bench.md`."""
    case = section["case"]
    lines = ["", "## Two-layer ReLU on a finite sample: the flow against GD at equal drop-time accuracy", "",
             f"Gaussian teacher–student, n = {case['n']}, d = {case['d']}, width {case['width']}, teacher "
             f"norms {', '.join(f'{v:g}' for v in case['teacher_norms'])}, α = {section['init_scale']:g}, "
             f"t ≤ {section['t_max']:.3g} (two drops). Drop-time error against Tsit5 at rtol "
             f"{section['reference']['rtol']:g}; GD's learning rate is calibrated to the flow's error "
             f"(at least {ERROR_FLOOR:g}).", "",
             f"**relu_speedup_vs_gd = {section['relu_speedup_vs_gd']:.1f}** at the `relu` preset's rtol "
             f"{section['preset_rtol']:g}.", ""]
    header = ["| flow rtol | steps | rejected | error | wall (ms) | GD lr | GD error | GD steps | GD wall (ms) | GD / flow |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    capped = lambda r: " (budget spent)" if r.get("status") == "max_steps" else ""
    row = lambda r: (f"| {r['rtol']:g} | {r['steps']}{capped(r)} | {r['rejected']} | {r['error']:.1e} | {1e3 * r['wall_s']:.1f} | "
                     f"{r['gd_lr']:.2e} | {r['gd_error']:.1e} | {r['gd_steps']} | {1e3 * r['gd_wall_s']:.1f} | "
                     f"{r['speedup']:.1f} |")
    lines += [*header, *(row(r) for r in section["rows"])]
    for name, deep in (section.get("presets") or {}).items():
        lines += ["", f"`{name}` preset (deep ReLU on digits, α = {deep['init_scale']:g}, until its escape at "
                  f"t ≈ {deep['reference']['drop_times'][0]:.4g}; reference Tsit5 at rtol {deep['reference']['rtol']:g}): "
                  f"GD / flow = **{deep['speedup']:.1f}** at the preset's rtol {deep['preset_rtol']:g}.", "",
                  *header, *(row(r) for r in deep["rows"])]
    return "\n".join(lines) + "\n"
