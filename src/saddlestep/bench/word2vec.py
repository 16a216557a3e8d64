"""`saddlestep bench`'s `word2vec` section: the exact SGNS flow of the `word2vec` preset on the
Wikipedia sample shipped with gensim, to the preset's horizon (past its last drop): wall time,
solver steps, and what one gradient and one loss evaluation cost."""

from __future__ import annotations


import equinox as eqx
import jax

from ..flow import simulate
from ..presets import get_preset
from ..steps import detect_steps
from .common import _DOPRI8_EVALS_PER_STEP, _TSIT5_EVALS_PER_STEP, _timed, _warm_timed

_VOCAB = {True: 300, False: 2000}  # quick, full
_D = 10
_EVALS_PER_STEP = {"Tsit5": _TSIT5_EVALS_PER_STEP, "Dopri8": _DOPRI8_EVALS_PER_STEP}


def _eval_ms(fn, x, repeats: int = 5) -> float:
    """The best wall time of a compiled `fn(x)` over `repeats` calls, in ms."""
    return 1e3 * _timed(lambda: jax.block_until_ready(fn(x)), repeats)[2]


def run_sgns_bench(quick: bool = True, *, vocab_size: int | None = None, d: int | None = None) -> dict:
    """Time the `word2vec` preset with its exact SGNS loss (the preset's solver, rtol, saves and
    horizon) at α = the preset's, seed 0.

    **Arguments:**

    - `quick`: V = 300 instead of 2000.
    - `vocab_size`: V, overriding `quick`'s.
    - `d`: the embedding dimension (default 10, at most V).

    **Returns:** `{"vocab_size", "d", "init_scale", "method", "rtol", "n_save", "t_max", "steps",
    "rejected", "grad_evals", "grad_ms", "loss_ms", "compile_s", "sgns_wall_s", "drops",
    "last_drop", "status"}`: `sgns_wall_s` is the flow's wall time with compilation excluded
    (`compile_s`, a run on a short horizon, holds it), `grad_ms`/`loss_ms` one jitted gradient
    and loss at the final state, `drops` the detected drop times.
    """
    V = _VOCAB[bool(quick)] if vocab_size is None else int(vocab_size)
    d = min(_D, V) if d is None else int(d)
    preset = get_preset("word2vec")
    params = preset.parameters({"vocab_size": str(V), "d": str(d), "loss": "sgns"})
    setup = preset.setup(params, init_scale=preset.init_scale, seed=0, data=None)
    kw = setup.simulate_kwargs
    run = lambda **o: simulate(setup.model, setup.task, **{"t_max": setup.t_max, "progress": False, **kw, **o})
    traj, compile_s, wall = _warm_timed(run, setup.t_max)
    params_final, static = eqx.partition(traj.final, eqx.is_inexact_array)
    loss_of = jax.jit(lambda p: setup.task.loss(eqx.combine(p, static)))
    drops = [float(s.time) for s in detect_steps(traj)]
    return {
        "vocab_size": V, "d": d, "init_scale": float(preset.init_scale), "method": traj.method,
        "rtol": float(kw["rtol"]), "n_save": int(kw.get("n_save", 2001)), "t_max": float(setup.t_max),
        "steps": int(traj.stats["steps"]), "rejected": int(traj.stats["rejected"]),
        "grad_evals": _EVALS_PER_STEP.get(traj.method, 0) * int(traj.stats["steps"]) or None,
        "grad_ms": _eval_ms(jax.jit(jax.grad(loss_of)), params_final), "loss_ms": _eval_ms(loss_of, params_final),
        "compile_s": compile_s, "sgns_wall_s": wall, "drops": drops,
        "last_drop": drops[-1] if drops else float("nan"), "status": traj.status,
    }


def sgns_markdown(section: dict) -> str:
    """The `word2vec` table of `bench.md`."""
    s = section
    evals = "—" if s["grad_evals"] is None else f"{s['grad_evals']:,}"
    lines = ["", "## Exact SGNS (`word2vec` preset, Wikipedia sample)", "",
             f"V = {s['vocab_size']:,}, d = {s['d']}, α = {s['init_scale']:.0e}, {s['method']} at rtol {s['rtol']:g}, "
             f"{s['n_save']} saves, horizon t = {s['t_max']:.4g} (last drop at t = {s['last_drop']:.4g}); "
             "wall time with compilation excluded.", "",
             "| steps (rejected) | gradient evals | gradient (ms) | loss (ms) | compile (s) | flow wall (s) | status |",
             "|---|---|---|---|---|---|---|",
             f"| {s['steps']} ({s['rejected']}) | {evals} | {s['grad_ms']:.1f} | {s['loss_ms']:.1f} | "
             f"{s['compile_s']:.1f} | **{s['sgns_wall_s']:.1f}** | {s['status']} |", ""]
    return "\n".join(lines)
