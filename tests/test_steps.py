import math

import numpy as np
import pytest

import saddlestep as ss
from saddlestep.steps import compare, crossing_time, detect_steps


def synthetic(times, centers, widths, heights, floor=0.0, alpha=1e-6):
    """Loss made of logistic drops: an exact staircase with known midpoints and plateaus."""
    L = np.full_like(times, floor + sum(heights))
    for c, w, h in zip(centers, widths, heights):
        L -= h / (1 + np.exp(-(times - c) / w))
    features = np.stack([1 / (1 + np.exp(-(times - c) / w)) for c, w in zip(centers, widths)] or [0 * times], 1)
    return ss.Trajectory(
        times=times, loss=L, observables={"features": features}, init_scale=alpha, status="t_max",
        t_final=float(times[-1]), stats={}, method="synthetic", feature_labels=[f"f{k}" for k in range(len(centers))],
    )


def test_detects_separated_and_overlapping_drops():
    t = np.linspace(0, 60, 6001)
    centers, widths, heights = [5.0, 12.0, 12.9, 30.0], [0.1, 0.15, 0.15, 0.4], [40.0, 8.0, 4.0, 0.5]
    steps = detect_steps(synthetic(t, centers, widths, heights, floor=1e-3))
    assert len(steps) == 4
    np.testing.assert_allclose([s.time for s in steps][:1] + [s.time for s in steps][3:], [5.0, 30.0], atol=2e-3)
    # The two overlapping drops keep their order and features.
    assert [s.feature for s in steps] == ["f0", "f1", "f2", "f3"]
    levels = np.cumsum([0] + heights[::-1])[::-1] + 1e-3
    np.testing.assert_allclose([s.loss_before for s in steps][:2], levels[:2], rtol=1e-3)
    np.testing.assert_allclose(steps[-1].loss_after, 1e-3, rtol=1e-2)
    assert steps[0].rescaled_time == pytest.approx(steps[0].time / math.log(1e6))


def test_no_steps_on_a_flat_curve():
    t = np.linspace(0, 10, 101)
    assert detect_steps(synthetic(t, [], [], [], floor=1.0)) == []


def test_crossing_time_is_fourth_order():
    t = np.linspace(0, 3, 31)
    v = np.tanh(2 * (t - 1.234))
    assert abs(crossing_time(t, v, 0.0) - 1.234) < 1e-5
    assert math.isnan(crossing_time(t, v, 5.0))


def test_compare_matches_steps_in_order():
    t = np.linspace(0, 40, 4001)
    traj = synthetic(t, [5.0, 20.0], [0.1, 0.2], [10.0, 1.0])
    pred = ss.Prediction.from_rescaled(
        "closed-form:test", np.array([5.5, 19.0]) / math.log(1e6), [1.0, 0.0], ["f0", "f1"], init_scale=1e-6
    )
    table = compare(traj, pred)
    assert list(table["feature_simulated"]) == ["f0", "f1"]
    np.testing.assert_allclose(table["time_rel_error"], [(5 - 5.5) / 5.5, (20 - 19) / 19], atol=2e-3)
    np.testing.assert_allclose(table["loss_simulated"], [1.0, 0.0], atol=1e-6)


def test_compare_merges_sub_steps_of_one_feature():
    # Three drops, the first two of the same feature (two neurons joining one after another):
    # against a two-step prediction they count as one step, from the first plateau to the last.
    import dataclasses

    t = np.linspace(0, 40, 4001)
    steps = detect_steps(synthetic(t, [5.0, 9.0, 20.0], [0.1, 0.1, 0.2], [6.0, 4.0, 1.0]))
    steps = [dataclasses.replace(s, feature=f) for s, f in zip(steps, ["a", "a", "b"])]
    pred = ss.Prediction.from_rescaled(
        "closed-form:test", np.array([5.0, 20.0]) / math.log(1e6), [1.0, 0.0], ["a", "b"], init_scale=1e-6
    )
    table = compare(steps, pred)
    assert list(table["feature_simulated"]) == ["a", "b"]
    np.testing.assert_allclose(table["loss_simulated"], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(table["time_simulated"], [5.0, 20.0], atol=1e-2)  # 6 of the 10 drop at t = 5
    assert len(compare(steps, pred, merge=False)) == 3
