"""AGF against gradient flow for two-layer ReLU teacher–student networks: the order of the
learned teacher directions, and the flow's slopes dt_k/d ln(1/α) against AGF's α → 0 rescaled
jump times (reference agf.md §5.1: single-α ratios carry O(1/ln(1/α)) errors, slopes do not)."""

import math

import jax
import numpy as np
import scipy.optimize

import saddlestep as ss
from saddlestep import agf
from saddlestep.presets.base import Setup


def _assert_flow_follows(make, p):
    """The flow's slopes over α = 1e-6, 1e-10 match AGF's limit times, and at α = 1e-6 it learns
    the same teachers in the same order."""
    df = ss.converge(make, [1e-6, 1e-10], prediction=p, simulate_kwargs={"n_save": 401})
    slopes = df.groupby("step")["slope"].first().to_numpy()
    np.testing.assert_allclose(slopes, p.rescaled_times, rtol=0.005)
    setup = make(1e-6)
    traj = ss.simulate(setup.model, setup.task, t_max=setup.t_max, n_save=401)
    assert [s.feature for s in ss.detect_steps(traj)] == p.order


def _gaussian_setup(init_scale: float) -> Setup:
    # Gaussian inputs: ReLU features overlap, and every dormant neuron of one output sign settles
    # on the same utility maximum (a mixture of teachers, not a teacher), so teachers of one sign
    # are learned by one merged neuron. Teachers of opposite signs (3, −2) give two basins, and
    # with this seed each holds one of the two neurons: two clean steps.
    task = ss.relu_teacher(jax.random.PRNGKey(0), 4, [3.0, -2.0], inputs="gaussian", n=256)
    model = ss.TwoLayer(4, 2, 1, "relu", key=jax.random.PRNGKey(0), init_scale=init_scale)
    return Setup(model, task, t_max=2.0 * math.log(1.0 / init_scale))


def _relu_utility_max(X, r, sign, w0):
    """Local max of h(ŵ) = sign·mean(relu(Xŵ) r) on the unit sphere, ascended from w0 (scipy)."""
    h = lambda w: -sign * np.mean(np.maximum(X @ (w / np.linalg.norm(w)), 0.0) * r)
    res = scipy.optimize.minimize(h, w0, method="BFGS", options={"gtol": 1e-13})
    res = scipy.optimize.minimize(h, res.x, method="Powell", options={"xtol": 1e-12, "ftol": 1e-15})
    return -res.fun, res.x / np.linalg.norm(res.x)


def _relu_two_step_oracle(X, y):
    """AGF's α → 0 times for two basins of opposite output signs, written from the definition: a
    dormant neuron of sign σ settles (in O(1) time, nothing on the ln(1/α) clock) on a local
    max h_σ of σ·mean(relu(Xŵ) r) and accumulates S at rate 2U* = h_σ against threshold 1; the
    first to cross is fitted alone (f = σ·relu(Xv), least squares by BFGS), and the other
    continues at its rate on the new residual: τ₂ = τ₁ + (1 − τ₁ h₂(r₀))/h₂(r₁)."""
    rng = np.random.default_rng(0)
    best = {}
    for sign in (1, -1):
        runs = [_relu_utility_max(X, y, sign, rng.standard_normal(X.shape[1])) for _ in range(3)]
        best[sign] = max(runs, key=lambda t: t[0])
    first = max(best, key=lambda s: best[s][0])
    h1, w1 = best[first]
    t1 = 1.0 / h1
    loss = lambda v: 0.5 * np.mean((y - first * np.maximum(X @ v, 0.0)) ** 2)
    v = scipy.optimize.minimize(loss, w1 * h1 / np.mean(np.maximum(X @ w1, 0) ** 2), method="BFGS",
                                options={"gtol": 1e-12}).x
    r1 = y - first * np.maximum(X @ v, 0.0)
    h2, w2 = best[-first]
    h2b, _ = _relu_utility_max(X, r1, -first, w2)
    return np.array([t1, t1 + (1.0 - t1 * h2) / h2b]), loss(v)


def test_relu_gaussian_order_and_slopes_match_agf():
    # Measured over α = 1e-4 … 1e-10 (4 runs): slopes 0.9204, 1.5941 against AGF 0.9204, 1.5962
    # (0.00%, −0.13%); single-α ratios at α = 1e-6: 1.039, 1.138.
    setup = _gaussian_setup(1e-6)
    p = agf.predict(setup.model, setup.task, limit=True)
    assert p.order == ["teacher 1", "teacher 2"]
    times, plateau = _relu_two_step_oracle(np.asarray(setup.task.X), np.asarray(setup.task.Y)[:, 0])
    np.testing.assert_allclose(p.rescaled_times, times, rtol=1e-4)
    np.testing.assert_allclose(p.losses[0], plateau, rtol=1e-5)
    assert p.losses[-1] < 1e-10
    _assert_flow_follows(_gaussian_setup, p)  # slopes measured: 0.03%


def _orthogonal_setup(init_scale: float) -> Setup:
    # Orthogonal inputs (the 2d points ±√d e_i), teachers of opposite signs: teacher j is learned
    # at AGF's rescaled time 2/|a*_j|. A small width and this seed keep the flow off the ReLU
    # kinks it would otherwise slide along (the `relu` preset's flow needs ~10⁵ steps per run).
    task = ss.relu_teacher(jax.random.PRNGKey(0), 4, [3.0, -1.5], inputs="orthogonal")
    model = ss.TwoLayer(4, 4, 1, "relu", key=jax.random.PRNGKey(2), init_scale=init_scale)
    return Setup(model, task, t_max=2.0 * math.log(1.0 / init_scale))


def test_relu_orthogonal_order_and_slopes_match_agf():
    # Measured over α = 1e-4 … 1e-10 (4 runs): slopes 0.66667, 1.33333 against AGF 2/3, 4/3
    # (< 0.01%); single-α ratios at α = 1e-6: 1.021, 1.216.
    setup = _orthogonal_setup(1e-6)
    p = agf.predict(setup.model, setup.task, limit=True)
    assert p.order == ["teacher 1", "teacher 2"]
    np.testing.assert_allclose(p.rescaled_times, [2 / 3.0, 2 / 1.5], rtol=1e-4)
    _assert_flow_follows(_orthogonal_setup, p)  # slopes measured: < 0.01%


def test_agf_says_when_it_ends_on_copies_of_one_direction():
    """Two neurons that start as exact copies activate together and stay copies (the restricted
    loss is symmetric in them), so AGF learns one of two teachers and ends with every neuron
    active; it says so, instead of passing the unlearned teacher over in silence."""
    import equinox as eqx
    import pytest

    task = ss.relu_teacher(jax.random.PRNGKey(0), 3, (2.0, -1.0), n=64, inputs="gaussian")
    model = ss.TwoLayer(3, 2, 1, "relu", key=jax.random.PRNGKey(1), init_scale=1e-4)
    W, a = np.asarray(model.W), np.asarray(model.a)
    model = eqx.tree_at(lambda m: (m.W, m.a), model, (np.tile(W[:1], (2, 1)), np.tile(a[:, :1], (1, 2))))
    with pytest.warns(UserWarning, match="only 1 distinct directions"):
        pred = agf.predict(model, task)
    assert pred.extra["copies"] == {"neurons": 2, "directions": 1}
    assert pred.losses[-1] > 0.01 * pred.initial_loss
    # Distinct neurons on the same task: no such ending.
    wide = ss.TwoLayer(3, 6, 1, "relu", key=jax.random.PRNGKey(2), init_scale=1e-4)
    assert agf.predict(wide, task).extra["copies"] is None



def test_new_seed_and_init_scale_reuse_the_compiled_cost_phase():
    """The exact ReLU phase is data of the AGF problem, not a static part of it: a prediction for
    another seed and init scale (same shapes) traces nothing again (it retraced the cost phase,
    0.5 s, for every run of a sweep)."""
    from saddlestep.agf.engine import TRACE_COUNT

    task = ss.relu_teacher(jax.random.PRNGKey(0), 4, [3.0, -2.0], inputs="gaussian", n=64)
    make = lambda seed, alpha: ss.TwoLayer(4, 3, 1, "relu", key=jax.random.PRNGKey(seed), init_scale=alpha)
    first = agf.predict(make(0, 1e-6), task)
    assert first.extra["phases"]["exact"] > 0
    before = dict(TRACE_COUNT)
    other = agf.predict(make(1, 1e-8), task)
    assert other.num_steps > 0
    assert dict(TRACE_COUNT) == before

def test_a_cost_phase_that_splits_near_copies_over_two_teachers_is_warned():
    """Issue 16's case (Gaussian inputs, n 400, d 10, teachers 3, 2, 1, width 32, α = 1e-4): 13
    neurons enter along one direction and the cost phase spreads them over teachers 1 and 2 (loss
    0.0897) in one step. The flow (the oracle) rests at teacher 1's fit, ~0.6, for ~5 time units
    after its first drop, and only then splits them: the prediction says so. The two-teacher
    orthogonal case above enters one neuron per teacher and is not warned."""
    import pytest
    from saddlestep.runs import prepare

    overrides = {"inputs": "gaussian", "n": "400", "d": "10", "teacher_norms": "3,2,1", "width": "32"}
    _, _, setup, _, _ = prepare("relu", init_scale=1e-4, overrides=overrides)
    with pytest.warns(UserWarning, match="the cost phase split 13 neurons that entered along one direction over 2"):
        pred = agf.predict(setup.model, setup.task)
    (split,) = pred.extra["split"]
    assert split["directions"] == 2 and split["time"] == pytest.approx(pred.times[0])
    flow = ss.simulate(setup.model, setup.task, t_max=pred.times[0] + 2.5)
    (first,) = ss.detect_steps(flow)
    assert abs(first.time / pred.times[0] - 1) < 0.02  # the drop itself is on time
    assert first.loss_after > 5 * pred.losses[0]  # ... onto teacher 1's plateau, not AGF's
    import warnings as _warnings

    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        setup = _orthogonal_setup(1e-6)
        assert agf.predict(setup.model, setup.task).extra["split"] == []


def _two_teacher_sample(scale: float = 1.0):
    rng = np.random.default_rng(12)
    X = rng.standard_normal((120, 4))
    W = np.linalg.qr(rng.standard_normal((4, 4)))[0][:2]
    Y = (2.0 * np.maximum(X @ W[0], 0) - np.maximum(X @ W[1], 0))[:, None]
    return ss.SampleRegression(scale * X, scale * Y)


def test_agf_is_the_same_in_other_data_units_and_at_any_alpha():
    # X, Y × 0.02: utilities scale by 0.02² and every time by 2500 exactly (the gradient flow's
    # own symmetry). AGF used to wait 10³·c time units for an activation whatever the data's
    # scale, and predicted no step at all here. And AGF's state is directions and log-norms, so
    # α = 1e-200 (O(α) norms whose squares underflow, e^{λt} past the largest float64) gives the
    # same affine times in ln(1/α) and the same plateaus.
    import warnings

    model = lambda a: ss.TwoLayer(4, 6, 1, "relu", key=jax.random.PRNGKey(0), init_scale=a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (its cost phase took 9,324 BFGS steps in small units)
        base = agf.predict(model(1e-6), _two_teacher_sample())
        units = agf.predict(model(1e-6), _two_teacher_sample(0.02))
        tiny = agf.predict(model(1e-6), _two_teacher_sample(1e-8))
    assert base.num_steps == units.num_steps == tiny.num_steps == 2
    for p, scale in ((units, 0.02), (tiny, 1e-8)):
        np.testing.assert_allclose(p.times, np.asarray(base.times) / scale**2, rtol=1e-6)
        np.testing.assert_allclose(p.losses[0], scale**2 * base.losses[0], rtol=1e-6)
        assert p.losses[1] < 1e-12 * scale**2 * base.losses[0]  # the teachers learned: loss ~ 0
    times = {a: agf.predict(model(a), _two_teacher_sample()) for a in (1e-30, 1e-100, 1e-200)}
    slope = lambda a, b: (np.asarray(times[b].times) - np.asarray(times[a].times)) / math.log(a / b)
    np.testing.assert_allclose(slope(1e-100, 1e-200), slope(1e-30, 1e-100), rtol=1e-6)
    np.testing.assert_allclose(times[1e-200].losses, base.losses, rtol=1e-6, atol=1e-12)


def test_agf_says_when_no_neuron_activates_within_its_wait():
    import pytest

    model = ss.TwoLayer(4, 6, 1, "relu", key=jax.random.PRNGKey(0), init_scale=1e-6)
    with pytest.warns(UserWarning, match=r"^agf.predict: no neuron activated within t = 1 .*pass t_max"):
        p = agf.predict(model, _two_teacher_sample(), t_max=1.0)
    assert p.num_steps == 0
