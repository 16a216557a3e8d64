"""Abstract model families: every model is an Equinox module started at a small init scale."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ..validate import check_positive_int as check_positive_int


class AbstractModel(eqx.Module):
    """A network whose gradient flow saddlestep integrates.

    Every concrete model takes `key` and `init_scale` (α) in its constructor and stores α as a
    scalar array, so that a sweep over α traces once. The ODE state is the model without α
    (see `parameters`).
    """

    init_scale: eqx.AbstractVar[Float[Array, ""]]
    # The smallest α whose later jump times float64 still resolves: once early components are
    # O(1), a dormant one of size ~α^{1−τ₁/τ_k} shares float entries with them (see `simulate`).
    precision_floor: ClassVar[float] = 1e-12

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        """The network's output for one input."""

    def conserved(self) -> PyTree[Float[Array, "..."]]:
        """Quantities that gradient flow conserves exactly (balancedness); empty by default."""
        return {}


class AbstractLinearModel(AbstractModel):
    """A model whose function is linear in its input, f(x) = β x (deep linear, diagonal)."""

    @abc.abstractmethod
    def matrix(self) -> Float[Array, "out d"]:
        """The end-to-end map β."""


class AbstractNeuronModel(AbstractModel):
    """A model that is a sum of neurons, f(x) = Σ_i f_i(x; θ_i), each homogeneous of degree κ.

    This is the view that Alternating Gradient Flows (Kunin et al., 2025) works on: `neurons`
    stacks the per-neuron parameters along a leading axis, `neuron_outputs` evaluates every
    neuron at once, and `with_neurons` rebuilds the model from a stack.
    """

    @property
    @abc.abstractmethod
    def kappa(self) -> int | None:
        """Degree of homogeneity of one neuron in its own parameters (None if not homogeneous)."""

    @abc.abstractmethod
    def neurons(self) -> PyTree[Float[Array, "width ..."]]:
        """The per-neuron parameters, stacked along a leading axis of size `width`."""

    @abc.abstractmethod
    def neuron_outputs(
        self, neurons: PyTree[Float[Array, "width ..."]], x: Float[Array, " d"]
    ) -> Float[Array, "width out"]:
        """Each neuron's output f_i(x; θ_i) for the given stack of neuron parameters."""

    @abc.abstractmethod
    def with_neurons(self, neurons: PyTree[Float[Array, "width ..."]]) -> AbstractNeuronModel:
        """This model with its neurons replaced by `neurons` (same structure)."""

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " out"]:
        return jnp.sum(self.neuron_outputs(self.neurons(), x), axis=0)

    def neuron_factors(self) -> tuple[tuple[tuple[str, ...], int], ...] | None:
        """The factors of one neuron: groups of `neurons()`'s keys, each with the degree k_g that
        f_i has in it (Σ k_g = κ), e.g. `((("w",), 1), (("a",), 1))` for a ReLU neuron.

        f_i is unchanged when factor g is scaled by c_g with Π c_g^{k_g} = 1, and gradient flow
        keeps ‖θ_g‖² − (k_g/k_h)‖θ_h‖² fixed (≈ 0 from small initialization: the neuron is
        *balanced*); AGF's cost phase keeps its neurons balanced too. None (the default): unknown.
        """
        return None

    def neuron_norms(self) -> Float[Array, " width"]:
        """‖θ_i‖ for every neuron."""
        sq = jax.tree.map(
            lambda p: jnp.sum(p.reshape(p.shape[0], -1) ** 2, axis=1), self.neurons()
        )
        return jnp.sqrt(sum(jax.tree.leaves(sq)))


def degree(model) -> int | None:
    """κ, the degree of homogeneity that sets the α clock (`clock.unit`): of a neuron model's
    neurons when they share one integer degree, or of a deep network in its parameters (its
    depth L, `DeepLinear.kappa`, `DeepReLU.kappa`); None for other models."""
    if not isinstance(model, AbstractModel):
        return None
    try:
        kappa = getattr(model, "kappa")
    except (AttributeError, TypeError, ValueError):  # a custom kappa that needs more than the model
        return None
    # An integer as a rule; a float κ of one's own model is passed on as it is.
    return kappa if isinstance(kappa, (int, float)) and not isinstance(kappa, bool) else None  # type: ignore[return-value]


def parameters(model: AbstractModel) -> AbstractModel:
    """The trainable part of a model: the model with `init_scale` removed (the ODE state)."""
    return eqx.tree_at(lambda m: m.init_scale, model, None, is_leaf=lambda x: x is None)


def check_init_scale(init_scale) -> Float[Array, ""]:
    """Validate α and return it as a float64 scalar array."""
    try:
        value = float(init_scale)
    except (TypeError, ValueError):
        arr = jnp.asarray(init_scale)
        if arr.ndim != 0:
            raise ValueError(
                f"init_scale: expected a positive finite number, got an array of shape {arr.shape}"
            ) from None
        return arr  # traced inside vmap/jit: validated by the caller
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"init_scale: expected a positive finite number, got {init_scale!r}")
    return jnp.asarray(value, dtype=float)


def layer_stack(dims, key, init_scale) -> tuple[Float[Array, "..."], ...]:
    """Dense layers W_l of shape (d_l, d_{l−1}) with entries N(0, α²/d_{l−1}), after checking `dims`
    (input, hidden widths…, output; depth ≥ 2)."""
    dims = [check_positive_int(f"dims[{i}]", d) for i, d in enumerate(dims)]
    if len(dims) < 3:
        raise ValueError(
            f"dims: expected at least 3 widths (input, hidden…, output; depth ≥ 2), got {dims}"
        )
    keys = jax.random.split(key, len(dims) - 1)
    return tuple(
        init_scale * jax.random.normal(k, (d_out, d_in)) / jnp.sqrt(d_in)
        for k, d_in, d_out in zip(keys, dims[:-1], dims[1:])
    )
