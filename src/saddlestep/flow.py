"""`simulate`: gradient flow dθ/dt = −∇L(θ) with Diffrax, or discrete training with optax."""

from __future__ import annotations

import collections
import math
import sys
import warnings
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import lineax as lx
import optax

from jax.flatten_util import ravel_pytree

from . import stiff as _stiff
from .models.base import AbstractModel, parameters
from .tasks.base import AbstractTask, check_positive as _positive
from .trajectory import Trajectory

# Number of times each compiled core was traced; tests use it to prove that seeds, init scales,
# horizons and tolerances reuse one compilation.
TRACE_COUNT: collections.Counter = collections.Counter()

_DIVERGED_FACTOR = 1e20


class PrecisionWarning(UserWarning):
    """The floating-point precision cannot resolve this init scale (reference/agf.md §5.1)."""


def check_precision(model: AbstractModel, init_scale: np.ndarray) -> None:
    """Warn when the dtype cannot resolve dormant components at this init scale.

    Once some components are O(1), a dormant one of size ~α^{1−τ₁/τ_k} shares float entries with
    them and is lost to rounding below machine epsilon: later jump times then come out wrong.
    Observed safe ranges: α ≳ 1e-12 in float64 (α ≳ 1e-8 for diagonal networks, whose sign
    flips depend on resolving u² − v² = 2α²), α ≳ 1e-4 in float32.
    """
    leaves = [x for x in jax.tree.leaves(parameters(model)) if eqx.is_inexact_array(x)]
    single = not jax.config.jax_enable_x64 or any(x.dtype == jnp.float32 for x in leaves)
    alpha = float(np.min(init_scale))
    if single:
        if alpha < 1e-4:
            warnings.warn(
                f"init_scale: α = {alpha:g} in float32 loses dormant components to rounding; "
                "enable float64 (jax.config.update('jax_enable_x64', True)) or use α ≥ 1e-4",
                PrecisionWarning,
                stacklevel=3,
            )
        elif not jax.config.jax_enable_x64:
            warnings.warn(
                "JAX runs without float64 (jax_enable_x64 is off): tolerances below 1e-6 and "
                "small init scales are unreliable; enable it with jax.config.update('jax_enable_x64', True)",
                PrecisionWarning,
                stacklevel=3,
            )
        return
    floor = 1e-8 if type(model).__name__ == "DiagonalLinear" else 1e-12
    if alpha < floor:
        warnings.warn(
            f"init_scale: α = {alpha:g} is below the float64 floor {floor:g}: dormant components of "
            "later steps fall below rounding once earlier ones are learned, so later jump times are "
            "unreliable (use the AGF predictor for smaller α)",
            PrecisionWarning,
            stacklevel=3,
        )


def _f64(x) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.float64)


def _stop_condition(loss_of, L0, loss_floor, converge_tol):
    def cond_fn(t, p, args, **kwargs):
        L = loss_of(p)
        converged = jnp.where(
            jnp.isfinite(loss_floor), L - loss_floor <= converge_tol * (L0 - loss_floor), False
        )
        diverged = ~jnp.isfinite(L) | (L > _DIVERGED_FACTOR * (1.0 + jnp.abs(L0)))
        return converged | diverged

    return cond_fn


def _flow_core(
    params, static, task, init_scale, t_max, rtol, atol, loss_floor, converge_tol,
    *, solver, n_save, n_snapshots, max_steps, progress_meter,
):
    TRACE_COUNT["flow"] += 1
    del init_scale  # only carried so that a batch can vmap over it

    def loss_of(p):
        return task.loss(eqx.combine(p, static))

    def vector_field(t, p, args):
        return jax.tree.map(jnp.negative, jax.grad(loss_of)(p))

    def record(t, p, args):
        model = eqx.combine(p, static)
        return task.loss(model), task.observables(model)

    L0 = loss_of(params)
    grid = jnp.linspace(0.0, 1.0, n_save) * t_max
    snap_grid = jnp.linspace(0.0, 1.0, n_snapshots) * t_max
    saveat = dfx.SaveAt(
        subs=[
            dfx.SubSaveAt(ts=grid, fn=record),
            dfx.SubSaveAt(ts=snap_grid),
            dfx.SubSaveAt(t1=True),
            # The loss at every solver step: adaptive, so dense exactly where the loss drops;
            # step detection uses it whatever the save grid (unused entries are inf).
            dfx.SubSaveAt(steps=True, fn=lambda t, p, args: loss_of(p)),
        ]
    )
    sol = dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        solver,
        t0=0.0,
        t1=t_max,
        dt0=None,
        y0=params,
        saveat=saveat,
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        event=dfx.Event(_stop_condition(loss_of, L0, loss_floor, converge_tol)),
        adjoint=dfx.ForwardMode(),
        max_steps=max_steps,
        throw=False,
        progress_meter=progress_meter,
    )
    (loss, obs), snaps, final, step_loss = sol.ys
    step_times = sol.ts[3]
    t_final = sol.ts[2][-1]
    final_loss = loss_of(jax.tree.map(lambda x: x[-1], final))
    code = _status_code(sol.result, final_loss, L0)
    times = jnp.where(grid <= t_final, grid, jnp.nan)
    snap_times = jnp.where(snap_grid <= t_final, snap_grid, jnp.nan)
    stats = {
        "steps": sol.stats["num_steps"],
        "accepted": sol.stats["num_accepted_steps"],
        "rejected": sol.stats["num_rejected_steps"],
    }
    return times, loss, obs, snap_times, snaps, final, t_final, code, stats, (step_times, step_loss)


_STIFF_MODES = ("explicit", "implicit", "auto")
# Below this many parameters the Newton systems are solved densely (the Hessian from one vmapped
# batch of HVPs, then LU); above, matrix-free with CG.
_DENSE_MAX_PARAMETERS = 200


# Ritz vectors of ∇²L that precondition the matrix-free solves (`stiff.Deflation`). At small α
# the steps are long (γhλ up to 10⁶) and every curvature direction of the active neurons must be
# deflated: on the 120-parameter degree-3 case at α = 1e-4, 24 vectors took 12,148 steps and 703 s,
# 60 took 2,837 steps and 65 s; on 1,080 parameters at α = 0.1, 60 cost 10% more than 24.
_DEFLATION_RANK = 64


def _implicit_solver(rtol, atol, linear: str, count: bool, n_params: int = 0):
    """Kvaerno5 with a full Newton root finder on I + γh∇²L and a filtered error estimate."""
    rank = 0
    if linear == "dense":
        newton_ls, filter_ls = lx.LU(), lx.LU()
    else:
        rank = min(_DEFLATION_RANK, n_params // 2)
        # Inexact Newton: the Newton test judges the update, so a 1e-2 linear solve suffices
        # (1e-4 cost 25% more HVPs for the same steps); the filter only steers the step size.
        newton_ls = lx.CG(rtol=1e-2, atol=0.0, max_steps=200)
        filter_ls = lx.CG(rtol=1e-2, atol=0.0, max_steps=100)
    inner = dfx.Kvaerno5(root_finder=_stiff.NewtonCG(rtol=rtol, atol=atol, linear_solver=newton_ls, count=count))
    return _stiff.ErrorFiltered(inner, _stiff.kvaerno5_gamma(), linear_solver=filter_ls, rank=rank, count=count)


def _stiff_core(
    params, static, task, init_scale, t_max, rtol, atol, loss_floor, converge_tol,
    *, mode, linear, stiffness, n_save, n_snapshots, max_steps, progress_meter, count,
):
    """The `"implicit"` and `"auto"` paths: an optional explicit Tsit5 segment ended by a
    stiffness event, then Kvaerno5 with matrix-free Newton from there (one compiled core)."""
    TRACE_COUNT["stiff"] += 1
    del init_scale
    # A flat state: the Newton and filter systems are then plain vectors for lineax.
    y0, unravel = ravel_pytree(params)

    def loss_of(y):
        return task.loss(eqx.combine(unravel(y), static))

    grad = jax.grad(loss_of)

    def vector_field(t, y, args):
        _stiff._bump("grad", count)
        return -grad(y)

    def record(t, y, args):
        model = eqx.combine(unravel(y), static)
        return task.loss(model), task.observables(model)

    L0 = loss_of(y0)
    stop = _stop_condition(loss_of, L0, loss_floor, converge_tol)
    grid = jnp.linspace(0.0, 1.0, n_save) * t_max
    snap_grid = jnp.linspace(0.0, 1.0, n_snapshots) * t_max
    controller = dfx.PIDController(rtol=rtol, atol=atol)
    common = dict(adjoint=dfx.ForwardMode(), max_steps=max_steps, throw=False, progress_meter=progress_meter)

    def saveat(t_start):
        # Save points before the segment's start repeat its first state; they are replaced below.
        clip = lambda g: jnp.maximum(g, t_start)
        return dfx.SaveAt(subs=[dfx.SubSaveAt(ts=clip(grid), fn=record), dfx.SubSaveAt(ts=clip(snap_grid)),
                                dfx.SubSaveAt(t1=True), dfx.SubSaveAt(steps=True, fn=lambda t, y, args: loss_of(y))])

    zero = jnp.zeros((), jnp.int64)
    if mode == "auto":
        floor = jnp.where(jnp.isfinite(loss_floor), loss_floor, 0.0)

        def stiff_cond(t, y, args, **kw):
            dropped = L0 - loss_of(y) >= stiffness.drop * jnp.abs(L0 - floor)
            return stiffness(t, y, t_max, grad, dropped)

        sol1 = dfx.diffeqsolve(
            dfx.ODETerm(vector_field), dfx.Tsit5(), t0=0.0, t1=t_max, dt0=None, y0=y0,
            saveat=saveat(0.0), stepsize_controller=controller,
            event=dfx.Event((stop, stiff_cond)), **common,
        )
        explicit = sol1.ys
        steps1 = (sol1.ts[3], sol1.ys[3])
        t_switch = sol1.ts[2][-1]
        y_switch = sol1.ys[2][-1]
        switched = (sol1.result == dfx.RESULTS.event_occurred) & sol1.event_mask[1] & ~sol1.event_mask[0]
        s1 = (sol1.stats["num_steps"], sol1.stats["num_accepted_steps"], sol1.stats["num_rejected_steps"])
    else:
        explicit = None
        steps1 = None
        t_switch = jnp.zeros(())
        y_switch = y0
        switched = jnp.array(True)
        s1 = (zero, zero, zero)
    sol2 = dfx.diffeqsolve(
        dfx.ODETerm(vector_field), _implicit_solver(rtol, atol, linear, count, y0.size), t0=t_switch, t1=t_max,
        dt0=None, y0=y_switch, saveat=saveat(t_switch), stepsize_controller=controller,
        event=dfx.Event(stop), **common,
    )
    ys = sol2.ys
    step_record = (sol2.ts[3], ys[3])
    if explicit is not None:
        pick = lambda g, a, b: jnp.where((g <= t_switch).reshape(-1, *([1] * (a.ndim - 1))), a, b)
        ys = (
            jax.tree.map(lambda a, b: pick(grid, a, b), explicit[0], ys[0]),
            pick(snap_grid, explicit[1], ys[1]),
            ys[2],
        )
        # Both segments' solver steps (each in time order; the unused inf entries are dropped later).
        step_record = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), steps1, step_record)
    (loss, obs), snaps, final = ys[:3]
    t_final = sol2.ts[2][-1]
    final_loss = loss_of(final[-1])
    code = _status_code(sol2.result, final_loss, L0)
    if explicit is not None:
        # The explicit segment ran out of steps: report it (the implicit one continued anyway).
        code = jnp.where(sol1.result == dfx.RESULTS.max_steps_reached, jnp.maximum(code, 2), code)
    times = jnp.where(grid <= t_final, grid, jnp.nan)
    snap_times = jnp.where(snap_grid <= t_final, snap_grid, jnp.nan)
    s2 = (sol2.stats["num_steps"], sol2.stats["num_accepted_steps"], sol2.stats["num_rejected_steps"])
    stats = {
        "steps": s1[0] + s2[0],
        "accepted": s1[1] + s2[1],
        "rejected": s1[2] + s2[2],
        "explicit_steps": s1[0],
        "implicit_steps": jnp.where(switched, s2[0], 0),
        # −1: never switched (explicit throughout).
        "t_switch": jnp.where(switched, t_switch, -1.0),
    }
    unravel_all = lambda v: jax.vmap(unravel)(v)
    return times, loss, obs, snap_times, unravel_all(snaps), unravel_all(final), t_final, code, stats, step_record


def _status_code(result, final_loss, L0):
    diverged = ~jnp.isfinite(final_loss) | (final_loss > _DIVERGED_FACTOR * (1.0 + jnp.abs(L0)))
    code = jnp.where(
        result == dfx.RESULTS.event_occurred,
        0,
        jnp.where(
            result == dfx.RESULTS.successful,
            1,
            jnp.where(result == dfx.RESULTS.max_steps_reached, 2, 3),
        ),
    )
    return jnp.where(diverged, 3, code)


def _discrete_core(
    params, static, task, init_scale, t_max, learning_rate, loss_floor, converge_tol,
    *, optimizer, n_save, n_snapshots,
):
    TRACE_COUNT["discrete"] += 1
    del init_scale

    def loss_of(p):
        return task.loss(eqx.combine(p, static))

    grad = jax.grad(loss_of)
    L0 = loss_of(params)
    stop = _stop_condition(loss_of, L0, loss_floor, converge_tol)
    total = jnp.ceil(t_max / learning_rate - 1e-9).astype(jnp.int64)
    per_snap = (n_save - 1) // (n_snapshots - 1)

    def one_step(carry):
        p, opt_state, k, done = carry
        g = grad(p)
        if optimizer is None:
            p = jax.tree.map(lambda x, y: x - learning_rate * y, p, g)
        else:
            updates, opt_state = optimizer.update(g, opt_state, p)
            p = optax.apply_updates(p, updates)
        k = k + 1
        return p, opt_state, k, stop(None, p, None)

    def advance(carry, j):
        target = (j * total) // (n_save - 1)
        carry = jax.lax.while_loop(
            lambda c: (c[2] < target) & ~c[3], one_step, carry
        )
        model = eqx.combine(carry[0], static)
        reached = carry[2] >= target
        time = jnp.where(reached, target * learning_rate, jnp.nan)
        return carry, (time, task.loss(model), task.observables(model))

    def snapshot_block(carry, b):
        carry, saved = jax.lax.scan(advance, carry, 1 + b * per_snap + jnp.arange(per_snap))
        return carry, (saved, carry[0], jnp.where(
            carry[2] >= ((b + 1) * per_snap * total) // (n_save - 1),
            (((b + 1) * per_snap * total) // (n_save - 1)) * learning_rate, jnp.nan))

    opt_state = None if optimizer is None else optimizer.init(params)
    carry0 = (params, opt_state, jnp.asarray(0, jnp.int64), stop(None, params, None))
    first = (jnp.asarray(0.0), L0, task.observables(eqx.combine(params, static)))
    carry, (saved, snaps, snap_t) = jax.lax.scan(
        snapshot_block, carry0, jnp.arange(n_snapshots - 1)
    )
    cat = lambda a, b: jnp.concatenate([a[None], b.reshape(-1, *b.shape[2:])])
    times, loss, obs = jax.tree.map(cat, first, saved)
    snaps = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params, snaps)
    snap_t = jnp.concatenate([jnp.zeros(1), snap_t])
    p_final, _, k_final, done = carry
    final_loss = loss_of(p_final)
    t_final = k_final * learning_rate
    diverged = ~jnp.isfinite(final_loss) | (final_loss > _DIVERGED_FACTOR * (1.0 + jnp.abs(L0)))
    code = jnp.where(diverged, 3, jnp.where(done, 0, 1))
    final = jax.tree.map(lambda x: x[None], p_final)
    stats = {"steps": k_final, "accepted": k_final, "rejected": jnp.zeros_like(k_final)}
    # No solver-step record: the save grid is the finest record of a discrete run.
    return times, loss, obs, snap_t, snaps, final, t_final, code, stats, None


_flow_single = eqx.filter_jit(_flow_core)
_stiff_single = eqx.filter_jit(_stiff_core)
_discrete_single = eqx.filter_jit(_discrete_core)
_BATCHED: dict[str, Any] = {}


def _batched(core, name, mesh=None):
    if (name, mesh) not in _BATCHED:
        def run(params, static, task, *scalars, **kw):
            inner = lambda p, *s: core(p, static, task, *s, **kw)
            ensemble = jax.vmap(inner)
            if mesh is not None:
                # shard_map, not jit's automatic sharding: each device runs its own adaptive
                # loop and stops at its own slowest member (reference/engineering.md §5.1).
                # check_vma=False: diffrax's while loop mixes varying and replicated carries.
                batch = jax.sharding.PartitionSpec(mesh.axis_names[0])
                ensemble = jax.shard_map(
                    ensemble, mesh=mesh, in_specs=batch, out_specs=batch, check_vma=False
                )
            return ensemble(params, *scalars)

        _BATCHED[(name, mesh)] = eqx.filter_jit(run)
    return _BATCHED[(name, mesh)]


def _pad_batch(tree, size: int, multiple: int):
    """Repeat the first member so the batch divides evenly over the devices."""
    extra = -size % multiple
    if extra == 0:
        return tree
    return jax.tree.map(
        lambda x: jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)]), tree
    )


def simulate(
    model: AbstractModel,
    task: AbstractTask,
    *,
    t_max: float,
    solver: dfx.AbstractSolver | str | None = None,
    rtol: float = 1e-6,
    atol: float | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
    n_save: int = 2001,
    n_snapshots: int = 21,
    max_steps: int = 200_000,
    converge_tol: float = 1e-12,
    loss_floor: float | None = None,
    progress: bool | None = False,
    mesh: jax.sharding.Mesh | None = None,
    linear_solver: str = "auto",
    stiffness: _stiff.AbstractStiffness | None = None,
    count_evals: bool = False,
) -> Trajectory:
    """Integrate the gradient flow of `model` on `task` from its (small) initialization.

    With `learning_rate` (and optionally an optax `optimizer`), runs discrete full-batch
    training instead and reports time as learning rate × steps, so both share one time axis.

    A batch of models (built with `eqx.filter_vmap` over keys, so `model.init_scale` has a
    batch axis) runs as one vmapped ensemble and returns a batched `Trajectory`.

    **Arguments:**

    - `model`: the network, at its initialization; its `init_scale` α sets the tolerances.
    - `task`: the loss and observables.
    - `t_max`: the horizon (physical time).
    - `solver`: a Diffrax solver (default `Tsit5()`), adaptive with a PID controller; or
      `"explicit"` (Tsit5), `"implicit"` (Kvaerno5 with Newton on I + γh∇²L and a filtered error
      estimate, `saddlestep.stiff`), or `"auto"`: Tsit5 until the flow turns stiff (see
      `stiffness`), then the implicit solver; `stats` then records `t_switch` (−1: never).
    - `rtol`, `atol`: tolerances; `atol` defaults to rtol·α, since the parameters start O(α) and
      a plateau's escape time is set by their relative accuracy (reference/engineering.md §1.2).
      The implicit path is accuracy-bound and spends what rtol allows: a weak feature growing
      inside entries a strong one made O(1) needs rtol ≤ 1e-8 (`saddlestep.stiff`).
    - `optimizer`: an optax optimizer for discrete training (needs `learning_rate` for the time axis).
    - `learning_rate`: step size of discrete training; alone, plain gradient descent.
    - `n_save`: points of the save grid, uniform in t (and so in t/ln(1/α)).
    - `n_snapshots`: parameters are kept at this many uniformly spaced times.
    - `max_steps`: the solver's step budget.
    - `converge_tol`: stop once L − L_floor ≤ converge_tol·(L(0) − L_floor).
    - `loss_floor`: the infimum of the loss (default: the task's, when it knows one).
    - `progress`: show a progress bar (default: only when stderr is a terminal and not batched).
    - `mesh`: a one-axis device mesh; a batch is split over its devices with `shard_map`, each
      device running its own adaptive loop (the batch is padded to a multiple of the devices).

    - `linear_solver`: the implicit path's Newton solve: `"dense"` (the Hessian from a vmapped
      batch of HVPs, LU), `"cg"` (matrix-free conjugate gradients on HVPs) or `"auto"` (dense up
      to 200 parameters).
    - `stiffness`: when `"auto"` switches (default `saddlestep.stiff.StabilityBound()`).
    - `count_evals`: count gradient and Hessian-vector evaluations of the implicit path in
      `saddlestep.stiff.EVAL_COUNT` (host callbacks: for benchmarks).

    **Returns:** a `Trajectory`.
    """
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model: expected a saddlestep model, got {type(model).__name__}")
    if not isinstance(task, AbstractTask):
        raise ValueError(f"task: expected a saddlestep task, got {type(task).__name__}")
    init_scale = np.asarray(model.init_scale, dtype=float)
    batched = init_scale.ndim == 1
    if init_scale.ndim > 1 or not np.all((init_scale > 0) & np.isfinite(init_scale)):
        raise ValueError(f"init_scale: expected positive finite values, got {init_scale}")
    t_max = _positive("t_max", t_max)
    rtol = _positive("rtol", rtol)
    n_save = int(n_save)
    n_snapshots = int(n_snapshots)
    if n_save < 3 or n_snapshots < 2:
        raise ValueError("n_save, n_snapshots: expected n_save ≥ 3 and n_snapshots ≥ 2")
    probe = jax.tree.map(lambda x: x[0], model) if batched else model
    task.validate(probe)
    check_precision(probe, init_scale)
    if loss_floor is None:
        loss_floor = task.loss_floor(probe)
    loss_floor = -math.inf if loss_floor is None else float(loss_floor)

    params, static = eqx.partition(parameters(model), eqx.is_inexact_array)
    discrete = optimizer is not None or learning_rate is not None
    size = init_scale.shape[0] if batched else None
    bcast = (lambda v: jnp.full((size,), v, dtype=jnp.float64)) if batched else _f64
    if mesh is not None and not batched:
        raise ValueError("mesh: sharding needs a batch of models (a leading batch axis)")
    n_shards = 1 if mesh is None else mesh.devices.size
    if n_shards > 1:
        params = _pad_batch(params, size, n_shards)
        padded = lambda v: _pad_batch(jnp.asarray(v, dtype=jnp.float64), size, n_shards)
        bcast = lambda v, b=bcast: padded(b(v))
    elif mesh is not None:
        mesh = None  # one device: plain vmap
    if discrete:
        if learning_rate is None:
            raise ValueError("learning_rate: required with an optimizer (it sets the time axis)")
        learning_rate = _positive("learning_rate", learning_rate)
        n_snap = max(2, min(n_snapshots, n_save - 1))
        per_snap = max(1, math.ceil((n_save - 1) / (n_snap - 1)))
        n_save = per_snap * (n_snap - 1) + 1
        core = _batched(_discrete_core, "discrete", mesh) if batched else _discrete_single
        scalars = (init_scale, t_max, learning_rate, loss_floor, converge_tol)
        out = core(
            params, static, task, *map(bcast, scalars),
            optimizer=optimizer, n_save=n_save, n_snapshots=n_snap,
        )
        method = "gd" if optimizer is None else "optax"
    else:
        if isinstance(solver, str):
            if solver not in _STIFF_MODES:
                raise ValueError(f"solver: expected a diffrax solver or one of {_STIFF_MODES}, got {solver!r}")
            if solver == "explicit":
                solver = dfx.Tsit5()
        stiff_mode = solver if isinstance(solver, str) else None
        solver = dfx.Tsit5() if solver is None else solver
        if atol is None:
            atol_arr = rtol * init_scale
        else:
            atol_arr = np.full_like(init_scale, _positive("atol", atol))
        if progress is None:
            progress = sys.stderr.isatty() and not batched
        meter = dfx.TqdmProgressMeter(refresh_steps=50) if progress and not batched else dfx.NoProgressMeter()
        scalars = (init_scale, t_max, rtol, atol_arr, loss_floor, converge_tol)
        if stiff_mode is None:
            core = _batched(_flow_core, "flow", mesh) if batched else _flow_single
            out = core(
                params, static, task, *map(bcast, scalars),
                solver=solver, n_save=n_save, n_snapshots=n_snapshots,
                max_steps=int(max_steps), progress_meter=meter,
            )
            method = type(solver).__name__
        else:
            if linear_solver not in ("auto", "dense", "cg"):
                raise ValueError(f"linear_solver: expected 'auto', 'dense' or 'cg', got {linear_solver!r}")
            n_params = sum(x.size for x in jax.tree.leaves(params)) // (size or 1)
            if linear_solver == "auto":
                linear_solver = "dense" if n_params <= _DENSE_MAX_PARAMETERS else "cg"
            stiffness = _stiff.StabilityBound() if stiffness is None else stiffness
            core = _batched(_stiff_core, "stiff", mesh) if batched else _stiff_single
            out = core(
                params, static, task, *map(bcast, scalars),
                mode=stiff_mode, linear=linear_solver, stiffness=stiffness, n_save=n_save,
                n_snapshots=n_snapshots, max_steps=int(max_steps), progress_meter=meter, count=count_evals,
            )
            implicit = f"Kvaerno5+Newton-{'LU' if linear_solver == 'dense' else 'CG'}"
            method = f"auto(Tsit5->{implicit})" if stiff_mode == "auto" else implicit
    out = jax.device_get(out)
    if n_shards > 1:
        out = jax.tree.map(lambda x: x[:size], out)
    times, loss, obs, snap_t, snaps, final, t_final, code, stats, step_record = out
    times = np.asarray(times)
    step_times, step_loss = _step_record(step_record)
    if discrete:
        # With fewer steps than save points the integer save grid repeats a step: keep one copy.
        repeat = np.concatenate([np.zeros_like(times[..., :1], dtype=bool), np.diff(times, axis=-1) == 0], axis=-1)
        times = np.where(repeat, np.nan, times)
    codes = ["converged", "t_max", "max_steps", "diverged"]
    status = [codes[int(c)] for c in np.atleast_1d(code)]
    rebuild = lambda p: None if p is None else eqx.combine(p, static)
    final_model = _take_last(final, batched)
    labels = task.feature_labels(probe)
    traj = Trajectory(
        times=times,
        loss=np.where(np.isfinite(times), np.asarray(loss), np.nan),
        observables={k: np.asarray(v) for k, v in obs.items()},
        init_scale=init_scale if batched else float(init_scale),
        status=status if batched else status[0],
        t_final=np.asarray(t_final) if batched else float(t_final),
        stats={k: np.asarray(v) if batched else (float(v) if k == "t_switch" else int(v)) for k, v in stats.items()},
        method=method,
        feature_labels=labels,
        snapshot_times=np.asarray(snap_t),
        snapshots=_with_alpha(rebuild(snaps), model),
        final=_with_alpha(rebuild(final_model), model),
        learning_rate=float(learning_rate) if discrete else None,
        step_times=step_times if batched or step_times is None else step_times[np.isfinite(step_times)],
        step_loss=step_loss if batched or step_loss is None else step_loss[np.isfinite(step_times)],
    )
    return traj if batched else _trim(traj)


def _step_record(record):
    """The solver-step record in time order, NaN-padded (diffrax fills unused entries with inf)."""
    if record is None:
        return None, None
    t, L = (np.asarray(x, dtype=float) for x in record)
    t = np.where(np.isfinite(t), t, np.nan)
    L = np.where(np.isfinite(t), L, np.nan)
    order = np.argsort(t, axis=-1, kind="stable")  # NaNs last
    t, L = np.take_along_axis(t, order, -1), np.take_along_axis(L, order, -1)
    # Keep only as many columns as the longest member used.
    n = int(np.max(np.sum(np.isfinite(t), axis=-1), initial=0))
    return t[..., :n], L[..., :n]


def _take_last(final, batched):
    # SubSaveAt(t1=True) keeps a time axis of length one: drop it.
    axis = 1 if batched else 0
    return jax.tree.map(lambda x: np.take(np.asarray(x), -1, axis=axis), final)


def _with_alpha(tree, model):
    if tree is None:
        return None
    return eqx.tree_at(lambda m: m.init_scale, tree, model.init_scale, is_leaf=lambda x: x is None)


def _trim(traj: Trajectory) -> Trajectory:
    keep = np.isfinite(traj.times)
    traj.times = traj.times[keep]
    traj.loss = traj.loss[keep]
    traj.observables = {k: v[keep] for k, v in traj.observables.items()}
    return traj


