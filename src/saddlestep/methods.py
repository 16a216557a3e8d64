"""How `simulate` advances the parameters: gradient-flow solvers and discrete optimizers, as objects.

```python
simulate(model, task, t_max=50.0)                                   # Explicit(): Tsit5
simulate(model, task, t_max=50.0, method=Implicit())                # Kvaerno5 + Newton on I + γh∇²L
simulate(model, task, t_max=50.0, method=AutoSwitch())              # Tsit5 until stiff, then implicit
simulate(model, task, t_max=50.0, method=Discrete(1e-3, "adam"))    # Adam at η = 1e-3
```
The command line's `--set solver=explicit|implicit|auto` maps to these through `METHODS`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Literal

import diffrax as dfx
import equinox as eqx
import lineax as lx
import optax

from . import stiff as _stiff
from ._integrate import Problem, Raw


class AbstractMethod(eqx.Module):
    """A way to advance the parameters from their initialization to `t_max`."""

    @abc.abstractmethod
    def segments(self, n_params: int) -> tuple[str, ...]:
        """The names of the solvers that run one after the other (one name, or explicit then implicit)."""

    @abc.abstractmethod
    def run(self, problem: Problem) -> Raw:
        """Integrate `problem` (see `saddlestep._integrate`)."""


def method_name(method: AbstractMethod, n_params: int) -> str:
    """`Trajectory.method`: the solver's name, or `auto(explicit->implicit)` for a switch."""
    names = method.segments(n_params)
    return names[0] if len(names) == 1 else f"auto({names[0]}->{names[1]})"


def phases(method: AbstractMethod, n_params: int, stats: dict[str, Any], t_final: float) -> list[dict[str, Any]]:
    """Which solver ran when: `{"solver", "t_start", "t_end", "steps"}` per phase (one run's stats)."""
    names = method.segments(n_params)
    t_switch = float(stats.get("t_switch", -1.0))
    if len(names) == 1 or t_switch < 0:
        return [{"solver": names[0], "t_start": 0.0, "t_end": t_final, "steps": int(stats["steps"])}]
    out = [{"solver": names[1], "t_start": t_switch, "t_end": t_final, "steps": int(stats["implicit_steps"])}]
    if t_switch > 0:
        out.insert(0, {"solver": names[0], "t_start": 0.0, "t_end": t_switch, "steps": int(stats["explicit_steps"])})
    return out


# The default step budget of the adaptive methods.
MAX_STEPS = 200_000


class Explicit(AbstractMethod):
    """An explicit adaptive Diffrax solver (PID step-size control) on the model pytree.

    **Arguments:**

    - `solver`: any Diffrax solver (default `Tsit5()`).
    - `max_steps`: the step budget.
    """

    solver: dfx.AbstractSolver = dfx.Tsit5()
    max_steps: int = eqx.field(static=True, default=MAX_STEPS)

    def segments(self, n_params):
        return (type(self.solver).__name__,)

    def run(self, problem):
        return problem.run("flow", solver=self.solver, max_steps=self.max_steps, progress_meter=problem.progress_meter)


# Below this many parameters the Newton systems are solved densely (the Hessian from one vmapped
# batch of HVPs, then LU); above, matrix-free with CG.
_DENSE_MAX_PARAMETERS = 200
# Ritz vectors of ∇²L that precondition the matrix-free solves (`stiff.Deflation`). At small α
# the steps are long (γhλ up to 10⁶) and every curvature direction of the active neurons must be
# deflated: on the 120-parameter degree-3 case at α = 1e-4, 24 vectors took 12,148 steps and 703 s,
# 60 took 2,837 steps and 65 s; on 1,080 parameters at α = 0.1, 60 cost 10% more than 24.
_DEFLATION_RANK = 64
_LINEAR_SOLVERS = ("auto", "dense", "cg")
# Newton stops once an update is below this fraction of the tolerance (in stage values): the next
# would be ~κ² (quadratic convergence). 0.2 rather than Diffrax's 1e-2 saved 10–19% of the
# Hessian-vector products on the degree-3 case (α = 0.1 … 1e-3) with drop times equal to 6 digits.
_NEWTON_KAPPA = 0.2


class Implicit(AbstractMethod):
    """Kvaerno5 with full Newton on I + γh∇²L and a filtered error estimate (`saddlestep.stiff`).

    Accuracy-bound: it spends what rtol allows, so a weak feature growing inside entries a strong
    one made O(1) needs rtol ≤ 1e-8.

    **Arguments:**

    - `linear_solver`: the Newton solve: `"dense"` (the Hessian from a vmapped batch of HVPs, LU),
      `"cg"` (matrix-free conjugate gradients on HVPs) or `"auto"` (dense up to 200 parameters).
    - `max_steps`: the step budget.
    - `count_evals`: count gradient and Hessian-vector evaluations in `saddlestep.stiff.EVAL_COUNT`
      (host callbacks: for benchmarks only).
    """

    linear_solver: Literal["auto", "dense", "cg"] = eqx.field(static=True, default="auto")
    max_steps: int = eqx.field(static=True, default=MAX_STEPS)
    count_evals: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.linear_solver not in _LINEAR_SOLVERS:
            raise ValueError(f"linear_solver: expected 'auto', 'dense' or 'cg', got {self.linear_solver!r}")

    def segments(self, n_params):
        return (f"Kvaerno5+Newton-{'LU' if _dense(self.linear_solver, n_params) else 'CG'}",)

    def run(self, problem):
        return _run_stiff(problem, self, None)

    def solver(self, rtol, atol, n_params: int) -> dfx.AbstractSolver:
        """Kvaerno5 with a full Newton root finder on I + γh∇²L and a filtered error estimate."""
        count = self.count_evals
        if _dense(self.linear_solver, n_params):
            rank, newton_ls, filter_ls = 0, lx.LU(), lx.LU()
        else:
            rank = min(_DEFLATION_RANK, n_params // 2)
            # Inexact Newton: the Newton test judges the update, so a 1e-2 linear solve suffices
            # (1e-4 cost 25% more HVPs for the same steps); the filter only steers the step size.
            newton_ls = lx.CG(rtol=1e-2, atol=0.0, max_steps=200)
            filter_ls = lx.CG(rtol=1e-2, atol=0.0, max_steps=100)
        root = _stiff.NewtonCG(rtol=rtol, atol=atol, linear_solver=newton_ls, count=count, kappa=_NEWTON_KAPPA)
        inner = dfx.Kvaerno5(root_finder=root)
        return _stiff.ErrorFiltered(inner, _stiff.kvaerno5_gamma(), linear_solver=filter_ls, rank=rank, count=count)


class AutoSwitch(AbstractMethod):
    """Tsit5 until the flow turns stiff, then `implicit` from there (`stats["t_switch"]`, −1: never).

    **Arguments:**

    - `stiffness`: when to switch (default `saddlestep.stiff.StabilityBound()`).
    - `implicit`: the solver after the switch.
    """

    stiffness: _stiff.AbstractStiffness = _stiff.StabilityBound()
    implicit: Implicit = Implicit()

    def segments(self, n_params):
        return ("Tsit5", *self.implicit.segments(n_params))

    def run(self, problem):
        return _run_stiff(problem, self.implicit, self.stiffness)


def _dense(linear_solver: str, n_params: int) -> bool:
    return linear_solver == "dense" or (linear_solver == "auto" and n_params <= _DENSE_MAX_PARAMETERS)


def _run_stiff(problem: Problem, implicit: Implicit, stiffness) -> Raw:
    # Implicit's fields are all static: it travels into the compiled core as part of its key.
    return problem.run("stiff", implicit=implicit, stiffness=stiffness, max_steps=implicit.max_steps,
                       progress_meter=problem.progress_meter)


# Optimizers by name: transforms of the gradient whose step is η·u with η traced, built once (a
# transform's functions key the compilation), so one compilation serves every learning rate.
# Full-batch SGD is gradient descent.
_OPTIMIZERS: dict[str, Any] = {"gd": None, "sgd": None, "adam": optax.scale_by_adam()}


class Discrete(AbstractMethod):
    """Full-batch discrete training; time is learning rate × steps, so it shares the flow's axis.
    It takes ⌊t_max/η⌋ steps (at least one): a rate that does not divide t_max stops short of it.

    **Arguments:**

    - `learning_rate`: the step size η.
    - `optimizer`: None or `"gd"` (gradient descent), `"sgd"` (full batch: the same map), `"adam"`;
      or any optax `GradientTransformation`, which then applies its own step size (η only sets
      the time axis, and a new transform compiles anew).
    - `name`: the optimizer's name in labels and `Trajectory.method` (default: its string, `"gd"`
      for None, `"optax"` for a transform).
    """

    learning_rate: float
    optimizer: str | optax.GradientTransformation | None = None
    name: str | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if isinstance(self.optimizer, str) and self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {', '.join(_OPTIMIZERS)} or an optax transform, "
                             f"got {self.optimizer!r}")

    def segments(self, n_params):
        if self.name is not None:
            return (self.name,)
        if self.optimizer is None or isinstance(self.optimizer, str):
            return (self.optimizer or "gd",)
        return ("optax",)

    def run(self, problem):
        if isinstance(self.optimizer, str) or self.optimizer is None:
            transform, scaled = _OPTIMIZERS[self.optimizer or "gd"], True
        else:
            transform, scaled = self.optimizer, False
        return problem.with_scalars(learning_rate=self.learning_rate).run(
            "discrete", optimizer=transform, scaled=scaled)

    def label(self) -> str:
        """E.g. `"adam, lr 1e-3"`."""
        return f"{self.segments(0)[0]}, lr {format_rate(self.learning_rate)}"


def format_rate(lr: float) -> str:
    """A learning rate as people write it: 0.001 → "1e-3", 0.05 → "0.05"."""
    lr = float(lr)
    if lr >= 0.01 or lr <= 0:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


# `--set solver=NAME` and the strings `simulate(method=...)` accepts.
METHODS: dict[str, type[AbstractMethod]] = {"explicit": Explicit, "implicit": Implicit, "auto": AutoSwitch}


def as_method(method: AbstractMethod | str | dfx.AbstractSolver | None, *, max_steps: int | None = None,
              linear_solver: str | None = None, stiffness: _stiff.AbstractStiffness | None = None,
              count_evals: bool = False) -> AbstractMethod:
    """A method object from a method, a name in `METHODS`, a Diffrax solver or None (`Explicit()`).

    The keywords are the older spelling of the methods' fields and fill them in.
    """
    if method is None or isinstance(method, dfx.AbstractSolver):
        method = Explicit() if method is None else Explicit(method)
    elif isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"solver: expected a diffrax solver, a method or one of {tuple(METHODS)}, got {method!r}")
        method = METHODS[method]()
    elif not isinstance(method, AbstractMethod):
        raise ValueError(f"method: expected a saddlestep method (Explicit, Implicit, AutoSwitch, Discrete), "
                         f"got {type(method).__name__}")
    implicit_kw = {k: v for k, v in (("linear_solver", linear_solver), ("max_steps", max_steps)) if v is not None}
    if count_evals:
        implicit_kw["count_evals"] = True
    if isinstance(method, Explicit) and max_steps is not None:
        method = dataclasses.replace(method, max_steps=max_steps)
    elif isinstance(method, Implicit) and implicit_kw:
        method = dataclasses.replace(method, **implicit_kw)
    elif isinstance(method, AutoSwitch):
        impl = as_method(method.implicit, max_steps=max_steps, linear_solver=linear_solver, count_evals=count_evals)
        method = AutoSwitch(method.stiffness if stiffness is None else stiffness, impl)
    return method
