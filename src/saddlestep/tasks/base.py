"""Abstract task: what a model is trained on, and what is worth recording along the way."""

from __future__ import annotations

import abc

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from ..models.base import AbstractModel
from ..validate import check_positive as check_positive


class AbstractTask(eqx.Module):
    """A training objective for a model, with observables to record along the flow.

    Tasks hold their data as array fields, so a new data set of the same shape reuses the
    compiled flow. They know nothing of solvers, AGF, plots or the command line.
    """

    @abc.abstractmethod
    def loss(self, model: AbstractModel) -> Float[Array, ""]:
        """The training loss L(θ)."""

    @abc.abstractmethod
    def observables(self, model: AbstractModel) -> dict[str, Float[Array, "..."]]:
        """Quantities recorded on the save grid. A `"features"` entry (one number per feature,
        growing when that feature is learned) lets `detect_steps` label each drop; with a
        `"feature_losses"` entry too (the loss each feature still carries), drops are labelled
        by the feature that gave up the most loss (`steps.feature_change`)."""

    @abc.abstractmethod
    def feature_labels(self, model: AbstractModel) -> list[str]:
        """Labels for the entries of `observables(model)["features"]` (empty if none)."""

    @abc.abstractmethod
    def validate(self, model: AbstractModel) -> None:
        """Raise a `ValueError` naming the argument if `model` does not fit this task."""

    def loss_floor(self, model: AbstractModel) -> float | None:
        """The infimum of the loss over models of this kind, if known (used to stop when converged)."""
        return None


@eqx.filter_jit
def evaluate_observables(task: AbstractTask, model: AbstractModel) -> dict[str, Array]:
    """`task.observables(model)` as one compiled program, reused for every model and task of the
    same shapes. Called eagerly, each of its operations compiles on its first use: a two-layer
    teacher's overlaps took 0.78 s so against 0.31 s compiled once (AGF labels every step with
    them, so a prediction paid that on each new problem shape)."""
    return task.observables(model)


def check_finite(name: str, value, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Convert to a float64 array, checking dimensions and finiteness."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of numbers, got {type(value).__name__}") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name}: expected a {' or '.join(map(str, allowed))}-dimensional array, "
                f"got shape {arr.shape}"
            )
    if arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


