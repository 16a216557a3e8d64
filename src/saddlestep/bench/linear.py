"""`saddlestep bench`: the flow against discrete GD on `linear` (accuracy and cost, steps against
ln(1/α), ensemble throughput), and the driver that writes bench.json and bench.md."""

from __future__ import annotations

import json
import os
import time

import diffrax as dfx
import equinox as eqx
import jax
import numpy as np
import optax

from ..clock import log_inv
from ..flow import simulate
from ..outputs import atomic_write_text, check_out, output_folder
from ..presets import get_preset
from ..progress import phase, reporting_now, say
from .common import _device, _setup, _timed, _TSIT5_EVALS_PER_STEP, calibrate_lr, drop_times, PRESET
from .stiff_section import run_stiff_bench, run_stiff_large, stiff_large_markdown, stiff_markdown
from .agf import agf_markdown, run_agf_bench
from .relu import relu_markdown, run_relu_bench
from .word2vec import run_sgns_bench, sgns_markdown


def _section(name: str, *, enabled: bool = True):
    """Say which section runs (inside `progress.reporting()`, as the CLI's bench is): a full bench
    takes an hour, and sections minutes each in silence."""
    return phase(f"bench: {name}", enabled=enabled and reporting_now())


def run_bench(
    out: str | os.PathLike,
    *,
    quick: bool = False,
    gd_targets: tuple[float, ...] = (1e-3, 1e-4),
    alphas: tuple[float, ...] | None = None,
    batches: tuple[int, ...] | None = None,
    stiff_alphas: tuple[float, ...] | None = None,
    agf_presets: tuple[str, ...] | None = None,
    sgns_vocab_size: int | None = None,
    relu_case: dict | None = None,
    stiff_large: tuple[dict, tuple[float, ...]] | None = None,
    overwrite: bool = False,
) -> dict:
    """Run the benchmark and write `bench.json` and `bench.md` into `out` (each atomically).

    **Arguments:**

    - `out`: the output folder (created if needed).
    - `quick`: a reduced configuration (10–15 minutes on 2 CPU cores).
    - `gd_targets`: drop-time errors at which GD is run.
    - `alphas`: init scales of the steps-against-ln(1/α) table (default 1e-3 … 1e-12).
    - `batches`: ensemble sizes of the throughput table (default by device and `quick`).
    - `stiff_alphas`: init scales of the `stiff` section's degree-3 case (default by `quick`).
    - `agf_presets`: presets of the `agf` section (default: every preset with an AGF predictor).
    - `sgns_vocab_size`: V of the `word2vec` section (exact SGNS; default 300 quick, 2000 full;
      0 skips the section).
    - `relu_case`: the `relu` section's preset configuration (default `bench.relu.QUICK_CASE` or
      `FULL_CASE`).
    - `stiff_large`: (`modular` overrides, α) of the large stiff case (default: the preset at its
      defaults, 1,080 parameters, α = 0.1 quick, 0.1 and 0.01 full).
    - `overwrite`: replace an earlier bench output at `out` (see `saddlestep.outputs`).

    **Returns:** the dictionary written to `bench.json`; its top-level `speedup_vs_gd` is GD's wall
    time at the tightest target (1e-4) over the flow's at rtol 1e-6; `sgns_wall_s` the exact SGNS
    flow's wall time (None when skipped); `relu_speedup_vs_gd` GD's wall time over the flow's on a
    ReLU teacher–student at equal drop-time accuracy (the `relu` preset's rtol).
    """
    from ..runs import versions

    out = os.fspath(out)
    check_out(out, kind="bench", overwrite=overwrite)
    if reporting_now():
        say(f"bench{' --quick' if quick else ''}: linear, the flow against GD (then ensembles, stiff, agf, word2vec, relu)…")
    alpha = get_preset(PRESET).init_scale
    setup = _setup(0, alpha)
    model, task = setup.model, setup.task
    s = np.asarray(task.singular_values)
    levels = s / 2
    repeats = 1 if quick else 3
    n_fine = 20001
    # Time each method on a coarse save grid and measure its drop times on a second, fine run:
    # timed on the fine grid, saving 20k points cost the flow more than its own steps, and
    # `--quick` reported a third of the full run's speedup.
    n_coarse = 201

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
        "error": error(flow_run(n_fine)), "wall_s": best, "compile_s": max(first - best, 0.0),
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
            if quick:
                lr, e = lr0 * target / e0, None
            else:
                lr, e = calibrate_lr(lambda lr: error(gd_run(lr, optimizer(lr), n_fine)), lr0, e0, target)
            opt = optimizer(lr)
            gd_run(lr, opt, n_coarse, 200 * lr)
            timed = [_timed(lambda: gd_run(lr, opt, n_coarse), 0) for _ in range(max(repeats, 1))]
            best = min(t[1] for t in timed)
            if e is None:
                e = error(gd_run(lr, opt, n_fine))
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
    with _section("ensemble throughput"):
        throughput = _throughput(batches, alpha, t_max, n_coarse, repeats)
    with _section("stiff"):
        stiff_section = run_stiff_bench(quick=quick, alphas=stiff_alphas)
    large_overrides, large_alphas = stiff_large if stiff_large is not None else (None, None)
    with _section("stiff, large"):
        large_section = run_stiff_large(quick=quick, alphas=large_alphas, overrides=large_overrides)
    with _section("agf"):
        agf_section = run_agf_bench(quick=quick, presets=agf_presets)
    with _section("word2vec", enabled=sgns_vocab_size != 0):
        sgns_section = None if sgns_vocab_size == 0 else run_sgns_bench(quick=quick, vocab_size=sgns_vocab_size)
    with _section("relu"):
        relu_section = run_relu_bench(quick=quick, case=relu_case)

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
        "stiff_large": large_section,
        "stiff_large_speedup": large_section["stiff_large_speedup"],
        "agf": agf_section,
        "agf_max_ratio": agf_section["max_ratio"],
        "word2vec": sgns_section,
        "sgns_wall_s": None if sgns_section is None else sgns_section["sgns_wall_s"],
        "relu": relu_section,
        "relu_speedup_vs_gd": relu_section["relu_speedup_vs_gd"],
        "compile_s": {
            "flow_single": flow_row["compile_s"],
            "flow_vmapped": max(r["compile_s"] for r in throughput),
            "gd": rows[1]["compile_s"],
            "optax": rows[-1]["compile_s"],
        },
    }
    with output_folder(out, kind="bench", overwrite=overwrite) as tmp:
        atomic_write_text(os.path.join(tmp, "bench.json"), json.dumps(result, indent=2) + "\n")
        atomic_write_text(os.path.join(tmp, "bench.md"), to_markdown(result) + stiff_markdown(stiff_section)
                          + stiff_large_markdown(large_section)
                          + agf_markdown(agf_section) + ("" if sgns_section is None else sgns_markdown(sgns_section))
                          + relu_markdown(relu_section))
    return result


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
