"""The first time a sampled curve crosses a level: the one rule behind every drop time here
(detected steps, feature crossings, convergence slopes, the benchmarks' accuracy)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from jaxtyping import Float

INTERPOLATIONS = ("cubic", "linear", "log")


def first_crossing(
    times: Float[np.ndarray, " n"],
    values: Float[np.ndarray, " n"],
    level: float,
    *,
    falling: bool = False,
    start: int = 0,
    interpolation: Literal["cubic", "linear", "log"] = "cubic",
) -> float:
    """The first time at or after sample `start` where `values` reach `level`.

    **Arguments:**

    - `times`, `values`: the samples (non-finite pairs are skipped).
    - `level`: the level.
    - `falling`: cross downward (a loss falling through a level) instead of upward (a feature
      growing through one).
    - `start`: the first sample to look from.
    - `interpolation`: `"cubic"`, the root of the cubic through the four samples around the
      crossing (error O(Δt⁴): a moderately fine save grid resolves drop times far below the
      solver's tolerance), linear where those samples are not monotone; `"linear"`; or
      `"log"`, linear in ln(values), for a positive curve that spans decades between samples.

    **Returns:** the crossing time; NaN when the curve never reaches the level, or is already
    past it at sample `start` (the crossing happened before the record shows it).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    t, v = np.asarray(times, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(t) & np.isfinite(v)
    first = int(np.sum(keep[:start]))  # `start` among the kept samples
    t, v = t[keep], v[keep]
    sign = -1.0 if falling else 1.0
    past = np.flatnonzero(sign * (v[first:] - level) >= 0)
    if past.size == 0 or past[0] == 0:
        return math.nan  # never reached, or already past where the search starts
    j = first + int(past[0])
    linear = float(t[j - 1] + (t[j] - t[j - 1]) * (level - v[j - 1]) / (v[j] - v[j - 1])) if v[j] != v[j - 1] else float(t[j])
    if interpolation == "linear" or len(t) < 4:
        return linear
    if interpolation == "log":
        y0, y1, yl = math.log(max(v[j - 1], 1e-300)), math.log(max(v[j], 1e-300)), math.log(max(level, 1e-300))
        w = (y0 - yl) / (y0 - y1) if y0 != y1 else 1.0
        return float(t[j - 1] + w * (t[j] - t[j - 1]))
    lo = max(0, min(j - 2, len(t) - 4))
    tt, vv = t[lo : lo + 4], v[lo : lo + 4]
    if not np.all(sign * np.diff(vv) >= 0):
        return linear  # not monotone: a cubic could cross elsewhere
    t0, scale = t[j - 1], tt[-1] - tt[0]
    coef = np.polyfit((tt - t0) / scale, vv - level, 3)
    roots = [r.real * scale + t0 for r in np.roots(coef) if abs(r.imag) < 1e-9]
    inside = [r for r in roots if t0 - 1e-12 * scale <= r <= t[j] + 1e-12 * scale]
    return float(min(inside)) if inside else linear
