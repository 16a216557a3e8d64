import dataclasses
import math

import numpy as np
import pytest

import saddlestep as ss
from saddlestep.crossings import first_crossing
from saddlestep.steps import compare, detect_steps, Step


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
    assert abs(first_crossing(t, v, 0.0) - 1.234) < 1e-5
    assert math.isnan(first_crossing(t, v, 5.0))


def test_compare_matches_steps_in_order():
    t = np.linspace(0, 40, 4001)
    traj = synthetic(t, [5.0, 20.0], [0.1, 0.2], [10.0, 1.0])
    pred = ss.Prediction.from_rescaled(
        "closed-form:test", np.array([5.5, 19.0]) / math.log(1e6), [1.0, 0.0], ["f0", "f1"], init_scale=1e-6
    )
    table = compare(traj, pred)
    assert list(table["feature_simulated"]) == ["f0", "f1"]
    with pytest.raises(TypeError, match=r"compare: expected \(a trajectory or its steps, a Prediction\), got \(Prediction, Trajectory\)"):
        compare(pred, traj)
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


# ---------------------------------------------------------------- resolution at any horizon
CENTERS, WIDTH, HEIGHTS = [5.0, 5.4, 9.0], 0.03, [3.0, 1.0, 0.5]


def sigmoid_loss(t):
    return sum(h / (1 + np.exp((t - c) / WIDTH)) for c, h in zip(CENTERS, HEIGHTS))


def solver_like_record(t_end, per_drop=40):
    """Times an adaptive solver would step at: a few per unit time on plateaus, ~`per_drop`
    across each drop (equidistributed in an arc length that rises by `per_drop` over a drop)."""
    fine = np.linspace(0.0, t_end, 200_001)
    arc = fine / 2 + sum(per_drop / (1 + np.exp(-(fine - c) / (2 * WIDTH))) for c in CENTERS)
    return np.interp(np.arange(1, int(arc[-1])) + 0.5, arc, fine)


def oracle_times():
    """Midpoint crossings of the analytic curve between its analytic plateaus."""
    from scipy.optimize import brentq

    levels = np.concatenate([np.cumsum(HEIGHTS[::-1])[::-1], [0.0]])
    return [brentq(lambda t: sigmoid_loss(t) - (levels[k] + levels[k + 1]) / 2, c - 1, c + 1)
            for k, c in enumerate(CENTERS)]


@pytest.mark.parametrize("t_max", [20.0, 2_000.0, 200_000.0])
@pytest.mark.parametrize("n_save", [11, 101, 2001])
def test_close_drops_resolved_at_any_horizon_and_grid(t_max, n_save):
    # Drops at 5.0 and 5.4: 2% of the shortest horizon; the run converges at t = 12, so at the
    # longer horizons the save grid holds one or two points before it stops.
    t_final = 12.0
    grid = np.linspace(0.0, t_max, n_save)
    grid = np.where(grid <= t_final, grid, np.nan)
    step_t = solver_like_record(t_final)
    g = np.nan_to_num(grid)
    learned = np.stack([1 / (1 + np.exp(-(g - c) / WIDTH)) for c in CENTERS], 1)  # feature k: drop k
    traj = ss.Trajectory(
        times=grid, loss=np.where(np.isfinite(grid), sigmoid_loss(g), np.nan), observables={"features": learned},
        init_scale=1e-6, status="converged", t_final=t_final, stats={}, method="synthetic",
        step_times=step_t, step_loss=sigmoid_loss(step_t), feature_labels=["f0", "f1", "f2"],
    )
    steps = detect_steps(traj)
    assert len(steps) == 3
    # A label is right, or absent where the grid cannot tell a drop from its neighbour; never wrong.
    assert all(s.feature in (None, f"f{k}") for k, s in enumerate(steps))
    if n_save == 2001 and t_max == 20.0:
        assert [s.feature for s in steps] == ["f0", "f1", "f2"]
    np.testing.assert_allclose([s.time for s in steps], oracle_times(), atol=0.1 * WIDTH)
    np.testing.assert_allclose([s.loss_after for s in steps], [1.5, 0.5, 0.0], atol=0.02)
    # Without the solver-step record the grid alone cannot resolve the pair (the test is not vacuous).
    if n_save <= 101:
        coarse = dataclasses.replace(traj, step_times=None, step_loss=None)
        assert len(detect_steps(coarse)) < 3


def test_a_drop_cut_off_by_the_horizon_is_not_a_step():
    # The run ends (t_max) in the middle of the third drop: only the first two are steps.
    t = np.linspace(0, 9.0, 901)
    cut = ss.Trajectory(times=t, loss=sigmoid_loss(t), observables={}, init_scale=1e-6, status="t_max",
                        t_final=9.0, stats={}, method="synthetic")
    steps = detect_steps(cut)
    assert len(steps) == 2
    np.testing.assert_allclose([s.time for s in steps], oracle_times()[:2], atol=0.1 * WIDTH)
    # Still on the first plateau, the loss growing away from the saddle like e^{2st}: no step.
    t = np.linspace(0, 1.0, 101)
    escaping = ss.Trajectory(times=t, loss=1.0 - 1e-8 * np.expm1(6 * t), observables={}, init_scale=1e-6,
                             status="t_max", t_final=1.0, stats={}, method="synthetic")
    assert detect_steps(escaping) == []
    # The same curve, finished: the third drop counts.
    t = np.linspace(0, 14.0, 1401)
    done = dataclasses.replace(cut, times=t, loss=sigmoid_loss(t), t_final=14.0)
    assert len(detect_steps(done)) == 3


def test_a_plateau_with_rounding_noise_has_no_step():
    """A run stopped on its first plateau (its step budget spent chattering on ReLU kinks) has a
    loss that moves only in its last digits: 1.8423905484852843 → …2818. That is not six steps
    (the detector found six there, one of them at t = NaN)."""
    t = np.linspace(0, 2.44, 64)
    noise = np.random.default_rng(0).integers(-8, 2, t.size).cumsum() * 2.2e-16
    plateau = ss.Trajectory(times=t, loss=1.8423905484852843 * (1 + noise), observables={}, init_scale=1e-9,
                            status="max_steps", t_final=2.44, stats={}, method="synthetic")
    assert detect_steps(plateau) == []
    # A real drop of 1e-9 of the loss is still one.
    t = np.linspace(0, 10, 1001)
    small = ss.Trajectory(times=t, loss=1.0 - 1e-9 / (1 + np.exp(-8 * (t - 5))), observables={}, init_scale=1e-6,
                          status="converged", t_final=10.0, stats={}, method="synthetic")
    assert len(detect_steps(small)) == 1


def test_flat_curve_with_a_solver_record_has_no_step():
    t = np.linspace(0, 10, 11)
    st = np.linspace(0.1, 10, 57)
    flat = ss.Trajectory(times=t, loss=np.ones_like(t), observables={}, init_scale=1e-6, status="t_max",
                         t_final=10.0, stats={}, method="synthetic", step_times=st, step_loss=np.ones_like(st))
    assert detect_steps(flat) == []


# ---------------------------------------------------------------- alignment in compare
def _steps(levels, times, features=None):
    before = [levels[0] + 1.0, *levels[:-1]]
    features = features or [None] * len(levels)
    return [ss.steps.Step(t, t / math.log(1e6), b, a, f, t - 0.5, t + 0.5)
            for t, b, a, f in zip(times, before, levels, features)]


def _pred(levels, times, order=None, **kw):
    order = order or [f"p{k}" for k in range(len(levels))]
    return ss.Prediction.from_rescaled("closed-form:test", np.asarray(times) / math.log(1e6), levels, order,
                                       init_scale=1e-6, **{"initial_loss": 4.0, **kw})


def test_compare_a_predicted_plateau_the_flow_went_through_is_merged():
    pred = _pred([3.0, 2.0, 1.0, 0.0], [5.0, 8.0, 11.0, 14.0])
    sim = _steps([3.01, 1.02, 0.0], [5.1, 11.2, 14.1])  # one drop 3.01 → 1.02: no plateau at 2
    table = compare(sim, pred)
    # The shared drop's midpoint (2.015) is crossed in predicted step 2 (3 → 2): that row is the
    # match, step 3 is merged into it; both are timed by the drop.
    assert list(table["kind"]) == ["prediction", "prediction", "merged", "prediction"]
    np.testing.assert_allclose(table["time_simulated"], [5.1, 11.2, 11.2, 14.1])
    np.testing.assert_allclose(table["time_rel_error"], [0.1 / 5, 3.2 / 8, 0.2 / 11, 0.1 / 14], rtol=1e-9)
    # The plateau at 2 was never seen; the drop's end is compared with step 3's level.
    np.testing.assert_allclose(table["loss_rel_error"], [0.01 / 3, np.nan, 0.02 / 1, 0.0], atol=1e-12)
    assert list(table["step"]) == [1, 2, 3, 4]


def test_compare_merges_a_dense_spectrum_learned_in_one_drop():
    # Twelve predicted modes (a dense spectrum), one smooth simulated drop through all of them:
    # every row belongs to that drop. A cap of 8 on a group left modes 1 and 12 "unmatched",
    # as if the flow never learned them.
    levels = list(np.linspace(3.6, 0.0, 12))
    pred = _pred(levels, list(np.linspace(5.0, 6.1, 12)))
    sim = _steps([0.0], [5.6])
    sim[0] = ss.steps.Step(5.6, 5.6 / math.log(1e6), 4.0, 0.0, None, 4.5, 6.5)
    table = compare(sim, pred)
    assert "unmatched-predicted" not in set(table["kind"])
    assert list(table["kind"]).count("prediction") == 1 and len(table) == 12
    np.testing.assert_allclose(table["time_simulated"], 5.6)


def test_compare_a_step_missing_at_the_end_gets_its_own_row():
    pred = _pred([3.0, 2.0, 1.0], [5.0, 8.0, 11.0])
    sim = _steps([3.01, 2.0], [5.1, 8.3])  # the run stopped on the plateau at 2
    table = compare(sim, pred)
    assert list(table["kind"]) == ["prediction", "prediction", "unmatched-predicted"]
    np.testing.assert_allclose(table["time_simulated"], [5.1, 8.3, np.nan])


def test_compare_a_pause_inside_a_predicted_drop_is_merged():
    pred = _pred([3.0, 1.0, 0.0], [5.0, 11.0, 14.0])
    sim = _steps([3.0, 2.2, 1.0, 0.0], [5.0, 7.0, 11.0, 14.0])  # the flow paused at 2.2 on the way to 1
    table = compare(sim, pred)
    # The predicted midpoint (2) is crossed in the flow's second sub-step: that one is the match.
    assert list(table["kind"]) == ["prediction", "merged", "prediction", "prediction"]
    np.testing.assert_allclose(table["time_predicted"], [5.0, 11.0, 11.0, 14.0], rtol=1e-12)
    np.testing.assert_allclose(table["time_rel_error"], [0, -4 / 11, 0, 0], atol=1e-12)
    # The pause at 2.2 is no predicted plateau: no level error (the flow's 1.0 is the match's).
    np.testing.assert_allclose(table["loss_rel_error"], [0, np.nan, 0, 0], atol=1e-12)


def test_compare_a_step_beyond_the_predicted_staircase_gets_its_own_row():
    pred = _pred([3.0, 1.0], [5.0, 11.0])
    sim = _steps([3.0, 1.0, 0.5], [5.0, 11.0, 14.0])  # the flow learned something more at the end
    table = compare(sim, pred)
    assert list(table["kind"]) == ["prediction", "prediction", "unmatched-simulated"]
    np.testing.assert_allclose(table["time_predicted"], [5.0, 11.0, np.nan], rtol=1e-12)


def test_compare_pairs_labels_before_levels():
    # Levels alone would pair the flow's second step (0.9) with the prediction's second (1.0);
    # the labels say it is the third feature, and the second one never happened.
    pred = _pred([2.0, 1.0, 0.8], [5.0, 8.0, 11.0], order=["mode 1", "mode 2", "mode 3"])
    sim = _steps([2.0, 0.9], [5.0, 9.0], features=["mode 1", "mode 3"])
    table = compare(sim, pred)
    assert list(table["kind"]) == ["prediction", "unmatched-predicted", "prediction"]
    assert [f if isinstance(f, str) else None for f in table["feature_simulated"]] == ["mode 1", None, "mode 3"]


def test_compare_two_drops_with_one_label_pair_by_level():
    # A feature learned in two separate drops (another feature's drop between): the label names
    # both, and the one whose plateau the prediction describes is the match.
    pred = _pred([28.57, 17.0, 6.0], [2.9, 4.0, 7.0], order=["ξ=3", "ξ=5", "ξ=2"])
    sim = _steps([29.21, 23.03, 20.81, 6.2], [3.06, 4.2, 5.03, 7.1], features=["ξ=3", "ξ=5", "ξ=3", "ξ=2"])
    table = compare(sim, pred)
    row = table[table["feature_predicted"] == "ξ=3"].iloc[0]
    assert row["kind"] == "prediction" and row["time_simulated"] == 3.06
    assert list(table[table["time_simulated"] == 5.03]["kind"]) == ["unmatched-simulated"]


def test_an_escape_bound_pairs_with_a_drop_whatever_its_estimated_level():
    # An escape bound whose level (an estimate for ReLU networks) misses the flow's by more than
    # its drop: the bound is still checked against the first drop, not left unmatched.
    bound = ss.Prediction("closed-form:escape", [169.6], [30.0], [0.407], ["escape"], initial_loss=0.448,
                          init_scale=3e-3)
    sim = [ss.Step(1614.0, 280.0, 0.448, 0.364, None, 0.0, 0.0), ss.Step(1900.0, 330.0, 0.364, 0.358, None, 0.0, 0.0)]
    table = compare(sim, bound)
    assert list(table["kind"]) == ["lower-bound", "unmatched-simulated"]
    assert table["time_rel_error"][0] == pytest.approx(1614.0 / 169.6 - 1)


def test_features_learned_in_another_order_pair_by_label():
    # Two features of nearly equal strength swap places in the flow; an order-keeping alignment
    # pairs one of them, and the other still pairs by its label.
    pred = _pred([3.0, 2.0, 1.0, 0.0], [5.0, 8.0, 8.5, 14.0], order=["a", "b", "c", "d"])
    sim = _steps([3.0, 2.1, 1.0, 0.0], [5.0, 8.2, 8.6, 14.0], features=["a", "c", "b", "d"])
    table = compare(sim, pred)
    matched = table[table["kind"] == "prediction"]
    assert len(table) == 4 and len(matched) == 4
    assert list(matched["feature_predicted"]) == list(matched["feature_simulated"])


def test_a_repeated_label_pairs_within_its_gap_when_the_levels_moved():
    # The prediction learns feature a twice; the flow's second a-step comes where predicted, after
    # b, but on plateaus shifted by more than its drop (an earlier step went differently), so by
    # level the two would stay unmatched. Between the same matched neighbours, the label pairs them.
    pred = _pred([2.0, 1.3, 1.1], [10.0, 20.0, 30.0], order=["a", "b", "a"])
    sim = _steps([2.0, 1.6, 1.35], [10.0, 20.0, 31.0], features=["a", "b", "a"])
    table = compare(sim, pred)
    assert list(table["kind"]) == ["prediction"] * 3, table
    assert list(table["feature_simulated"]) == list(table["feature_predicted"]) == ["a", "b", "a"]
    # Another label does not pair.
    other = compare(_steps([2.0, 1.6, 1.35], [10.0, 20.0, 31.0], features=["a", "b", "c"]), pred)
    assert list(other.loc[other["time_predicted"] == pred.times[2], "kind"]) == ["unmatched-predicted"], other
    # Nor does the same label across a matched step: the flow's second a-step came before b.
    early = compare(_steps([2.0, 1.7, 1.05], [10.0, 15.0, 20.0], features=["a", "a", "b"]), pred)
    assert list(early["kind"]) == ["prediction", "unmatched-simulated", "prediction", "unmatched-predicted"], early


@pytest.mark.parametrize("seed", range(30))
def test_repeated_labels_pair_in_order_on_random_staircases_with_shifted_levels(seed):
    """A random staircase whose steps learn features from a small alphabet (labels repeat, never
    twice in a row), and a flow that takes every predicted step in order but settles one plateau
    above its predicted level, every later plateau with it (by 0.2–0.4 of the loss, or by more
    than half of every later drop): every simulated step pairs with the predicted step it was
    made from, though by level many would pair with nothing, or be read as a pause inside an
    earlier drop. (With the same label twice in a row and only levels and times to go by, a
    shifted pair can still be read as one drop with a pause, or the pairs shifted by one.)"""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 8))
    at = int(rng.integers(0, n - 1))
    drops = np.where(np.arange(n) <= at, rng.uniform(0.5, 1.0, n), rng.uniform(0.05, 1.0, n))
    levels = np.concatenate([[0.0], np.cumsum(drops[::-1])])[::-1] + 0.05
    times = np.cumsum(rng.uniform(1.0, 3.0, n)) * 10
    order = [str(f) for f in np.array(["a", "b", "c"])[np.cumsum(rng.integers(1, 3, n)) % 3]]
    pred = ss.Prediction("agf", times, times / math.log(1e4), levels[1:], order, initial_loss=float(levels[0]),
                         init_scale=1e-4)
    simulated = levels.copy()
    simulated[at + 1:] += rng.uniform(0.2, 0.4) if seed % 2 else rng.uniform(0.6, 0.9) * drops[at + 1:].min()
    steps = [ss.Step(float(t * (1 + rng.uniform(-0.02, 0.02))), 0.0, float(b), float(a), f, 0.0, 0.0)
             for t, b, a, f in zip(times, simulated[:-1], simulated[1:], order)]
    table = compare(steps, pred)
    assert (table["kind"] == "prediction").all(), table
    for k, step in enumerate(steps):
        assert list(table.loc[table["time_simulated"] == step.time, "time_predicted"]) == [times[k]], table


def test_a_small_steps_label_on_a_large_drop_does_not_take_it_from_the_step_it_is():
    # Diagonal network on correlated inputs: AGF predicts a tiny step c (0.02 of the loss) just
    # before the large step d; the flow takes c in passing and d in one drop, which its largest
    # coordinate change labels c. The drop is d's (same levels), not c's (40× its size).
    pred = _pred([2.0, 1.0, 0.98, 0.1], [5.0, 10.0, 20.0, 22.0], order=["a", "b", "c", "d"])
    sim = _steps([2.0, 0.985, 0.1], [5.0, 10.0, 21.0], features=["a", "b", "c"])
    table = compare(sim, pred)
    row = table[table["feature_predicted"] == "d"].iloc[0]
    assert row["kind"] == "prediction" and row["time_simulated"] == 21.0, table
    assert abs(row["loss_rel_error"]) < 1e-9
    assert list(table.loc[table["feature_predicted"] == "c", "kind"]) != ["prediction"], table


def test_compare_marks_lower_bounds():
    sim = _steps([1.0], [9.0])
    bound = _pred([1.0], [1.0], extra={"lower_bound": True})
    assert bound.is_lower_bound and not _pred([1.0], [1.0]).is_lower_bound
    table = compare(sim, bound)
    assert list(table["kind"]) == ["lower-bound"]
    assert table["time_rel_error"][0] == pytest.approx(8.0)
    escape = ss.Prediction("closed-form:escape", [1.0], [0.1], [1.0], ["escape"], init_scale=1e-6)
    assert list(compare(sim, escape)["kind"]) == ["lower-bound"]


def test_loss_error_is_relative_to_the_drop_when_the_predicted_loss_is_zero():
    pred = _pred([2.0, 1e-20], [5.0, 10.0])
    sim = _steps([2.0 + 1e-3, 1e-6], [5.0, 10.0])
    err = compare(sim, pred)["loss_rel_error"].to_numpy()
    np.testing.assert_allclose(err, [1e-3 / 2.0, 1e-6 / 2.0], rtol=1e-6)  # ÷ max(|L_pred|, drop)
    # A degenerate "drop" of size 0 at loss 0: the error is absolute.
    exact = dataclasses.replace(_pred([0.0], [5.0]), initial_loss=0.0)
    flat = [dataclasses.replace(_steps([1e-3], [5.0])[0], loss_before=0.0)]
    assert compare(flat, exact)["loss_rel_error"][0] == pytest.approx(1e-3)


# ---------------------------------------------------------------- end to end: the linear preset
def test_linear_preset_table_at_a_far_horizon_and_a_short_one(tmp_path, capsys):
    import json

    from saddlestep.cli import main
    from saddlestep.runs import run_preset

    # 10⁴ against convergence at t ≈ 32: every step still found and paired with its prediction.
    far = run_preset("linear", overrides={"t_max": "10000"})
    table = compare(far.steps, far.prediction)
    assert list(table["kind"]) == ["prediction"] * 5
    # The rescaled times are exact as α → 0; at α = 1e-6 the later steps agree within a few %.
    assert np.max(np.abs(table["time_rel_error"])) < 0.1
    assert np.max(np.abs(table["loss_rel_error"])) < 1e-3  # the last level is ~0: relative to its drop
    assert far.summary["warnings"] == []
    # Ended at t = 3, inside the second drop: one step, the rest of the prediction not reached.
    short = run_preset("linear", overrides={"t_max": "3"})
    assert len(short.steps) == 1 and short.summary["solver"]["status"] == "t_max"
    assert len(short.summary["warnings"]) == 1 and "before the last predicted step" in short.summary["warnings"][0]
    assert list(compare(short.steps, short.prediction)["kind"]) == ["prediction"] + ["unmatched-predicted"] * 4
    assert main(["run", "linear", "--set", "t_max=3", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "warning: the run ended (t_max) at t = 3" in out and "unmatched-predicted" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["warnings"] == short.summary["warnings"]


@pytest.mark.parametrize("seed", range(4))
def test_steps_of_one_feature_pair_by_level_not_by_label(seed):
    """Every step of a single-teacher staircase carries the same label (a cubic student on one
    teacher): the label cannot pair them, so they pair by plateau level, and an extra simulated
    sub-step (a pause inside one predicted drop) is a row of its own, merged with its step."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 6))
    levels = np.sort(rng.uniform(0.1, 1.0, n + 1))[::-1]
    times = np.cumsum(rng.uniform(100, 1000, n))
    pred = ss.Prediction("agf", times, times / math.log(100.0), levels[1:], ["teacher 1"] * n, init_scale=1e-2)
    steps = [ss.Step(float(t * (1 + rng.uniform(-0.01, 0.01))), 0.0, float(a), float(b), "teacher 1", 0.0, 0.0)
             for t, a, b in zip(times, levels[:-1], levels[1:])]
    extra = int(rng.integers(0, n))  # a sub-step just before step `extra` ends, halfway to its level
    mid = 0.5 * (steps[extra].loss_before + steps[extra].loss_after)
    sub = ss.Step(steps[extra].time * 0.99, 0.0, steps[extra].loss_before, mid, "teacher 1", 0.0, 0.0)
    steps[extra] = ss.Step(steps[extra].time, 0.0, mid, steps[extra].loss_after, "teacher 1", 0.0, 0.0)
    steps.insert(extra, sub)
    table = ss.compare(steps, pred)
    matched = table[table["kind"] == "prediction"]
    assert len(matched) == n and (table["kind"] == "merged").sum() == 1
    assert (matched["time_rel_error"].abs() < 0.02).all()
    np.testing.assert_allclose(matched["loss_simulated"], levels[1:])


def test_a_weak_feature_fitted_in_passing_does_not_take_the_label():
    # Feature f0 carries 10 of loss and is 60 % learned across the drop; f1 carries 0.05 and is
    # fitted completely in passing. By "features" (fractions) f1 changes most; by the loss given
    # up, f0 does, and the drop is f0's.
    t = np.linspace(0, 20, 2001)
    s = 1 / (1 + np.exp(-(t - 10.0) / 0.2))
    carried = np.stack([10.0 * (1 - 0.6 * s), 0.05 * (1 - s)], 1)
    fractions = 1 - carried / carried[0]
    loss = carried.sum(1)
    traj = ss.Trajectory(times=t, loss=loss, observables={"features": fractions}, init_scale=1e-6, status="t_max",
                         t_final=20.0, stats={}, method="synthetic", feature_labels=["f0", "f1"])
    assert [st.feature for st in detect_steps(traj)] == ["f1"]  # fractions alone: the misleading label
    traj.observables["feature_losses"] = carried
    assert [st.feature for st in detect_steps(traj)] == ["f0"]
    np.testing.assert_allclose(ss.feature_change({"feature_losses": carried[0]}, {"feature_losses": carried[-1]}),
                               carried[0] - carried[-1])
    np.testing.assert_allclose(ss.feature_change({"features": fractions[-1]}, {"features": fractions[0]}),
                               np.abs(fractions[-1] - fractions[0]))


def test_a_merged_step_is_timed_by_its_first_sub_step():
    # One feature learned by a small drop at t = 5 and a large one at t = 9 (a second neuron
    # joining late): the feature starts at t = 5, whatever the extent of the group. The
    # midpoint of the merged drop would fall in the second sub-step, so a prediction whose
    # group stops after the first activation would look 80 % late.
    import dataclasses

    t = np.linspace(0, 40, 4001)
    steps = detect_steps(synthetic(t, [5.0, 9.0, 20.0], [0.1, 0.1, 0.2], [2.0, 8.0, 1.0]))
    steps = [dataclasses.replace(s, feature=f) for s, f in zip(steps, ["a", "a", "b"])]
    merged = ss.feature_steps(steps)
    assert [s.feature for s in merged] == ["a", "b"]
    assert merged[0].time == pytest.approx(steps[0].time) and steps[0].time == pytest.approx(5.0, abs=1e-2)
    assert (merged[0].loss_before, merged[0].loss_after) == (steps[0].loss_before, steps[1].loss_after)
    assert (merged[0].start, merged[0].end) == (steps[0].start, steps[1].end)


@pytest.mark.parametrize("seed", range(40))
def test_compare_recovers_a_known_alignment_on_random_staircases(seed):
    """A random predicted staircase, and a flow made from it by a known edit: two predicted steps
    taken in one drop, one predicted step taken in two drops (a pause), the run stopped early,
    or a drop beyond the last predicted level; levels off by up to 2% of the smaller drop beside
    them, times by up to 5%. `compare` gives each predicted step the simulated drop(s) it was
    made into, whatever the edit."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 7))
    drops = rng.uniform(0.2, 1.0, n) * rng.choice([1.0, 0.1, 0.01], n)
    edit = ["merge", "split", "stop", "beyond"][seed % 4]
    floor = 0.5 * drops[-1] if edit == "beyond" else 0.0
    levels = floor + np.concatenate([[0.0], np.cumsum(drops[::-1])])[::-1]
    times = np.cumsum(rng.uniform(0.5, 3.0, n)) * 10
    pred = ss.Prediction("agf", times, times / math.log(1e4), levels[1:], [f"p{k}" for k in range(n)],
                         initial_loss=float(levels[0]), init_scale=1e-4)
    # The truth: each simulated drop as (the predicted steps in it, level before, level after, time).
    sims = [([k], levels[k], levels[k + 1], times[k]) for k in range(n)]
    at = int(rng.integers(0, n - 1))
    if edit == "merge":
        sims[at:at + 2] = [([at, at + 1], levels[at], levels[at + 2], times[at + 1])]
    elif edit == "split":
        pause = levels[at + 1] + rng.uniform(0.3, 0.7) * (levels[at] - levels[at + 1])
        sims[at:at + 1] = [([at], levels[at], pause, times[at] * 0.97), ([at], pause, levels[at + 1], times[at])]
    elif edit == "stop":
        sims = sims[:at + 1]
    else:
        sims.append(([], floor, 1e-3 * floor, times[-1] * 1.5))
    steps, last = [], float(levels[0])
    for m, (ks, hi, lo, t) in enumerate(sims):
        # The drops on either side of this plateau, simulated and predicted, bound its error.
        i = int(np.argmin(np.abs(levels - lo)))
        beside = min([hi - lo, *drops[max(i - 1, 0):i + 1]] + ([sims[m + 1][1] - sims[m + 1][2]] if m + 1 < len(sims) else []))
        after = float(lo + rng.uniform(-0.02, 0.02) * beside)
        steps.append(ss.Step(float(t * (1 + rng.uniform(-0.05, 0.05))), 0.0, last, after, None, 0.0, 0.0))
        last = after
    table = compare(steps, pred)
    for (ks, *_), step in zip(sims, steps):
        rows = table[table["time_simulated"] == step.time]
        if ks:
            assert sorted(rows["time_predicted"]) == pytest.approx(sorted(times[ks])), table
        else:
            assert list(rows["kind"]) == ["unmatched-simulated"], table
    for k in range(n):
        rows = table[table["time_predicted"] == times[k]]
        if any(k in ks for ks, *_ in sims):
            assert len(rows) and set(rows["kind"]) <= {"prediction", "merged"}, table
        else:
            assert list(rows["kind"]) == ["unmatched-predicted"], table
    # One "prediction" row per simulated drop made from predicted steps (a pause makes two drops
    # of one predicted step: still one match).
    assert (table["kind"] == "prediction").sum() == len({tuple(ks) for ks, *_ in sims if ks}), table


# ---------------------------------------------------------------- small drops and cut-off drops
def _drop_small_by_passes(peaks, rate, L, smallest, L_end, floor):
    """The reference: recompute every bound after each removal (quadratic). Bound 0 is the valley
    before the first original peak; a kept drop ends at the valley after it, before the next
    original peak, and the next kept drop starts there."""
    original = list(peaks)

    def valley(i, j):
        return i + int(np.argmin(rate[i:j + 1]))

    def after(p):
        nxt = [q for q in original if q > p]
        return valley(p, nxt[0] if nxt else len(L) - 1)

    kept = list(peaks)
    while kept:
        bounds = [valley(0, original[0])] + [after(p) for p in kept]
        sizes = [L[bounds[k]] - L[bounds[k + 1]] for k in range(len(kept))]
        small = [k for k, s in enumerate(sizes)
                 if s < smallest and not (s >= floor and s >= 0.5 * (L[bounds[k]] - L_end))]
        if not small:
            return kept, bounds
        kept.pop(min(small, key=lambda k: (sizes[k], k)))
    return [], []


@pytest.mark.parametrize("seed", range(30))
def test_removing_small_drops_matches_the_quadratic_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    L = np.sort(rng.exponential(1.0, n) * rng.choice([1.0, 1e-3, 1e-5], n))[::-1].copy()
    rate = rng.uniform(0, 1, n)
    peaks = sorted(rng.choice(np.arange(1, n - 1), int(rng.integers(1, n // 3)), replace=False).tolist())
    total = L[0] - L[-1]
    args = (rate, L, 1e-2 * total, float(L[-1]), 1e-6 * total)
    assert ss.steps._drop_small(peaks, *args) == _drop_small_by_passes(peaks, *args)


def test_a_late_step_small_beside_the_whole_decrease_is_found():
    # Three large drops, then one of 2e-4 of the total that halves what is left: plain on a log plot.
    t = np.linspace(0, 200, 20001)
    heights = [20.0, 5.0, 0.5, 0.005]
    steps = detect_steps(synthetic(t, [5.0, 20.0, 60.0, 150.0], [0.3, 0.5, 1.0, 3.0], heights, floor=0.005))
    assert len(steps) == 4
    assert steps[3].time == pytest.approx(150.0, rel=1e-3)
    assert steps[2].loss_after == pytest.approx(0.01, rel=1e-3)  # the plateau the flow sat on
    # A bump that small in the middle of the staircase (it leaves most of the loss) is no step.
    bump = detect_steps(synthetic(t, [5.0, 20.0, 40.0, 150.0], [0.3, 0.5, 1.0, 3.0], [20.0, 5.0, 0.005, 0.5]))
    assert len(bump) == 3 and bump[2].time == pytest.approx(150.0, rel=1e-3)


def test_a_settled_last_step_stays_while_a_slow_decline_runs_into_the_horizon():
    t = np.linspace(0, 420, 42001)
    traj = synthetic(t, [8.0, 190.0], [0.5, 3.0], [2.0, 0.0064], floor=0.0009)
    # A slow decline from t = 300 on, still going when the run stops (t_max).
    traj.loss = traj.loss - 0.0005 * np.clip((t - 300) / 120, 0, None) ** 2
    steps = detect_steps(traj)
    assert [round(s.time) for s in steps] == [8, 190]
    assert steps[-1].loss_after == pytest.approx(0.0009, rel=0.05)
    # A drop the horizon cut in its middle is still no step.
    cut = synthetic(t[t < 191], [8.0, 190.0], [0.5, 3.0], [2.0, 0.0064], floor=0.0009)
    assert [round(s.time) for s in detect_steps(cut)] == [8]


@pytest.mark.parametrize("status", ["t_max", "converged"])
@pytest.mark.parametrize("seed", range(6))
def test_a_relaxation_tail_after_the_last_drop_is_no_step(status, seed):
    # Random staircases whose last drop runs on into a slow exponential relaxation to the final
    # level, with no plateau in between (an ill-conditioned last mode, or a run ending inside its
    # tail): the tail's log-rate λt rises to the end of the record, but the loss only slows down,
    # so it belongs to the last drop. Oracle: the logistic drops, and the tail's end level.
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 4))
    centers = np.cumsum(rng.uniform(4, 10, k))
    widths = rng.uniform(0.1, 0.4, k)
    heights = np.sort(rng.uniform(0.5, 10, k))[::-1]
    tail, lam = rng.uniform(0.5, 0.9) * heights[-1], rng.uniform(0.05, 0.3)
    t = np.linspace(0, centers[-1] + rng.uniform(3, 12) / lam, 8001)
    traj = synthetic(t, centers, widths, heights, floor=1e-2)
    # Part of the last drop relaxes on: it leaves at the drop's pace, then at rate λ.
    on = 1 / (1 + np.exp(-(t - centers[-1]) / widths[-1]))
    L = np.asarray(traj.loss) + tail * on * np.exp(-lam * np.maximum(t - centers[-1], 0))
    traj = dataclasses.replace(traj, loss=L, status=status)
    steps = detect_steps(traj)
    assert len(steps) == k, [(s.time, s.loss_before, s.loss_after) for s in steps]
    assert [s.feature for s in steps] == [f"f{i}" for i in range(k)]
    np.testing.assert_allclose(steps[-1].loss_after, L[-1], rtol=0.05)


def test_a_second_drop_out_of_a_shoulder_stays_a_step():
    # The check above must not merge a real drop that starts before the last one has settled:
    # its loss speeds up again after the shoulder.
    t = np.linspace(0, 40, 8001)
    steps = detect_steps(synthetic(t, [10.0, 12.5], [0.2, 0.3], [5.0, 2.0], floor=1e-2))
    assert [s.feature for s in steps] == ["f0", "f1"]


def test_a_prediction_of_another_problem_is_named_as_such():
    """A linear run's drops ("mode k") set against a diagonal network's prediction ("β[j]") still
    pair by plateau levels, and would read as matches: `compare` says the names never meet. A
    tie-group label (β[1]+β[3]) counts by its parts."""
    import warnings

    found = [Step(1.0, 0.1, 2.0, 1.0, "mode 1", 0.5, 1.5), Step(3.0, 0.3, 1.0, 0.0, "mode 2", 2.5, 3.5)]
    other = ss.Prediction("agf", np.array([1.0, 3.0]), np.array([0.1, 0.3]), np.array([1.0, 0.0]),
                          ["β[3]", "β[1]+β[4]"], initial_loss=2.0, init_scale=1e-4)
    with pytest.warns(UserWarning, match=r"share no name: are they of the same problem"):
        ss.compare(found, other)
    same = ss.Prediction("agf", np.array([1.0, 3.0]), np.array([0.1, 0.3]), np.array([1.0, 0.0]),
                         ["mode 1", "mode 2+mode 3"], initial_loss=2.0, init_scale=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ss.compare(found, same)


def test_compare_never_groups_a_predicted_step_against_a_drop_of_another_label_the_flow_shows():
    # The flow learns a (10.6 → 2.6), then b (→ 0.6); the prediction says b first (10.6 → 8.6),
    # then a (→ 0.6). By levels, predicted b and a form one drop against the flow's a, leaving
    # the flow's b alone; but both sides name every step once: a↔a, b↔b, c↔c.
    L = math.log(1e6)
    sim = [ss.Step(t, t / L, b, a, f, t - 1, t + 1)
           for t, b, a, f in ((5.0, 10.6, 2.6, "a"), (15.0, 2.6, 0.6, "b"), (25.0, 0.6, 0.1, "c"))]
    t = np.array([5.0, 15.0, 25.0])
    pred = ss.Prediction("closed-form:test", t, t / L, [8.6, 0.6, 0.1], ["b", "a", "c"], initial_loss=10.6,
                         init_scale=1e-6)
    table = compare(sim, pred)
    assert list(table["kind"]) == ["prediction"] * 3
    assert list(table["feature_predicted"]) == list(table["feature_simulated"])
    by = {r.feature_predicted: r for r in table.itertuples()}
    assert (by["a"].time_predicted, by["a"].time_simulated) == (15.0, 5.0)
    assert (by["b"].time_predicted, by["b"].time_simulated) == (5.0, 15.0)


def test_compare_times_a_group_by_the_member_of_the_same_label_and_a_pause_has_no_level_error():
    # The prediction has no step b; the flow pauses at 0.6 (its step b) inside the predicted drop
    # 2.6 → 0.1 of c. By the midpoint rule the row of b would carry c's time (−40%) and set the
    # pause level 0.6 against the plateau 0.1; the flow's c, same label and time, is the match.
    L = math.log(1e6)
    sim = [ss.Step(t, t / L, b, a, f, t - 1, t + 1)
           for t, b, a, f in ((5.0, 10.6, 2.6, "a"), (15.0, 2.6, 0.6, "b"), (25.0, 0.6, 0.1, "c"))]
    t = np.array([5.0, 25.0])
    pred = ss.Prediction("closed-form:test", t, t / L, [2.6, 0.1], ["a", "c"], initial_loss=10.6, init_scale=1e-6)
    table = compare(sim, pred)
    assert list(table["kind"]) == ["prediction", "merged", "prediction"]
    assert list(table["feature_simulated"]) == ["a", "b", "c"]
    match = table[table.feature_simulated == "c"].iloc[0]
    assert match.time_rel_error == 0.0 and match.loss_rel_error == 0.0
    assert math.isnan(table[table.feature_simulated == "b"].iloc[0].loss_rel_error)
    # Unlabelled, the midpoint rule still picks the row: the drop of b crosses the midpoint 1.35.
    plain = compare([dataclasses.replace(s, feature=None) for s in sim], _pred_like(pred))
    assert list(plain["kind"]) == ["prediction", "prediction", "merged"]


def _pred_like(pred):
    return ss.Prediction(pred.method, pred.times, pred.rescaled_times, pred.losses, [None] * pred.num_steps,
                         initial_loss=pred.initial_loss, init_scale=pred.init_scale)


def test_detect_steps_names_a_bad_argument():
    with pytest.raises(TypeError, match=r"^detect_steps: expected a Trajectory .*got list"):
        detect_steps([1.0, 0.5])
    t = np.linspace(0.0, 10.0, 101)
    flat = ss.Trajectory(times=t, loss=np.ones_like(t), observables={}, init_scale=1e-6, status="t_max",
                         t_final=10.0, stats={}, method="synthetic")
    for name in ("threshold", "min_drop", "separation", "unfinished"):
        for bad in (-1.0, math.nan):
            with pytest.raises(ValueError, match=rf"^{name}: expected a finite number ≥ 0"):
                detect_steps(flat, **{name: bad})


def test_a_record_that_changes_by_a_few_parts_in_1e12_has_no_steps_at_any_loss_scale():
    # A horizon that ends on the first plateau: the dormant neurons' creep moved the loss by
    # 8e-12 of itself in wiggles, which read as 12 drops. A real staircase of the same tiny size
    # (the loss scaled by 1e-4) keeps its steps.
    from scipy.special import expit

    t = np.linspace(0.0, 2300.0, 4001)
    wiggles = sum(expit((t - c) / 15.0) for c in np.linspace(130.0, 2270.0, 12))
    creep = 3.4696e-4 * (1.0 - 7e-13 * wiggles)
    make = lambda L: ss.Trajectory(times=t, loss=L, observables={}, init_scale=1e-6, status="t_max",
                                   t_final=2300.0, stats={}, method="synthetic")
    assert detect_steps(make(creep)) == []
    stairs = 1e-4 * (0.2 + 0.5 * expit(-(t - 600.0) / 15.0) + 0.3 * expit(-(t - 1500.0) / 15.0))
    found = detect_steps(make(stairs))
    assert len(found) == 2
    np.testing.assert_allclose([s.time for s in found], [600.0, 1500.0], rtol=1e-3)
