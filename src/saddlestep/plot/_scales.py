"""Axis scales for the plots: the time axis (physical, rescaled, log), the loss axis chosen from
the data, and a default time range that frames the staircase."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ..clock import unit
from ..prediction import Prediction
from ..trajectory import Trajectory

TIMES = ("t", "rescaled", "log")
YSCALES = ("auto", "log", "shifted", "linear")


def check_time(time: str) -> str:
    if time not in TIMES:
        raise ValueError(f"time: expected one of {', '.join(map(repr, TIMES))}, got {time!r}")
    return time


@dataclasses.dataclass(frozen=True)
class TimeAxis:
    """How physical time t maps onto the plotted axis.

    - `time`: `"t"`, `"rescaled"` or `"log"` (log-scaled physical time).
    - `kappa`: the neurons' degree κ; κ > 2 rescales by α^{κ−2}, else by 1/ln(1/α).
    """

    time: str
    kappa: int | None = None

    def factor(self, alpha: float) -> float:
        """The factor s with x = s·t for a run started at scale α."""
        if self.time != "rescaled" or not (0.0 < alpha < 1.0):
            return 1.0
        return 1.0 / float(unit(alpha, self.kappa))

    def __call__(self, t, alpha: float) -> np.ndarray:
        return np.asarray(t, dtype=float) * self.factor(alpha)

    def label(self, alphas: Sequence[float]) -> str:
        if self.time == "log":
            return "time t (log scale)"
        if self.time == "t":
            return "time t"
        if not all(0.0 < a < 1.0 for a in alphas):
            return "time t (not rescaled: α ≥ 1)"
        if self.kappa is not None and self.kappa > 2:
            power = "α" if self.kappa == 3 else f"α^{self.kappa - 2}"
            return f"rescaled time t·{power}  (κ = {self.kappa})"
        return "rescaled time t / ln(1/α)"

    def prediction_times(self, prediction: Prediction, alpha: float) -> np.ndarray:
        """The prediction's jump times on this axis (`alpha`: used when the prediction's is unknown)."""
        if self.time != "rescaled":
            return prediction.times
        if not (self.kappa is not None and self.kappa > 2):
            return prediction.rescaled_times  # α-free for κ = 2
        a = prediction.init_scale if math.isfinite(prediction.init_scale) else alpha
        return prediction.times * self.factor(a)


def common_kappa(trajectories: Sequence[Trajectory]) -> float | None:
    """The degree shared by every trajectory, or None if unknown or mixed."""
    kappas = {tr.degree for tr in trajectories}
    return kappas.pop() if len(kappas) == 1 else None


@dataclasses.dataclass(frozen=True)
class LossAxis:
    """The plotted loss: L itself (`"log"` or `"linear"` axis) or L − `shift` floored at `floor`
    on a log axis (`"shifted"`, for losses that reach zero or go negative)."""

    kind: str
    shift: float = 0.0
    floor: float = 0.0
    bottom: float | None = None

    def __call__(self, loss) -> np.ndarray:
        loss = np.asarray(loss, dtype=float)
        return np.maximum(loss - self.shift, self.floor) if self.kind == "shifted" else loss

    @property
    def scale(self) -> str:
        return "linear" if self.kind == "linear" else "log"

    @property
    def label(self) -> str:
        if self.kind == "shifted":
            return f"loss − L_ref  (L_ref = {self.shift:.6g}, just below the lowest loss)"
        return "loss"


def loss_axis(losses: Sequence[np.ndarray], plateaus: Sequence[tuple[float, float]], yscale: str = "auto") -> LossAxis:
    """Choose the loss axis from the data.

    **Arguments:**

    - `losses`: the loss values drawn (every curve, and the prediction's levels).
    - `plateaus`: `(loss_before, loss_after)` of each detected drop (they set the floor and bottom).
    - `yscale`: `"auto"` (below), or force `"log"`, `"shifted"` or `"linear"`.

    **Returns:** a `LossAxis`. `"auto"` picks a log axis of L when L ≥ 0 spans at least a factor
    3 (a loss converging to 0 runs off the bottom, set a little below the last plateau), a
    linear axis when it spans less, and a log axis of L − L_ref (just below the lowest loss) when some L < 0 (the negative
    SGNS / QWEM losses of word2vec).
    """
    if yscale not in YSCALES:
        raise ValueError(f"yscale: expected one of {', '.join(map(repr, YSCALES))}, got {yscale!r}")
    values = np.concatenate([np.ravel(np.asarray(v, dtype=float)) for v in losses] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("trajectories: no finite loss to plot (did every run diverge?)")
    lo, hi = float(values.min()), float(values.max())
    before = np.asarray([b for b, _ in plateaus if np.isfinite(b)], dtype=float)
    levels = np.asarray([v for pair in plateaus for v in pair if np.isfinite(v)], dtype=float)
    # A loss that converges to zero may end at −1e-16 by rounding: that is zero, not negative.
    nonneg = hi > 0 and lo > -1e-12 * hi
    kind = yscale
    if kind == "auto":
        kind = ("log" if hi >= 3.0 * lo else "linear") if nonneg else ("shifted" if hi > lo else "linear")
    if kind == "log" and not nonneg:
        kind = "shifted"  # a log axis of a negative loss would be blank
    if kind == "linear":
        return LossAxis("linear")
    if kind == "log":
        above = before[before > 0]  # the last plateau before a drop, not the converged tail
        bottom = max(lo, 1e-2 * above.min()) if above.size else (lo if lo > 0 else None)
        return LossAxis("log", bottom=bottom)
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    gaps = levels - lo
    gaps = gaps[gaps > 1e-9 * span]
    gap = gaps.min() if gaps.size else 1e-2 * span
    # The reference sits a tenth of the smallest plateau gap below the lowest loss: with L_min
    # itself, a run still falling at its end (its own minimum) dives to the axis floor there,
    # which reads as one more drop.
    floor = 1e-2 * gap
    return LossAxis("shifted", shift=lo - 0.1 * gap, floor=floor, bottom=floor)


def settle_time(x: np.ndarray, loss: np.ndarray, after: float, before: float, fraction: float = 0.05) -> float:
    """The first x past `after` where the loss has come within `fraction` of the last drop
    (from level `before`) of its final value; NaN if it never does."""
    final = loss[-1]
    near = (x > after) & (np.abs(loss - final) <= fraction * abs(before - final))
    return float(x[np.argmax(near)]) if near.any() else math.nan


def default_xlim(
    x_end: float, x_start: float, events: Sequence[float], predicted: Sequence[float], log: bool
) -> tuple[float, float] | None:
    """A time range that frames the staircase: up to a margin after the last drop (or the loss
    settling after it), and past the last predicted jump; None to keep the whole record.

    **Arguments:**

    - `x_end`, `x_start`: the ends of the record on the axis (`x_start` > 0 on a log axis).
    - `events`: axis positions of the last drop of each curve, and of its settling.
    - `predicted`: axis positions of the predicted jumps.
    - `log`: whether the axis is logarithmic (margins are then factors).

    **Returns:** `(left, right)`, or None when the staircase fills most of the record.
    """
    events = [e for e in events if np.isfinite(e) and e > x_start]
    if not events or not np.isfinite(x_end):
        return None
    last = max(events)
    right = min(3.0 * last if log else last + 0.5 * (last - x_start), x_end)
    predicted = [p for p in predicted if np.isfinite(p) and p > x_start]
    if predicted:
        right = max(right, (1.5 if log else 1.05) * max(predicted))
    full = x_end / right < 2.0 if log else right >= x_start + 0.8 * (x_end - x_start)
    if right <= x_end and full:
        return None
    return (x_start, right)
