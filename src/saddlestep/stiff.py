"""Implicit solvers for the stiff phase of a gradient flow, matrix-free.

The Jacobian of dθ/dt = −∇L(θ) is −∇²L: symmetric. The Newton systems of an implicit
Runge–Kutta stage, (I + γh∇²L)δ = r, are therefore solved with Hessian-vector products (a jvp
of the gradient) and conjugate gradients from lineax, without ever forming ∇²L.

What limited the implicit step size (measured on the quadratic network, see `saddlestep bench`):

1. Newton failures. Diffrax's `VeryChord` keeps the Jacobian of the step's start for every stage
   and Newton iteration; over a long step on a plateau the stage values move far from it, the
   chord iteration diverges, the step is rejected and the controller cuts h by 5× (`factormin`).
   Matrix-free, a fresh Jacobian costs nothing extra (an HVP at the current iterate), so
   `NewtonCG` runs true Newton: quadratic convergence, no stale Jacobian.
2. The embedded error estimate on relaxed stiff components. The difference of two L-stable
   formulas is not damped on components with hλ ≫ 1, so the controller kept h ~ 1/λ_max as an
   explicit solver would. `ErrorFiltered` filters the estimate with (I + γh∇²L)⁻¹, as
   Hairer–Wanner's RADAU5 does (Shampine's filter): unchanged where hλ ≪ 1, damped where the
   true error is damped by the solver.
3. Newton's test at tight tolerances. The stage variable of Diffrax's ESDIRK solvers is the
   stage derivative f, ~0 on relaxed components; a test on atol + rtol·|f| fell below the
   rounding of ∇L there, and at rtol ≤ 1e-8 every step after the first drop failed. `NewtonCG`
   judges the stage value y + γh·f instead (the scale is passed per step by `ErrorFiltered`).

What the per-entry tolerance cannot see: once a first feature has made the parameter entries
O(1), a later feature still grows inside them, and an error of rtol·|θ_i| per entry is large
relative to it. An accuracy-bound implicit solver spends exactly that error (an explicit one,
stability-bound, is far more accurate than asked): on a linear teacher with s = 10 … 0.01 at
α = 1e-6 the s = 0.1 drop time is 5e-4 off at rtol 1e-7, 1e-5 at 1e-8, 1.4e-6 at 1e-9. Use
rtol ≤ 1e-8 with the implicit path where later, weaker features matter.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Float, PyTree, Scalar

_SPD = frozenset({lx.symmetric_tag, lx.positive_semidefinite_tag})

# Hessian-vector products and gradients counted on the host when counting is on (benchmarks only:
# a host callback per evaluation).
EVAL_COUNT: dict[str, int] = {"grad": 0, "hvp": 0}


def _bump(kind: str, count: bool, n: int = 1):
    if count:
        def inc(_):
            EVAL_COUNT[kind] += n
        jax.debug.callback(inc, jnp.zeros(()))


def hvp(grad_fn: Callable, theta: Float[Array, " n"], v: Float[Array, " n"]) -> Float[Array, " n"]:
    """∇²L(θ)v as the jvp of the gradient (forward over reverse).

    **Arguments:**

    - `grad_fn`: θ ↦ ∇L(θ) on flat vectors.
    - `theta`, `v`: the point and the direction.

    **Returns:** ∇²L(θ)v.
    """
    return jax.jvp(grad_fn, (theta,), (v,))[1]


class Deflation(eqx.Module):
    """A preconditioner for I + s∇²L that inverts it exactly on k approximate eigenvectors of ∇²L.

    M⁻¹ = I + V (diag(1/(1 + sλ)) − I) Vᵀ with V orthonormal Ritz vectors and λ ≥ 0 their Ritz
    values: symmetric positive definite, and CG then only has to resolve the bulk of the spectrum
    (the stiff directions of a neuron model are few: those of its active neurons).

    **Arguments:**

    - `V`: orthonormal columns (n, k).
    - `lam`: the Ritz values (k,), clipped at 0.
    - `scale`: s = γh of the system.
    """

    V: Float[Array, "n k"]
    lam: Float[Array, " k"]
    scale: Scalar

    def __call__(self, v: Float[Array, " n"]) -> Float[Array, " n"]:
        c = self.V.T @ v
        return v + self.V @ ((1.0 / (1.0 + self.scale * self.lam) - 1.0) * c)

    def rescaled(self, scale) -> "Deflation":
        return Deflation(self.V, self.lam, scale)


def _krylov_solve(matvec, b, solver: lx.AbstractLinearSolver, count: bool, precondition: Deflation | None = None):
    """Solve A x = b for a symmetric positive definite A given by `matvec`, matrix-free.

    A is I + (positive)·∇²L: positive definite whenever h·γ·λ_min(∇²L) > −1, which holds on the
    steps the controller accepts (negative curvature at a saddle is O(growth rate)). A Krylov
    failure leaves an inexact Newton direction, which the Newton test then judges.
    """
    def mv(v):
        _bump("hvp", count)
        return matvec(v)

    struct = jax.eval_shape(lambda: b)
    op = lx.FunctionLinearOperator(mv, struct, tags=_SPD)
    # Scale-free stopping: lineax CG's scale is atol + rtol·|b| per component, which never
    # stops on components of b that are exactly zero; use a norm-relative atol instead.
    options = {}
    if isinstance(solver, lx.CG):
        bnorm = jnp.max(jnp.abs(b))
        solver = eqx.tree_at(lambda s: s.atol, solver, solver.rtol * bnorm)
        if precondition is not None:
            options["preconditioner"] = lx.FunctionLinearOperator(precondition, struct, tags=_SPD)
    sol = lx.linear_solve(op, b, solver, options=options, throw=False)
    return jnp.where(jnp.isfinite(sol.value), sol.value, jnp.inf)


class _NewtonState(eqx.Module):
    diffsize: Scalar
    diffsize_prev: Scalar
    step: Array
    result: optx.RESULTS


class NewtonCG(optx.AbstractRootFinder):
    """Newton's method for the stage equations of an implicit Runge–Kutta step, matrix-free.

    The stage residual of Diffrax's ESDIRK solvers is r(f) = f − v(y + γh f) with v = −∇L, whose
    Jacobian I + γh∇²L is symmetric. Every iteration linearizes at the current iterate (a jvp of
    r, no stale Jacobian) and solves with a lineax Krylov solver (CG by default).

    Diffrax passes `options=dict(init_state=...)` from `init` at the start of a step; this solver
    keeps nothing across stages, so that state is a dummy.
    """

    rtol: Any
    atol: Any
    linear_solver: lx.AbstractLinearSolver = lx.CG(rtol=1e-3, atol=0.0, max_steps=200)
    kappa: float = 1e-2
    norm: Callable[[PyTree], Scalar] = optx.max_norm
    count: bool = eqx.field(static=True, default=False)
    # Set per step by `ErrorFiltered`: Ritz vectors reused from step to step, and the tolerance
    # scale of the stage derivative f in units of y (see `step`).
    precondition: Deflation | None = None
    scale: Float[Array, " n"] | None = None

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        init_state = options.get("init_state", None)
        if isinstance(init_state, _NewtonState):
            return eqx.tree_at(lambda s: s.step, init_state, jnp.array(0))
        dtype = jnp.result_type(*jax.tree.leaves(y))
        return _NewtonState(jnp.array(jnp.inf, dtype), jnp.array(1.0, dtype), jnp.array(0), optx.RESULTS.successful)

    def step(self, fn, y, args, options, state, tags):
        del options, tags
        fx, aux = fn(y, args)
        _bump("grad", self.count)
        matvec = lambda v: jax.jvp(lambda z: fn(z, args)[0], (y,), (v,))[1]
        diff = _krylov_solve(matvec, fx, self.linear_solver, self.count, self.precondition)
        new_y = y - diff
        # The variable is a stage derivative f, which is ~0 on relaxed components: judged by
        # atol + rtol·|f| the test there falls below the rounding of ∇L at O(1) parameters and
        # Newton never converges at tight tolerances. What matters is the stage value
        # y_i = ŷ + γh·f, so the wrapper passes (atol + rtol·|y|)/(γh).
        scale = self.atol + self.rtol * jnp.abs(new_y) if self.scale is None else self.scale
        diffsize = self.norm(diff / scale)
        return new_y, _NewtonState(diffsize, state.diffsize, state.step + 1, state.result), aux

    def terminate(self, fn, y, args, options, state, tags):
        del fn, y, args, options, tags
        # Newton converges quadratically: once a scaled update is below κ the next one is ~κ²,
        # so stop there; divergence is a growing update that is not yet small.
        rate = state.diffsize / state.diffsize_prev
        small = (state.step >= 1) & (state.diffsize < self.kappa)
        diverged = (state.step >= 2) & (~jnp.isfinite(rate) | (rate > 2)) & ~small
        done = small | diverged
        result = optx.RESULTS.where(diverged, optx.RESULTS.nonlinear_divergence, optx.RESULTS.successful)
        return done, result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


class ErrorFiltered(dfx.AbstractAdaptiveSolver):
    """An implicit solver whose embedded error estimate is filtered by (I − γh ∂f/∂y)⁻¹.

    For f = −∇L the filter is (I + γh∇²L)⁻¹, solved matrix-free with CG. It leaves the estimate
    unchanged on components with hλ ≪ 1 and damps it on relaxed stiff components, where the
    L-stable solver damps the true error too (Hairer & Wanner, Solving ODEs II, §IV.8).

    **Arguments:**

    - `solver`: the implicit Runge–Kutta solver (e.g. `diffrax.Kvaerno5`).
    - `gamma`: its diagonal coefficient γ.
    - `linear_solver`: the Krylov solver of the filter.
    - `rank`: with k = `rank` > 0, the Krylov solves of the step (Newton's, when `solver`'s root
      finder is a `NewtonCG`, and the filter's) are preconditioned by a `Deflation` on k Ritz
      vectors of ∇²L. They are carried from step to step and refined by one block power iteration
      per step (k HVPs): the Jacobian information a dense solver would refactor every step,
      reused where the stiff directions change slowly.
    - `count`: count HVPs on the host (benchmarks).
    """

    solver: dfx.AbstractSolver
    gamma: float
    linear_solver: lx.AbstractLinearSolver = lx.CG(rtol=1e-3, atol=0.0, max_steps=100)
    rank: int = eqx.field(static=True, default=0)
    count: bool = eqx.field(static=True, default=False)
    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar = dfx.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def init(self, terms, t0, t1, y0, args):
        inner = self.solver.init(terms, t0, t1, y0, args)
        if not self.rank:
            return inner, None
        # Any orthonormal start: the power iteration turns it to the stiff directions once they
        # exist (before the first drop ∇²L is small and the preconditioner is near identity).
        V = jax.random.normal(jax.random.PRNGKey(0), (y0.size, self.rank), y0.dtype)
        return inner, jnp.linalg.qr(V)[0]

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, V = solver_state
        h = t1 - t0
        solver, precondition, V_next = self.solver, None, V
        if self.rank:
            _bump("hvp", self.count, self.rank)
            W = jax.vmap(lambda v: -jax.jvp(lambda z: terms.vf(t0, z, args), (y0,), (v,))[1], in_axes=1, out_axes=1)(V)
            lam, Q = jnp.linalg.eigh(0.5 * (V.T @ W + W.T @ V))
            precondition = Deflation(V @ Q, jnp.maximum(lam, 0.0), self.gamma * h)
            V_next = jnp.linalg.qr(W)[0]
            V_next = jnp.where(jnp.all(jnp.isfinite(V_next)), V_next, V)
        rf = getattr(solver, "root_finder", None)
        if isinstance(rf, NewtonCG):
            scale = (rf.atol + rf.rtol * jnp.abs(y0)) / (self.gamma * h)
            solver = eqx.tree_at(lambda s: (s.root_finder.scale, s.root_finder.precondition), solver,
                                 (scale, precondition), is_leaf=lambda x: x is None)
        y1, y_error, dense_info, state, result = solver.step(terms, t0, t1, y0, args, inner_state, made_jump)
        # Jacobian of the vector field at the step's end: on a relaxed component its error is
        # what the next step inherits (RADAU5 uses the start; the end is as cheap here).
        matvec = lambda v: v - self.gamma * h * jax.jvp(lambda z: terms.vf(t1, z, args), (y1,), (v,))[1]
        filtered = _krylov_solve(matvec, jnp.where(jnp.isfinite(y_error), y_error, 0.0), self.linear_solver,
                                 self.count, precondition)
        # A failed stage solve reports an infinite error: keep it so (a Krylov solve of inf
        # could come back finite and accept a failed step).
        ok = dfx.is_okay(result) & jnp.all(jnp.isfinite(y_error))
        return y1, jnp.where(ok, filtered, jnp.inf), dense_info, (state, V_next), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def kvaerno5_gamma() -> float:
    """The diagonal coefficient γ of Kvaerno5's ESDIRK tableau."""
    return float(dfx.Kvaerno5.tableau.a_diagonal[1])


class AbstractStiffness(eqx.Module):
    """When to hand a gradient flow over from the explicit to the implicit solver."""

    @abc.abstractmethod
    def __call__(self, t, y, t_end, grad_fn, dropped) -> Array:
        """True when the implicit solver should take over at (t, y); `dropped` says whether the
        loss has left its initial plateau."""


class StabilityBound(AbstractStiffness):
    """Switch once an explicit solver would be stability-bound for many more steps.

    λ_max(∇²L) is estimated by a few power iterations on Hessian-vector products started from θ
    (on a neuron model the stiff directions are those of the active neurons, which dominate θ).
    An explicit RK method needs at least λ_max·(t_end − t)/c steps (c ≈ 3.3 for Tsit5's
    stability interval); switch when that exceeds `min_steps`. The check only runs once the loss
    has dropped by `drop` of its initial value: before the first drop nothing is O(1) and the
    Hessian is small, so the plateau stays explicit.

    **Arguments:**

    - `min_steps`: the explicit step count from which the implicit solver pays.
    - `iterations`: power iterations (HVPs) per check.
    - `drop`: relative loss decrease that enables the check.
    - `stability`: the explicit solver's stability interval on the negative real axis.
    """

    min_steps: float = 2000.0
    iterations: int = eqx.field(static=True, default=6)
    drop: float = 0.05
    stability: float = 3.3

    def lambda_max(self, y, grad_fn):
        def body(_, v):
            w = hvp(grad_fn, y, v)
            return w / jnp.maximum(jnp.linalg.norm(w), 1e-300)

        v = y / jnp.maximum(jnp.linalg.norm(y), 1e-300)
        v = jax.lax.fori_loop(0, self.iterations, body, v)
        return jnp.abs(jnp.vdot(v, hvp(grad_fn, y, v)))

    def predicted_steps(self, t, y, t_end, grad_fn):
        return self.lambda_max(y, grad_fn) * (t_end - t) / self.stability

    def __call__(self, t, y, t_end, grad_fn, dropped):
        return jax.lax.cond(
            dropped,
            lambda: self.predicted_steps(t, y, t_end, grad_fn) > self.min_steps,
            lambda: jnp.array(False),
        )
