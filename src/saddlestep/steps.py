"""Find the staircase in a loss curve (`detect_steps`) and set it beside a prediction (`compare`)."""

from __future__ import annotations

import dataclasses
import heapq
import math
import warnings

import numpy as np
import pandas as pd
from scipy.signal import find_peaks

from .crossings import first_crossing
from .prediction import Prediction
from .trajectory import Trajectory
from . import clock as _clock


@dataclasses.dataclass(frozen=True)
class Step:
    """One drop of the loss.

    - `time`: when the loss crosses the midpoint (loss_before + loss_after)/2 of the drop (of
      the first sub-step, for a step merged by `feature_steps`).
    - `rescaled_time`: time / ln(1/α).
    - `loss_before`, `loss_after`: the plateau levels on either side, each read at the flattest
      point of its plateau (where the tail of the previous drop and the rise of the next one
      balance, so the level is accurate to O(α^{2/3}) for Saxe modes, not O(1/ln(1/α))).
    - `feature`: label of the feature that changed most across the drop (None if unknown, or if
      the save grid, where features are recorded, is too coarse to tell it from its neighbours).
    - `start`, `end`: times of the flattest points of the plateaus before and after.
    """

    time: float
    rescaled_time: float
    loss_before: float
    loss_after: float
    feature: str | None
    start: float
    end: float

    def to_json(self) -> dict:
        return {
            "time": self.time,
            "rescaled_time": self.rescaled_time,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "feature": self.feature,
        }


def feature_change(before: dict, after: dict) -> np.ndarray:
    """How much each feature was learned between two records of the observables.

    The loss each feature gave up (`before − after` of `"feature_losses"`) when the task records
    it, else `|after − before|` of `"features"`. Loss is what ranks features fairly: a feature
    that carries little loss can go from unlearned to learned (its `"features"` from 0 to 1) as
    a side effect of the feature actually being learned, as a weak frequency of modular addition
    does, and should not take the label.

    **Arguments:** `before`, `after`: observables (name → array, one entry per feature).

    **Returns:** one number per feature, larger for the one learned more.
    """
    if "feature_losses" in before and "feature_losses" in after:
        return np.asarray(before["feature_losses"], dtype=float) - np.asarray(after["feature_losses"], dtype=float)
    return np.abs(np.asarray(after["features"], dtype=float) - np.asarray(before["features"], dtype=float))


# Changes of the loss below this fraction of its size are never a drop: rounding (float64 sums
# over samples, ~1e-16 per term), or the creep of dormant O(α) neurons on a first plateau that
# a short horizon cut (8e-12 of the loss at α = 1e-6 on a ReLU teacher, read as 12 "drops").
_ROUNDING = 1e-10


# A drop out of a valley makes the loss fall at least this much faster than at the valley.
_SPEEDS_UP = 1.05


# A feature "dominates" a stretch of the save grid when no other changed by more than this
# fraction of its change.
_DOMINANT = 0.1


def finest_record(trajectory: Trajectory) -> tuple[np.ndarray, np.ndarray]:
    """Times and losses of the save grid merged with the solver-step record, in time order."""
    t = np.asarray(trajectory.times, dtype=float)
    L = np.asarray(trajectory.loss, dtype=float)
    if trajectory.step_times is not None:
        t = np.concatenate([t, np.asarray(trajectory.step_times, dtype=float)])
        L = np.concatenate([L, np.asarray(trajectory.step_loss, dtype=float)])
    keep = np.isfinite(t) & np.isfinite(L)
    t, L = t[keep], L[keep]
    order = np.argsort(t, kind="stable")
    t, L = t[order], L[order]
    # Strictly increasing times only (a grid point can coincide with a solver step; discrete runs
    # can repeat a save time).
    first = np.concatenate([[True], np.diff(t) > 0])
    return t[first], L[first]


def detect_steps(
    trajectory: Trajectory,
    *,
    threshold: float = 0.05,
    min_drop: float = 1e-3,
    separation: float = 0.5,
    unfinished: float = 0.1,
) -> list[Step] | list[list[Step]]:
    """Plateaus and drops of a loss curve, for any number of (possibly overlapping) drops.

    Drops are peaks of the log-log descent rate r = −d ln(L − L_end + ε)/d ln t, which is ≈ 0
    on a plateau and O(ln(1/α)) during a drop whatever the drop's time scale, so one threshold
    serves every step. Two peaks are separate drops when the rate between them falls below
    `separation` × the smaller peak (overlapping drops leave such a shoulder). A plateau's level
    is the loss at its flattest point; a drop's time is the crossing of the midpoint between
    the plateaus around it, interpolated (cubic) on the finest record.

    The curve is the save grid merged with the solver-step record (`Trajectory.step_times`)
    when there is one: the adaptive solver steps short where the loss drops, so drops closer
    than the grid spacing, or a run converging long before a far horizon, are still resolved.

    A last drop still under way when the run stopped without converging (the horizon cut it)
    is not a step: its after-plateau was never seen.

    **Arguments:**

    - `trajectory`: a `Trajectory` (a batched one gives a list per member).
    - `threshold`: the smallest peak rate counted as a drop.
    - `min_drop`: drops smaller than this fraction of the total decrease are merged away, unless
      they at least halve the distance to the final loss (and exceed `min_drop`² of the total).
    - `separation`: valley-to-peak ratio below which two peaks are two drops.
    - `unfinished`: a last drop of a run that did not converge is cut off (dropped) when
      its loss still fell faster at the end than this fraction of the drop per (t_end −
      t_drop), i.e. the extrapolated remaining decrease is not small.

    **Returns:** a list of `Step`s in time order (a list of lists for a batch).
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"detect_steps: expected a Trajectory (from simulate or Trajectory.load), "
                        f"got {type(trajectory).__name__}")
    kw = dict(threshold=threshold, min_drop=min_drop, separation=separation, unfinished=unfinished)
    for name, value in kw.items():
        if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: expected a finite number ≥ 0, got {value!r}")
    if trajectory.batch_size is not None:
        return [detect_steps(trajectory[i], **kw) for i in range(trajectory.batch_size)]
    grid_t = np.asarray(trajectory.times, dtype=float)
    features = trajectory.observables.get("features")
    keep = np.isfinite(grid_t) & np.isfinite(np.asarray(trajectory.loss, dtype=float))
    grid_t = grid_t[keep]
    if len(grid_t) == 0:
        return []  # no finite record at all (a loss that overflowed from the start): no steps
    F = None if features is None else np.asarray(features)[keep].reshape(len(grid_t), -1)
    G = trajectory.observables.get("feature_losses")
    G = None if G is None else np.asarray(G)[keep].reshape(len(grid_t), -1)
    labels = trajectory.feature_labels
    # Rescaled time needs α < 1; at α ≥ 1 (e.g. the richness setting) it is undefined (NaN).
    log_inv = _clock.log_inv(float(trajectory.init_scale))
    t, L = finest_record(trajectory)
    pos = t > 0
    L0 = float(L[0]) if len(L) else math.nan
    t, L = t[pos], L[pos]
    if len(t) < 5:
        return []
    L_end = float(np.min(L))
    total = float(max(L0, np.max(L)) - L_end)
    # A decrease within rounding of the loss is no drop: a run stopped on its first plateau (its
    # step budget spent, a short horizon) otherwise reads its last-digit noise as steps.
    if not total > _ROUNDING * max(abs(L0), abs(L_end), np.finfo(float).tiny):
        return []
    eps = 1e-9 * total
    y = np.log(np.maximum(L - L_end, 0.0) + eps)
    rate = -np.gradient(y, np.log(t))
    peaks, _ = find_peaks(np.concatenate([[-np.inf], rate, [-np.inf]]), height=threshold)
    peaks = list(peaks - 1)
    valley = lambda i, j: _valley(rate, i, j)

    # Merge peaks not separated by a deep enough valley (one drop with a noisy top), or where the
    # loss never falls faster after the valley than at it: a drop speeds up out of its plateau,
    # while a relaxation tail (e^{−λt} into the last level, whose log-rate λt grows until
    # L − L_end reaches the record's end) only slows down.
    speed = -np.gradient(L, t)
    merged: list[int] = []
    for p in peaks:
        if merged:
            q = merged[-1]
            v = valley(q, p)
            if rate[v] > separation * min(rate[q], rate[p]) or not np.max(speed[v + 1 : p + 1]) > _SPEEDS_UP * speed[v]:
                merged[-1] = q if rate[q] >= rate[p] else p
                continue
        merged.append(p)
    peaks = merged

    peaks, bounds = _drop_small(peaks, rate, L, min_drop * total, L_end, min_drop**2 * total)

    def grid_index(time, side):
        # The save-grid point nearest `time` on the given side (features live on the grid).
        if side == "left":
            return max(0, int(np.searchsorted(grid_t, time, side="right")) - 1)
        return min(len(grid_t) - 1, int(np.searchsorted(grid_t, time, side="left")))

    def crossing(a, b, fraction):
        # When the drop between bounds a and b is `fraction` done (linear on the finest record).
        level = L[a] - fraction * (L[a] - L[b])
        return first_crossing(t, L, level, falling=True, start=a, interpolation="linear")

    n = len(peaks)
    spans = [(crossing(bounds[k], bounds[k + 1], 0.1), crossing(bounds[k], bounds[k + 1], 0.9)) for k in range(n)]
    steps = []
    for k in range(n):
        a, b = bounds[k], bounds[k + 1]
        before, after = float(L[a]), float(L[b])
        mid = 0.5 * (before + after)
        t_mid = first_crossing(t, L, mid, falling=True, start=a)
        feature = None
        if F is not None and len(grid_t) and F.shape[1] and len(labels) == F.shape[1]:
            lo, hi = grid_index(t[a], "left"), grid_index(t[b], "right")
            # Features live on the save grid: label the drop if the grid points around it leave
            # out most of the neighbouring drops, or if one feature dominates all the change
            # between them (sub-steps of one feature, as several neurons join it); else the
            # neighbours' change could be counted as this drop's.
            clear = (k == 0 or grid_t[lo] >= spans[k - 1][1]) and (k == n - 1 or grid_t[hi] <= spans[k + 1][0])
            if G is not None and G.shape == F.shape:
                change = feature_change({"feature_losses": G[lo]}, {"feature_losses": G[hi]})
            else:
                change = feature_change({"features": F[lo]}, {"features": F[hi]})
            top = np.sort(change)[::-1]
            dominant = len(top) == 1 or top[1] <= _DOMINANT * top[0]
            if lo < hi and (clear or dominant) and top[0] > 0:
                feature = labels[int(np.argmax(change))]
        steps.append(Step(t_mid, t_mid / log_inv, before, after, feature, float(t[a]), float(t[b])))
    # Cut off: still falling at the end, and no plateau after the drop (a valley where the rate
    # fell well below its peak). A drop the flow settled after stays, though a slower decline
    # went on to the horizon.
    settled = bool(peaks) and rate[bounds[-1]] < separation * rate[peaks[-1]] and bounds[-1] < len(t) - 1
    if steps and trajectory.status != "converged" and not settled and _still_falling(t, L, steps[-1], unfinished):
        steps.pop()
    return steps


def _drop_small(peaks: list[int], rate: np.ndarray, L: np.ndarray, smallest: float, L_end: float,
                floor: float) -> tuple[list[int], list[int]]:
    """Remove the smallest drop while one is small, merging it into its neighbours.

    A drop is small below `smallest`, unless it at least halves the distance to the final loss
    `L_end` and exceeds `floor`: a late step is small beside the whole decrease but plain on the
    log-scale plot (a fourth mode carrying 2e-4 of the loss).

    Drop k runs between bounds k and k + 1, the valleys (rate minima) around its peak. Removing
    a peak joins its two valleys into the earlier one, so each removal changes one neighbour: a
    heap with lazy deletion takes O(P log P), where recomputing every valley per removal took
    O(P²) passes over the record (a chattering flow has tens of thousands of peaks).

    **Returns:** (the peaks kept, their P + 1 bounds).
    """
    if not peaks:
        return [], []
    n = len(peaks)
    ends = [*peaks, len(L) - 1]
    bounds = [_valley(rate, 0, peaks[0])] + [_valley(rate, a, b) for a, b in zip(ends[:-1], ends[1:])]
    # Drop k ends at bounds[k + 1] always (a removal joins at the earlier valley) and starts at
    # bounds[left[k]]; prev/nxt link the live drops.
    left = list(range(n))
    prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))
    alive = [True] * n
    version = [0] * n

    def size(k):
        return float(L[bounds[left[k]]] - L[bounds[k + 1]])

    heap = [(size(k), k, 0) for k in range(n)]
    heapq.heapify(heap)
    while heap:
        s, k, v = heapq.heappop(heap)
        if not alive[k] or v != version[k]:
            continue
        if s >= smallest:
            break
        if s >= floor and s >= 0.5 * (L[bounds[left[k]]] - L_end):
            continue  # not small: it halves what is left to lose
        alive[k] = False
        # The two valleys around k become one: the earlier. The drop before k still ends where
        # the flow first settled after it (the lower-rate valley could be the converged end of
        # the record, far below a plateau the flow sat on), and the drop after k takes k's
        # loss as well.
        p, q = prev[k], nxt[k]
        if p >= 0:
            nxt[p] = q
        if q < n:
            left[q] = left[k]
            prev[q] = p
            version[q] += 1
            heapq.heappush(heap, (size(q), q, version[q]))
    kept = [k for k in range(n) if alive[k]]
    if not kept:
        return [], []
    return [peaks[k] for k in kept], [bounds[left[kept[0]]]] + [bounds[k + 1] for k in kept]


def _valley(rate: np.ndarray, i: int, j: int) -> int:
    """The index of the lowest descent rate in rate[i..j] (the first, on a tie)."""
    return i + int(np.argmin(rate[i : j + 1]))


def _still_falling(t: np.ndarray, L: np.ndarray, last: Step, fraction: float) -> bool:
    """Whether the loss at the end of the record still falls at a rate that, kept up over the
    time since the drop's midpoint, makes more than `fraction` of the drop: the drop was cut off."""
    span = t[-1] - last.time
    drop = last.loss_before - last.loss_after
    if not (span > 0 and drop > 0):
        return True
    # Slope over the last 5% of the span (not the last two samples: a final solver step clipped
    # to the horizon can be arbitrarily short).
    delta = 0.05 * span
    back = float(np.interp(t[-1] - delta, t, L))
    slope = (back - L[-1]) / delta
    return slope * span > fraction * drop


def feature_steps(steps: list[Step]) -> list[Step]:
    """Merge consecutive steps that learn the same feature into one.

    With κ = 3 a feature often takes several neurons that activate one after another (a
    frequency of modular addition takes 3–5), so the flow shows a small staircase per feature.
    The merged step runs from the first plateau to the last; its time is that of its first
    sub-step, when the feature starts to be learned. (Not the midpoint of the merged drop: how
    many neurons join a feature, and how late, varies between a flow and its prediction, and
    would move the midpoint from one sub-step to another although each activation agrees.)
    """
    out: list[Step] = []
    group: list[Step] = []
    for s in [*steps, None]:
        if group and (s is None or s.feature != group[0].feature or s.feature is None):
            before, after = group[0].loss_before, group[-1].loss_after
            out.append(dataclasses.replace(group[0], loss_before=before, loss_after=after, end=group[-1].end))
            group = []
        if s is not None:
            group.append(s)
    return out


# DP costs of `_align`: leaving a step unmatched costs `_GAP`; matching costs the plateau-level
# mismatch on both sides of the step in units of the predicted drop, plus a small time term that
# only breaks ties; each step beyond the first on one side of a merged group costs `_GROUP`.
_GAP = 0.5
_TIME_TIE = 0.01
_GROUP = 0.05
# The most steps one side of a merged group may hold: at least this many, more while the
# alignment's work (cells × group sizes², `_GROUP_WORK`) stays small (a dense spectrum learned
# in one smooth drop, 12 Barlow Twins modes, left modes beyond 8 unmatched though learned).
_MAX_GROUP = 8
_GROUP_WORK = 1e6
# Weight of the level cost between two steps a label already pairs (a tie-break only).
_LABEL_TIE = 1e-3
# A shared label names a pair of steps only when their drops are within this factor of each other.
_NAMED_RATIO = 10.0
# The most an estimated level's mismatch costs: with the time term (≤ 0.1) and a group's extra
# (0.05), a pair stays cheaper than two gaps.
_BOUND_LEVEL_CAP = 2 * _GAP - 2 * 10.0 * _TIME_TIE - _GROUP


def _predicted_before(prediction: Prediction, steps: list[Step]) -> np.ndarray:
    """The predicted plateau before each step (the first from `initial_loss`, else the flow's)."""
    first = prediction.initial_loss
    if not math.isfinite(first):
        first = steps[0].loss_before if steps else math.nan
    return np.concatenate([[first], prediction.losses])[: prediction.num_steps]


@dataclasses.dataclass(frozen=True)
class _Group:
    """Consecutive predicted steps `ks` and simulated steps `js` that are one drop seen twice
    (one side holds one step; both hold one for a plain pair), or a step without counterpart
    (the other side empty)."""

    ks: tuple[int, ...]
    js: tuple[int, ...]
    primary: int = 0  # the row of the group that carries its time (see `_primary`)


def _primary(ks, js, steps, before, after, order=None) -> int:
    """The row of a merged group that is its step proper: the one member that carries the label
    of the single step on the other side, if labels (`order`, the predicted ones) tell; else the
    one whose drop crosses the midpoint level of that single step (as a step's time is its
    midpoint crossing).

    A merged group has one row per step of its longer side; a plain pair has one row."""
    if order is not None and len(ks) + len(js) > 2:
        if len(ks) > 1:
            same = [r for r, k in enumerate(ks) if order[k] is not None and order[k] == steps[js[0]].feature]
        else:
            same = [r for r, j in enumerate(js) if steps[j].feature is not None and steps[j].feature == order[ks[0]]]
        if len(same) == 1:
            return same[0]
    if len(ks) > 1:
        mid = 0.5 * (steps[js[0]].loss_before + steps[js[0]].loss_after)
        levels = [(before[k], after[k]) for k in ks]
    elif len(js) > 1:
        mid = 0.5 * (before[ks[0]] + after[ks[0]])
        levels = [(steps[j].loss_before, steps[j].loss_after) for j in js]
    else:
        return 0
    for r, (_, lo) in enumerate(levels):
        if lo < mid:
            return r
    return len(levels) - 1


# A step joins a merged group only if at least this fraction of its drop lies inside the drop of
# the single step on the other side: a drop beyond the predicted staircase's last level is a step
# of its own, not a pause inside the last predicted drop.
_INSIDE = 0.5


def _inside(member: tuple[float, float], whole: tuple[float, float]) -> bool:
    """Whether most of the drop `member` (before, after) lies within the drop `whole`."""
    (hi_m, lo_m), (hi, lo) = member, whole
    size = hi_m - lo_m
    return size > 0 and (min(hi, hi_m) - max(lo, lo_m)) >= _INSIDE * size


def _nearer_beside(label, time: float, own: float, at: int, other: list[tuple]) -> bool:
    """Whether a member of a merged group (its label and time) belongs rather to the step beside
    the group on the other side (`other[at ± 1]`, as (label, time)): the same label, and nearer in
    log-time than the group's own step at `own`. Levels alone cannot tell a pause inside one drop
    from the next step of the same feature on a shifted plateau; its time can."""
    if label is None or not (time > 0 and own > 0):
        return False
    for b in (at - 1, at + 1):
        if 0 <= b < len(other) and other[b][0] == label and other[b][1] > 0:
            if abs(math.log(time / other[b][1])) < abs(math.log(time / own)):
                return True
    return False


def _align(steps: list[Step], prediction: Prediction, drops: np.ndarray) -> tuple[float, list[_Group]]:
    """Order-preserving alignment of predicted and simulated steps (edit-distance DP).

    Two steps whose labels are both known to the other side match only if the labels agree, and
    at no cost when the prediction uses that label once (it names the step); other pairs cost
    their plateau-level mismatch, |loss before (simulated) − loss before (predicted)| + |loss
    after (simulated) − loss after (predicted)|, each in units of the predicted drop, plus a small time
    term, so repeated labels (every step learning one teacher) pair by level. Both levels count:
    by the level after alone, a small drop at the end (0.003 → 1e-6) would take the place of the
    drop that reached 0.003 from 0.26.

    Where two drops overlap, one side shows a single drop for several consecutive steps of the
    other: several predicted steps against one simulated drop (the flow went through a predicted
    plateau without stopping), or one predicted step against several simulated drops (the flow
    paused on the way). Such a group matches as one drop (the plateau before its first step and
    after its last, each in units of the predicted drop at that end), at `_GROUP` per extra step,
    when most of each step of the group lies inside the drop on the other side (`_inside`). A step with no counterpart is left unmatched, at
    cost `_GAP`, so one missing or extra step never shifts the pairs after it. Two steps that
    share a label pair rather than both staying alone (their level cost is capped below two
    gaps: once the flow settles a plateau off the predicted one, every later level is off too),
    and a group never takes a member that has the label of the step beside it and is nearer
    to it in time (`_nearer_beside`).

    **Returns:** (the alignment's total cost, the groups in time order).
    """
    n_p, n_s = prediction.num_steps, len(steps)
    limit = max(_MAX_GROUP, int(math.sqrt(_GROUP_WORK / max(n_p * n_s, 1))))
    before = _predicted_before(prediction, steps)
    after = np.asarray(prediction.losses, dtype=float)
    pred_labels, sim_labels = set(prediction.order), {s.feature for s in steps if s.feature is not None}
    once = {f: list(prediction.order).count(f) == 1 for f in pred_labels}
    # The escape bound's level is an estimate (the closed forms' levels of modular addition and
    # attention are exact, and pair as any other's).
    estimated = prediction.method == "closed-form:escape"

    predicted = list(zip(prediction.order, prediction.times))
    simulated = [(s.feature, s.time) for s in steps]

    def comparable(fp, fs):
        # Both labels are known to the other side, so they must agree.
        return fs is not None and fs in pred_labels and fp in sim_labels

    def cost(ks, js):
        # Every predicted member against every simulated one: a predicted step whose label the
        # flow shows elsewhere does not hide in a group against a drop of another label (the
        # flow's own step of that label is its match, or it stays unmatched).
        for j in js:
            fs = steps[j].feature
            if any(comparable(prediction.order[k], fs) and prediction.order[k] != fs for k in ks):
                return math.inf
        if len(ks) > 1:
            whole = (steps[js[0]].loss_before, steps[js[0]].loss_after)
            if not all(_inside((before[k], after[k]), whole) for k in ks):
                return math.inf
            if any(_nearer_beside(prediction.order[k], prediction.times[k], steps[js[0]].time, js[0], simulated)
                   for k in ks):
                return math.inf
        if len(js) > 1:
            whole = (before[ks[0]], after[ks[0]])
            if not all(_inside((steps[j].loss_before, steps[j].loss_after), whole) for j in js):
                return math.inf
            if any(_nearer_beside(steps[j].feature, steps[j].time, prediction.times[ks[0]], ks[0], predicted)
                   for j in js):
                return math.inf
        fp, fs = prediction.order[ks[0]], steps[js[0]].feature
        pair = len(ks) == len(js) == 1 and comparable(fp, fs)
        # A label the prediction uses once names the step, unless the drops differ in size by
        # more than `_NAMED_RATIO`: a flow's drop is labelled by the feature that changes most,
        # and a drop that mostly learns another feature can carry a small one's label.
        sizes = (steps[js[0]].loss_before - steps[js[0]].loss_after, before[ks[0]] - after[ks[0]])
        comparable_size = min(sizes) > 0 and max(sizes) <= _NAMED_RATIO * min(sizes)
        named = pair and once[fp] and (comparable_size or not all(map(math.isfinite, sizes)))
        # Each end of the group in units of the predicted drop at that end: a group is no cheaper
        # than a pair for missing a whole predicted step.
        c_after = abs(steps[js[-1]].loss_after - after[ks[-1]]) / drops[ks[-1]]
        c = abs(steps[js[0]].loss_before - before[ks[0]]) / drops[ks[0]] + c_after
        if not math.isfinite(c):
            c = c_after  # no predicted level before the first step: the level after decides
        if estimated or pair:
            # A level that is only an estimate, or a label both sides share: the step pairs
            # rather than both being left unmatched (two gaps); levels and times pick which.
            # (Once the flow settles a plateau away from the predicted one, every later level
            # is off by that much, though the same features are learned in the same order.)
            c = min(c, _BOUND_LEVEL_CAP) if math.isfinite(c) else _BOUND_LEVEL_CAP
        r = _primary(ks, js, steps, before, after, prediction.order)
        k, j = (ks[r], js[0]) if len(ks) > 1 else (ks[0], js[r])
        tp, ts = prediction.times[k], steps[j].time
        if tp > 0 and ts > 0:
            c += _TIME_TIE * min(abs(math.log(ts / tp)), 10.0)
        c += _GROUP * (len(ks) + len(js) - 2)
        if named:
            # A label the prediction uses once names the step; the level only breaks ties
            # between drops that carry the same label (a feature learned in two sub-drops).
            return _LABEL_TIE * min(c, 10.0) if math.isfinite(c) else 0.0
        return c if math.isfinite(c) else 2 * _GAP

    D = np.full((n_p + 1, n_s + 1), math.inf)
    move: dict[tuple[int, int], tuple[int, int, float]] = {}
    D[0, 0] = 0.0
    for k in range(n_p + 1):
        for j in range(n_s + 1):
            if k == j == 0:
                continue
            # On a tie the first option wins: a pair before a group, a group before a gap.
            options = []
            if k and j:
                options.append((D[k - 1, j - 1] + cost((k - 1,), (j - 1,)), 1, 1))
                for m in range(2, min(limit, max(k, j)) + 1):
                    if m <= k:
                        options.append((D[k - m, j - 1] + cost(tuple(range(k - m, k)), (j - 1,)), m, 1))
                    if m <= j:
                        options.append((D[k - 1, j - m] + cost((k - 1,), tuple(range(j - m, j))), 1, m))
            if k:
                options.append((D[k - 1, j] + _GAP, 1, 0))
            if j:
                options.append((D[k, j - 1] + _GAP, 0, 1))
            best = min(options, key=lambda o: o[0])
            D[k, j] = best[0]
            move[k, j] = best[1:]
    groups: list[_Group] = []
    k, j = n_p, n_s
    while k or j:
        dk, dj = move[k, j]
        ks, js = tuple(range(k - dk, k)), tuple(range(j - dj, j))
        groups.append(_Group(ks, js, _primary(ks, js, steps, before, after, prediction.order) if ks and js else 0))
        k, j = k - dk, j - dj
    return float(D[n_p, n_s]), groups[::-1]


def _pair_swapped_labels(groups: list[_Group], steps: list[Step], prediction: Prediction) -> list[_Group]:
    """Pair predicted and simulated steps left unmatched on both sides that carry the same label.

    The alignment keeps time order, so when two features swap places (nearly equal strengths;
    lower bounds, which need not come in the flow's order) one of them was left unmatched on
    both sides, though its label names it: a label the prediction uses once pairs wherever the
    two steps are. A label used several times pairs within one gap between matched steps (in
    time order there, as many as both sides hold): the flow learned that feature there, on
    plateaus other than the predicted ones (levels shifted by an earlier step that went
    differently), so the level cost left both alone. The pair's row takes the simulated step's
    place.
    """
    order = list(prediction.order)

    def label(g):
        if g.ks and not g.js:
            return order[g.ks[0]]
        if g.js and not g.ks:
            return steps[g.js[0]].feature
        return None

    alone_k = {label(g): i for i, g in enumerate(groups) if g.ks and not g.js and order.count(label(g)) == 1}
    out, used = list(groups), set()
    for i, g in enumerate(groups):
        f = label(g) if g.js and not g.ks else None
        if f is not None and f in alone_k and alone_k[f] not in used:
            used.add(alone_k[f])
            out[i] = _Group(groups[alone_k[f]].ks, g.js)
    # Within each gap (a run of groups with no matched pair), the steps of one label in order.
    gap: list[int] = []
    for i in range(len(groups) + 1):
        if i < len(groups) and out[i] is groups[i] and not (groups[i].ks and groups[i].js):
            if i not in used and label(groups[i]) is not None:
                gap.append(i)
            continue
        for f in {label(groups[m]) for m in gap}:
            ks = [m for m in gap if groups[m].ks and label(groups[m]) == f]
            js = [m for m in gap if groups[m].js and label(groups[m]) == f]
            for mk, mj in zip(ks, js):
                used.add(mk)
                out[mj] = _Group(groups[mk].ks, groups[mj].js)
        gap = []
    return [g for i, g in enumerate(out) if i not in used]


def _plan(steps: list[Step], prediction: Prediction):
    """The alignment of `steps` with `prediction`: (cost, groups, steps, predicted drops, loss floor)."""
    before = _predicted_before(prediction, steps)
    drop = before - prediction.losses
    total = abs(before[0] - prediction.losses[-1]) if prediction.num_steps else 0.0
    scale = total if math.isfinite(total) and total > 0 else 1.0
    first = float(before[0]) if prediction.num_steps and math.isfinite(before[0]) else 0.0
    floor = 1e-12 * max(abs(first), scale)
    # Units of the level mismatch: the predicted drop (never below 0.1% of the whole decrease).
    units = np.where(np.isfinite(drop) & (drop > 1e-3 * scale), drop, 1e-3 * scale)
    cost, groups = _align(steps, prediction, units)
    return cost, groups, steps, drop, floor


def unshared_features(prediction: Prediction, steps: list[Step]) -> str | None:
    """Where the prediction's features and the detected steps' are both named and share no name
    (a prediction of another problem), a phrase saying so; else None."""
    named = {name for f in prediction.order if f for name in str(f).split("+")}
    seen = {s.feature for s in steps if s.feature}
    if not (named and seen) or named & seen:
        return None
    show = lambda names: ", ".join(sorted(names)[:3]) + (", …" if len(names) > 3 else "")
    return f"the prediction's features ({show(named)}) and the flow's ({show(seen)}) share no name"


def compare(steps: Trajectory | list[Step], prediction: Prediction, *, merge: bool | None = None) -> pd.DataFrame:
    """Predicted against simulated steps, one row per step, aligned by what the steps are.

    Steps are paired by feature label where both sides know the label, else by plateau levels
    (the loss before and after the step), in time order (`_align`). A step with no counterpart
    gets a row of its own and never shifts the rows after it. Where drops overlap, one drop on
    one side can stand for several consecutive steps on the other: the group gets one row per
    step of its longer side; the row whose drop crosses the other side's midpoint level is the
    match (`"prediction"`), the others are `"merged"` into it.

    **Arguments:**

    - `steps`: a single `Trajectory` (its steps are detected) or a list of `Step`s.
    - `prediction`: a `Prediction`.
    - `merge`: merge consecutive simulated steps that learn the same feature first
      (`feature_steps`: several neurons that join one after another, as with κ = 3). By default
      they are merged when the simulation shows more steps than the prediction and every
      simulated step is labelled.

    **Returns:** a DataFrame with columns `step`, `kind`, `feature_predicted`, `feature_simulated`,
    `time_predicted`, `time_simulated`, `time_rel_error`, `rescaled_predicted`,
    `rescaled_simulated`, `loss_predicted`, `loss_simulated`, `loss_rel_error`. `kind` is
    `"prediction"`, `"lower-bound"` (the predicted time is a lower bound,
    `Prediction.is_lower_bound`), `"merged"` (a step taken inside the same drop as its group's
    match: a predicted plateau the flow went through without stopping, or a pause of the flow
    inside one predicted drop), `"unmatched-predicted"` or `"unmatched-simulated"`. Every
    row with both sides has its `time_rel_error` (drops are short beside plateaus, so the time of
    the shared drop times each step in it). `loss_rel_error` is NaN on a predicted plateau the flow
    never stopped on, and on a pause of the flow inside one predicted drop; elsewhere it is
    relative to max(|loss_predicted|, the predicted drop), so a plateau predicted at ~0 gives an
    error in units of its drop; it is absolute when both are below 1e-12 × the initial loss scale.
    """
    if not isinstance(prediction, Prediction):
        got = f"({type(steps).__name__}, {type(prediction).__name__})"
        raise TypeError(f"compare: expected (a trajectory or its steps, a Prediction), got {got}")
    if isinstance(steps, Trajectory):
        if steps.batch_size is not None:
            raise ValueError("steps: expected a single trajectory, got a batch (index it first)")
        found: list[Step] = list(detect_steps(steps))  # type: ignore[arg-type]
    else:
        found = list(steps)
    labelled = all(s.feature is not None for s in found) and all(f is not None for f in prediction.order)
    mismatch = unshared_features(prediction, found)
    if mismatch:
        # Rows would still pair by plateau levels, reading as matches: a run set against another
        # problem's prediction (a linear run's "mode 1" against a diagonal "β[3]") says so.
        warnings.warn(f"compare: {mismatch}: are they of the same problem? The rows pair by plateau levels only",
                      stacklevel=2)
    if merge:
        candidates = [feature_steps(found)]
    elif merge is None and labelled and len(found) > prediction.num_steps:
        # Sub-steps of one feature (κ = 3 neurons joining one after another) are merged only
        # when that aligns better: a staircase whose every step carries the same label is not
        # one step.
        candidates = [found, feature_steps(found)]
    else:
        candidates = [found]
    cost, groups, found, drop, floor = min((_plan(c, prediction) for c in candidates), key=lambda plan: plan[0])
    groups = _pair_swapped_labels(groups, found, prediction)
    matched_kind = "lower-bound" if prediction.is_lower_bound else "prediction"
    rows, row_step = [], []
    for g in groups:
        if len(g.ks) > 1:  # several predicted steps in one simulated drop
            pairs = [(k, g.js[0], k == g.ks[-1]) for k in g.ks]
        else:  # a pair, a predicted step taken in several simulated drops, or a step alone
            # The flow reaches the predicted plateau after the last of its drops; the levels
            # before it are pauses on the way, not that plateau.
            pairs = [(g.ks[0] if g.ks else None, j, j == g.js[-1]) for j in g.js] or [(g.ks[0], None, True)]
        for r, (k, j, level_seen) in enumerate(pairs):
            s = found[j] if j is not None else None
            p = k is not None
            tp = float(prediction.times[k]) if p else math.nan
            lp = float(prediction.losses[k]) if p else math.nan
            ts = s.time if s else math.nan
            ls = s.loss_after if s else math.nan
            denom = max(abs(lp), float(drop[k])) if p and math.isfinite(drop[k]) else abs(lp)
            # A predicted plateau that the flow went through inside one drop was never seen.
            loss_err = ((ls - lp) / denom if denom > floor else ls - lp) if p and s and level_seen else math.nan
            if p and s:
                kind = matched_kind if r == g.primary else "merged"
            else:
                kind = "unmatched-predicted" if p else "unmatched-simulated"
            row_step.append(k)
            rows.append(
                {
                    "step": len(rows) + 1,
                    "kind": kind,
                    "feature_predicted": prediction.order[k] if p else None,
                    "feature_simulated": s.feature if s else None,
                    "time_predicted": tp,
                    "time_simulated": ts,
                    "time_rel_error": (ts - tp) / tp if p and s and tp != 0 else math.nan,
                    "rescaled_predicted": float(prediction.rescaled_times[k]) if p else math.nan,
                    "rescaled_simulated": s.rescaled_time if s else math.nan,
                    "loss_predicted": lp,
                    "loss_simulated": ls,
                    "loss_rel_error": loss_err,
                }
            )
    columns = ["step", "kind", "feature_predicted", "feature_simulated", "time_predicted", "time_simulated",
               "time_rel_error", "rescaled_predicted", "rescaled_simulated", "loss_predicted", "loss_simulated",
               "loss_rel_error"]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["predicted_step"] = row_step  # each row's predicted step (0-based), None where it has none
    return table


def matched_times(steps: list[Step], prediction: Prediction) -> np.ndarray:
    """For each predicted step, the time of the flow's step that `compare` pairs with it (its
    match, or the drop it was merged into), NaN where the flow has none: the flow's times in the
    prediction's order, so that step k means the same feature at every α and seed.

    **Returns:** an array of `prediction.num_steps` times.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (compare's notes are for a reader of its table)
        table = compare(steps, prediction)
    out = np.full(prediction.num_steps, np.nan)
    rows = [(k, kind, t) for k, kind, t in zip(table.attrs["predicted_step"], table["kind"], table["time_simulated"])
            if k is not None and np.isfinite(t)]
    # The match first; a step with none takes the drop it was merged into.
    for k, kind, t in sorted(rows, key=lambda row: row[1] == "merged", reverse=True):
        out[k] = t
    return out


def steps_table(steps: list[Step]) -> pd.DataFrame:
    """The detected steps as a DataFrame (the `steps.csv` columns)."""
    cols = ["step", "time", "rescaled_time", "loss_before", "loss_after", "feature"]
    return pd.DataFrame(
        [{"step": k + 1, **s.to_json()} for k, s in enumerate(steps)], columns=cols
    )
