"""Attention-only linear transformers on in-context linear regression (κ = 3): oracles from the
closed forms of Kunin et al. 2025 (AGF reference §2.3, case R5)."""

import math

import jax
import numpy as np
import pytest

import saddlestep as ss
from saddlestep import agf, theory
from saddlestep.models import LinearAttention
from saddlestep.presets import get_preset
from saddlestep.tasks import InContextRegression

LAM = np.array([0.96, 0.48, 0.32, 0.24])  # ∝ 1, 1/2, 1/3, 1/4, trace 2
LEVELS = [0.562185, 0.355548, 0.225103, 0.132199]
COEFS = [0.029691, 0.056054, 0.079618, 0.100806]


def _task(N=32):
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]  # a random eigenbasis
    return InContextRegression(Q @ np.diag(LAM) @ Q.T, N)


def test_r5_closed_forms():
    levels, initial = theory.attention_levels(LAM, 32)
    assert initial == pytest.approx(1.0)
    assert levels == pytest.approx(LEVELS, abs=1e-6)
    assert theory.attention_coefficients(LAM, 32) == pytest.approx(COEFS, abs=1e-6)
    assert theory.attention_utility_maxima(LAM, 32) == pytest.approx([5.6756, 1.4189, 0.6306, 0.3547], abs=1e-4)
    assert _task().loss_floor(None) == pytest.approx(levels[-1], rel=1e-12)


@pytest.mark.parametrize("heads", [1, 2, 3, 4, 5])
def test_fewer_heads_than_components_stop_at_their_level(heads, getkey):
    # Rank-one heads give Γ rank ≤ H: H heads fit the H largest components (reference R5 levels),
    # so the floor, the closed form and the `lower-bound` preset stop there.
    model = LinearAttention(4, heads, key=getkey(), init_scale=1e-3)
    k = min(heads, 4)
    assert _task().loss_floor(model) == pytest.approx(LEVELS[k - 1], abs=1e-6)
    pred = theory.predict_attention(model, _task())
    assert pred.order == [f"PC {i + 1}" for i in range(k)] and pred.losses[-1] == pytest.approx(LEVELS[k - 1], abs=1e-6)
    preset = get_preset("attention")
    params = {**preset.parameters(), "heads": heads, "predictor": "lower-bound"}
    setup = preset.setup(params, init_scale=1e-3, seed=0, data=None)
    assert setup.predict().num_steps == k
    assert setup.task.loss_floor(setup.model) == pytest.approx(LEVELS[k - 1], abs=1e-6)


def test_population_loss(getkey):
    task = _task(N=8)
    model = LinearAttention(4, 5, key=getkey(), init_scale=0.4)
    exact = float(task.loss(model))
    # The quadrature behind `as_regression` is exact for every model.
    assert float(task.as_regression().loss(model)) == pytest.approx(exact, rel=1e-12)
    # And the population form is the mean over drawn contexts (Monte Carlo, loose).
    drawn = InContextRegression(np.asarray(task.cov), 8, samples=40_000, key=getkey())
    assert float(drawn.loss(model)) == pytest.approx(exact, rel=0.04)
    # The model reads any context length: N tokens then the query.
    ctx = np.asarray(drawn.X[0]).reshape(9, 5)
    s = ctx[:-1, -1] @ ctx[:-1, :-1]
    assert float(model(ctx)[0]) == pytest.approx(float(ctx[-1, :-1] @ model.attention_matrix() @ s))
    assert float(np.sum(model.neuron_outputs(model.neurons(), ctx.reshape(-1)))) == pytest.approx(float(model(ctx)[0]))


def test_staircase_r5():
    task = _task()
    model = LinearAttention(4, 5, key=jax.random.PRNGKey(0), init_scale=1e-2)
    traj = ss.simulate(model, task, t_max=400.0, rtol=1e-7)
    steps = ss.detect_steps(traj)
    # Principal components one at a time, in decreasing eigenvalue order.
    assert [s.feature for s in steps] == ["PC 1", "PC 2", "PC 3", "PC 4"]
    assert [s.loss_after for s in steps] == pytest.approx(LEVELS, rel=1e-2)
    assert traj.observables["coefficients"][-1] == pytest.approx(COEFS, rel=1e-2)
    # The closed-form times are lower bounds (directions start unaligned).
    bound = theory.attention_prediction(LAM, 32, 1e-2, init_norm=float(np.max(model.neuron_norms())))
    assert np.all(np.asarray([s.time for s in steps]) >= bound.times)
    # Balancedness v² − ‖k‖², v² − ‖q‖² per head is conserved by the flow (R10).
    for key, value in model.conserved().items():
        assert np.abs(np.asarray(traj.final.conserved()[key]) - np.asarray(value)).max() < 1e-4
    assert traj.stats["steps"] < 5_000


def test_agf_r5():
    # AGF with κ = 3: thresholds 1/‖θ_i(0)‖ − 1, directions integrated numerically.
    task = _task()
    model = LinearAttention(4, 5, key=jax.random.PRNGKey(0), init_scale=1e-2)
    pred = agf.predict(model, task.as_regression())
    norms = np.asarray(model.neuron_norms())
    assert pred.extra["thresholds"] == pytest.approx(1 / norms - 1)
    assert pred.losses[:4] == pytest.approx(LEVELS, rel=1e-2)
    feats = [np.asarray(task.observables(m)["features"]) for m in pred.plateau_parameters[:4]]
    learned = [int(np.argmax(f - g)) for f, g in zip(feats, [np.zeros(4)] + feats[:-1])]
    assert learned == [0, 1, 2, 3]
    assert task.coefficients(pred.plateau_parameters[3]) == pytest.approx(COEFS, rel=1e-2)
    bound = theory.attention_prediction(LAM, 32, 1e-2, init_norm=float(norms.max()))
    assert np.all(pred.times[:4] >= bound.times * (1 - 1e-9))


def test_bad_input(getkey):
    with pytest.raises(ValueError, match="cov"):
        InContextRegression([[1.0, 2.0], [2.0, 1.0]], 4)
    with pytest.raises(ValueError, match="cov"):
        InContextRegression([-1.0, 1.0], 4)
    with pytest.raises(ValueError, match="N"):
        InContextRegression([1.0, 1.0], 0)
    with pytest.raises(ValueError, match="key"):
        InContextRegression([1.0, 1.0], 3, samples=10)
    with pytest.raises(ValueError, match="heads"):
        LinearAttention(3, 0, key=getkey())
    with pytest.raises(ValueError, match="model"):
        _task().validate(LinearAttention(3, 2, key=getkey()))
    with pytest.raises(ValueError, match="model"):
        _task().validate(ss.TwoLayer(4, 2, key=getkey()))
    with pytest.raises(ValueError, match="eigenvalues"):
        theory.attention_levels([-1.0, 1.0], 4)


def test_preset_build():
    preset = get_preset("attention")
    setup = preset.build(preset.parameters(), init_scale=1e-2, seed=0, data=None)
    assert np.asarray(setup.task.eigenvalues) == pytest.approx(LAM)
    pred = preset.build(preset.parameters({"predictor": "lower-bound"}), init_scale=1e-2, seed=0, data=None).predict()
    assert pred.method == "closed-form:attention-lower-bound" and pred.order == ["PC 1", "PC 2", "PC 3", "PC 4"]
    assert pred.losses == pytest.approx(LEVELS, abs=1e-6)
    with pytest.raises(ValueError, match="predictor"):
        preset.build(preset.parameters({"predictor": "magic"}), init_scale=1e-2, seed=0, data=None)
    assert math.isfinite(setup.t_max)


def test_agf_follows_every_component_to_the_last_and_never_stops_silently():
    # Regression: the event's root finder needed |S − c| < 1e-13 while one ulp of c ≈ 577 is
    # 1.1e-13, so the 4th activation (t ≈ 1207) was lost and AGF ended after 3 steps, unwarned.
    from saddlestep.runs import prepare

    _, _, setup, _, _ = prepare("attention")
    pred = setup.predict()
    levels = pred.extra["theory_levels"]
    assert pred.num_steps == len(levels) == 4 and pred.extra["stopped"] is None
    np.testing.assert_allclose(pred.losses, levels, rtol=1e-6)
    assert np.all(pred.times >= np.asarray(pred.extra["lower_bounds"]))  # a bound is a bound


def test_horizon_covers_agf_steps_beyond_the_population_bounds():
    """On drawn contexts AGF's last step can come after the population bounds' horizon (6× the
    last bound): the run's horizon then covers it (the flow ended before PC 3 and the comparison
    paired a sub-drop of PC 2 with it, at −83%)."""
    from saddlestep.runs import prepare

    overrides = {"samples": "400", "heads": "3", "N": "10", "eigenvalues": "1,0.7,0.3"}
    _, params, setup, alpha, _ = prepare("attention", init_scale=1e-3, overrides=overrides)
    pred = setup.predict()
    assert max(pred.times) > 6.0 * max(pred.extra["lower_bounds"]) + 20.0  # the case this is about
    assert setup.t_max >= 2.0 * max(pred.times)
    # The log grid still starts a decade before the first bound, not that fraction of the longer horizon.
    start = setup.simulate_kwargs["save_start"] * setup.t_max
    assert start == pytest.approx(0.1 * min(pred.extra["lower_bounds"]), rel=1e-6)


def test_close_components_each_get_their_drop_and_name():
    """λ ∝ 1, .95, .3, .1: PCs 1 and 2 drop 16 apart at t ≈ 66 and 82, PC 4 at t ≈ 10⁴. On a
    uniform grid (spacing 12.8) PC 2's drop had three points and no name; the log grid names every
    drop, each paired with its predicted component (the flow's own feature observable is the oracle)."""
    r = ss.run_preset("attention", seed=1, overrides={"eigenvalues": "1,0.95,0.3,0.1", "basis_seed": "3"})
    assert [s.feature for s in r.steps] == ["PC 1", "PC 2", "PC 3", "PC 4"]
    table = ss.compare(r.steps, r.prediction)
    assert list(table["kind"]) == ["prediction"] * 4
    assert list(table["feature_simulated"]) == list(table["feature_predicted"])


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_fewer_heads_than_components_learn_the_largest_ones(heads):
    # H rank-one heads fit the H largest principal components: the prediction stops at the
    # H-th closed-form level, and the flow settles there (D = 4 components).
    task = _task(N=32)
    model = LinearAttention(4, heads, key=jax.random.PRNGKey(heads), init_scale=1e-2)
    pred = theory.predict_attention(model, task)
    assert pred.num_steps == heads and list(pred.order) == [f"PC {k + 1}" for k in range(heads)]
    assert pred.losses[-1] == pytest.approx(LEVELS[heads - 1], abs=1e-6)
    if heads == 2:
        traj = ss.simulate(model, task, t_max=400.0, rtol=1e-7)
        assert float(traj.loss[-1]) == pytest.approx(LEVELS[1], rel=1e-3)
