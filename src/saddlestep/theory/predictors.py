"""Every closed-form predictor in one convention: `predict_…(model, task, **options) -> Prediction`,
as neural-tangents' `predict` and `agf.predict` take them. The formulas live beside, in one file per
paper, and take the problem's data (a spectrum, a template); these read that data off the model and
task, so a preset or a user calls every predictor the same way.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ..models.base import AbstractModel
from ..prediction import Prediction
from .attention import attention_prediction
from .modular import modular_prediction
from ._common import log_inv, moments
from .linear import _commuting_basis, commuting_times, linear_network, narrow_commuting_steps
from .diagonal import pesme_flammarion
from .saxe import saxe


def _alpha(model) -> float:
    return float(model.init_scale)


def _bottleneck(model) -> int | None:
    """The narrowest layer of a linear network: the rank its end-to-end map can reach, so the
    number of modes it learns (None for a model without layer matrices)."""
    mats = list(model.layers) if hasattr(model, "layers") else [getattr(model, k, None) for k in ("W", "a")]
    shapes = [m.shape for m in mats if m is not None and getattr(m, "ndim", 0) == 2]
    return min(min(sh) for sh in shapes) if shapes else None


def _first_steps(prediction: Prediction, k: int | None) -> Prediction:
    """The first `k` steps of a prediction (per-step lists in `extra` cut alike)."""
    n = prediction.num_steps
    if k is None or k >= n:
        return prediction
    extra = {key: (v[:k] if isinstance(v, list) and len(v) == n else v) for key, v in prediction.extra.items()}
    return dataclasses.replace(prediction, times=prediction.times[:k], rescaled_times=prediction.rescaled_times[:k],
                               losses=prediction.losses[:k], order=prediction.order[:k], extra=extra)


def predict_linear(model, task, *, num_steps: int | None = None) -> Prediction:
    """A two-layer linear network's staircase (`linear_network`: exact for commuting Σxx, Σyx;
    else reduced-rank plateaus at Conjecture 4.1's times, Kunin et al. 2025), at the model's α.
    A network narrower than the target's rank learns as many modes as it has hidden units (with
    decoupled modes, then swaps a learned mode for a better one left out)."""
    pred = linear_network(task, init_scale=_alpha(model), num_steps=num_steps, width=_bottleneck(model))
    return _from_the_init(pred, model, task)


def _from_the_init(pred: Prediction, model, task) -> Prediction:
    """With decoupled modes, each learned on a unit of its own (no swap), a two-layer linear
    network's steps come when its actual init says (`commuting_times`), not at the α → 0 times
    τ_k ln(1/α), which are off by O(1/ln(1/α)) (10% for the first mode of the `linear` preset at
    α = 1e-6). The α → 0 rescaled times stay in `extra["limit_rescaled_times"]`."""
    W, a = getattr(model, "W", None), getattr(model, "a", None)
    linear = getattr(model, "activation", None) == "linear" and getattr(model, "b", None) is None
    if not linear or getattr(W, "ndim", 0) != 2 or getattr(a, "ndim", 0) != 2 or pred.num_steps == 0:
        return pred
    if any(g is not None for g in pred.extra.get("given_up") or []):
        return pred
    Sxx, Syx, _ = moments(task)
    times = commuting_times(W, a, Sxx, Syx)
    if times is None:  # not decoupled
        return pred
    # A narrow network's later steps (swaps of a learned mode) keep their α → 0 times.
    times = np.concatenate([times, np.asarray(pred.times)[len(times):]])[: pred.num_steps]
    if not np.all(np.diff(times) > 0):
        return pred  # near-tied modes the init reorders: the α → 0 order and times stand
    return dataclasses.replace(
        pred, times=times, rescaled_times=times / log_inv(_alpha(model)),
        extra={**pred.extra, "limit_rescaled_times": np.asarray(pred.rescaled_times).tolist()},
    )


def predict_saxe(model, task, *, u0: float | None = None) -> Prediction:
    """Saxe et al.'s mode-by-mode staircase (`saxe`) at the model's α and depth (layers).

    At depth L ≥ 3 a mode's time ∝ u₀^{−(1−2/L)} keeps its initial strength at leading order, so
    the times hold for an aligned, balanced init (u₀ = α^L, or `u0`); from a random init each
    mode starts at its own strength and the flow's times differ by O(1) factors that do not
    shrink as α → 0 (1.2–1.8× at depth 3 on a random 6×6 teacher), which is warned. The
    plateaus hold either way."""
    depth = len(model.layers) if hasattr(model, "layers") else 2
    width = _bottleneck(model)
    if depth >= 3 and u0 is None and not _aligned(model, task):
        warnings.warn(
            f"model: Saxe's depth-{depth} times assume an init aligned with the teacher's modes and balanced "
            f"(each mode at u0 = α^{depth}); from this random init each mode starts at its own strength, and at "
            f"depth ≥ 3 that sets its time to leading order (t ∝ u0^-(1-2/{depth})): the flow's times differ by O(1) "
            "factors that do not shrink as α → 0 (the plateaus' levels hold; pass u0= for an effective strength)",
            stacklevel=2,
        )
    pred = saxe(task, init_scale=_alpha(model), depth=depth, u0=u0)
    if depth == 2 and width is not None and width < pred.num_steps:
        modes = _commuting_basis(*moments(task)[:2])
        steps = narrow_commuting_steps(*modes[:2], width)[0] if modes is not None else []
        if any(given is not None for _, _, given in steps):
            warnings.warn(f"model: {width} hidden unit{'' if width == 1 else 's'} for {pred.num_steps} modes: after the "
                          "first steps the flow gives up a learned mode for a better-fitting one, which Saxe's per-mode "
                          "solution does not see (predict_linear predicts it)", stacklevel=2)
    return _first_steps(pred, width)


def _aligned(model, task) -> bool:
    """Whether the model's end-to-end map at init is Σ_k u₀ u_k v_kᵀ on the teacher's singular
    pairs (the init Saxe's closed form assumes), to a relative 1e-6."""
    P = np.asarray(model.matrix(), dtype=float)
    U, sig, Vt = np.linalg.svd(moments(task)[1], full_matrices=False)
    r = int(np.sum(sig > 1e-12 * max(1.0, sig.max(initial=0.0))))
    strengths = np.einsum("ik,ij,kj->k", U[:, :r], P, Vt[:r])
    rest = P - (U[:, :r] * strengths) @ Vt[:r]
    alpha = _alpha(model) ** len(model.layers)
    return bool(np.all(np.abs(strengths - alpha) <= 1e-6 * alpha) and np.abs(rest).max(initial=0.0) <= 1e-6 * alpha)


def predict_pesme_flammarion(model, task, *, max_steps: int = 100) -> Prediction:
    """Pesme & Flammarion's Algorithm 1 (`pesme_flammarion`) for a `DiagonalLinear` model.

    β = u² − v² (`variant="squares"`, u = v = α at init) is β = 2ab in the rotated a, b = (u ± v)/√2,
    which start as u ⊙ v does (a = √2α, b = 0): the u ⊙ v network on 2X, so every time is halved."""
    pred = pesme_flammarion(task, init_scale=_alpha(model), max_steps=max_steps)
    if getattr(model, "variant", "uv") == "squares":
        pred = dataclasses.replace(pred, times=np.asarray(pred.times) / 2, rescaled_times=np.asarray(pred.rescaled_times) / 2)
    return pred


def _data_level(name: str, instead: str) -> None:
    warnings.warn(f"{name}(data…) is the older form: call {instead} with the problem's data, or {name}(model, task)",
                  DeprecationWarning, stacklevel=3)


def predict_modular(model, task, *, init_norm: float | None = None) -> Prediction:
    """Modular addition's closed-form levels and lower-bound times (`modular_prediction`), from the
    task's template; `init_norm` defaults to the largest neuron norm of the model at init."""
    if not isinstance(model, AbstractModel):  # the older call (template, init_scale)
        _data_level("predict_modular", "modular_prediction")
        return modular_prediction(model, task, init_norm=init_norm)
    n0 = float(model.neuron_norms().max()) if init_norm is None else init_norm
    return modular_prediction(task.template, _alpha(model), init_norm=n0)


def predict_attention(model, task, *legacy, init_norm: float | None = None) -> Prediction:
    """In-context regression's closed-form levels and lower-bound times (`attention_prediction`),
    from the task's input spectrum and context length, one component per head (as many steps as
    the model has heads); `init_norm` defaults to the largest head norm of the model at init."""
    if not isinstance(model, AbstractModel):  # the older call (eigenvalues, N, init_scale)
        _data_level("predict_attention", "attention_prediction")
        return attention_prediction(model, task, *legacy, init_norm=init_norm)
    norms = model.neuron_norms()
    n0 = float(norms.max()) if init_norm is None else init_norm
    # Each rank-one head learns one principal component: H heads learn the H largest, and the
    # loss stays at the level of the rest.
    return _first_steps(attention_prediction(task.eigenvalues, task.N, _alpha(model), init_norm=n0), len(norms))
