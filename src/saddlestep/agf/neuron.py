"""The generic AGF problem: any neuron model on a sample, utilities by a Diffrax solve (exactly
between kinks for two-layer ReLU networks, `_relu`) and the cost phase by BFGS. Models without a
registered family get this one."""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from . import _numerics as nx
from ._relu import ReluPhase
from ..models.base import AbstractNeuronModel
from ..tasks.base import evaluate_observables
from ..tasks.regression import SampleRegression
from .engine import evaluate_utility, TRACE_COUNT
from .problem import AbstractAGFProblem, register_fallback, require_sample


class ResidualState(eqx.Module):
    """Residual state of a sampled task: r = y − f over the active neurons, (n, out)."""

    r: Float[Array, "n out"]


class NeuronProblem(AbstractAGFProblem):
    """Any neuron model on a sample: U_i = mean_x ⟨f_i(x; θ_i), r(x)⟩; the cost phase minimizes the
    restricted loss with BFGS (optimistix) over the active neurons, dormant ones held at zero.

    An active neuron leaves only when the cost phase shrinks it to ~0 (norm below `collapse`), as
    AGF defines deactivation: it becomes dormant again and keeps its accumulated utility.
    """

    template: AbstractNeuronModel
    task: SampleRegression
    treedef: object = eqx.field(static=True)
    shapes: tuple = eqx.field(static=True)
    kappa: int = eqx.field(static=True)
    loss_floor: float = eqx.field(static=True)
    collapse: float = eqx.field(static=True, default=1e-3)
    align: float = eqx.field(static=True, default=1e-4)
    factors: tuple = eqx.field(static=True, default=())
    exact: ReluPhase | None = None
    loss_unit: Float[Array, ""] | float = 1.0
    atol: ClassVar[float] = 1e-12
    rtol: ClassVar[float] = 1e-8
    min_step: ClassVar[float] = 1e-5
    shared_space: ClassVar[bool] = True

    def __init__(self, model: AbstractNeuronModel, task: SampleRegression, *, collapse: float = 1e-3,
                 align: float = 1e-4, balance: bool = True):
        self.template = model
        self.task = task
        # The cost phase minimizes L/loss_unit. BFGS starts from the identity Hessian with
        # absolute tolerances (atol 1e-14) made for losses of order one: on data in small units
        # (X, Y × 1e-8, L ~ 1e-16) its first steps were below atol and it stopped at once, at
        # 2.5e-17 where the flow goes to 2e-27. Losses within 1e-3 … 1e3 keep unit 1.
        start = 0.5 * float(np.mean(np.sum(np.square(np.asarray(task.Y, dtype=float)), axis=-1)))
        unit = 10.0 ** round(math.log10(start)) if start > 0 and not 1e-3 <= start <= 1e3 else 1.0
        self.loss_unit = jnp.asarray(unit)
        _, self.treedef, self.shapes = nx.flatten(model.neurons())
        self.factors = _factor_columns(model, self.shapes) if balance else ()
        self.kappa = int(model.kappa)
        floor = task.loss_floor(model)
        self.loss_floor = -math.inf if floor is None else float(floor)
        self.collapse = collapse
        self.align = align
        self.exact = _exact_phase(model, task, self.shapes)

    def _outputs(self, flat):
        neurons = nx.unflatten(flat, self.treedef, self.shapes)
        return jax.vmap(lambda xi: self.template.neuron_outputs(neurons, xi))(self.task.X)  # (n, H, out)

    def utility(self, x, rstate):
        return jnp.einsum("nho,no->h", self._outputs(x), rstate.r) / self.task.X.shape[0]

    def growth_rate(self, x, rstate):
        # The initial directions' own utilities: not the best direction's, but of its scale
        # (random directions reach a fraction of it), which is what the wait needs.
        u = np.abs(np.asarray(evaluate_utility(self, jnp.asarray(x), rstate), dtype=float))
        return self.kappa * float(np.max(u)) if u.size and np.all(np.isfinite(u)) else None

    def initial(self):
        flat, _, _ = nx.flatten(self.template.neurons())
        return nx.unit_rows(flat)

    def start(self, params, active):
        r, loss = _residual(self, jnp.asarray(params), jnp.asarray(active, dtype=float))
        return ResidualState(r), float(loss)

    def _merge(self, params, active):
        # Active neurons with one direction are one neuron (κ-homogeneity), and gradient flow
        # keeps them so: a cost phase that let them split would learn later features at once.
        lead = np.arange(params.shape[0])
        idx = np.flatnonzero(active)
        unit = params / np.maximum(np.linalg.norm(params, axis=1, keepdims=True), 1e-300)
        for n, i in enumerate(idx):
            for j in idx[:n]:
                if lead[j] == j and unit[i] @ unit[j] > 1 - self.align:
                    lead[i] = j
                    break
        weight = np.zeros(params.shape[0])
        np.add.at(weight, lead[idx], np.linalg.norm(params[idx], axis=1) ** self.kappa)
        merged = np.zeros_like(params)
        keep = idx[lead[idx] == idx]
        merged[keep] = unit[keep] * weight[keep, None] ** (1.0 / self.kappa)
        return merged, lead, weight

    def enter(self, params, new, active, rstate):
        # For κ > 2 a neuron entering at norm 1 overshoots (f scales as ‖θ‖^κ: loss 18 against
        # 11.9 on the modular preset), and the cost phase can then settle at a higher loss than
        # before. Enter instead at the best scale along each new direction, the others held:
        # f_i = s_i f(θ̄_i) is linear in s_i = c_i^κ, so this is least squares on the residual.
        if self.kappa == 2 or not new.any():
            return params
        idx = np.flatnonzero(new)
        unit = np.zeros_like(params)
        unit[idx] = params[idx]
        F = np.asarray(_outputs_jit(self, jnp.asarray(unit)))[:, idx, :]  # (n, k, out)
        A = np.moveaxis(F, 1, 2).reshape(-1, idx.size)
        s = np.linalg.lstsq(A, np.asarray(rstate.r).reshape(-1), rcond=None)[0]
        if self.kappa % 2 == 0:
            s = np.maximum(s, 0.0)  # c^κ ≥ 0
        out = params.copy()
        out[idx] = params[idx] * (np.sign(s) * np.abs(s) ** (1.0 / self.kappa))[:, None]
        return out

    def cost(self, params, active, order):
        active = active.copy()
        members = active.copy()
        share = np.linalg.norm(params, axis=1) ** self.kappa
        params, lead, weight = self._merge(params, active)
        params = self.balanced(params)
        share = np.where(members, share / np.maximum(weight[lead], 1e-300), 0.0)
        active = active & (lead == np.arange(params.shape[0]))
        entry = active.copy()
        steps = 0
        for _ in range(params.shape[0] + 1):
            out, n = _minimize_rows(self, params, active)
            steps = max(steps, n)
            out = self.balanced(out) * active[:, None]
            # As AGF defines it, a neuron returns to dormant only when the cost phase shrinks it
            # to ~0. (A sign test on its output also dropped neurons whose output turned against
            # the overshooting entry of a tie: 11 neurons entered and left together, over and
            # over, on a 200-sample ReLU regression at width 20.)
            gone = active & (np.linalg.norm(out, axis=1) < self.collapse)
            if not gone.any():
                break
            active &= ~gone
        if self.kappa > 2:
            # The entry (`enter`) is no worse than the plateau before it; a phase that ends above
            # it (a neuron dropped) is refused: all stay, minimized from the entry, or the entry.
            mask = jnp.asarray(entry, dtype=float)
            bar = float(_residual(self, jnp.asarray(params), mask)[1])
            if float(_residual(self, jnp.asarray(out), jnp.asarray(active, dtype=float))[1]) > bar * (1 + 1e-6):
                out, n = _minimize_rows(self, params, entry)
                out, steps = self.balanced(out) * entry[:, None], max(steps, n)
                if float(_residual(self, jnp.asarray(out), mask)[1]) > bar:
                    out = params * entry[:, None]
                active = entry
        # Each merged neuron's solution back to its members, in their shares of f (κ-homogeneity).
        still = members & active[lead]
        return out[lead] * (share ** (1.0 / self.kappa))[:, None] * still[:, None], still, steps

    def balanced(self, params):
        """Each neuron moved along its rescaling orbit (f unchanged) to where ‖θ_g‖²/k_g is the
        same for every factor g, as gradient flow from small initialization keeps it."""
        if not self.factors:
            return params
        sq = np.stack([np.sum(params[:, list(cols)] ** 2, axis=1) for cols, _ in self.factors], axis=1)
        k = np.array([deg for _, deg in self.factors], dtype=float)
        ok = np.all(sq > 0, axis=1)
        # c_g² = λ k_g/‖θ_g‖² with Π c_g^{k_g} = 1 gives κ ln λ = Σ k_g ln(‖θ_g‖²/k_g).
        log_ratio = np.log(np.where(ok[:, None], sq, 1.0) / k)
        log_lam = (log_ratio @ k) / k.sum()
        scale = np.where(ok[:, None], np.exp(0.5 * (log_lam[:, None] - log_ratio)), 1.0)
        out = params.copy()
        for g, (cols, _) in enumerate(self.factors):
            out[:, list(cols)] *= scale[:, g : g + 1]
        return out

    def to_params(self, x, rstate):
        return np.asarray(x)

    def ties(self, x, crossed, dormant):
        # Dormant neurons pointing where a crossing one points grew at the same rate since they
        # aligned, so in rescaled time they cross together: in gradient flow they join the same
        # drop (two neurons with one direction are one neuron, by homogeneity).
        x = np.asarray(x)
        cos = x[dormant] @ x[crossed].T
        out = crossed.copy()
        out[np.flatnonzero(dormant)[np.any(cos > 1 - self.align, axis=1)]] = True
        return out

    def advance(self, x, S, c, dormant, rstate, horizon):
        if self.exact is None:
            return None
        return self.exact.advance(x, S, c, dormant, np.asarray(rstate.r), horizon)

    def rebase(self, x, old, new):
        return x  # directions are the parameters themselves

    def absorb(self, x, S, log_norm0, crossed, dormant, rstate):
        return x, S

    def exhausted(self, x, dormant, rstate):
        return False  # not known for a general utility

    def model(self, params):
        return self.template.with_neurons(nx.unflatten(jnp.asarray(params), self.treedef, self.shapes))

    def label(self, before, after, crossed):
        # The task feature that grows most across the step (as `detect_steps` labels a drop).
        labels = self.task.feature_labels(self.template)
        f0 = evaluate_observables(self.task, self.model(before)).get("features")
        f1 = evaluate_observables(self.task, self.model(after)).get("features")
        if labels and f0 is not None:
            change = np.abs(np.asarray(f1) - np.asarray(f0))
            if change.max() > 0:
                return labels[int(np.argmax(change))]
        return neuron_label(np.flatnonzero(crossed))


def neuron_label(indices, *, shown: int = 4) -> str:
    """A readable name for the neurons a step activated: `"neuron 3"`, `"neurons 0, 2"`, or for
    many `"27 neurons: 1–2, 4–7, 9, …"` (runs of consecutive indices joined, the first `shown`
    runs listed; the full list is in the prediction's `extra["activated"]`)."""
    idx = sorted(int(i) for i in indices)
    if not idx:
        return "no neuron"
    if len(idx) == 1:
        return f"neuron {idx[0]}"
    runs, start = [], idx[0]
    for prev, cur in zip(idx, idx[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            runs.append(f"{start}" if start == prev else f"{start}–{prev}")
            start = cur
    if len(idx) <= 3:
        return "neurons " + ", ".join(str(i) for i in idx)
    listed = ", ".join(runs[:shown]) + (", …" if len(runs) > shown else "")
    return f"{len(idx)} neurons: {listed}"


@eqx.filter_jit
def _outputs_jit(problem: NeuronProblem, flat):
    TRACE_COUNT["outputs"] += 1
    return problem._outputs(flat)


@eqx.filter_jit
def _residual(problem: NeuronProblem, params, mask):
    TRACE_COUNT["residual"] += 1
    f = jnp.sum(problem._outputs(params * mask[:, None]), axis=1)
    r = problem.task.Y - f
    return r, 0.5 * jnp.mean(jnp.sum(r**2, axis=-1))


# Above this many flattened neuron parameters the cost phase runs BFGS on the active rows only
# (padded to a power of two): BFGS carries a dense inverse Hessian over every row it is given,
# masked ones included, and on the 1,080-parameter `modular` preset its O(n²) update is most of
# a step (1.0 ms a step over all rows, 0.23 ms over 8 of 18). Below it, one compilation for every
# active count is the better deal (each bucket is compiled once per problem shape).
_RESTRICT_SIZE = 512


def _minimize_rows(problem: NeuronProblem, params: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, int]:
    """`_minimize` over the rows `active` (the rest held at zero): (parameters, BFGS steps)."""
    width = params.shape[0]
    idx = np.flatnonzero(active)
    size = 1 << max(0, (idx.size - 1).bit_length())
    rows = None
    if params.size > _RESTRICT_SIZE and 0 < idx.size and size < width:
        rows = np.concatenate([idx, np.setdiff1d(np.arange(width), idx)[: size - idx.size]])
        try:  # a model of one's own whose neuron_outputs ignores the rows it is given: all rows
            shape = jax.eval_shape(problem._outputs, jax.ShapeDtypeStruct((size, params.shape[1]), params.dtype)).shape
            rows = rows if shape[1] == size else None
        except Exception:
            rows = None
    if rows is None:
        out, n = _minimize(problem, jnp.asarray(params), jnp.asarray(active, dtype=float))
        return np.asarray(out), int(n)
    out, n = _minimize(problem, jnp.asarray(params[rows]), jnp.asarray(active[rows], dtype=float))
    full = np.zeros_like(params)
    full[rows] = np.asarray(out)
    return full, int(n)


@eqx.filter_jit
def _minimize(problem: NeuronProblem, params, mask):
    TRACE_COUNT["cost"] += 1

    def loss(p, m):
        f = jnp.sum(problem._outputs(p * m[:, None]), axis=1)
        value = 0.5 * jnp.mean(jnp.sum((problem.task.Y - f) ** 2, axis=-1)) / problem.loss_unit
        if problem.factors:
            # Zero on balanced neurons, so the minimum is unchanged; it pins the rescaling
            # orbits, along which the loss is flat and BFGS otherwise drifts for thousands of steps.
            q = jnp.stack([jnp.sum(p[:, cols] ** 2, axis=1) / deg for cols, deg in problem.factors], axis=1)
            value = value + jnp.sum(m * jnp.sum((q - jnp.mean(q, axis=1, keepdims=True)) ** 2, axis=1))
        return value

    sol = optx.minimise(
        loss, optx.BFGS(rtol=1e-12, atol=1e-14), params * mask[:, None], args=mask,
        max_steps=20_000, throw=False,
    )
    return sol.value, sol.stats["num_steps"]



def _leaf_columns(model: AbstractNeuronModel, shapes) -> dict[str, range]:
    """Each neuron leaf's block of columns in the flattened neuron (`nx.flatten`'s order)."""
    names = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(model.neurons())[0]]
    starts = np.cumsum([0] + [math.prod(shape) for shape in shapes])
    return {name: range(int(starts[i]), int(starts[i + 1])) for i, name in enumerate(names)}


def _exact_phase(model: AbstractNeuronModel, task: SampleRegression, shapes) -> ReluPhase | None:
    """The exact utility phase where the neuron is a·relu(wᵀx [+ b]) (`_relu`), else None."""
    from ..models.two_layer import TwoLayer

    if not (isinstance(model, TwoLayer) and model.activation == "relu"):
        return None
    col = _leaf_columns(model, shapes)
    cols_w = [*col["w"], *col.get("b", [])]
    return ReluPhase(np.asarray(task.X), bias="b" in col, cols_w=cols_w, cols_a=list(col["a"]))


def _factor_columns(model: AbstractNeuronModel, shapes) -> tuple:
    """`model.neuron_factors()` as (columns of the flattened neuron, degree) pairs; () if unknown."""
    factors = model.neuron_factors()
    if not factors:
        return ()
    block = _leaf_columns(model, shapes)
    return tuple((tuple(c for key in keys for c in block[key]), int(deg)) for keys, deg in factors)


def _neuron(model, task):
    require_sample(task)
    return NeuronProblem(model, task)


register_fallback(_neuron)
