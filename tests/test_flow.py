"""Oracle tests of the gradient flow against Saxe's closed forms, invariants and GD."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import saddlestep as ss
from saddlestep.flow import StepBudgetWarning, TRACE_COUNT
from saddlestep.crossings import first_crossing

S = np.array([10.0, 5.0, 2.5, 1.25, 0.625])
D = H = 20


@pytest.fixture(scope="module")
def task():
    return ss.teacher_spectrum(jax.random.PRNGKey(0), D, D, S)


def make_batch(alpha, seeds):
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    return eqx.filter_vmap(lambda k: ss.TwoLayer(D, H, D, "linear", key=k, init_scale=alpha))(keys)


def saxe_drop_times(model, task):
    """t_k = ln(s_k/u0_k − 1)/(2s_k), with u0_k the squared growing part of the init projected
    off the hidden directions of faster modes (reference/engineering.md §2.1)."""
    U, V = np.asarray(task.left), np.asarray(task.right)
    W1, W2 = np.asarray(model.W), np.asarray(model.a)
    g = (W1 @ V + W2.T @ U) / 2
    Q = np.zeros((H, 0))
    u0 = []
    for k in range(len(S)):
        gk = g[:, k] - Q @ (Q.T @ g[:, k])
        u0.append(gk @ gk)
        Q = np.linalg.qr(np.column_stack([Q, g[:, k]]))[0]
    return np.log(S / np.array(u0) - 1) / (2 * S)


def mode_crossings(traj):
    F = traj.observables["features"]
    return np.array([first_crossing(traj.times, F[:, k], S[k] / 2) for k in range(len(S))])


@pytest.mark.parametrize("alpha, tol", [(1e-6, 1e-5), (1e-9, 1e-5), (1e-3, 1e-3)])
def test_drop_times_match_projected_saxe_formula(task, alpha, tol):
    seeds = list(range(4))
    batch = make_batch(alpha, seeds)
    t_max = 1.3 * np.log(1 / alpha) / S[-1] + 5
    traj = ss.simulate(batch, task, t_max=t_max, rtol=1e-8, n_save=4001)
    assert traj.batch_size == len(seeds)
    for i in range(len(seeds)):
        member = jax.tree.map(lambda x: x[i], batch)
        predicted = saxe_drop_times(member, task)
        measured = mode_crossings(traj[i])
        np.testing.assert_allclose(measured, predicted, rtol=tol)


def _balanced_mode(s, u0):
    task = ss.PopulationRegression(np.eye(1), [[s]])
    model = ss.TwoLayer(1, 1, 1, "linear", key=jax.random.PRNGKey(0), init_scale=1e-3)
    w0 = np.sqrt(u0)
    return eqx.tree_at(lambda m: (m.W, m.a), model, (jnp.full((1, 1), w0), jnp.full((1, 1), w0))), task


@pytest.mark.parametrize("spacing", ["linear", "log"])
def test_single_balanced_mode_follows_saxe_logistic(spacing):
    s, u0 = 3.0, 1e-6
    model, task = _balanced_mode(s, u0)
    save = ss.Save(n=801, spacing=spacing, start=1e-4)
    traj = ss.simulate(model, task, t_max=8.0, rtol=1e-12, atol=1e-18, save=save, converge_tol=0.0)
    u = traj.observables["features"][:, 0]
    exact = s / (1 + (s / u0 - 1) * np.exp(-2 * s * traj.times))
    np.testing.assert_allclose(u, exact, rtol=1e-8)
    t = traj.times
    assert t[0] == 0.0 and t[-1] == pytest.approx(8.0, rel=1e-12)
    if spacing == "log":
        assert t[1] == pytest.approx(8e-4, rel=1e-12)
        np.testing.assert_allclose(t[2:] / t[1:-1], (1e4) ** (1 / 799), rtol=1e-10)
        np.testing.assert_allclose(traj.snapshot_times[1:], 8.0 * np.logspace(-4, 0, 20), rtol=1e-10)
    else:
        np.testing.assert_allclose(np.diff(t), 0.01, rtol=1e-9)


def test_a_log_grid_resolves_early_drops_that_a_far_horizon_hides():
    # Two modes at s = 4 and 2 drop near t = 2.2 and 4.3; a horizon at 2000 puts both in the
    # first interval of a uniform 201-point grid, but a log grid sees each drop and its feature.
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [4.0, 2.0])
    model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    near = ss.detect_steps(ss.simulate(model, task, t_max=30.0, rtol=1e-9, n_save=2001))
    far = ss.simulate(model, task, t_max=2000.0, rtol=1e-9, save=ss.Save(n=201, spacing="log", start=1e-4))
    steps = ss.detect_steps(far)
    assert [s.feature for s in steps] == [s.feature for s in near] == ["mode 1", "mode 2"]
    np.testing.assert_allclose([s.time for s in steps], [s.time for s in near], rtol=1e-4)
    between = (far.times > steps[0].time) & (far.times < steps[1].time)
    assert between.sum() >= 10
    uniform = ss.simulate(model, task, t_max=2000.0, rtol=1e-9, n_save=201)
    assert not ((uniform.times > steps[0].time) & (uniform.times < steps[1].time)).any()


def test_discrete_training_saves_on_a_log_grid_at_whole_steps():
    s, u0, lr = 3.0, 1e-6, 0.01
    model, task = _balanced_mode(s, u0)
    traj = ss.simulate(model, task, t_max=8.0, learning_rate=lr, save=ss.Save(n=101, spacing="log", start=1e-3),
                       converge_tol=0.0)
    # An independent GD loop on L = ½(s − w²)² for the balanced pair (w, w).
    w, losses = np.sqrt(u0), [0.5 * (s - u0) ** 2]
    for _ in range(800):
        w = w + lr * (s - w * w) * w
        losses.append(0.5 * (s - w * w) ** 2)
    t = traj.times[np.isfinite(traj.times)]
    k = np.rint(t / lr).astype(int)
    np.testing.assert_allclose(t, k * lr, rtol=1e-12)
    # Save j after ⌊800·f_j⌋ steps, f geometric from 10⁻³ to 1; repeated step counts saved once.
    f = np.exp(np.log(1e-3) * np.linspace(1.0, 0.0, 100))
    np.testing.assert_array_equal(k, np.unique(np.concatenate([[0], np.floor(800 * f + 1e-9)])))
    np.testing.assert_allclose(traj.loss[np.isfinite(traj.times)], np.asarray(losses)[k], rtol=1e-10)


@pytest.mark.parametrize(
    "make, alpha, t_max",
    [
        (lambda k, a: ss.TwoLayer(D, H, D, "linear", key=k, init_scale=a), 1e-3, 30.0),
        (lambda k, a: ss.DeepLinear([D, 8, 8, D], key=k, init_scale=a), 0.3, 40.0),
    ],
)
def test_conserved_quantities(task, make, alpha, t_max):
    model = make(jax.random.PRNGKey(3), alpha)
    traj = ss.simulate(model, task, t_max=t_max, rtol=1e-10, n_save=101)
    first = traj.snapshot(0)
    c0, c1 = model.conserved(), traj.final.conserved()
    scale = sum(float(jnp.sum(p**2)) for p in jax.tree.leaves(ss.models.parameters(traj.final)))
    assert scale > 1.0  # the run left the saddle, so the test is not vacuous
    drift = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(c0), jax.tree.leaves(c1)))
    assert drift / scale < 1e-8
    np.testing.assert_allclose(jax.tree.leaves(first.conserved())[0], jax.tree.leaves(c0)[0], atol=1e-300)


def test_diagonal_conserves_u2_minus_v2():
    task = ss.sparse_regression(jax.random.PRNGKey(0), 20, 8, [2.0, 0, -1.0, 0, 0, 0.5, 0, 0])
    model = ss.DiagonalLinear(8, init_scale=1e-3)
    traj = ss.simulate(model, task, t_max=60.0, rtol=1e-10, n_save=101)
    u, v = traj.final.u, traj.final.v
    drift = np.abs((u**2 - v**2) - 2e-6)
    assert np.max(np.abs(u * v)) > 0.4
    assert np.max(drift / (u**2 + v**2)) < 1e-8


def test_gd_converges_to_the_flow_linearly_in_learning_rate(task):
    model = jax.tree.map(lambda x: x[0], make_batch(1e-6, [5]))
    flow = mode_crossings(ss.simulate(model, task, t_max=30.0, rtol=1e-9, n_save=4001))
    errors = []
    for lr in (0.01, 0.005):
        gd = ss.simulate(model, task, t_max=30.0, learning_rate=lr, n_save=3001)
        assert gd.method == "gd" and gd.stats["steps"] > 0
        errors.append(mode_crossings(gd) - flow)
    ratio = errors[0] / errors[1]
    assert np.all(errors[0] > 0)  # GD lags: its growth rate is s(1 − ηs/2)
    np.testing.assert_allclose(ratio, 2.0, rtol=0.1)
    # The optax path is the same discrete map.
    sgd = ss.simulate(model, task, t_max=30.0, learning_rate=0.01, optimizer=optax.sgd(0.01), n_save=3001)
    np.testing.assert_allclose(mode_crossings(sgd), flow + errors[0], rtol=1e-9)


def test_batched_equals_single_runs(task):
    seeds = list(range(8))
    batch = make_batch(1e-6, seeds)
    traj = ss.simulate(batch, task, t_max=30.0, n_save=501)
    for i in range(len(seeds)):
        single = ss.simulate(jax.tree.map(lambda x: x[i], batch), task, t_max=30.0, n_save=501)
        assert traj.status[i] == single.status
        n = len(single.times)
        # A vmapped step is the same arithmetic in another kernel (batched dot products may round
        # differently), so a member can take another accept/reject path: runs agree to the
        # solver's accuracy, not bit for bit (rtol 1e-6: 3e-5 of the loss mid-drop, where it is
        # steepest; drop times to 1e-7).
        np.testing.assert_allclose(traj.loss[i][:n], single.loss, rtol=1e-4)
        np.testing.assert_allclose(mode_crossings(traj[i]), mode_crossings(single), rtol=1e-7)
        np.testing.assert_allclose(traj.times[i][:n], single.times, rtol=0)
        assert abs(int(traj.stats["steps"][i]) - single.stats["steps"]) <= 2
        # The solver-step record: one entry per accepted step, NaN padding of the batch removed.
        assert len(traj[i].step_times) == int(traj.stats["accepted"][i])


def test_steps_are_found_at_horizons_far_beyond_convergence(task):
    # Oracle: the drops read on a fine save grid of a run that ends at convergence (t ≈ 32).
    model = jax.tree.map(lambda x: x[0], make_batch(1e-6, [5]))
    fine = ss.simulate(model, task, t_max=40.0, rtol=1e-9, n_save=8001)
    assert fine.status == "converged"
    grid_only = lambda tr: dataclasses.replace(tr, step_times=None, step_loss=None)
    reference = ss.detect_steps(grid_only(fine))
    assert [s.feature for s in reference] == [f"mode {k + 1}" for k in range(len(S))]
    before = None
    for factor in (10, 1000):
        traj = ss.simulate(model, task, t_max=factor * fine.t_final, rtol=1e-9, n_save=201)
        if before is None:
            before = TRACE_COUNT["flow"]
        assert traj.status == "converged"
        steps = ss.detect_steps(traj)
        assert len(steps) == len(S)
        np.testing.assert_allclose([s.time for s in steps], [s.time for s in reference], rtol=1e-5)
        np.testing.assert_allclose([s.loss_after for s in steps[:-1]], [s.loss_after for s in reference[:-1]], rtol=1e-4)
        # The save grid alone (201 points over 1000× the run) sees none of it.
        if factor == 1000:
            assert len(ss.detect_steps(grid_only(traj))) < len(S)
    assert TRACE_COUNT["flow"] == before  # the horizon is not a static argument


@pytest.mark.parametrize("solver", ["implicit", "auto"])
def test_implicit_paths_record_solver_steps(solver):
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    fine = ss.simulate(model, task, t_max=20.0, rtol=1e-9, n_save=8001)
    reference = [s.time for s in ss.detect_steps(dataclasses.replace(fine, step_times=None, step_loss=None))]
    assert len(reference) == 2
    traj = ss.simulate(model, task, t_max=10_000.0, solver=solver, rtol=1e-8, n_save=201)
    assert traj.status == "converged" and np.all(np.diff(traj.step_times) > 0)
    np.testing.assert_allclose([s.time for s in ss.detect_steps(traj)], reference, rtol=1e-4)


def test_discrete_runs_detect_steps_on_the_save_grid():
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    flow = [s.time for s in ss.detect_steps(ss.simulate(model, task, t_max=20.0, rtol=1e-9))]
    for kw in (dict(), dict(optimizer=optax.sgd(0.005))):
        gd = ss.simulate(model, task, t_max=20.0, learning_rate=0.005, n_save=2001, **kw)
        assert gd.step_times is None
        times = [s.time for s in ss.detect_steps(gd)]
        # GD lags the flow by O(learning rate): its growth rate is s(1 − ηs/2).
        np.testing.assert_allclose(times, flow, rtol=1e-2)
        assert np.all(np.asarray(times) > flow)


def test_no_recompilation_across_seed_scale_horizon_tolerance(task):
    def run(seed, alpha, t_max, rtol, atol=None):
        m = ss.TwoLayer(D, H, D, "linear", key=jax.random.PRNGKey(seed), init_scale=alpha)
        return ss.simulate(m, task, t_max=t_max, rtol=rtol, atol=atol, n_save=333)

    run(0, 1e-6, 30.0, 1e-6)
    before = TRACE_COUNT["flow"]
    run(1, 1e-6, 30.0, 1e-6)
    run(2, 1e-9, 30.0, 1e-6)
    run(3, 1e-4, 45.0, 1e-6)
    run(4, 1e-4, 45.0, 1e-7, atol=1e-12)
    assert TRACE_COUNT["flow"] == before
    gd = lambda lr, tm: ss.simulate(run.__defaults__ and ss.TwoLayer(D, H, D, "linear", key=jax.random.PRNGKey(0),
                                                                     init_scale=1e-3),
                                    task, t_max=tm, learning_rate=lr, n_save=333)
    gd(0.01, 5.0)
    before = TRACE_COUNT["discrete"]
    gd(0.02, 7.0)
    assert TRACE_COUNT["discrete"] == before
    log = lambda seed, start: ss.simulate(ss.TwoLayer(D, H, D, "linear", key=jax.random.PRNGKey(seed), init_scale=1e-3),
                                          task, t_max=30.0, save=ss.Save(n=333, spacing="log", start=start))
    log(0, 1e-3)
    before = TRACE_COUNT["flow"]
    log(1, 1e-5)
    assert TRACE_COUNT["flow"] == before


def test_step_budget_and_divergence_are_reported(task):
    model = ss.TwoLayer(D, H, D, "linear", key=jax.random.PRNGKey(0), init_scale=1e-6)
    with pytest.warns(StepBudgetWarning, match=r"max_steps: the solver used its whole step budget \(20 steps\) at t = "):
        short = ss.simulate(model, task, t_max=30.0, max_steps=20)
    assert short.status == "max_steps"
    assert 0 < short.t_final < 30.0
    # In an ensemble the warning counts the members the budget stopped.
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    pair = eqx.filter_vmap(lambda k: ss.TwoLayer(D, H, D, "linear", key=k, init_scale=1e-6))(keys)
    with pytest.warns(StepBudgetWarning, match="max_steps: 2 of 2 members: "):
        both = ss.simulate(pair, task, t_max=30.0, max_steps=20)
    assert list(both.status) == ["max_steps", "max_steps"]
    big = ss.TwoLayer(D, H, D, "linear", key=jax.random.PRNGKey(0), init_scale=0.5)
    blown = ss.simulate(big, task, t_max=30.0, learning_rate=0.5)
    assert blown.status == "diverged"
    assert blown.t_final < 30.0
    done = ss.simulate(model, task, t_max=60.0)
    assert done.status == "converged" and done.t_final < 60.0
    assert ss.simulate(model, task, t_max=3.0).status == "t_max"


def test_bad_simulate_arguments(task):
    model = ss.TwoLayer(D, H, D, "linear", key=jax.random.PRNGKey(0), init_scale=1e-6)
    with pytest.raises(ValueError, match="t_max"):
        ss.simulate(model, task, t_max=0.0)
    with pytest.raises(ValueError, match="t_max"):
        ss.simulate(model, task, t_max=float("nan"))
    with pytest.raises(ValueError, match="rtol"):
        ss.simulate(model, task, t_max=1.0, rtol=-1.0)
    with pytest.raises(ValueError, match=r"rtol: expected a relative tolerance in \(0, 1\)"):
        ss.simulate(model, task, t_max=1.0, rtol=2.0)
    with pytest.raises(ValueError, match="model"):
        ss.simulate(ss.TwoLayer(3, H, D, "linear", key=jax.random.PRNGKey(0)), task, t_max=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        ss.simulate(model, task, t_max=1.0, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="save: expected spacing 'linear' or 'log'"):
        ss.Save(spacing="geometric")
    for start in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="save: expected 0 < start < 1"):
            ss.simulate(model, task, t_max=1.0, save_spacing="log", save_start=start)


# ---------------------------------------------------------------- methods as objects
def _small():
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    return ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4), task


def test_method_objects_agree_with_the_older_keywords():
    from saddlestep.methods import Discrete, Explicit, METHODS
    from saddlestep.presets.base import SOLVERS

    model, task = _small()
    kw = dict(t_max=30.0, n_save=201)
    default = ss.simulate(model, task, **kw)
    obj = ss.simulate(model, task, method=Explicit(), **kw)
    np.testing.assert_array_equal(obj.loss, default.loss)
    assert obj.method == default.method == "Tsit5" and obj.label == "Tsit5"
    assert obj.phases == [{"solver": "Tsit5", "t_start": 0.0, "t_end": obj.t_final, "steps": obj.stats["steps"]}]
    short = ss.simulate(model, task, method=Explicit(max_steps=20), **kw)
    assert short.status == "max_steps" == ss.simulate(model, task, max_steps=20, **kw).status
    gd = ss.simulate(model, task, method=Discrete(0.01), **kw)
    old = ss.simulate(model, task, learning_rate=0.01, **kw)
    np.testing.assert_array_equal(gd.loss, old.loss)
    assert gd.method == "gd" and gd.label == "gd, lr 0.01"
    # Full-batch SGD by name is the same discrete map; `--set solver=` names one table.
    np.testing.assert_allclose(ss.simulate(model, task, method=Discrete(0.01, "sgd"), **kw).loss, gd.loss, rtol=1e-12)
    assert tuple(METHODS) == SOLVERS
    with pytest.raises(ValueError, match="optimizer"):
        Discrete(0.01, "rmsprop")
    with pytest.raises(ValueError, match="method"):
        ss.simulate(model, task, method=object(), **kw)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ss.simulate(model, task, tmax=3.0, **kw)


def test_save_and_stop_agree_with_the_flat_keywords():
    model, task = _small()
    new = ss.simulate(model, task, t_max=60.0, save=ss.Save(n=101, snapshots=3, observables=lambda m: {"a": m.a}),
                      stop=ss.Stop(converge_tol=1e-3, loss_floor=0.0))
    old = ss.simulate(model, task, t_max=60.0, n_save=101, n_snapshots=3, observables=lambda m: {"a": m.a},
                      converge_tol=1e-3, loss_floor=0.0)
    np.testing.assert_array_equal(new.loss, old.loss)
    np.testing.assert_array_equal(new.observables["a"], old.observables["a"])
    assert len(new.snapshot_times) == 3 and new.t_final < 60.0  # stopped at the tolerance, before t_max
    assert new.status == "converged"
    with pytest.raises(ValueError, match="save: give either"):
        ss.simulate(model, task, t_max=1.0, save=ss.Save(), n_save=11)
    with pytest.raises(ValueError, match="save: expected n ≥ 3"):
        ss.Save(n=2)
    with pytest.raises(ValueError, match="stop: expected a saddlestep.Stop"):
        ss.simulate(model, task, t_max=1.0, stop=1e-3)
    with pytest.raises(ValueError, match="stop: expected converge_tol"):
        ss.Stop(converge_tol=-1.0)


def test_adam_by_name_is_optax_adam_and_labelled_by_name():
    from saddlestep.methods import Discrete

    model, task = _small()
    kw = dict(t_max=3.0, n_save=101)
    mine = ss.simulate(model, task, method=Discrete(1e-3, "adam"), **kw)
    ref = ss.simulate(model, task, method=Discrete(1e-3, optax.adam(1e-3)), **kw)
    np.testing.assert_allclose(mine.loss, ref.loss, rtol=1e-9)
    assert mine.label == "adam, lr 1e-3" and ref.method == "optax"
    assert ss.simulate(model, task, method=Discrete(1e-3, optax.adam(1e-3), name="adam"), **kw).label == "adam, lr 1e-3"
    # The step size of a named optimizer is traced: a new learning rate reuses the compilation.
    before = TRACE_COUNT["discrete"]
    ss.simulate(model, task, method=Discrete(2e-3, "adam"), **kw)
    assert TRACE_COUNT["discrete"] == before


def test_method_objects_compile_once_across_seeds_scales_and_tolerances():
    from saddlestep._integrate import CORES
    from saddlestep.methods import Explicit

    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    norms = lambda m: {"norms": m.neuron_norms()}

    def run(seed, alpha, rtol):
        model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(seed), init_scale=alpha)
        return ss.simulate(model, task, t_max=20.0, method=Explicit(), rtol=rtol, n_save=57, observables=norms)

    run(0, 1e-4, 1e-6)
    before = eqx.debug.get_num_traces(CORES["flow"])
    run(1, 1e-4, 1e-6)
    run(2, 1e-7, 1e-6)
    run(3, 1e-3, 1e-8)
    assert eqx.debug.get_num_traces(CORES["flow"]) == before == TRACE_COUNT["flow"]


def test_status_enumeration_names_the_file_statuses():
    from saddlestep.flow import RESULTS
    from saddlestep.trajectory import STATUSES

    assert tuple(RESULTS._name_to_item) == STATUSES
    assert ss.DiagonalLinear.precision_floor == 1e-8 and ss.TwoLayer.precision_floor == 1e-12


def test_presets_train_discretely_on_request():
    from saddlestep.runs import prepare

    small = {"d": "8", "width": "8"}
    _, params, setup, _, _ = prepare("linear", overrides={**small, "optimizer": "adam", "learning_rate": "1e-2"})
    assert setup.simulate_kwargs["method"] == ss.Discrete(0.01, "adam") and params["optimizer"] == "adam"
    _, params, plain, _, _ = prepare("linear", overrides=small)
    # Without an optimizer the preset integrates the flow with its solver, not a Discrete method.
    assert plain.simulate_kwargs["method"] == params["solver"] == "explicit" and "optimizer" not in params
    result = ss.run_preset("linear", overrides={**small, "learning_rate": "0.02"})
    assert result.summary["solver"]["name"] == "gd" and result.trajectory.label == "gd, lr 0.02"
    assert result.summary["solver"]["phases"][0]["solver"] == "gd"
    for bad, match in (({"optimizer": "adam"}, "learning_rate"), ({"optimizer": "lion", "learning_rate": "1"}, "optimizer"),
                       ({"learning_rate": "-1"}, "learning_rate")):
        with pytest.raises(ValueError, match=match):
            prepare("linear", overrides={**small, **bad})


def test_a_loss_floor_is_checked_and_one_above_the_infimum_is_named():
    # Teacher s = 3, 1.5, 0.75: its loss's infimum is 0. A floor of 0.05 ends the run where the
    # loss crosses it, in the middle of the s = 0.75 drop (L 0.28 → 0), as "converged".
    import warnings

    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 4, [3.0, 1.5, 0.75])
    model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    start = float(task.loss(model))
    with pytest.raises(ValueError, match=r"^stop: expected a finite loss_floor"):
        ss.Stop(loss_floor=float("nan"))
    with pytest.raises(ValueError, match=rf"^stop: expected loss_floor below the initial loss L\(0\) = {start:.6g}, got 100"):
        ss.simulate(model, task, t_max=25.0, stop=ss.Stop(loss_floor=100.0))
    with pytest.warns(UserWarning, match=r"^stop: the run ended as converged at the loss_floor 0.05 while the loss was still falling"):
        cut = ss.simulate(model, task, t_max=25.0, stop=ss.Stop(loss_floor=0.05))
    assert cut.status == "converged" and cut.t_final < 20.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = ss.simulate(model, task, t_max=25.0, stop=ss.Stop(loss_floor=0.0))  # the infimum: at rest
    assert exact.status == "converged" and exact.t_final > cut.t_final
    batch = eqx.filter_vmap(lambda k: ss.TwoLayer(4, 4, 4, "linear", key=k, init_scale=1e-4))(
        jax.vmap(jax.random.PRNGKey)(jnp.arange(3)))
    with pytest.warns(UserWarning, match=r"^stop: 3 of 3 members: the run ended as converged"):
        ss.simulate(batch, task, t_max=25.0, stop=ss.Stop(loss_floor=0.05))


def test_discrete_training_never_passes_t_max_and_is_plain_gd():
    # η = 0.3 does not divide t_max = 1: three whole steps (t = 0.9), not four (t = 1.2); each is
    # θ ← θ − η∇L, checked against a NumPy oracle of the two-layer linear network's gradient.
    from saddlestep.methods import Discrete

    model, task = _small()
    model = eqx.tree_at(lambda m: m.init_scale, model, 0.5)
    W, a = (np.asarray(model.W), np.asarray(model.a))  # f(x) = a (W x)
    gd = ss.simulate(model, task, t_max=1.0, method=Discrete(0.3), n_save=4, n_snapshots=2)
    np.testing.assert_allclose(gd.times, [0.0, 0.3, 0.6, 0.9], atol=1e-15)
    assert gd.t_final == pytest.approx(0.9, abs=1e-12) and gd.t_final <= 1.0
    C, T = np.asarray(task.sqrt_cov), np.asarray(task.target)
    for _ in range(3):  # L = ½‖aW C − T‖² + L_min, C symmetric: ∇_β L = (βC − T)C
        E = (a @ W @ C - T) @ C
        W, a = W - 0.3 * a.T @ E, a - 0.3 * E @ W.T
    np.testing.assert_allclose(np.asarray(gd.final.W), W, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(gd.final.a), a, rtol=1e-12, atol=1e-15)


def test_observables_that_are_not_arrays_are_named():
    model, task = _small()
    with pytest.raises(ValueError, match=r"^observables: expected a function returning arrays"):
        ss.simulate(model, task, t_max=1.0, save=ss.Save(observables=lambda m: {"s": "abc"}))
