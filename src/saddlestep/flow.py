"""`simulate`: gradient flow dθ/dt = −∇L(θ) with Diffrax, or discrete training with optax.

The methods live in `saddlestep.methods`, the compiled cores in `saddlestep._integrate`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import methods as _methods
from ._integrate import discrete_grid, Observe, Problem, RESULTS as RESULTS, status_names, TRACE_COUNT as TRACE_COUNT
from .methods import AbstractMethod, Discrete
from .models.base import AbstractModel, degree as _model_degree, parameters
from .progress import say
from .tasks.base import AbstractTask, check_positive as _positive
from .trajectory import Trajectory


class PrecisionWarning(UserWarning):
    """The floating-point precision cannot resolve this init scale (reference/agf.md §5.1)."""


class StepBudgetWarning(UserWarning):
    """The solver spent its step budget before `t_max`: the record ends early."""


@contextlib.contextmanager
def budget_noted_by_caller() -> Iterator[None]:
    """Silence `StepBudgetWarning` inside: for callers that note a spent budget themselves, naming
    the `--set` that lifts it (a run's summary, a sweep's runs, `converge`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StepBudgetWarning)
        yield


def check_precision(model: AbstractModel, init_scale: np.ndarray) -> None:
    """Warn when the dtype cannot resolve dormant components at this init scale.

    Once some components are O(1), a dormant one of size ~α^{1−τ₁/τ_k} shares float entries with
    them and is lost to rounding below machine epsilon: later jump times then come out wrong.
    Observed safe ranges: α ≳ `precision_floor` of the model's class in float64 (1e-12; 1e-8 for
    diagonal networks, whose sign flips depend on resolving u² − v² = 2α²), α ≳ 1e-4 in float32.
    """
    leaves = [x for x in jax.tree.leaves(parameters(model)) if eqx.is_inexact_array(x)]
    single = not jax.config.read("jax_enable_x64") or any(x.dtype == jnp.float32 for x in leaves)
    alpha = float(np.min(init_scale))
    if single:
        if alpha < 1e-4:
            warnings.warn(
                f"init_scale: α = {alpha:g} in float32 loses dormant components to rounding; "
                "enable float64 (jax.config.update('jax_enable_x64', True)) or use α ≥ 1e-4",
                PrecisionWarning,
                stacklevel=3,
            )
        elif not jax.config.read("jax_enable_x64"):
            warnings.warn(
                "JAX runs without float64 (jax_enable_x64 is off): tolerances below 1e-6 and "
                "small init scales are unreliable; enable it with jax.config.update('jax_enable_x64', True)",
                PrecisionWarning,
                stacklevel=3,
            )
        return
    floor = type(model).precision_floor
    if alpha < floor:
        warnings.warn(
            f"init_scale: α = {alpha:g} is below the float64 floor {floor:g}: dormant components of "
            "later steps fall below rounding once earlier ones are learned, so later jump times are "
            "unreliable (use the AGF predictor for smaller α)",
            PrecisionWarning,
            stacklevel=3,
        )


class Save(eqx.Module):
    """What a run records, as diffrax's `SaveAt` does for a solve.

    **Arguments:**

    - `n`: points of the save grid; at least 3. Discrete training rounds it up so that the
      snapshots fall on save points (n − 1 a multiple of snapshots − 1: 151 with 21 snapshots
      gives 161).
    - `snapshots`: the parameters are kept at this many times; at least 2.
    - `observables`: `fn(model)` or `fn(model, task)` returning a dict of arrays (or any pytree),
      recorded on the save grid beside the task's into `Trajectory.observables` (pass the same
      function again to reuse the compilation).
    - `spacing`: `"linear"`, both grids uniform in t (and so in t/ln(1/α)); or `"log"`, t = 0 and
      then geometric from `start`·t_max to t_max, for staircases whose drops span decades of
      time (a uniform grid over a far horizon puts every early drop, and the features that label
      it, in its first interval).
    - `start`: where a log grid begins, as a fraction of t_max in (0, 1) (traced: changing it
      does not recompile).
    """

    n: int = 2001
    snapshots: int = 21
    observables: Callable | None = None
    spacing: str = "linear"
    start: float = 1e-6

    def __check_init__(self):
        if int(self.n) != self.n or int(self.snapshots) != self.snapshots or self.n < 3 or self.snapshots < 2:
            raise ValueError(f"save: expected n ≥ 3 and snapshots ≥ 2 (integers), got n={self.n}, "
                             f"snapshots={self.snapshots}")
        if self.spacing not in ("linear", "log"):
            raise ValueError(f"save: expected spacing 'linear' or 'log', got {self.spacing!r}")
        if not 0.0 < self.start < 1.0:
            raise ValueError(f"save: expected 0 < start < 1 (a fraction of t_max), got {self.start}")


class Stop(eqx.Module):
    """When a converged run ends before `t_max`.

    **Arguments:**

    - `converge_tol`: stop once L − L_floor ≤ converge_tol·(L(0) − L_floor).
    - `loss_floor`: the infimum of the loss (None: the task's, when it knows one). A floor above
      the infimum ends the run where the loss reaches it, as "converged", mid-drop if need be
      (`simulate` warns when the loss was still falling there).
    """

    converge_tol: float = 1e-12
    loss_floor: float | None = None

    def __check_init__(self):
        if not self.converge_tol >= 0:
            raise ValueError(f"stop: expected converge_tol ≥ 0, got {self.converge_tol}")
        if self.loss_floor is not None and not math.isfinite(self.loss_floor):
            raise ValueError(f"stop: expected a finite loss_floor (or None: the task's), got {self.loss_floor}")


def simulate(
    model: AbstractModel,
    task: AbstractTask,
    *,
    t_max: float,
    method: AbstractMethod | str | dfx.AbstractSolver | None = None,
    rtol: float = 1e-6,
    atol: float | None = None,
    save: Save | None = None,
    stop: Stop | None = None,
    progress: bool | None = False,
    mesh: jax.sharding.Mesh | None = None,
    **older: Any,
) -> Trajectory:
    """Integrate the gradient flow of `model` on `task` from its (small) initialization.

    A batch of models (built with `eqx.filter_vmap` over keys, so `model.init_scale` has a
    batch axis) runs as one vmapped ensemble and returns a batched `Trajectory`.

    **Arguments:**

    - `model`: the network, at its initialization; its `init_scale` α sets the tolerances.
    - `task`: the loss and observables.
    - `t_max`: the horizon (physical time; learning rate × steps for `Discrete`).
    - `method`: how to advance (`saddlestep.methods`): `Explicit(solver=Tsit5())` (the default),
      `Implicit(linear_solver=…)`, `AutoSwitch(stiffness=…)`, `Discrete(learning_rate, optimizer)`;
      a name in `METHODS` (`"explicit"`, `"implicit"`, `"auto"`) or a Diffrax solver.
    - `rtol`, `atol`: tolerances; `atol` defaults to rtol·α, since the parameters start O(α) and
      a plateau's escape time is set by their relative accuracy (reference/engineering.md §1.2).
    - `save`: what is recorded (`Save(n, snapshots, observables, spacing, start)`; default `Save()`).
    - `stop`: when a converged run ends early (`Stop(converge_tol, loss_floor)`; default `Stop()`).
    - `progress`: show progress — a bar on a terminal, a few plain lines elsewhere (default:
      on a terminal, or inside `progress.reporting()`; never for a batch).
    - `mesh`: a one-axis device mesh; a batch is split over its devices with `shard_map`, each
      device running its own adaptive loop (the batch is padded to a multiple of the devices).

    The older keywords still work: `solver`, `max_steps`, `linear_solver`, `stiffness`,
    `count_evals`, `learning_rate` and `optimizer` build the method; `n_save`, `n_snapshots`,
    `save_spacing`, `save_start` and `observables` the `Save`; `converge_tol` and `loss_floor` the `Stop`.

    **Returns:** a `Trajectory`.
    """
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model: expected a saddlestep model, got {type(model).__name__}")
    if not isinstance(task, AbstractTask):
        raise ValueError(f"task: expected a saddlestep task, got {type(task).__name__}")
    save, stop, older = _legacy_record(save, stop, older)
    method = _legacy_method(method, older)
    init_scale = np.asarray(model.init_scale, dtype=float)
    batched = init_scale.ndim == 1
    if init_scale.ndim > 1 or not np.all((init_scale > 0) & np.isfinite(init_scale)):
        raise ValueError(f"init_scale: expected positive finite values, got {init_scale}")
    t_max, rtol = _positive("t_max", t_max), _positive("rtol", rtol)
    if not rtol < 1.0:
        raise ValueError(f"rtol: expected a relative tolerance in (0, 1), e.g. 1e-6, got {rtol:g}")
    n_save, n_snapshots, converge_tol = int(save.n), int(save.snapshots), float(stop.converge_tol)
    if mesh is not None and not batched:
        raise ValueError("mesh: sharding needs a batch of models (a leading batch axis)")
    probe = jax.tree.map(lambda x: x[0], model) if batched else model
    task.validate(probe)
    check_precision(probe, init_scale)
    observe = _observe(save.observables, probe, task)
    loss_floor = task.loss_floor(probe) if stop.loss_floor is None else stop.loss_floor
    if isinstance(method, Discrete):
        _positive("learning_rate", method.learning_rate)
        n_save, n_snapshots = discrete_grid(n_save, n_snapshots)
    atols = rtol * init_scale if atol is None else np.full_like(init_scale, _positive("atol", atol))
    scalars = dict(init_scale=init_scale, t_max=t_max, rtol=rtol, atol=atols, converge_tol=converge_tol,
                   loss_floor=-math.inf if loss_floor is None else float(loss_floor), grid_start=float(save.start))
    shape = init_scale.shape
    params, static = eqx.partition(parameters(model), eqx.is_inexact_array)
    meter = _progress_meter(progress, batched)
    problem = Problem(
        # NumPy, not jnp: seven host-side jnp ops cost a short run 0.26 ms of dispatch; jit takes either.
        params, static, task, {k: np.broadcast_to(np.asarray(v, np.float64), shape) for k, v in scalars.items()},
        n_save, n_snapshots, observe, sum(x.size for x in jax.tree.leaves(params)) // (shape[0] if batched else 1),
        shape[0] if batched else None, mesh,
        meter, save.spacing,
    )
    if stop.loss_floor is not None:
        start = _check_floor_below_start(model, task, float(stop.loss_floor), batched)
    traj = _trajectory(method.run(problem), method, problem, model, probe)
    _warn_budget(traj, method, t_max)
    if stop.loss_floor is not None and converge_tol <= 1e-8:
        # (A larger converge_tol stops by a fraction of the loss on purpose, mid-drop: the
        # deep-ReLU presets' stop_loss_fraction.)
        _warn_floor_reached_falling(traj, task, float(stop.loss_floor), start, batched)
    return traj


def _loss_and_rate_one(model, task):
    params, static = eqx.partition(parameters(model), eqx.is_inexact_array)
    value, grad = jax.value_and_grad(lambda p: task.loss(eqx.combine(p, static)))(params)
    return value, sum(jnp.sum(g**2) for g in jax.tree.leaves(grad))


@eqx.filter_jit
def _loss_and_rate(model, task, batched: bool):
    """(L, ‖∇L‖²) of the model, or of each member of a batch."""
    if batched:
        return eqx.filter_vmap(_loss_and_rate_one, in_axes=(eqx.if_array(0), None))(model, task)
    return _loss_and_rate_one(model, task)


def _batched_loss_and_rate(model, task, batched: bool) -> tuple[np.ndarray, np.ndarray]:
    value, rate = _loss_and_rate(model, task, batched)
    return np.atleast_1d(np.asarray(value, dtype=float)), np.atleast_1d(np.asarray(rate, dtype=float))


def _check_floor_below_start(model, task, floor: float, batched: bool) -> np.ndarray:
    """L(0) of each member; a floor at or above it would end the run before it starts."""
    start = _batched_loss_and_rate(model, task, batched)[0]
    if not np.all(start > floor):
        raise ValueError(f"stop: expected loss_floor below the initial loss L(0) = {float(np.min(start)):.6g}, "
                         f"got {floor:.6g} (it is the loss's infimum, where a converged run ends)")
    return start


def _warn_floor_reached_falling(traj: Trajectory, task, floor: float, start: np.ndarray, batched: bool) -> None:
    """A converged run should end at rest: at L − floor = ε·(L(0) − floor) near a minimum the
    loss falls at ‖∇L‖² ≈ 2λε(L(0) − floor), so over the whole run it would fall by a fraction
    2λ·t·ε of its drop, far below 10⁻³ for ε = 1e-12. A floor above the infimum ends the run
    where the loss crosses it, mid-drop, falling at the drop's rate."""
    status = np.atleast_1d(np.asarray(traj.status))
    if traj.final is None or not (status == "converged").any():
        return
    _, rate = _batched_loss_and_rate(traj.final, task, batched)
    t_end = np.atleast_1d(np.asarray(traj.t_final, dtype=float))
    falling = (status == "converged") & (rate * t_end > 1e-3 * np.abs(start - floor))
    if falling.any():
        who = "" if traj.batch_size is None else f"{int(falling.sum())} of {falling.size} members: "
        warnings.warn(
            f"stop: {who}the run ended as converged at the loss_floor {floor:.6g} while the loss was still "
            f"falling (at t = {float(t_end[falling].min()):.6g}, ‖∇L‖² = {float(rate[falling].max()):.3g}): the floor "
            "is above the loss's infimum, so the record stops mid-drop; pass the infimum, or None for the task's",
            stacklevel=3,
        )


def _warn_budget(traj: Trajectory, method: AbstractMethod, t_max: float) -> None:
    """Say so when the step budget, not the horizon or convergence, ended a run: the record then
    stops early, and a plateau cut short looks like the end of training (a piecewise-smooth σ
    such as leaky ReLU can spend 200,000 Tsit5 steps on its kinks before t = 20)."""
    hit = np.atleast_1d(np.asarray(traj.status)) == "max_steps"
    if not hit.any():
        return
    budget = getattr(method, "max_steps", None)
    spent = f"its whole step budget ({budget} steps)" if budget else "its whole step budget"
    ends = np.atleast_1d(np.asarray(traj.t_final, dtype=float))[hit]
    who = "" if traj.batch_size is None else f"{int(hit.sum())} of {hit.size} members: "
    warnings.warn(
        f"max_steps: {who}the solver used {spent} at t = {float(ends.min()):.6g} of t_max = {t_max:.6g}, "
        "so the record ends there; raise max_steps (or loosen rtol, or for a stiff flow use method='auto')",
        StepBudgetWarning,
        stacklevel=3,
    )


def _progress_meter(progress: bool | None, batched: bool) -> dfx.AbstractProgressMeter:
    """A bar on a terminal; off one, a few plain lines (`saddlestep.progress`'s rule), when asked
    (`progress=True`, or None inside `progress.reporting()`)."""
    from .progress import on_terminal, reporting_now

    if batched or progress is False or (progress is None and not (on_terminal() or reporting_now())):
        return dfx.NoProgressMeter()
    if on_terminal():
        return dfx.TqdmProgressMeter(refresh_steps=50)
    _PLAIN_CLOCK.reset()
    return _PlainMeter()


class _PlainClock:
    """Host side of `_PlainMeter`: says a line when the solve passes another fifth of t_max, or
    when `progress.PLAIN_EVERY_S` seconds have passed since the last line."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        import time

        self.start = self.last = time.monotonic()

    def tick(self, fraction, crossed, steps) -> None:
        import time

        from . import progress as _progress

        fraction, now = float(np.asarray(fraction)), time.monotonic()
        if fraction >= 1 or not (bool(np.asarray(crossed)) or now - self.last >= _progress.PLAIN_EVERY_S):
            return
        self.last = now
        share = f"{100 * fraction:.0f}%" if fraction >= 0.01 else f"{100 * fraction:.2g}%"
        say(f"flow: {share} of t_max after {int(np.asarray(steps)):,} solver steps, {now - self.start:.0f} s in")


_PLAIN_CLOCK = _PlainClock()


class _PlainMeter(dfx.AbstractProgressMeter):
    """Plain progress lines on stderr. Diffrax's text meter speaks only when the solve has moved
    another fixed share of t_max, and the share is linear in time: a staircase spends most of its
    wall time (plateaus, a stiff tail) within the first percent of a horizon set past the last
    drop, and the meter said nothing for minutes. This one also asks the host every
    `every_steps` solver steps, which then speaks at most every `PLAIN_EVERY_S` seconds."""

    every_steps: int = 256
    share: float = 0.2

    def init(self):
        return jnp.zeros(()), jnp.zeros((), dtype=jnp.int32)

    def step(self, state, progress):
        last, steps = state
        steps = steps + 1
        crossed = progress - last >= self.share
        ask = crossed | (steps % self.every_steps == 0)
        jax.lax.cond(ask, lambda: jax.debug.callback(_PLAIN_CLOCK.tick, progress, crossed, steps), lambda: None)
        return jnp.where(crossed, progress, last), steps

    def close(self, state):
        pass  # the phase line says when it is done


_SAVE_KEYS = {"n_save": "n", "n_snapshots": "snapshots", "observables": "observables", "save_spacing": "spacing",
              "save_start": "start"}
_STOP_KEYS = {"converge_tol": "converge_tol", "loss_floor": "loss_floor"}


def _legacy_record(save, stop, kw: dict[str, Any]) -> tuple[Save, Stop, dict[str, Any]]:
    """`save` and `stop` from themselves or the older flat keywords (`n_save=`, `converge_tol=`, …)."""
    def one(given, keys, cls, name):
        flat = {field: kw.pop(key) for key, field in keys.items() if key in kw}
        if given is not None and not isinstance(given, cls):
            raise ValueError(f"{name}: expected a saddlestep.{cls.__name__}, got {type(given).__name__}")
        if given is not None and flat:
            raise ValueError(f"{name}: give either {name}= or {', '.join(sorted(flat))}, not both")
        return given if given is not None else cls(**flat)

    return one(save, _SAVE_KEYS, Save, "save"), one(stop, _STOP_KEYS, Stop, "stop"), kw


def _legacy_method(method, kw: dict[str, Any]) -> AbstractMethod:
    """The method from `method` and the older keywords (`solver=`, `learning_rate=`, …)."""
    known = {"solver", "max_steps", "linear_solver", "stiffness", "count_evals", "learning_rate", "optimizer"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise TypeError(f"simulate() got an unexpected keyword argument {unknown[0]!r}")
    if "solver" in kw:
        if method is not None:
            raise ValueError("solver: give either method or solver, not both")
        method = kw["solver"]
    lr, optimizer = kw.get("learning_rate"), kw.get("optimizer")
    if lr is not None or optimizer is not None:
        if lr is None:
            raise ValueError("learning_rate: required with an optimizer (it sets the time axis)")
        return Discrete(_positive("learning_rate", lr), optimizer)
    return _methods.as_method(method, max_steps=kw.get("max_steps"), linear_solver=kw.get("linear_solver"),
                              stiffness=kw.get("stiffness"), count_evals=bool(kw.get("count_evals", False)))


def _observe(fn, probe, task) -> Observe:
    """The save grid's record, checked once on the host (shapes only) so errors name the argument."""
    if fn is None:
        return Observe()
    if not callable(fn):
        raise ValueError(f"observables: expected a function of the model (or of the model and task), got {fn!r}")
    try:
        inspect.signature(fn).bind(probe, task)
        with_task = True
    except TypeError:
        with_task = False
    except ValueError:  # no signature (a builtin): assume one argument
        with_task = False
    observe = Observe(fn, with_task)
    p, static = eqx.partition(probe, eqx.is_inexact_array)
    try:
        jax.eval_shape(lambda q: observe(eqx.combine(q, static), task), p)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        # e.g. a string or None among the values: the raw JAX error names neither the argument
        # nor what it expected.
        raise ValueError(f"observables: expected a function returning arrays (a dict or pytree of them), "
                         f"evaluating it on the model failed: {str(err).splitlines()[0]}") from None
    return observe


def _trajectory(out, method: AbstractMethod, problem: Problem, model, probe) -> Trajectory:
    """The host-side `Trajectory` of a core's output."""
    batched = problem.batch is not None
    times = np.asarray(out.times)
    step_times, step_loss = _step_record(out.step_record)
    if isinstance(method, Discrete):
        # With fewer steps than save points the integer save grid repeats a step: keep one copy.
        repeat = np.concatenate([np.zeros_like(times[..., :1], dtype=bool), np.diff(times, axis=-1) == 0], axis=-1)
        times = np.where(repeat, np.nan, times)
    status = status_names(out.result)
    rebuild = lambda p: None if p is None else _with_alpha(eqx.combine(p, problem.static), model)
    stats = {k: np.asarray(v) if batched else (float(v) if k == "t_switch" else int(v)) for k, v in out.stats.items()}
    t_final = np.asarray(out.t_final) if batched else float(out.t_final)
    member = lambda i: {k: np.asarray(v)[i] for k, v in out.stats.items()}
    phases = ([_methods.phases(method, problem.n_params, member(i), float(np.asarray(t_final)[i]))
               for i in range(problem.batch or 0)]
              if batched else _methods.phases(method, problem.n_params, stats, float(t_final)))
    keep = lambda x: x if batched or x is None else x[np.isfinite(step_times)]
    traj = Trajectory(
        times=times,
        loss=np.where(np.isfinite(times), np.asarray(out.loss), np.nan),
        observables={k: np.asarray(v) for k, v in out.observables.items()},
        init_scale=np.asarray(model.init_scale, dtype=float) if batched else float(model.init_scale),
        status=status if batched else status[0],
        t_final=t_final,
        stats=stats,
        method=_methods.method_name(method, problem.n_params),
        feature_labels=problem.task.feature_labels(probe),
        snapshot_times=np.asarray(out.snapshot_times),
        snapshots=rebuild(out.snapshots),
        final=rebuild(_take_last(out.final, batched)),
        learning_rate=float(method.learning_rate) if isinstance(method, Discrete) else None,
        step_times=keep(step_times),
        step_loss=keep(step_loss),
        phases=phases,
        kappa=_model_degree(probe),
    )
    return traj if batched else _trim(traj)


def _step_record(record):
    """The solver-step record in time order, NaN-padded (diffrax fills unused entries with inf)."""
    if record is None:
        return None, None
    t, L = (np.asarray(x, dtype=float) for x in record)
    used = np.isfinite(t)
    if t.ndim == 1:
        # Each segment writes its steps in time order from the front of its buffer, and a later
        # segment starts where the earlier one ended: the used entries are already in order
        # (compacting, not sorting, the max_steps-long buffer: a sort cost a short run 15%).
        return t[used], L[used]
    # Per member: used entries first, in their order (a stable sort of a boolean key is linear).
    order = np.argsort(~used, axis=-1, kind="stable")
    t = np.where(used, t, np.nan)
    L = np.where(used, L, np.nan)
    t, L = np.take_along_axis(t, order, -1), np.take_along_axis(L, order, -1)
    # Keep only as many columns as the longest member used.
    n = int(np.max(np.sum(used, axis=-1), initial=0))
    return t[..., :n], L[..., :n]


def _take_last(final, batched):
    # SubSaveAt(t1=True) keeps a time axis of length one: drop it.
    axis = 1 if batched else 0
    return jax.tree.map(lambda x: np.take(np.asarray(x), -1, axis=axis), final)


def _with_alpha(tree, model):
    return eqx.tree_at(lambda m: m.init_scale, tree, model.init_scale, is_leaf=lambda x: x is None)


def _trim(traj: Trajectory) -> Trajectory:
    keep = np.isfinite(traj.times)
    traj.times = traj.times[keep]
    traj.loss = traj.loss[keep]
    traj.observables = {k: v[keep] for k, v in traj.observables.items()}
    return traj


