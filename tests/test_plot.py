"""Plots, checked by what they draw: axis scales, labels, ranges, number of lines and colours."""

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.special import expit

import saddlestep as ss
from saddlestep import plot
from saddlestep.models import AbstractNeuronModel, TwoLayer


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def staircase_run(alpha=1e-3, *, t_end=100.0, levels=(1.0, 0.3, 0.05, 0.01), times=(5.0, 10.0, 15.0),
                  shift=0.0, n=2001, noise=0.0, final=None):
    """A hand-built trajectory: plateaus at `levels` (+ `shift`), drops at `times`; a long record
    (`t_end` > 100) is sampled finely up to t = 30 and coarsely after."""
    t = np.linspace(0.0, t_end, n) if t_end <= 100 else np.concatenate([np.linspace(0, 30, 601), np.linspace(30, t_end, n)[1:]])
    L = levels[-1] + shift + sum((levels[k] - levels[k + 1]) * expit(-(t - times[k]) / 0.3) for k in range(len(times)))
    L = L + noise * np.random.default_rng(0).standard_normal(t.shape)
    return ss.Trajectory(times=t, loss=L, observables={}, init_scale=alpha, status="t_max", t_final=t_end,
                         stats={}, method="test", final=final)


def batch(runs):
    """Stack single hand-built trajectories into one batched trajectory."""
    return ss.Trajectory(times=np.stack([r.times for r in runs]), loss=np.stack([r.loss for r in runs]),
                         observables={}, init_scale=np.array([r.init_scale for r in runs]),
                         status=[r.status for r in runs], t_final=np.array([r.t_final for r in runs]),
                         stats={}, method="test")


def curves(ax):
    """The loss curves of a panel (lines with more than a handful of points, not the markers)."""
    return [ln for ln in ax.lines if len(ln.get_xdata()) > 10 and ln.get_linestyle() == "-"]


def colours(lines):
    return {matplotlib.colors.to_hex(ln.get_color()) for ln in lines}


# ------------------------------------------------------------------------------ loss axis
def test_positive_staircase_on_a_log_loss_axis():
    fig = plot.staircase(staircase_run())
    for ax in fig.axes:
        assert ax.get_yscale() == "log"
        assert ax.get_ylabel() == "loss"


def test_negative_loss_is_drawn_as_loss_minus_minimum_on_a_log_axis():
    fig = plot.staircase(staircase_run(shift=-2.0))  # plateaus at −1, −1.7, −1.95, −1.99
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert "L_ref" in ax.get_ylabel()
    y = curves(ax)[0].get_ydata()
    assert np.all(np.isfinite(y)) and np.all(y > 0)
    # The end of the run, its own minimum, stays on its plateau instead of diving to the floor.
    assert y[-1] > 0.5 * y[-50]
    assert y.max() / y.min() > 10  # the staircase spans decades, not a blank axis
    lo, hi = ax.get_ylim()
    assert lo > 0 and lo <= y.min() * 1.0001 and hi >= y.max()


def test_loss_converging_to_zero_with_rounding_stays_a_plain_log_axis():
    run = staircase_run(levels=(1.0, 0.3, 0.05, 0.0))
    run.loss[-1] = -1e-16  # ½tr Σyy − … rounds below zero
    ax = plot.staircase(run).axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss"
    assert ax.get_ylim()[0] == pytest.approx(1e-2 * 0.05, rel=1e-3)  # a little below the last plateau


def test_narrow_positive_loss_is_drawn_on_a_linear_axis():
    fig = plot.staircase(staircase_run(levels=(2.0, 1.8, 1.6, 1.5)))
    assert fig.axes[0].get_yscale() == "linear"
    assert plot.staircase(staircase_run(levels=(2.0, 1.8, 1.6, 1.5)), yscale="log").axes[0].get_yscale() == "log"


def test_yscale_can_be_forced_and_is_checked():
    assert plot.staircase(staircase_run(), yscale="linear").axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="yscale"):
        plot.staircase(staircase_run(), yscale="symlog")


def test_prediction_is_overlaid_on_the_shifted_axis():
    pred = ss.Prediction("agf", [5.0, 10.0, 15.0], np.array([5.0, 10.0, 15.0]) / np.log(1e3),
                         [-1.7, -1.95, -1.99], ["a", "b", "c"], initial_loss=-1.0, init_scale=1e-3)
    fig = plot.staircase(staircase_run(shift=-2.0), pred, time="t")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label().startswith("prediction")]
    assert np.all(line.get_ydata() > 0)


# ------------------------------------------------------------------------------ time axis
def test_draws_into_a_given_axes_and_returns_its_figure():
    fig, (a, b) = plt.subplots(1, 2)
    out = plot.staircase(staircase_run(), ax=b, time="t")
    assert out is fig
    assert len(curves(b)) == 1 and not a.lines
    assert b.get_xlabel() == "time t"


@pytest.mark.parametrize("time,xscale,label", [("t", "linear", "time t"), ("log", "log", "log"),
                                               ("rescaled", "linear", "ln(1/α)")])
def test_time_axis_choices(time, xscale, label):
    fig = plot.staircase(staircase_run(alpha=1e-4), time=time)
    (ax,) = fig.axes
    assert ax.get_xscale() == xscale
    assert label in ax.get_xlabel()
    x = curves(ax)[0].get_xdata()
    if time == "rescaled":
        np.testing.assert_allclose(x.max(), 100.0 / np.log(1e4))
    if time == "log":
        assert x.min() > 0


def test_degree_three_neurons_rescale_by_alpha():
    model = TwoLayer(3, 4, 1, "quadratic", key=jax.random.PRNGKey(0), init_scale=1e-2)
    fig = plot.staircase(staircase_run(alpha=1e-2, final=model), time="rescaled")
    ax = fig.axes[0]
    assert "t·α" in ax.get_xlabel() and "κ = 3" in ax.get_xlabel()
    np.testing.assert_allclose(curves(ax)[0].get_xdata().max(), 100.0 * 1e-2)


def test_bad_time_is_refused():
    with pytest.raises(ValueError, match="time"):
        plot.staircase(staircase_run(), time="seconds")


def test_right_panel_is_log_time_for_one_alpha_and_rescaled_for_several():
    one = plot.staircase(staircase_run())
    assert one.axes[0].get_xlabel() == "time t" and one.axes[1].get_xscale() == "log"
    several = plot.staircase([staircase_run(1e-3), staircase_run(1e-6, times=(10.0, 20.0, 30.0))])
    assert "ln(1/α)" in several.axes[1].get_xlabel() and several.axes[1].get_xscale() == "linear"
    # In rescaled time the two runs' drops collapse: steps at t = 5·ln(1e3)/ln(1e3)… both end at the same τ.
    ends = [ln.get_xdata()[-1] for ln in curves(several.axes[1])]
    np.testing.assert_allclose(ends, [100.0 / np.log(1e3), 100.0 / np.log(1e6)])


def test_short_staircase_in_a_long_noisy_record_gets_a_framed_time_range():
    run = staircase_run(t_end=2000.0, n=400, noise=1e-4)  # drops at 5, 10, 15: under 1% of the record
    ax = plot.staircase(run, time="t").axes[0]
    left, right = ax.get_xlim()
    assert left == 0.0 and 15.0 < right < 200.0
    ax = plot.staircase(run, time="log").axes[0]
    left, right = ax.get_xlim()
    assert 15.0 < right < 200.0 and 0.0 < left <= 0.5  # a decade of the first plateau (drop at t = 5)


def test_staircase_that_fills_the_record_keeps_it_and_xlim_is_respected():
    ax = plot.staircase(staircase_run(t_end=20.0, n=401), time="t").axes[0]
    assert ax.get_xlim()[1] >= 20.0
    ax = plot.staircase(staircase_run(), time="t", xlim=(2.0, 30.0)).axes[0]
    assert ax.get_xlim() == (2.0, 30.0)


# ------------------------------------------------------------------------------ colours
def test_list_over_alpha_is_coloured_by_alpha_with_one_legend_entry_each():
    runs = [staircase_run(a) for a in (1e-2, 1e-4, 1e-6)]
    fig = plot.staircase(runs, time="rescaled")
    ax = fig.axes[0]
    assert len(curves(ax)) == 3 and len(colours(curves(ax))) == 3
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 3 and all("α=" in t for t in texts)


def test_batch_over_many_alpha_gets_a_colour_bar():
    alphas = np.logspace(-2, -12, 12)
    fig = plot.staircase(batch([staircase_run(a) for a in alphas]))
    panels = fig.axes[:2]
    assert len(fig.axes) == 3 and "α" in fig.axes[2].get_ylabel()  # the colour bar
    for ax in panels:
        assert len(curves(ax)) == 12 and len(colours(curves(ax))) == 12


def test_batch_over_seeds_at_one_alpha_is_coloured_by_member():
    runs = [staircase_run(1e-3, times=(5.0 + k, 10.0 + k, 15.0 + k)) for k in range(4)]
    fig = plot.staircase(batch(runs), time="t")
    ax = fig.axes[0]
    assert len(colours(curves(ax))) == 4
    assert len(ax.get_legend().get_texts()) == 4


def test_several_runs_of_one_alpha_keep_their_labels():
    fig = plot.staircase([staircase_run(), staircase_run(levels=(1.0, 0.5, 0.1, 0.02))], labels=["flow", "gd"])
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["flow", "gd"]
    assert len(colours(curves(fig.axes[0]))) == 2


# ------------------------------------------------------------------------------ features
class Cubes(AbstractNeuronModel):
    """A custom neuron model with no teacher and no task-specific observables: f(x) = Σ_i a_i (w_i·x)²."""

    w: jax.Array
    a: jax.Array
    init_scale: jax.Array

    @property
    def kappa(self):
        return 3

    def neurons(self):
        return {"w": self.w, "a": self.a}

    def neuron_outputs(self, neurons, x):
        return (neurons["a"] * (neurons["w"] @ x) ** 2)[:, None]

    def with_neurons(self, neurons):
        return eqx.tree_at(lambda m: (m.w, m.a), self, (neurons["w"], neurons["a"]))


def neuron_run(models, times):
    """A trajectory holding snapshots of `models` at `times` (no observables)."""
    snaps = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
    t = np.linspace(0.0, times[-1], 50)
    return ss.Trajectory(times=t, loss=np.exp(-t), observables={}, init_scale=1e-3, status="t_max",
                         t_final=float(times[-1]), stats={}, method="test", snapshot_times=np.asarray(times),
                         snapshots=snaps, final=models[-1])


def test_features_of_a_custom_neuron_model_plot_per_neuron_norms():
    scales = [1e-3, 1e-2, 1e-1, 1.0]
    models = [Cubes(w=s * jnp.ones((5, 2)), a=s * jnp.arange(1.0, 6.0), init_scale=jnp.asarray(1e-3)) for s in scales]
    fig = plot.features(neuron_run(models, [0.0, 1.0, 2.0, 3.0]), time="t")
    ax = fig.axes[0]
    assert len(ax.lines) == 5  # one line per neuron
    assert ax.get_yscale() == "log" and "norm" in ax.get_ylabel()
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.sqrt(2 + 1) * np.asarray(scales))


def test_features_of_two_layer_snapshots_into_a_given_axes():
    models = [TwoLayer(3, 6, 1, "relu", key=jax.random.PRNGKey(0), init_scale=s) for s in (1e-3, 1e-2, 1e-1)]
    fig, ax = plt.subplots()
    assert plot.features(neuron_run(models, [0.0, 1.0, 2.0]), ax=ax) is fig
    assert len(ax.lines) == 6 and "ln(1/α)" in ax.get_xlabel()


def test_features_names_an_observable_or_explains():
    run = staircase_run()
    run.observables = {"sv2": np.stack([run.loss, 2 * run.loss], axis=1)}
    ax = plot.features(run, what="sv2").axes[0]
    assert len(ax.lines) == 2 and ax.get_ylabel() == "sv2"
    assert len(plot.features(run).axes[0].lines) == 2  # auto: the only observable
    with pytest.raises(ValueError, match="'norms', 'sv2'"):
        plot.features(run, what="overlap")
    with pytest.raises(ValueError, match="norms"):
        plot.features(run, what="norms")


def test_simulated_ensemble_over_alpha_and_its_neuron_norms():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 3))
    task = ss.SampleRegression(X, X @ np.array([2.0, 1.0, 0.0]))
    models = eqx.filter_vmap(lambda a: ss.DiagonalLinear(3, key=jax.random.PRNGKey(0), init_scale=a))(
        jnp.array([1e-2, 1e-4, 1e-6]))
    traj = ss.simulate(models, task, t_max=40.0, n_save=401)
    fig = plot.staircase(traj)
    assert "ln(1/α)" in fig.axes[1].get_xlabel()  # several α: the right panel is rescaled time
    assert len(colours(curves(fig.axes[1]))) == 3
    assert len(fig.axes[1].get_legend().get_texts()) == 3
    member = traj[1]
    member.observables = {}  # as for a task with no features observable
    ax = plot.features(member).axes[0]
    assert len(ax.lines) == 3 and "norm" in ax.get_ylabel()


def test_prediction_with_an_unknown_time_draws_the_known_steps():
    pred = ss.Prediction("closed-form:x", [5.0, np.nan, 15.0], [0.7, np.nan, 2.2], [0.3, 0.05, 0.01], ["a", "b", "c"],
                         initial_loss=1.0, init_scale=1e-3)
    ax = plot.staircase(staircase_run(), pred, time="t").axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label().startswith("prediction")]
    assert np.all(np.isfinite(line.get_xdata())) and len(line.get_xdata()) == 6


def test_prediction_on_log_time_starts_inside_the_axis():
    pred = ss.Prediction("agf", [5.0, 10.0, 15.0], np.array([5.0, 10.0, 15.0]) / np.log(1e3), [0.3, 0.05, 0.01],
                         ["a", "b", "c"], initial_loss=1.0, init_scale=1e-3)
    ax = plot.staircase(staircase_run(), pred, time="log").axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label().startswith("prediction")]
    x = line.get_xdata()
    assert np.all(x > 0) and x[0] >= ax.get_xlim()[0]


def test_init_scale_of_one_is_not_rescaled_and_says_so():
    ax = plot.staircase(staircase_run(alpha=1.0), time="rescaled").axes[0]
    assert "not rescaled" in ax.get_xlabel()
    np.testing.assert_allclose(curves(ax)[0].get_xdata().max(), 100.0)


def test_discrete_training_is_labelled_by_its_optimizer_and_rate():
    import jax

    import saddlestep as ss

    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 3, 3, [2.0])
    model = ss.TwoLayer(3, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-3)
    adam = ss.simulate(model, task, t_max=5.0, method=ss.Discrete(1e-3, "adam"), n_save=20)
    fig = ss.plot.staircase(adam)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any(label.startswith("adam, lr 1e-3") for label in labels), labels


def test_the_curve_is_drawn_from_the_solver_steps_where_the_save_grid_is_coarse():
    # Drops far faster than a coarse save grid (two points in the first 0.1 of 10): the solver's
    # own steps carry them, and the plot draws (and frames) what the solver saw.
    fine = np.geomspace(1e-5, 10.0, 400)
    drop = lambda t: 0.1 + 2.0 * expit(-(np.log(t) - np.log(1e-3)) / 0.3)
    grid = np.linspace(0.0, 10.0, 11)
    traj = ss.Trajectory(times=grid, loss=drop(np.maximum(grid, 1e-12)), observables={}, init_scale=1e-5,
                         status="converged", t_final=10.0, stats={}, method="test", step_times=fine,
                         step_loss=drop(fine))
    fig = plot.staircase(traj, time="log")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label().startswith("flow")]
    assert len(line.get_xdata()) > 300  # the steps, not the 10 positive grid points
    assert ax.get_xlim()[0] < 1e-3  # the drop at t = 1e-3 is in view


def test_overlay_of_another_alpha_or_another_problem_is_named():
    # A prediction made at α = 1e-4 drawn over a run at 1e-3 on physical time puts its jumps at
    # 1e-4's times (ln(1e4)/ln(1e3) later); on the rescaled axis it is where it belongs. A
    # prediction whose features the run never names is another problem's.
    import warnings

    tau = np.array([5.0, 10.0, 15.0]) / np.log(1e3)
    run = staircase_run()
    at = lambda alpha, names=("a", "b", "c"): ss.Prediction.from_rescaled(
        "agf", tau, [0.3, 0.05, 0.01], list(names), init_scale=alpha, initial_loss=1.0)
    with pytest.warns(UserWarning, match=r"α = 0\.0001 and the runs are at α = 0\.001: on the 't' time axis"):
        plot.staircase(run, at(1e-4), time="t")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot.staircase(run, at(1e-4), time="rescaled")
        plot.staircase(run, at(1e-3))
        plot.staircase([run, staircase_run(alpha=1e-4)], at(1e-4))  # one of the runs is at its α
    t = run.times
    feats = np.stack([expit((t - tk) / 0.3) for tk in (5.0, 10.0, 15.0)], axis=1)
    named = ss.Trajectory(times=t, loss=run.loss, observables={"features": feats}, init_scale=1e-3,
                          status="t_max", t_final=100.0, stats={}, method="test", feature_labels=["x", "y", "z"])
    assert [s.feature for s in ss.detect_steps(named)] == ["x", "y", "z"]
    with pytest.warns(UserWarning, match=r"share no name: is the overlay a prediction of this problem"):
        plot.staircase(named, at(1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot.staircase(named, at(1e-3, ("x", "y", "z")))


def test_a_prediction_read_from_its_file_is_drawn_from_the_flows_first_plateau(tmp_path):
    # prediction.json keeps no first plateau (initial_loss NaN once read); the dashed staircase
    # starts on the flow's, as compare pairs it, instead of a gap.
    pred = ss.Prediction("agf", [5.0, 10.0, 15.0], np.array([5.0, 10.0, 15.0]) / np.log(1e3), [0.3, 0.05, 0.01],
                         ["a", "b", "c"], initial_loss=1.0, init_scale=1e-3)
    (tmp_path / "prediction.json").write_text(pred.dumps())
    back = ss.Prediction.load(str(tmp_path))
    assert np.isnan(back.initial_loss)
    ax = plot.staircase(staircase_run(), back, time="t").axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label().startswith("prediction")]
    y = np.asarray(line.get_ydata())
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[:2], ss.detect_steps(staircase_run())[0].loss_before, rtol=1e-12)
