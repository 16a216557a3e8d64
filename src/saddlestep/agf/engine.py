"""The AGF loop (Kunin et al., *Alternating Gradient Flows*, 2025): utility phases over dormant
neurons, ended by the first activation, alternating with cost phases over active ones."""

from __future__ import annotations

import collections
import math
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Float

from ..prediction import Prediction
from .problem import AbstractAGFProblem, make_problem
from ..clock import log_inv
from .. import progress as _progress

# Traces of AGF's compiled pieces (the utility-phase solve, the cost phase); tests use it to check
# that phases, seeds and init scales reuse one compilation.
TRACE_COUNT: collections.Counter = collections.Counter()

_BIG = 1e300
_KEYS = ("times", "losses", "order", "activated", "deactivated", "active", "plateau")


def thresholds(log_norm0: Float[np.ndarray, " width"], kappa: int) -> Float[np.ndarray, " width"]:
    """Activation thresholds c_i on the accumulated utility S_i (η = 1): ln(1/‖θ_i(0)‖) for κ = 2,
    (‖θ_i(0)‖^{2−κ} − 1)/(κ − 2) for κ > 2, i.e. where the neuron's norm reaches 1.

    **Arguments:** `log_norm0`, ln‖θ_i(0)‖ per neuron; `kappa`, the degree of homogeneity.

    **Returns:** c_i per neuron (Kunin et al. 2025).
    """
    if kappa == 2:
        return -log_norm0
    return (np.exp((2 - kappa) * log_norm0) - 1.0) / (kappa - 2)


def _speed(S, log_norm0, kappa):
    # ‖θ‖^{κ−2}: the rate at which a dormant direction moves on the sphere.
    if kappa == 2:
        return jnp.ones_like(S)
    inv = jnp.exp((2 - kappa) * log_norm0) - (kappa - 2) * S  # ‖θ‖^{2−κ}
    # A dormant neuron activates at ‖θ‖ = 1 (inv = 1, S = c) and ends the phase there, so the
    # exact path never sees inv < 1. Trial stages past the threshold can, and near the blow-up
    # inv → 0 their speed overflowed, leaving the event's root finder no finite interpolant
    # (AGF stopped after one step on modular at α = 1e-4); the floor changes no state before it.
    return 1.0 / jnp.maximum(inv, 0.5)


@eqx.filter_jit
def evaluate_utility(problem: AbstractAGFProblem, x, rstate):
    """`problem.utility(x, rstate)` as one compiled program (eagerly, each of its operations
    compiles on first use, for every new problem shape)."""
    return problem.utility(x, rstate)


@eqx.filter_jit
def _utility_phase(problem: AbstractAGFProblem, x, S, c, log_norm0, dormant, rstate, t0, t1, rtol, dtmin):
    TRACE_COUNT["utility"] += 1
    kappa = problem.kappa
    mask = dormant.astype(x.dtype)

    def field(t, y, args):
        x, S = y
        xn = x / jnp.linalg.norm(x, axis=1, keepdims=True)
        U = problem.utility(xn, rstate)
        G = jax.grad(lambda z: jnp.sum(problem.utility(z, rstate)))(xn)
        radial = jnp.sum(xn * G, axis=1, keepdims=True)
        speed = _speed(S, log_norm0, kappa)[:, None]
        dx = mask[:, None] * speed * (G - radial * xn)
        return dx, mask * kappa * U

    def cond(t, y, args, **kwargs):
        # Relative to the threshold: S − c itself cannot get below one ulp of c (≈ 1e-13 for
        # κ = 3 at α = 1e-3), and the event's root finder then never met its tolerance.
        _, S = y
        return jnp.max(jnp.where(dormant, (S - c) / jnp.maximum(1.0, jnp.abs(c)), -_BIG))

    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Tsit5(),
        t0=t0,
        t1=t1,
        dt0=None,
        y0=(x, S),
        saveat=dfx.SaveAt(t1=True),
        # ReLU-like neurons have kinks where a direction can slide (chatter): a floor on the
        # step keeps the solve moving there, at an O(dtmin) error in S.
        stepsize_controller=dfx.PIDController(
            rtol=rtol, atol=problem.atol, dtmin=dtmin, force_dtmin=True
        ),
        event=dfx.Event(cond, root_finder=optx.Newton(rtol=1e-13, atol=1e-13)),
        max_steps=100_000,
        throw=False,
    )
    x1, S1 = jax.tree.map(lambda a: a[-1], sol.ys)
    return sol.ts[-1], x1, S1, sol.result == dfx.RESULTS.event_occurred, sol.stats["num_steps"]


def _phase(problem, x, S, c, log_norm0, dormant, rstate, t, horizon, rtol, dtmin):
    """One utility phase from time t: (end time, x, S, whether a neuron crossed, solver steps).

    For κ > 2 this is one solve. For κ = 2 the directions move at unit speed and settle on
    local maxima of the utility in O(1) time, while a phase lasts O(c) = O(ln(1/α)); at a
    ReLU kink the settled direction chatters and the solve would crawl at its step floor
    (exhausting the step budget at tiny α, so no activation was ever found). So the phase is
    solved in chunks, and once every dormant utility has stopped changing over two chunks the
    directions are stationary, S_i grows linearly at κŪ_i, and the first crossing is solved
    in closed form."""
    t_end = t + horizon
    args = (jnp.asarray(c), jnp.asarray(log_norm0), jnp.asarray(dormant), rstate)
    if problem.kappa != 2:
        t1, x1, S1, hit, n = _utility_phase(
            problem, jnp.asarray(x), jnp.asarray(S), *args, jnp.asarray(float(t)),
            jnp.asarray(float(t_end)), jnp.asarray(rtol), jnp.asarray(dtmin),
        )
        return float(t1), np.asarray(x1), np.asarray(S1), bool(hit), int(n)
    chunk = max(0.05 * float(np.max(np.abs(c))), 1.0)
    steps, history = 0, []
    x, S = np.asarray(x), np.asarray(S)
    while t < t_end:
        t1, x1, S1, hit, n = _utility_phase(
            problem, jnp.asarray(x), jnp.asarray(S), *args, jnp.asarray(float(t)),
            jnp.asarray(float(min(t + chunk, t_end))), jnp.asarray(rtol), jnp.asarray(dtmin),
        )
        steps += int(n)
        t, x, S = float(t1), np.asarray(x1), np.asarray(S1)
        if bool(hit):
            return t, x, S, True, steps
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        U = np.where(dormant, np.asarray(evaluate_utility(problem, jnp.asarray(x), rstate)), 0.0)
        history.append(U)
        if len(history) >= 3:
            scale = max(float(np.max(np.abs(U))), 1e-300)
            if all(np.max(np.abs(history[-1] - h)) <= _STATIONARY * scale for h in history[-3:-1]):
                rate = 2.0 * U
                wait = np.where(dormant & (rate > 0), (c - S) / np.where(rate > 0, rate, 1.0), np.inf)
                dt = float(np.min(wait))
                if t + dt > t_end:
                    return t_end, x, S + rate * (t_end - t), False, steps
                return t + dt, x, S + rate * dt, True, steps
    return t, x, S, False, steps


# Largest change of any dormant utility (relative to the largest) across two chunks for the
# directions to count as settled.
_STATIONARY = 1e-7


class _Calls:
    """The problem's methods, bound once per run: each method lookup on an Equinox module builds
    a bound-method module, which on closed-form problems cost more than the phases themselves."""

    def __init__(self, problem: AbstractAGFProblem):
        names = ("exhausted", "advance", "ties", "absorb", "to_params", "enter", "cost", "start", "rebase",
                 "model", "label")
        for name in names:
            setattr(self, name, getattr(problem, name))


def _default_horizon(problem: AbstractAGFProblem, x, c, rstate) -> float:
    """How long a utility phase waits for an activation: 10³·max c_i time units, a unit being
    1/rate where the problem's rate scale (`growth_rate`, S_i grows at κU_i) is below one. This
    carries the data's scale: utilities scale like |x|^κ·|y|, so data in other units (X, Y ×
    0.02) stretches every time by 2500, and 10³·c in absolute time ended AGF before its first
    activation, predicting no step."""
    top = max(float(np.max(np.abs(c))), 1.0)
    rate = problem.growth_rate(x, rstate)
    unit = 1.0 / rate if rate is not None and math.isfinite(rate) and 0 < rate < 1 else 1.0
    return min(1e3 * top * unit, 1e250)


def _run(problem: AbstractAGFProblem, shift: float, *, horizon, rtol, max_steps, loss_tol, tie_tol, min_drop):
    """One AGF run with every initial norm multiplied by e^shift (same directions)."""
    calls = _Calls(problem)
    x, log_norm0 = problem.initial()
    log_norm0 = log_norm0 + shift
    kappa = problem.kappa
    c = thresholds(log_norm0, kappa)
    width, p = x.shape
    S = np.zeros(width)
    active = np.zeros(width, bool)
    params = np.zeros((width, p))
    order = np.full(width, np.iinfo(np.int64).max)
    x_at_activation = x.copy()
    rstate, loss0 = calls.start(params, active)
    floor = problem.loss_floor
    # The loss is a mean of squares: with no known floor, 0 still bounds it (for stopping).
    stop_floor = floor if math.isfinite(floor) else 0.0
    if horizon is None:
        horizon = _default_horizon(problem, x, c, rstate)
    t, loss = 0.0, loss0
    dtmin = problem.min_step * float(np.max(np.abs(c)))
    if rtol is None:
        rtol = problem.rtol
    record = collections.defaultdict(list)
    record["stopped"] = None
    scale = max(loss0 - floor if math.isfinite(floor) else loss0, 1e-300)
    record["phases"] = collections.Counter()
    solver_steps = 0
    # Reports inside `progress.reporting()` only, and only if AGF takes a while.
    bar = _progress.Progress("AGF", None, "activation", delay=_progress.INNER_DELAY_S)
    for _ in range(max_steps):
        dormant = ~active
        if not dormant.any() or calls.exhausted(x, dormant, rstate):
            break
        if loss - stop_floor <= loss_tol * max(loss0 - stop_floor, 1e-300):
            break
        step = calls.advance(x, S, c, dormant, rstate, horizon)
        if step is not None:
            dt, x, S1, hit = step
            t_new = t + dt
            record["phases"]["exact"] += 1
        else:
            # No exact step for this phase (a generic utility, or a configuration the exact
            # phase leaves alone): the ODE solve.
            record["phases"]["ode"] += 1
            t_new, x1, S1, hit, nsteps = _phase(problem, x, S, c, log_norm0, dormant, rstate, t, horizon, rtol, dtmin)
            solver_steps += nsteps
            x = x1 / np.linalg.norm(x1, axis=1, keepdims=True)
        if not bool(hit):
            # No activation: within the horizon none is coming (AGF is done), unless the solve
            # stopped short of it — then later steps are missing, and the prediction says so.
            if float(t_new) < t + 0.999 * horizon:
                record["stopped"] = "utility_solve"
            record["waited"] = horizon
            break
        t = float(t_new)
        S1 = np.asarray(S1)
        # Neurons that reached their threshold together; a neuron returned to dormant just below
        # it, and still losing utility, is not one of them.
        crossed = dormant & (S1 - c >= -tie_tol * np.maximum(1.0, np.abs(c))) & (S1 > S)
        S = np.where(dormant, S1, S)
        crossed = calls.ties(x, crossed, dormant)
        x, S = calls.absorb(x, S, log_norm0, crossed, dormant, rstate)
        x_at_activation[crossed] = x[crossed]
        order[crossed] = len(record["times"])
        before = np.where(active[:, None], params, 0.0)
        start = before.copy()
        start[crossed] = calls.to_params(x[crossed], rstate)
        start = calls.enter(start, crossed, active, rstate)
        new_params, still, *cost_steps = calls.cost(start, active | crossed, order)
        left = (active | crossed) & ~still
        # A neuron that leaves returns to dormant just below its threshold, keeping its
        # accumulated utility and the direction it activated with (Kunin et al. 2025, §1.7).
        x[left] = x_at_activation[left]
        S[left] = c[left] - 1e-12 * np.maximum(1.0, np.abs(c[left]))
        active = still
        params = np.where(active[:, None], new_params, 0.0)
        new_rstate, loss = calls.start(params, active)
        x = calls.rebase(x, rstate, new_rstate)
        x_at_activation = calls.rebase(x_at_activation, rstate, new_rstate)
        rstate = new_rstate
        event = (t, loss, np.flatnonzero(crossed).tolist(), np.flatnonzero(left).tolist())
        if left.any() and record["events"] and record["events"][-1] == event:
            # The same neurons entered and left at the same instant twice, the loss unchanged:
            # the next phase would repeat it (nothing moved), so AGF cannot go on from here.
            record["stopped"] = "cycling"
            break
        record["events"].append(event)
        record["cost_steps"].append(int(cost_steps[0]) if cost_steps else None)
        split = _split(x_at_activation, new_params, crossed & still) if problem.shared_space else None
        if split is not None:
            record["split"].append({"time": t, "loss": float(loss), "neurons": split[0], "directions": split[1]})
        bar.update(1, t=t, loss=float(loss))
        small = bool(record["times"]) and record["losses"][-1] - loss < min_drop * scale
        if small and t <= (1.0 + _MERGE_WINDOW) * record["last"][-1]:
            # An activation that hardly moves the loss, right after the step before it (a second
            # neuron on a learned feature), is part of that step, as `detect_steps` would see it.
            record["losses"][-1] = loss
            record["last"][-1] = t
            record["activated"][-1] += np.flatnonzero(crossed).tolist()
            record["deactivated"][-1] += np.flatnonzero(left).tolist()
            record["active"][-1] = np.flatnonzero(active).tolist()
            record["plateau"][-1] = calls.model(params)
            continue
        # A small activation long after the step before it is not that step (merged, the step's
        # plateau would be one reached only later: on a noisy sparse regression 0.00135 at
        # t = 38 became 1.9e-9, reached at t = 40,863). It opens a minor step, kept only if
        # what joins it adds up to a drop (`_drop_minor`).
        record["minor"].append(small)
        record["last"].append(t)
        record["times"].append(t)
        record["losses"].append(loss)
        record["order"].append(calls.label(before, params, crossed & active if (crossed & active).any() else crossed))
        record["activated"].append(np.flatnonzero(crossed).tolist())
        record["deactivated"].append(np.flatnonzero(left).tolist())
        record["active"].append(np.flatnonzero(active).tolist())
        record["plateau"].append(calls.model(params))
    else:
        # The budget ran out; unless AGF was done anyway, later steps are missing.
        dormant = ~active
        done = (not dormant.any() or calls.exhausted(x, dormant, rstate)
                or loss - stop_floor <= loss_tol * max(loss0 - stop_floor, 1e-300))
        record["stopped"] = None if done else "max_steps"
    _drop_minor(record, loss0, min_drop * scale)
    bar.close(f"{len(record['times'])} steps")
    record["copies"] = _copies(params, active, loss - stop_floor, loss0 - stop_floor) if record["stopped"] is None else None
    return record, loss0, c, solver_steps


# A cost phase that takes more minimizer iterations than this is converging onto a degenerate set
# of minima (BFGS: 50–110 steps a phase on attention and ReLU, 800–3,700 on modular addition,
# where the point it returns changes the later jump times).
_DEGENERATE_STEPS = 500


# A small activation joins the step before it when it comes within this fraction of that step's
# latest activation time (the same drop of the flow); later, it opens a minor step.
_MERGE_WINDOW = 0.05


def _drop_minor(record, loss0: float, smallest: float) -> None:
    """Remove the minor steps whose whole drop stayed below `smallest`; their activations go to
    `record["minor"]` as (time, loss after, activated, deactivated)."""
    before = [loss0, *record["losses"][:-1]]
    keep = [not m or b - loss >= smallest for m, b, loss in zip(record["minor"], before, record["losses"])]
    minor = [(record["times"][k], record["losses"][k], record["activated"][k], record["deactivated"][k])
             for k, kept in enumerate(keep) if not kept]
    for key in (*_KEYS, "last"):
        record[key] = [v for v, kept in zip(record[key], keep) if kept]
    record["minor"] = minor


# Unit directions closer than this (1 − cos) are one direction.
_SAME_DIRECTION = 1e-6


def _split(entry, params, group) -> tuple[int, int] | None:
    """(neurons, directions) when neurons that entered together along one direction (1 − cos <
    1e-3 between their entry directions) leave the cost phase on several (1 − cos > 1e-2); else
    None. The cost phase then learned more than one feature in one step, which gradient flow does
    only by separating near-copies, over a time that does not shrink against ln(1/α)."""
    idx = np.flatnonzero(group)
    if idx.size < 2:
        return None
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    e = unit(np.asarray(entry, dtype=float)[idx])
    if float(np.min(e @ e.T)) < 1 - 1e-3:
        return None
    reps: list[np.ndarray] = []
    for row in unit(np.asarray(params, dtype=float)[idx]):
        if not any(float(row @ r) > 1 - 1e-2 for r in reps):
            reps.append(row)
    return (int(idx.size), len(reps)) if len(reps) > 1 else None


def _copies(params, active, excess, excess0) -> tuple[int, int] | None:
    """(active neurons, distinct directions among them) when AGF ended with every neuron active,
    some of them copies of one direction, and the loss still well above its floor; else None.

    Neurons that activate together along one direction stay copies through every cost phase
    (the restricted loss is symmetric in them), so AGF sees them as one neuron; gradient flow
    can split such copies and learn more, which AGF does not follow."""
    if not active.all() or not excess > 1e-3 * excess0:
        return None
    x = params / np.maximum(np.linalg.norm(params, axis=1, keepdims=True), 1e-300)
    reps: list[np.ndarray] = []
    for row in x:
        if not any(float(row @ r) > 1 - _SAME_DIRECTION for r in reps):
            reps.append(row)
    return (len(x), len(reps)) if len(reps) < len(x) else None


def predict(
    model,
    task,
    *,
    t_max: float | None = None,
    rtol: float | None = None,
    max_steps: int = 64,
    loss_tol: float = 1e-10,
    tie_tol: float = 1e-7,
    min_drop: float = 1e-3,
    limit: bool = False,
) -> Prediction:
    """Alternating Gradient Flows (Kunin et al. 2025) from the model's actual initialization.

    All neurons start dormant at their initial norms. In a utility phase every dormant direction
    ascends its normalized utility on the unit sphere at speed ‖θ_i‖^{κ−2} while accumulating
    S_i = ∫κŪ_i dt (one Diffrax solve over all dormant neurons, or in closed form where
    utilities are quadratic); the first neuron to reach its
    threshold c_i (norm 1) activates, with any that tie. In a cost phase the active neurons
    minimize the restricted loss (least squares, reduced-rank regression, or BFGS), instantly on
    the AGF clock; a neuron the cost phase shrinks to ~0 returns to dormant with its utility.
    The state is directions and S_i, never the O(α) parameters, so any α > 0 works.

    **Arguments:**

    - `model`: an `AbstractNeuronModel` (κ ≥ 2) at its initialization.
    - `task`: a `SampleRegression`, or a `PopulationRegression` for linear two-layer networks.
    - `t_max`: how long one utility phase may wait for an activation (default 10³·max c_i, in
      units of the data's own time scale where its utilities are small; warned when no neuron
      activates at all).
    - `rtol`: relative tolerance of the utility-phase solve (default 1e-8; unused where the
      phases are solved in closed form: diagonal and linear networks, tied embeddings, and
      exactly between kinks for two-layer ReLU networks).
    - `max_steps`: the most activations to follow.
    - `loss_tol`: stop once L − L_min ≤ loss_tol·(L(0) − L_min).
    - `tie_tol`: neurons within tie_tol·c_i of their threshold at an activation activate together.
    - `min_drop`: an activation that lowers the loss by less than this fraction of
      L(0) − L_min joins the step before it when it comes right after it (within 5% of its
      time); later, it opens a minor step, dropped unless the activations that join it add up to
      `min_drop` (all activations are listed in `extra["events"]`, the dropped ones in
      `extra["minor"]`).
    - `limit`: return the α → 0 limit of the rescaled times instead (the slope of AGF's times in
      ln(1/α) between two tiny scales with the same initial directions); physical times are then
      that limit times ln(1/α).

    **Returns:** a `Prediction` (`method="agf"`) with jump times, plateau losses, the feature
    learned at each step, and the model on each plateau (`plateau_parameters`); `extra` holds the
    neurons activated and deactivated at each step, the thresholds, the ODE solver's step count,
    `phases`: how many utility phases were solved exactly and how many as ODEs,
    `stopped`: None, or why the prediction ended early (`"max_steps"`, `"cycling"`,
    `"utility_solve"`; also warned), and `copies`: where AGF ended with every neuron active but
    on fewer directions than neurons, the loss still above its floor, {"neurons", "directions"}
    (warned: the flow may go on by splitting copies; else None), and `cost_steps`: for each
    activation in `events`, the cost phase's minimizer iterations (None where it is closed form;
    over 500 means a degenerate restricted loss, and the prediction warns that later times are
    approximate).
    """
    problem = make_problem(model, task)
    if rtol is not None and not (rtol > 0):
        raise ValueError(f"rtol: expected a positive number, got {rtol!r}")
    if t_max is not None and not (float(t_max) > 0):
        raise ValueError(f"t_max: expected a positive number, got {t_max!r}")
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps: expected a positive integer, got {max_steps!r}")
    alpha = float(model.init_scale)
    L = log_inv(alpha)
    kw = dict(horizon=t_max, rtol=rtol, max_steps=int(max_steps), loss_tol=loss_tol, tie_tol=tie_tol, min_drop=min_drop)
    if problem.kappa != 2 and limit:
        raise ValueError("limit: the ln(1/α) limit of rescaled times exists only for κ = 2")
    if not limit:
        record, loss0, c, steps = _run(problem, 0.0, **kw)
        waited = record["waited"] if not record["times"] else None
        stopped, copies, split = record["stopped"], record["copies"], list(record["split"])
        phases = dict(record["phases"])
        events, minor, cost_steps = list(record["events"]), list(record["minor"]), list(record["cost_steps"])
        record = {k: record[k] for k in _KEYS}
        times = np.asarray(record["times"])
        rescaled = times / L
    else:
        # AGF's times are affine in ln(1/α) once α is tiny: their slope is the α → 0 limit.
        lo, hi = 100.0, 200.0
        if t_max is not None:
            kw["horizon"] = float(t_max) * hi / L
        rec1, _, _, s1 = _run(problem, L - lo, **kw)
        record, loss0, c, s2 = _run(problem, L - hi, **kw)
        waited = record["waited"] if not record["times"] else None
        steps = s1 + s2
        stopped, copies, split = record["stopped"] or rec1["stopped"], record["copies"], list(record["split"])
        phases = dict(rec1["phases"] + record["phases"])
        n = min(len(rec1["times"]), len(record["times"]))
        if rec1["order"][:n] != record["order"][:n]:
            raise ValueError("limit: AGF learns features in a different order at the two tiny scales")
        rescaled = (np.asarray(record["times"][:n]) - np.asarray(rec1["times"][:n])) / (hi - lo)
        events, minor, cost_steps = list(record["events"]), list(record["minor"]), list(record["cost_steps"])
        record = {k: record[k][:n] for k in _KEYS}
        times = rescaled * L
    if copies is not None:
        loss_end = float(record["losses"][-1]) if len(record["losses"]) else float(loss0)
        warnings.warn(
            f"agf.predict ended with every neuron active but on only {copies[1]} distinct directions "
            f"({copies[0]} neurons: copies activated together) and the loss {loss_end:.4g} still above its "
            f"floor; gradient flow can split copies and drop further, which AGF does not follow",
            stacklevel=2,
        )
    if split:
        first = split[0]
        warnings.warn(
            f"agf.predict: at t = {first['time']:.4g} the cost phase split {first['neurons']} neurons that entered "
            f"along one direction over {first['directions']} directions, learning more than one feature in one "
            f"step (loss {first['loss']:.4g}); gradient flow separates such near-copies only over a time that does "
            "not grow with ln(1/α), so at moderate α it rests above that plateau first and learns the rest in a "
            "later drop (a Gaussian ReLU teacher at α = 1e-4: 5 time units later, at a plateau 6.7× higher); "
            "the times are the α → 0 limit" + (f" ({len(split)} such steps: extra['split'])" if len(split) > 1 else ""),
            stacklevel=2,
        )
    slow = [i for i, n in enumerate(cost_steps) if n is not None and n > _DEGENERATE_STEPS]
    if slow:
        t_slow, loss_slow = events[slow[0]][:2]
        warnings.warn(
            f"agf.predict: the cost phase after the activation at t = {t_slow:.4g} (loss {loss_slow:.4g}) took "
            f"{cost_steps[slow[0]]} BFGS steps: the restricted loss is degenerate there (a set of minima), and "
            "which of them the cost phase returns moves the later jump times, which are approximate from "
            "there on (on modular addition, κ = 3: off by up to 2× against the flow; docs/performance.md)",
            stacklevel=2,
        )
    if waited and stopped is None:
        warnings.warn(
            f"agf.predict: no neuron activated within t = {waited:.4g} (how long a utility phase waits; "
            "pass t_max to wait longer), so no step is predicted", stacklevel=2)
    if stopped is not None:
        why = {
            "max_steps": f"hit max_steps = {max_steps} activations",
            "cycling": "found the same neurons entering and leaving at one instant, over and over",
            "utility_solve": "stopped: a utility-phase solve ended before its horizon without an activation",
        }[stopped]
        warnings.warn(f"agf.predict {why}; the prediction stops there and may miss later steps", stacklevel=2)
    return Prediction(
        "agf",
        times,
        rescaled,
        np.asarray(record["losses"], dtype=float),
        list(record["order"]),
        initial_loss=float(loss0),
        init_scale=alpha,
        plateau_parameters=list(record["plateau"]),
        extra={
            "activated": list(record["activated"]),
            "deactivated": list(record["deactivated"]),
            "active": list(record["active"]),
            "thresholds": np.asarray(c).tolist(),
            "solver_steps": int(steps),
            "phases": {"exact": int(phases.get("exact", 0)), "ode": int(phases.get("ode", 0))},
            "events": events,
            "cost_steps": cost_steps,
            "minor": [{"time": float(t), "loss": float(loss), "activated": list(a), "deactivated": list(d)}
                      for t, loss, a, d in minor],
            "stopped": stopped,
            "copies": None if copies is None else {"neurons": copies[0], "directions": copies[1]},
            "split": split,
        },
    )
