"""What the AGF engine needs from a model–task pair, and how a pair finds its problem.

Directions are stored in problem coordinates x = Qᵀθ̄ with Q orthogonal. For neurons whose
utility is a quadratic form (diagonal and linear networks), Q diagonalizes it, so a component
that is tiny next to the others (a not-yet-learned mode, the α² tilt of a diagonal neuron) has
an entry of its own and keeps its relative precision at any α (reference agf.md §5.1(b, c)).

Every method here is abstract and every concrete problem is final (Equinox's abstract-or-final
rule): shared behaviour lives in components (`_quadratic.py`, `_numerics.py`), not in bases.
A family joins by defining its problem in its own file and registering it with one line,
`register(ModelType, constructor)`; models without a registered problem get the generic
`NeuronProblem` (`neuron.py`).
"""

from __future__ import annotations

import abc
from typing import ClassVar
from collections.abc import Callable

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, PyTree

from ..models.base import AbstractNeuronModel


class AbstractAGFProblem(eqx.Module):
    """A model–task pair seen as a sum of neurons, in the coordinates the AGF engine integrates.

    `utility` is traced (it runs inside the Diffrax solve); the other methods run in NumPy
    between phases. Parameters are (width, p) arrays of flattened neurons; `rstate` is the
    problem's typed residual state (what `start` returns).

    Class attributes, for the ODE phase (where `advance` returns None): `atol`, `rtol` (default)
    and `min_step` (smallest step as a fraction of max c_i); `shared_space`: whether all neurons
    live in one parameter space (two-layer networks), so that two of them can point the same way.
    """

    kappa: eqx.AbstractVar[int]
    loss_floor: eqx.AbstractVar[float]
    atol: eqx.AbstractClassVar[float]
    rtol: eqx.AbstractClassVar[float]
    min_step: eqx.AbstractClassVar[float]
    shared_space: ClassVar[bool] = False

    @abc.abstractmethod
    def utility(self, x: Float[Array, "width p"], rstate: PyTree[Array]) -> Float[Array, " width"]:
        """U_i(x_i; r) = E⟨f_i(x; θ_i), r(x)⟩ for each row of directions `x` (problem coordinates)."""

    @abc.abstractmethod
    def advance(self, x, S, c, dormant, rstate, horizon):
        """The utility phase solved exactly: (duration, x, S, whether a neuron reached its
        threshold within `horizon`), the directions renormalized; or None, and the engine
        solves the phase as an ODE (`utility`'s projected ascent)."""

    @abc.abstractmethod
    def initial(self) -> tuple[np.ndarray, np.ndarray]:
        """(directions x (width, p) in problem coordinates, ln‖θ_i(0)‖ (width,))."""

    @abc.abstractmethod
    def start(self, params: np.ndarray, active: np.ndarray) -> tuple[PyTree, float]:
        """(residual state for `utility`, restricted loss) given the active neurons' parameters."""

    @abc.abstractmethod
    def enter(self, params: np.ndarray, new: np.ndarray, active: np.ndarray, rstate) -> np.ndarray:
        """The cost phase's start: `params` holds the active neurons and the `new` ones at norm 1
        along their directions; returns where the cost phase starts from."""

    @abc.abstractmethod
    def cost(self, params: np.ndarray, active: np.ndarray, order: np.ndarray) -> tuple:
        """Minimize the restricted loss over the active neurons from `params`, as gradient flow
        would (a local minimization). `order` ranks neurons by activation.
        **Returns:** (parameters, still active), or (parameters, still active, steps) where an
        iterative minimizer reports its longest solve's iterations (`extra["cost_steps"]`)."""

    @abc.abstractmethod
    def to_params(self, x: np.ndarray, rstate) -> np.ndarray:
        """Unit-norm parameters θ̄ = Q x of directions in problem coordinates."""

    @abc.abstractmethod
    def rebase(self, x: np.ndarray, old, new) -> np.ndarray:
        """Re-express directions when the utility's basis changes from `old` to `new` state."""

    @abc.abstractmethod
    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        """Collect into the crossing neurons what hidden-unit symmetries let them carry: (x, S)."""

    @abc.abstractmethod
    def ties(self, x, crossed, dormant) -> Bool[np.ndarray, " width"]:
        """Neurons that activate with those that `crossed`."""

    @abc.abstractmethod
    def exhausted(self, x, dormant, rstate) -> bool:
        """True when no dormant neuron can ever gain utility."""

    def growth_rate(self, x: np.ndarray, rstate) -> float | None:
        """The scale of the rate κU_i at which S_i grows, at the start: a time unit in the data's
        own units, for how long a utility phase waits (`engine._default_horizon`). None: unknown."""
        return None

    @abc.abstractmethod
    def model(self, params: np.ndarray) -> AbstractNeuronModel:
        """The model with these neuron parameters."""

    @abc.abstractmethod
    def label(self, before: np.ndarray, after: np.ndarray, crossed: np.ndarray) -> str:
        """The feature learned in a step, from the parameters on the plateaus before and after."""


# A constructor gets (model, task) and returns its problem, or None to leave the pair to the
# generic neuron problem; it raises ValueError for a task the family cannot take.
_REGISTRY: dict[type, Callable] = {}
_FALLBACK: list[Callable] = []


def register(model_type: type, constructor: Callable) -> None:
    """Make `constructor(model, task)` the AGF problem of `model_type` (and its subclasses).

    **Arguments:** `model_type`, an `AbstractNeuronModel` subclass; `constructor`, returning an
    `AbstractAGFProblem` or None (the generic neuron problem then takes the pair).
    """
    _REGISTRY[model_type] = constructor


def register_fallback(constructor: Callable) -> None:
    """The problem of models with no registered family (the generic neuron problem)."""
    _FALLBACK[:] = [constructor]


def make_problem(model, task) -> AbstractAGFProblem:
    """The AGF view of a model–task pair, or a `ValueError` naming what does not fit.

    **Arguments:** `model`, a neuron-view model at its initialization; `task`, its task.

    **Returns:** the `AbstractAGFProblem` the engine runs: the registered family of the model's
    type (nearest in its MRO), else the generic neuron problem.
    """
    if not isinstance(model, AbstractNeuronModel):
        raise ValueError(
            f"model: AGF needs a model with a neuron view (an AbstractNeuronModel such as "
            f"TwoLayer or DiagonalLinear), got {type(model).__name__}"
        )
    if np.ndim(np.asarray(model.init_scale)) != 0:
        raise ValueError("model: expected one model, got a batch (predict each member separately)")
    kappa = model.kappa
    if kappa is None or kappa < 2:
        raise ValueError(
            f"model: AGF needs neurons homogeneous of degree κ ≥ 2, got κ = {kappa} "
            f"({getattr(model, 'activation', type(model).__name__)})"
        )
    task.validate(model)
    for cls in type(model).__mro__:
        if cls in _REGISTRY:
            problem = _REGISTRY[cls](model, task)
            if problem is not None:
                return problem
            break
    return _FALLBACK[0](model, task)


def require_sample(task) -> None:
    """Raise the `ValueError` of a task that is not a `SampleRegression` (utilities need samples)."""
    from ..tasks.regression import PopulationRegression, SampleRegression

    if isinstance(task, PopulationRegression):
        raise ValueError(
            "task: a population (covariance) task gives AGF utilities only for linear two-layer "
            "networks; use a SampleRegression for this model"
        )
    if not isinstance(task, SampleRegression):
        raise ValueError(f"task: AGF supports regression tasks, got {type(task).__name__}")
