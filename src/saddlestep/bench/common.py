"""What every bench section shares: the `linear` setup, drop times by crossings, timing with
compilation kept apart, the device."""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import jax
import numpy as np

from ..presets import get_preset
from ..trajectory import Trajectory


PRESET = "linear"


_TSIT5_EVALS_PER_STEP = 6  # 7 stages, first same as last


_DOPRI8_EVALS_PER_STEP = 13  # 14 stages, first same as last (counted on a diffrax solve)


def _setup(seed: int, init_scale: float):
    preset = get_preset(PRESET)
    return preset.build(preset.parameters(), init_scale=init_scale, seed=seed, data=None)


def drop_times(traj: Trajectory, levels: np.ndarray) -> np.ndarray:
    """First crossing of each feature through its level (cubic through the 4 points around it).

    **Arguments:**

    - `traj`: a single trajectory with a `features` observable.
    - `levels`: one level per feature.

    **Returns:** the crossing times (NaN where a feature never crosses).
    """
    keep = np.isfinite(traj.times)
    t = np.asarray(traj.times)[keep]
    F = np.asarray(traj.observables["features"])[keep]
    out = np.full(len(levels), np.nan)
    for k, level in enumerate(levels):
        x = F[:, k] - level
        above = np.nonzero(x > 0)[0]
        if above.size == 0 or above[0] == 0:
            continue
        i = above[0]
        lo, hi = max(i - 2, 0), min(i + 2, len(t))
        ts, xs = t[lo:hi], x[lo:hi]
        guess = t[i - 1] + (t[i] - t[i - 1]) * -x[i - 1] / (x[i] - x[i - 1])
        if len(ts) == 4:
            # Root of the cubic through the 4 points nearest the crossing, in a centred variable.
            c = np.polyfit(ts - guess, xs, 3)
            roots = np.roots(c)
            roots = roots[np.isreal(roots)].real + guess
            roots = roots[(roots >= t[i - 1]) & (roots <= t[i])]
            out[k] = roots[0] if roots.size else guess
        else:
            out[k] = guess
    return out


def calibrate_lr(error_at, lr0: float, e0: float, target: float) -> tuple[float, float]:
    """GD's learning rate for a drop-time error `target`. GD's error is an O(η) bias, so `lr0`
    (whose error is `e0`) is scaled linearly, measured, and corrected once where the bias is not
    yet linear.

    **Arguments:** `error_at(lr)`, GD's drop-time error at a learning rate; `lr0`, `e0`; `target`.

    **Returns:** the learning rate and the error measured there.
    """
    lr = lr0 * target / e0
    e = error_at(lr)
    if not 0.7 < e / target < 1.4:
        lr *= target / e
        e = error_at(lr)
    return lr, e


def _timed(fn, repeats: int) -> tuple[Any, float, float]:
    """Run `fn` once (compiling), then `repeats` times; returns (result, first, best)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, first, best


def _warm_timed(run, t_max: float) -> tuple[Any, float, float]:
    """Compile `run` on a short horizon (t_max is traced: the long run reuses the executable),
    then time the long run once; returns (result, compile_s, wall_s). Runs of minutes are not
    repeated."""
    start = time.perf_counter()
    run(t_max=min(t_max, 1e-3 * t_max))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run()
    return result, compile_s, time.perf_counter() - start


def _device() -> dict:
    dev = jax.devices()[0]
    return {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
