"""The integration cores behind `simulate`: one place owns saving, stopping events and status.

Every core takes the ODE state (the model's inexact arrays), its static rest, the task and a
dict of traced scalars (α, t_max, tolerances, learning rate), so one compilation serves a sweep;
what changes the program (solver, grid sizes, observables) is static. Each returns a `Raw`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, PyTree

from . import stiff as _stiff

_DIVERGED_FACTOR = 1e20


class RESULTS(eqx.Enumeration):
    """How a run ended (the `status` of a `Trajectory`, by name)."""

    converged = "the loss reached its floor (converge_tol)"
    t_max = "the horizon t_max was reached"
    max_steps = "the solver used its step budget (max_steps)"
    diverged = "the loss diverged"


STATUSES: tuple[str, ...] = tuple(sorted(RESULTS._name_to_item, key=lambda n: int(RESULTS._name_to_item[n]._value)))


def status_names(result: RESULTS) -> list[str]:
    """The names of (a batch of) `RESULTS` items, on the host."""
    return [STATUSES[int(v)] for v in np.atleast_1d(np.asarray(result._value))]


class Observe(eqx.Module):
    """The quantities recorded on the save grid: the task's observables and the user's.

    Equal functions make equal (hashable) instances, so a repeated call reuses the compilation.
    """

    fn: Callable | None = None
    with_task: bool = eqx.field(static=True, default=False)

    def __call__(self, model, task) -> tuple[Float[Array, ""], dict[str, Array]]:
        obs = dict(task.observables(model))
        if self.fn is not None:
            mine = user_observables(self.fn(model, task) if self.with_task else self.fn(model))
            taken = sorted(set(mine) & set(obs))
            if taken:
                raise ValueError(f"observables: {', '.join(map(repr, taken))} already named by the task's observables")
            obs.update(mine)
        return task.loss(model), obs


def user_observables(out: PyTree) -> dict[str, Array]:
    """A user observable's output as name → array: a dict's keys (nested ones joined by "/"),
    a pytree's paths, a lone array as `"observable"`."""
    if eqx.is_array_like(out) and not isinstance(out, (dict, list, tuple)):
        return {"observable": jnp.asarray(out)}
    named = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        named["/".join(keys)] = jnp.asarray(leaf)
    return named


class Raw(NamedTuple):
    """What a core returns (device arrays; a batch axis first when vmapped)."""

    times: Float[Array, " save"]
    loss: Float[Array, " save"]
    observables: dict[str, Array]
    snapshot_times: Float[Array, " snap"]
    snapshots: PyTree
    final: PyTree
    t_final: Float[Array, ""]
    result: RESULTS
    stats: dict[str, Array]
    step_record: tuple[Array, Array] | None


def grid_fractions(n: int, spacing: str, start=None) -> Array:
    """Save times over t_max: `n` points from 0 to 1, uniform (`"linear"`), or 0 and then
    geometric from `start` (a traced fraction, so that it never recompiles) to 1 (`"log"`)."""
    if spacing == "log":
        power = jnp.arange(n - 2, -1, -1) / (n - 2)  # ends at exactly 0: the last point is t_max
        return jnp.concatenate([jnp.zeros(1), jnp.minimum(jnp.exp(jnp.log(start) * power), 1.0)])
    return jnp.linspace(0.0, 1.0, n)


def _grids(scalars, n_save, n_snapshots, spacing):
    start = scalars["grid_start"]
    return (grid_fractions(n_save, spacing, start) * scalars["t_max"],
            grid_fractions(n_snapshots, spacing, start) * scalars["t_max"])


def _stop_condition(loss_of, L0, loss_floor, converge_tol):
    def cond_fn(t, y, args, **kwargs):
        L = loss_of(y)
        converged = jnp.where(jnp.isfinite(loss_floor), L - loss_floor <= converge_tol * (L0 - loss_floor), False)
        return converged | _diverged(L, L0)

    return cond_fn


def _diverged(L, L0) -> Bool[Array, ""]:
    return ~jnp.isfinite(L) | (L > _DIVERGED_FACTOR * (1.0 + jnp.abs(L0)))


def _result(sol_result, final_loss, L0) -> RESULTS:
    ode = ((dfx.RESULTS.event_occurred, RESULTS.converged), (dfx.RESULTS.successful, RESULTS.t_max),
           (dfx.RESULTS.max_steps_reached, RESULTS.max_steps))
    out = RESULTS.diverged
    for code, status in ode:
        out = RESULTS.where(sol_result == code, status, out)
    return RESULTS.where(_diverged(final_loss, L0), RESULTS.diverged, out)


def _solve(vector_field, solver, t0, y0, scalars, record, loss_of, event, *, n_save, n_snapshots, spacing, max_steps,
           progress_meter):
    """One adaptive Diffrax segment from t0 to t_max: the save grid (through `record`), the
    snapshots, the end state and the loss at every solver step."""
    grid, snap_grid = _grids(scalars, n_save, n_snapshots, spacing)
    # Save points before the segment's start repeat its first state; a later segment's caller
    # replaces them with the earlier segment's values.
    clip = lambda g: jnp.maximum(g, t0)
    saveat = dfx.SaveAt(subs=[
        dfx.SubSaveAt(ts=clip(grid), fn=lambda t, y, args: record(y)),
        dfx.SubSaveAt(ts=clip(snap_grid)),
        dfx.SubSaveAt(t1=True),
        # The loss at every solver step: adaptive, so dense exactly where the loss drops;
        # step detection uses it whatever the save grid (unused entries are inf).
        dfx.SubSaveAt(steps=True, fn=lambda t, y, args: loss_of(y)),
    ])
    return dfx.diffeqsolve(
        dfx.ODETerm(vector_field), solver, t0=t0, t1=scalars["t_max"], dt0=None, y0=y0, saveat=saveat,
        stepsize_controller=dfx.PIDController(rtol=scalars["rtol"], atol=scalars["atol"]),
        event=dfx.Event(event), adjoint=dfx.ForwardMode(), max_steps=max_steps, throw=False,
        progress_meter=progress_meter,
    )


def _stats(sol) -> dict[str, Array]:
    s = sol.stats
    return {"steps": s["num_steps"], "accepted": s["num_accepted_steps"], "rejected": s["num_rejected_steps"]}


def _finish(sol, grid_t, snap_t, ys, loss_of, L0, result=None, stats=None, step_record=None, unravel=None):
    (loss, obs), snaps, final = ys[:3]
    t_final = sol.ts[2][-1]
    final_loss = loss_of(jax.tree.map(lambda x: x[-1], final))
    result = _result(sol.result, final_loss, L0) if result is None else result(final_loss)
    if unravel is not None:
        snaps, final = jax.vmap(unravel)(snaps), jax.vmap(unravel)(final)
    return Raw(
        jnp.where(grid_t <= t_final, grid_t, jnp.nan), loss, obs, jnp.where(snap_t <= t_final, snap_t, jnp.nan),
        snaps, final, t_final, result, _stats(sol) if stats is None else stats,
        (sol.ts[3], ys[3]) if step_record is None else step_record,
    )


def _flat(params, static, task):
    """(y0, unravel, loss, gradient) on the parameters as one flat vector: every stage's linear
    combination, the error norm and the interpolation are then one array operation each, not one
    per leaf (the linear bench's flow 25.9 → 20.3 ms)."""
    y0, unravel = ravel_pytree(params)
    loss_of = lambda y: task.loss(eqx.combine(unravel(y), static))
    return y0, unravel, loss_of, jax.grad(loss_of)


def explicit_core(params, static, task, scalars, *, solver, n_save, n_snapshots, max_steps, progress_meter,
                  observe, spacing):
    """Any Diffrax solver on the parameters as one flat vector (`_flat`)."""
    y0, unravel, loss_of, grad = _flat(params, static, task)
    vector_field = lambda t, y, args: -grad(y)
    L0 = loss_of(y0)
    stop = _stop_condition(loss_of, L0, scalars["loss_floor"], scalars["converge_tol"])
    sol = _solve(vector_field, solver, 0.0, y0, scalars, lambda y: observe(eqx.combine(unravel(y), static), task),
                 loss_of, stop, n_save=n_save, n_snapshots=n_snapshots, spacing=spacing, max_steps=max_steps,
                 progress_meter=progress_meter)
    return _finish(sol, *_grids(scalars, n_save, n_snapshots, spacing), sol.ys, loss_of, L0, unravel=unravel)


def _every_step(meter: dfx.AbstractProgressMeter) -> dfx.AbstractProgressMeter:
    """`meter`, asking the host at every step: an implicit step costs milliseconds to seconds
    (10⁴ parameters), so a meter that speaks every few hundred steps fell silent for many minutes."""
    for name in ("every_steps", "refresh_steps"):
        if hasattr(meter, name):
            return dataclasses.replace(meter, **{name: 1})
    return meter


def stiff_core(params, static, task, scalars, *, implicit, stiffness, n_save, n_snapshots, max_steps,
               progress_meter, observe, spacing):
    """The implicit path: with `stiffness`, a Tsit5 segment ended by a stiffness event first;
    then `implicit.solver(rtol, atol, n)` (built here, so that it sees each member's traced
    tolerances) on the flat state from there."""
    # A flat state (`_flat`): the Newton and filter systems are then plain vectors for lineax.
    y0, unravel, loss_of, grad = _flat(params, static, task)
    count = implicit.count_evals

    def vector_field(t, y, args):
        _stiff._bump("grad", count)
        return -grad(y)

    record = lambda y: observe(eqx.combine(unravel(y), static), task)
    L0 = loss_of(y0)
    stop = _stop_condition(loss_of, L0, scalars["loss_floor"], scalars["converge_tol"])
    grid, snap_grid = _grids(scalars, n_save, n_snapshots, spacing)
    kw = dict(n_save=n_save, n_snapshots=n_snapshots, spacing=spacing, max_steps=max_steps,
              progress_meter=progress_meter)
    zero = jnp.zeros((), jnp.int64)
    if stiffness is not None:
        floor = jnp.where(jnp.isfinite(scalars["loss_floor"]), scalars["loss_floor"], 0.0)

        def stiff_cond(t, y, args, **kwargs):
            dropped = L0 - loss_of(y) >= stiffness.drop * jnp.abs(L0 - floor)
            return stiffness(t, y, scalars["t_max"], grad, dropped)

        sol1 = _solve(vector_field, dfx.Tsit5(), 0.0, y0, scalars, record, loss_of, (stop, stiff_cond), **kw)
        t_switch, y_switch = sol1.ts[2][-1], sol1.ys[2][-1]
        switched = (sol1.result == dfx.RESULTS.event_occurred) & sol1.event_mask[1] & ~sol1.event_mask[0]
        s1 = _stats(sol1)
    else:
        t_switch, y_switch, switched = jnp.zeros(()), y0, jnp.array(True)
        s1 = {"steps": zero, "accepted": zero, "rejected": zero}
    solver = implicit.solver(scalars["rtol"], scalars["atol"], y0.size)
    kw["progress_meter"] = _every_step(progress_meter)
    sol2 = _solve(vector_field, solver, t_switch, y_switch, scalars, record, loss_of, stop, **kw)
    ys, step_record = sol2.ys, (sol2.ts[3], sol2.ys[3])
    if stiffness is not None:
        pick = lambda g, a, b: jnp.where((g <= t_switch).reshape(-1, *([1] * (a.ndim - 1))), a, b)
        ys = (jax.tree.map(lambda a, b: pick(grid, a, b), sol1.ys[0], ys[0]), pick(snap_grid, sol1.ys[1], ys[1]),
              ys[2])
        # Both segments' solver steps (each in time order; the unused inf entries are dropped later).
        step_record = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), (sol1.ts[3], sol1.ys[3]), step_record)

    def result(final_loss):
        out = _result(sol2.result, final_loss, L0)
        if stiffness is None:
            return out
        # The explicit segment ran out of steps: report it (the implicit one continued anyway).
        ran_out = (sol1.result == dfx.RESULTS.max_steps_reached) & (out != RESULTS.diverged)
        return RESULTS.where(ran_out, RESULTS.max_steps, out)

    s2 = _stats(sol2)
    stats = {k: s1[k] + s2[k] for k in s2}
    stats.update(explicit_steps=s1["steps"], implicit_steps=jnp.where(switched, s2["steps"], 0),
                 t_switch=jnp.where(switched, t_switch, -1.0))  # −1: never switched (explicit throughout)
    return _finish(sol2, grid, snap_grid, ys, loss_of, L0, result, stats, step_record, unravel)


def discrete_core(params, static, task, scalars, *, optimizer, scaled, n_save, n_snapshots, observe,
                  spacing):
    """Full-batch discrete training: θ ← θ − η·u with u the gradient (or an optax transform of it,
    `scaled`); with `scaled=False` the optax transform applies its own step size."""
    loss_of = lambda p: task.loss(eqx.combine(p, static))
    grad = jax.grad(loss_of)
    lr = scalars["learning_rate"]
    L0 = loss_of(params)
    stop = _stop_condition(loss_of, L0, scalars["loss_floor"], scalars["converge_tol"])
    # Whole steps up to t_max, never past it (a rate that does not divide t_max stops short).
    total = jnp.maximum(jnp.floor(scalars["t_max"] / lr + 1e-9), 1).astype(jnp.int64)
    per_snap = (n_save - 1) // (n_snapshots - 1)
    if spacing == "log":
        fractions = grid_fractions(n_save, spacing, scalars["grid_start"])
        # A fraction that lands on a whole step count (up to rounding) is that step.
        target_of = lambda j: jnp.floor(fractions[j] * total + 1e-9).astype(jnp.int64)
    else:  # integer arithmetic: the same steps as always
        target_of = lambda j: (j * total) // (n_save - 1)

    def one_step(carry):
        p, opt_state, k, done = carry
        u = grad(p)
        if optimizer is not None:
            u, opt_state = optimizer.update(u, opt_state, p)
        p = jax.tree.map(lambda x, y: x - lr * y, p, u) if scaled else optax.apply_updates(p, u)
        return p, opt_state, k + 1, stop(None, p, None)

    def advance(carry, j):
        carry = jax.lax.while_loop(lambda c: (c[2] < target_of(j)) & ~c[3], one_step, carry)
        time = jnp.where(carry[2] >= target_of(j), target_of(j) * lr, jnp.nan)
        return carry, (time, *observe(eqx.combine(carry[0], static), task))

    def snapshot_block(carry, b):
        carry, saved = jax.lax.scan(advance, carry, 1 + b * per_snap + jnp.arange(per_snap))
        end = target_of((b + 1) * per_snap)
        return carry, (saved, carry[0], jnp.where(carry[2] >= end, end * lr, jnp.nan))

    opt_state = None if optimizer is None else optimizer.init(params)
    carry0 = (params, opt_state, jnp.asarray(0, jnp.int64), stop(None, params, None))
    first = (jnp.asarray(0.0), *observe(eqx.combine(params, static), task))
    carry, (saved, snaps, snap_t) = jax.lax.scan(snapshot_block, carry0, jnp.arange(n_snapshots - 1))
    cat = lambda a, b: jnp.concatenate([a[None], b.reshape(-1, *b.shape[2:])])
    times, loss, obs = jax.tree.map(cat, first, saved)
    snaps = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params, snaps)
    p_final, _, k_final, done = carry
    final_loss = loss_of(p_final)
    result = RESULTS.where(_diverged(final_loss, L0), RESULTS.diverged,
                           RESULTS.where(done, RESULTS.converged, RESULTS.t_max))
    stats = {"steps": k_final, "accepted": k_final, "rejected": jnp.zeros_like(k_final)}
    # No solver-step record: the save grid is the finest record of a discrete run.
    return Raw(times, loss, obs, jnp.concatenate([jnp.zeros(1), snap_t]), snaps,
               jax.tree.map(lambda x: x[None], p_final), k_final * lr, result, stats, None)


# Each core counts its traces (`eqx.debug.get_num_traces`): tests prove with it that seeds, init
# scales, horizons and tolerances reuse one compilation.
CORES: dict[str, Callable] = {
    name: eqx.debug.assert_max_traces(core, max_traces=None)
    for name, core in (("flow", explicit_core), ("stiff", stiff_core), ("discrete", discrete_core))
}


class _TraceCounts(Mapping):
    """`TRACE_COUNT[name]`: how often the core `name` was traced (read-only)."""

    def __getitem__(self, name):
        return eqx.debug.get_num_traces(CORES[name])

    def __iter__(self):
        return iter(CORES)

    def __len__(self):
        return len(CORES)


TRACE_COUNT = _TraceCounts()
_SINGLE = {name: eqx.filter_jit(core) for name, core in CORES.items()}
_BATCHED: dict[Any, Callable] = {}


def _batched(name, mesh=None):
    if (name, mesh) not in _BATCHED:
        core = CORES[name]

        def run(params, static, task, scalars, **kw):
            ensemble = jax.vmap(lambda p, s: core(p, static, task, s, **kw))
            if mesh is not None:
                # shard_map, not jit's automatic sharding: each device runs its own adaptive
                # loop and stops at its own slowest member (reference/engineering.md §5.1).
                # check_vma=False: diffrax's while loop mixes varying and replicated carries.
                batch = jax.sharding.PartitionSpec(mesh.axis_names[0])
                ensemble = jax.shard_map(ensemble, mesh=mesh, in_specs=batch, out_specs=batch, check_vma=False)
            return ensemble(params, scalars)

        _BATCHED[(name, mesh)] = eqx.filter_jit(run)
    return _BATCHED[(name, mesh)]


class Problem(NamedTuple):
    """One call of `simulate`, prepared on the host: what a method integrates.

    - `params`, `static`: the model's inexact arrays (the state) and the rest.
    - `task`: the loss and the task's observables.
    - `scalars`: traced numbers (`t_max`, `rtol`, `atol`, `loss_floor`, `converge_tol`), each
      over the batch when batched.
    - `n_save`, `n_snapshots`: grid sizes; `spacing`: theirs (`"linear"` or `"log"`);
      `observe`: what the save grid records.
    - `n_params`: parameters per member; `batch`: the batch size (None: one run); `mesh`: devices.
    - `progress_meter`: Diffrax's progress meter.
    """

    params: PyTree
    static: PyTree
    task: Any
    scalars: dict[str, Array | np.ndarray]
    n_save: int
    n_snapshots: int
    observe: Observe
    n_params: int
    batch: int | None
    mesh: Any
    progress_meter: dfx.AbstractProgressMeter
    spacing: str

    def run(self, name: str, **static_kw) -> Raw:
        """Run core `name` (`"flow"`, `"stiff"`, `"discrete"`) on this problem, padded and split
        over the mesh's devices when there is one."""
        params, scalars = self.params, self.scalars
        n_shards = 1 if self.mesh is None else self.mesh.devices.size
        if n_shards > 1:
            params, scalars = _pad_batch((params, scalars), self.batch, n_shards)
        if self.batch is None:
            core = _SINGLE[name]
        else:
            core = _batched(name, self.mesh if n_shards > 1 else None)
        out = core(params, self.static, self.task, scalars, observe=self.observe, n_save=self.n_save,
                   n_snapshots=self.n_snapshots, spacing=self.spacing, **static_kw)
        out = jax.device_get(out)
        return jax.tree.map(lambda x: x[: self.batch], out) if n_shards > 1 else out

    def with_scalars(self, **values) -> "Problem":
        """This problem with more traced scalars (broadcast over the batch)."""
        shape = () if self.batch is None else (self.batch,)
        extra = {k: np.full(shape, v, dtype=np.float64) for k, v in values.items()}
        return self._replace(scalars={**self.scalars, **extra})


def _pad_batch(tree, size: int, multiple: int):
    """Repeat the first member so the batch divides evenly over the devices."""
    extra = -size % multiple
    if extra == 0:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)]), tree)


def discrete_grid(n_save: int, n_snapshots: int) -> tuple[int, int]:
    """Grid sizes for the discrete core: the snapshots at save points, blocks of equal length."""
    n_snap = max(2, min(n_snapshots, n_save - 1))
    per_snap = max(1, math.ceil((n_save - 1) / (n_snap - 1)))
    return per_snap * (n_snap - 1) + 1, n_snap
