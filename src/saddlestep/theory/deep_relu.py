"""Escape directions from the saddle at the origin of homogeneous networks.

Near θ = 0 an L-homogeneous network has ℒ(θ) = C(0) − G(θ) + O(‖θ‖^{2L}) with the correlation
G(θ) = −⟨∇C(0), F(θ)⟩ (F: the outputs on the data). Writing θ = r·u, gradient flow gives
ṙ = L r^{L−1} G(u) and u̇ = r^{L−2} P_u^⊥ ∇G(u): the direction performs (time-changed) Riemannian
gradient ascent of G on the unit sphere, and the radius escapes along a maximizer u*, the
*escape direction*, at the *escape speed* s* = G(u*) (Bantzis, Simon & Jacot, arXiv:2505.21722).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, PRNGKeyArray

from ..models.base import AbstractModel
from ..prediction import Prediction
from ..tasks.base import AbstractTask
from ..clock import rescale

_GEOMETRIES = ("layers", "sphere")


# ----------------------------------------------------------------------------- the correlation
def _layers_of(model) -> tuple[Float[Array, "..."], ...]:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, tuple) or len(layers) < 2:
        raise ValueError(
            f"model: expected a layered network with a `layers` tuple (DeepReLU, DeepLinear), "
            f"got {type(model).__name__}"
        )
    return layers


def _with_layers(model, layers):
    return eqx.tree_at(lambda m: m.layers, model, tuple(layers))


def _correlation(model, task, layers) -> Float[Array, ""]:
    # The output is linear in the last layer, so d/ds C(F(θ with W_L → s·W_L)) at s = 0 is
    # ⟨∇C(0), F(θ)⟩ for any task's cost: one forward pass with a tangent, no formula per loss.
    def loss_at(s):
        return task.loss(_with_layers(model, tuple(layers[:-1]) + (s * layers[-1],)))

    _, slope = jax.jvp(loss_at, (jnp.zeros(()),), (jnp.ones(()),))
    return -slope


def correlation(model: AbstractModel, task: AbstractTask) -> Float[Array, ""]:
    """G(θ) = −⟨∇C(0), F(θ)⟩ at the model's parameters; for MSE, (1/N) Σ_i y_iᵀ f_θ(x_i).

    **Arguments:** `model` (a layered network: `DeepReLU`, `DeepLinear`); `task` (its loss).

    **Returns:** a scalar; ℒ(θ) = C(0) − G(θ) + O(‖θ‖^{2L}).
    """
    return _correlation(model, task, _layers_of(model))


# ----------------------------------------------------------------------------- geometry
def _sqnorm(layers) -> Array:
    return sum(jnp.sum(w**2) for w in layers)


def _retract(layers, geometry: str):
    """Back onto the manifold: the unit sphere, or the product of spheres ‖W_ℓ‖² = 1/L."""
    if geometry == "sphere":
        n = jnp.sqrt(_sqnorm(layers))
        return tuple(w / n for w in layers)
    radius = 1.0 / math.sqrt(len(layers))
    return tuple(radius * w / jnp.sqrt(jnp.sum(w**2)) for w in layers)


def _project(layers, grad, geometry: str):
    """The Riemannian gradient: the tangential part of the Euclidean gradient."""
    if geometry == "sphere":
        c = sum(jnp.sum(w * g) for w, g in zip(layers, grad))
        return tuple(g - c * w for w, g in zip(layers, grad))
    L = len(layers)
    return tuple(g - L * jnp.sum(w * g) * w for w, g in zip(layers, grad))


# ----------------------------------------------------------------------------- the ascent
def _ascend_one(model, task, start, *, geometry, max_iter, tol, max_move):
    """Riemannian gradient ascent of G from `start`, with an Armijo backtracking line search."""
    G = lambda layers: _correlation(model, task, layers)
    value_and_grad = jax.value_and_grad(G)
    L = len(start)

    def direction(u):
        g, grad = value_and_grad(u)
        xi = _project(u, grad, geometry)
        return g, xi, _sqnorm(xi)

    def cond(state):
        u, g, xi, xi2, step, it = state
        # Stationarity on the manifold, relative to the size of ∇G = L·G·u at a critical point.
        scale = L * jnp.abs(g) + 1e-300
        return (it < max_iter) & (jnp.sqrt(xi2) > tol * scale)

    def body(state):
        u, g, xi, xi2, step, it = state
        # Cap the move per iteration at max_move radians, so the path follows the flow's basin.
        step = jnp.minimum(step, max_move / jnp.sqrt(xi2 + 1e-300))

        def try_cond(c):
            t, k = c
            new = _retract(tuple(w + t * d for w, d in zip(u, xi)), geometry)
            return (G(new) < g + 1e-4 * t * xi2) & (k < 60)

        t, _ = jax.lax.while_loop(try_cond, lambda c: (0.5 * c[0], c[1] + 1), (step, 0))
        new = _retract(tuple(w + t * d for w, d in zip(u, xi)), geometry)
        g_new, xi_new, xi2_new = direction(new)
        accept = g_new >= g
        u = jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, u)
        g, xi, xi2 = (
            jnp.where(accept, g_new, g),
            jax.tree.map(lambda a, b: jnp.where(accept, a, b), xi_new, xi),
            jnp.where(accept, xi2_new, xi2),
        )
        # No ascent possible at this resolution: stop (the gradient is at rounding level).
        it = jnp.where(accept, it + 1, max_iter)
        return u, g, xi, xi2, 2.0 * t, it

    u0 = _retract(start, geometry)
    g0, xi0, xi20 = direction(u0)
    step0 = 0.1 / jnp.sqrt(xi20 + 1e-300)
    u, g, xi, xi2, _, it = jax.lax.while_loop(cond, body, (u0, g0, xi0, xi20, step0, 0))
    return u, g, jnp.sqrt(xi2) / (L * jnp.abs(g) + 1e-300), it


@eqx.filter_jit
def _ascend(model, task, starts, geometry, max_iter, tol, max_move):
    run = lambda s: _ascend_one(
        model, task, s, geometry=geometry, max_iter=max_iter, tol=tol, max_move=max_move
    )
    return jax.vmap(run)(starts)


@eqx.filter_jit
def _polish(model, task, u, geometry, tol):
    # Quasi-Newton on the scale-free lift Z ↦ G(retract(Z)): superlinear near a smooth maximum,
    # where gradient ascent is only linear (its rate set by the spectral gap of the Hessian).
    def neg(z, args):
        return -_correlation(model, task, _retract(z, geometry))

    scale = jnp.abs(_correlation(model, task, u))
    solver = optx.BFGS(rtol=tol, atol=tol * scale)
    sol = optx.minimise(neg, solver, u, max_steps=2000, throw=False)
    return _retract(sol.value, geometry)


@eqx.filter_jit
def _stationarity(model, task, u, geometry):
    g, grad = jax.value_and_grad(lambda v: _correlation(model, task, v))(u)
    xi = _project(u, grad, geometry)
    return jnp.sqrt(_sqnorm(xi)) / (len(u) * jnp.abs(g) + 1e-300)


# ----------------------------------------------------------------------------- results
def gap_ratio(singular_values: Float[np.ndarray, " k"]) -> float:
    """s₁/s₂ of one layer's singular values (descending); inf where the layer is exactly rank one
    or has a single singular value (a one-output last layer), where the gap is unbounded."""
    s = np.asarray(singular_values, dtype=float)
    return float(s[0] / s[1]) if s.size > 1 and s[1] > 0 else math.inf


@dataclasses.dataclass(frozen=True)
class EscapeDirection:
    """An escape direction u* (a critical point of G on the unit sphere, ‖u*‖ = 1) and its speed.

    **Fields:**

    - `layers`: the per-layer matrices of u* (numpy), with Σ_ℓ ‖W_ℓ‖_F² = 1.
    - `speed`: the escape speed s* = G(u*).
    - `speeds`: G at the end of every ascent (restarts), best first: the local maxima found.
    - `stationarity`: ‖P^⊥∇G(u*)‖ / (L·G(u*)), 0 at an exact critical point.
    - `converged`: whether the stationarity tolerance was met.
    - `model`: the input model with its layers replaced by u* (to evaluate outputs).
    """

    layers: tuple[np.ndarray, ...]
    speed: float
    speeds: np.ndarray
    stationarity: float
    converged: bool
    model: Any = None

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def layer_norms(self) -> np.ndarray:
        """‖W_ℓ‖_F per layer; 1/√L at every escape direction with s* ≠ 0 (balancedness)."""
        return np.array([np.linalg.norm(w) for w in self.layers])

    @property
    def singular_values(self) -> list[np.ndarray]:
        """The singular values of each layer, largest first."""
        return [np.linalg.svd(w, compute_uv=False) for w in self.layers]

    def singular_value_ratios(self) -> np.ndarray:
        """s₁(W_ℓ)/s₂(W_ℓ) per layer (inf for an exactly rank-one layer). Bantzis, Simon & Jacot
        prove that the ℓ-th layer's gap grows at least like ℓ^{1/4}."""
        return np.array([gap_ratio(s) for s in self.singular_values])

    def escape_time(self, init_norm: float) -> float:
        """The first escape time from radius ‖θ(0)‖ = `init_norm` along u* (see `escape_time`)."""
        return escape_time(self.speed, init_norm, self.depth)


def _result(model, task, layers, speeds, stationarity, tol) -> EscapeDirection:
    layers = tuple(np.asarray(w) for w in layers)
    speed = float(_correlation(model, task, tuple(jnp.asarray(w) for w in layers)))
    return EscapeDirection(
        layers=layers,
        speed=speed,
        speeds=np.sort(np.asarray(speeds))[::-1],
        stationarity=float(stationarity),
        converged=bool(stationarity <= 10.0 * tol),
        model=_with_layers(model, tuple(jnp.asarray(w) for w in layers)),
    )


def _check_common(model, task, max_iter, tol):
    if not isinstance(model, AbstractModel):
        raise ValueError(f"model: expected a saddlestep model, got {type(model).__name__}")
    if not isinstance(task, AbstractTask):
        raise ValueError(f"task: expected a saddlestep task, got {type(task).__name__}")
    if np.ndim(model.init_scale) != 0:
        raise ValueError("model: expected a single model, got a batch (index it first)")
    layers = _layers_of(model)
    task.validate(model)
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive integer, got {max_iter!r}")
    if not (0 < float(tol) < 1):
        raise ValueError(f"tol: expected a number in (0, 1), got {tol!r}")
    return layers


def escape_direction(
    model: AbstractModel,
    task: AbstractTask,
    *,
    key: PRNGKeyArray,
    restarts: int = 16,
    geometry: str = "layers",
    max_iter: int = 3000,
    tol: float = 1e-8,
    polish: bool = True,
) -> EscapeDirection:
    """The optimal escape direction u* = argmax_{‖u‖=1} G(u), by Riemannian gradient ascent
    with random restarts (Bantzis, Simon & Jacot, arXiv:2505.21722).

    Every escape direction with G > 0 is balanced, ‖W_ℓ‖_F² = 1/L, since G is 1-homogeneous in
    each layer. So by default the ascent runs on that product of spheres, which has the same
    maximizers and is better conditioned; s* = L^{−L/2} max_{‖V_ℓ‖=1} G(V).

    **Arguments:**

    - `model`: fixes the architecture (a `DeepReLU` or `DeepLinear`); its parameters are unused.
    - `task`: the loss, through G(θ) = −⟨∇C(0), F(θ)⟩.
    - `key`: PRNG key for the random starts (Gaussian entries, then retracted).
    - `restarts`: the number of ascents, run as one vmapped batch; the best is kept.
    - `geometry`: `"layers"` (product of spheres ‖W_ℓ‖² = 1/L) or `"sphere"` (‖θ‖ = 1).
    - `max_iter`, `tol`: stop once ‖P^⊥∇G‖ ≤ tol·L·G, or after `max_iter` iterations, or when
      no step ascends any more (rounding: stationarity then levels off near 1e-9); `converged`
      reports whether the stationarity came within 10·tol.
    - `polish`: refine the best ascent with BFGS (optimistix) on the scale-free lift.

    **Returns:** an `EscapeDirection`.
    """
    layers = _check_common(model, task, max_iter, tol)
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts: expected a positive integer, got {restarts!r}")
    if geometry not in _GEOMETRIES:
        raise ValueError(f"geometry: expected one of {_GEOMETRIES}, got {geometry!r}")
    keys = jax.random.split(key, len(layers))
    starts = tuple(
        jax.random.normal(k, (int(restarts),) + w.shape, dtype=jnp.float64) for k, w in zip(keys, layers)
    )
    u, g, stat, _ = _ascend(model, task, starts, geometry, int(max_iter), float(tol), 0.5)
    g = np.asarray(g)
    best = int(np.nanargmax(g))
    u_best = tuple(w[best] for w in u)
    stationarity = float(stat[best])
    if polish:
        u_pol = _polish(model, task, u_best, geometry, float(tol))
        if float(_correlation(model, task, u_pol)) >= float(g[best]) - 1e-14 * abs(float(g[best])):
            u_best, stationarity = u_pol, float(_stationarity(model, task, u_pol, geometry))
    return _result(model, task, u_best, g, stationarity, tol)


def basin_direction(
    model: AbstractModel,
    task: AbstractTask,
    *,
    max_iter: int = 20000,
    tol: float = 1e-8,
    max_move: float = 0.02,
) -> EscapeDirection:
    """The escape direction of the basin that contains θ/‖θ‖ of `model`.

    To leading order near the origin, θ/‖θ‖ follows the Riemannian gradient flow of G on the
    unit sphere, whatever the radius (only the clock, dτ = r^{L−2} dt, depends on it). This
    follows that path by short ascent steps (at most `max_move` radians each) from θ/‖θ‖ and
    returns the maximizer it reaches. From an initialization it predicts where the flow will
    escape, unless the path passes close to a saddle of G (then rounding decides the side);
    from a flow snapshot it tests that the flow's direction is an escape direction.

    **Arguments:** `model` (at its initialization, or a snapshot of the flow); `task`;
    `max_iter`, `tol` as for `escape_direction`; `max_move` the largest step on the sphere.

    **Returns:** an `EscapeDirection`.
    """
    layers = _check_common(model, task, max_iter, tol)
    if not (0 < float(max_move) <= 1):
        raise ValueError(f"max_move: expected a number in (0, 1], got {max_move!r}")
    starts = tuple(w[None] for w in layers)
    u, g, stat, _ = _ascend(model, task, starts, "sphere", int(max_iter), float(tol), float(max_move))
    return _result(model, task, tuple(w[0] for w in u), np.asarray(g), float(stat[0]), tol)


# ----------------------------------------------------------------------------- helpers
def direction(model: AbstractModel) -> tuple[np.ndarray, ...]:
    """θ/‖θ‖ of a layered network, per layer."""
    layers = [np.asarray(w) for w in _layers_of(model)]
    n = math.sqrt(sum(float(np.sum(w**2)) for w in layers))
    if not n > 0:
        raise ValueError("model: has all-zero parameters, so no direction")
    return tuple(w / n for w in layers)


def direction_cosine(a, b) -> float:
    """cos∠(θ_a, θ_b) between two layered networks or escape directions (flattened parameters).

    **Arguments:** `a`, `b`: networks (with `layers`) or `EscapeDirection`s of the same shapes.

    **Returns:** the cosine, in [−1, 1].
    """
    pick = lambda x: x.layers if isinstance(x, EscapeDirection) else direction(x)
    la, lb = pick(a), pick(b)
    if [w.shape for w in la] != [w.shape for w in lb]:
        raise ValueError("a, b: expected the same architecture (layer shapes differ)")
    num = sum(float(np.sum(x * y)) for x, y in zip(la, lb))
    den = math.sqrt(sum(float(np.sum(x**2)) for x in la) * sum(float(np.sum(y**2)) for y in lb))
    return num / den


def function_cosine(model: AbstractModel, task: AbstractTask, a, b) -> float:
    """cos∠(F_a(X), F_b(X)): the two directions' network outputs on the task's inputs, compared
    as functions. Unlike `direction_cosine` it is blind to the symmetries of an escape direction
    (hidden units permuted, a rank-one layer's mass spread over units with the next layer's row
    along it), under which equally good directions can have parameter cosines of 0.6.

    **Arguments:** `model`, a layered network of the shapes of `a`, `b` (its layers are replaced);
    `task`, a sample task (with inputs `X`); `a`, `b`: networks or `EscapeDirection`s.

    **Returns:** the cosine, in [−1, 1] (NaN where a direction's outputs vanish on X).
    """
    X = getattr(task, "X", None)
    if X is None:
        raise ValueError(f"task: expected a sample task with inputs X, got {type(task).__name__}")
    pick = lambda x: x.layers if isinstance(x, EscapeDirection) else direction(x)
    outputs = [np.asarray(jax.vmap(_with_layers(model, tuple(jnp.asarray(w) for w in pick(x))))(X)).ravel()
               for x in (a, b)]
    den = float(np.linalg.norm(outputs[0]) * np.linalg.norm(outputs[1]))
    return float(outputs[0] @ outputs[1]) / den if den > 0 else math.nan


def parameter_norm(model: AbstractModel) -> float:
    """‖θ‖ over all layers (the radius r of the escape analysis)."""
    return math.sqrt(sum(float(np.sum(np.asarray(w) ** 2)) for w in _layers_of(model)))


def escape_time(speed: float, init_norm: float, depth: int) -> float:
    """Escape time from radius ε = `init_norm` along a direction of speed s:
    ln(1/ε)/(2s) for L = 2, and ε^{−(L−2)}/(L(L−2)s) for L ≥ 3, the blow-up time of
    ṙ = L s r^{L−1} (Bantzis, Simon & Jacot; reference/relu_deep.md §0).

    With a random initialization the direction first has to align, which costs time: these
    are lower bounds whose exponent in ε is exact as ε → 0.

    **Arguments:** `speed` s* > 0; `init_norm` ε; `depth` L ≥ 2.

    **Returns:** the escape time.
    """
    if isinstance(depth, bool) or int(depth) != depth or depth < 2:
        raise ValueError(f"depth: expected an integer ≥ 2, got {depth!r}")
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed: expected a positive escape speed, got {speed!r} (no escape)")
    if not (init_norm > 0 and math.isfinite(init_norm)):
        raise ValueError(f"init_norm: expected a positive finite number, got {init_norm!r}")
    if depth == 2:
        return math.log(1.0 / init_norm) / (2.0 * speed)
    return init_norm ** (-(depth - 2)) / (depth * (depth - 2) * speed)


def ray_loss(escape: EscapeDirection, task: AbstractTask) -> float:
    """min_c ℒ(c·u*): the lowest loss on the ray of the escape direction. For MSE it is
    C(0) − G(u*)²/(2·(1/N)Σ‖f_{u*}(x_i)‖²); for deep linear networks with whitened inputs it is the
    exact plateau after the first step (½ Σ_{k>1} s_k²), for ReLU networks an estimate."""
    model = escape.model
    zero = task.loss(_with_layers(model, tuple(jnp.zeros_like(w) for w in _layers_of(model))))
    # ℒ(c·u) = C(c^L F) is quadratic in a = c^L for MSE: C(0) − a·G + a²·Q.
    f = lambda a: task.loss(
        _with_layers(model, tuple(_layers_of(model)[:-1]) + (a * _layers_of(model)[-1],))
    )
    q = float(jax.grad(jax.grad(f))(jnp.zeros(()))) / 2.0
    g = escape.speed
    if not q > 0:
        return float(zero)
    return float(zero) - g * g / (4.0 * q)


def predict_escape(
    model: AbstractModel,
    task: AbstractTask,
    *,
    escape: EscapeDirection | None = None,
    key: PRNGKeyArray | None = None,
    restarts: int = 16,
) -> Prediction:
    """The first step of a deep homogeneous network from `model`'s initialization.

    Time: `escape_time(s*, ‖θ(0)‖, L)` with ε = ‖θ(0)‖ (not α: the radius of all parameters).
    Loss after the step: `ray_loss` (exact for whitened deep linear networks, an estimate for
    ReLU networks).

    **Arguments:** `model` at its initialization; `task`; `escape` (default: computed with
    `escape_direction(model, task, key=key, restarts=restarts)`).

    **Returns:** a `Prediction` with `method="closed-form:escape"` and, in `extra`, `speed`,
    `init_norm`, `depth`, `layer_norms`, `singular_value_ratios`, and `time_scaled`
    (t·ε^{L−2} for L ≥ 3, t/ln(1/ε) for L = 2).
    """
    if escape is None:
        if key is None:
            raise ValueError("key: needed to compute the escape direction (or pass escape=)")
        escape = escape_direction(model, task, key=key, restarts=restarts)
    init_norm = parameter_norm(model)
    L = escape.depth
    t = escape.escape_time(init_norm)
    alpha = float(model.init_scale)
    scaled = t * init_norm ** (L - 2) if L >= 3 else t / math.log(1.0 / init_norm)
    return Prediction(
        "closed-form:escape",
        [t],
        [float(rescale(t, alpha))],
        [ray_loss(escape, task)],
        ["escape"],
        initial_loss=float(task.loss(model)),
        init_scale=alpha,
        extra={
            "speed": escape.speed,
            "init_norm": init_norm,
            "depth": L,
            "layer_norms": escape.layer_norms.tolist(),
            "singular_value_ratios": escape.singular_value_ratios().tolist(),
            "time_scaled": scaled,
        },
    )
