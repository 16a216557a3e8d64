import math
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import saddlestep as ss
from saddlestep import theory

from _agf_cases import r1_task, r3_task, ten_by_ten


def _setup(model, task, t_max, rtol):
    return types.SimpleNamespace(
        model=model, task=task, t_max=t_max, predict=None,
        simulate_kwargs={"rtol": rtol, "n_save": 4001, "max_steps": 400_000},
    )


def test_diagonal_r1_slopes(tmp_path):
    # Parameter-space flow keeps α ≥ 1e-6 (reference §5.1(b)).
    task = r1_task()
    pf = theory.pesme_flammarion(task)
    make = lambda a: _setup(ss.DiagonalLinear(2, init_scale=a), task, 3.7 * np.log(1 / a) + 10, 1e-10)
    df = ss.converge(make, [1e-4, 1e-5, 1e-6], prediction=pf, figure=str(tmp_path / "r1.png"))
    slopes = df.groupby("step")["slope"].first().to_numpy()
    np.testing.assert_allclose(slopes, pf.rescaled_times, rtol=0.01)
    assert (tmp_path / "r1.png").exists()


def test_linear_r3_slopes():
    task = r3_task()
    cf = theory.linear_network(task)

    def make(a):
        model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(1), init_scale=a)
        return _setup(model, task, 2.3 * np.log(1 / a) + 10, 1e-9)

    df = ss.converge(make, [1e-6, 1e-9, 1e-12], prediction=cf)
    slopes = df.groupby("step")["slope"].first().to_numpy()
    np.testing.assert_allclose(slopes, cf.rescaled_times, rtol=0.005)
    # Single-α ratios are off by O(1/ln(1/α)), and shrink toward 1.
    ratio = df.pivot(index="init_scale", columns="step", values="ratio")
    assert np.all(np.abs(ratio.loc[1e-12] - 1) < np.abs(ratio.loc[1e-6] - 1))
    # Its times are the crossings `detect_steps` times (the plateaus' midpoints; the predicted
    # plateaus are the flow's here), so convergence.csv and steps.csv agree at one α.
    setup = make(1e-6)
    steps = ss.detect_steps(ss.simulate(setup.model, setup.task, t_max=setup.t_max, rtol=1e-9))
    np.testing.assert_allclose(df[df["init_scale"] == 1e-6]["time"], [s.time for s in steps], rtol=1e-3)


def _ten_by_ten_slopes(commuting):
    """The 10×10 flow's first five steps over α = 1e-6 … 1e-12 against the closed form."""
    task = ten_by_ten(commuting=commuting)
    cf = theory.linear_network(task, num_steps=5)

    def make(a):
        model = ss.TwoLayer(10, 10, 10, "linear", key=jax.random.PRNGKey(1), init_scale=a)
        return _setup(model, task, 1.12 * cf.rescaled_times[-1] * np.log(1 / a) + 20, 1e-9)

    df = ss.converge(make, [1e-6, 1e-9, 1e-12], prediction=cf)
    return df, df.groupby("step")["slope"].first().to_numpy(), cf


def test_linear_commuting_slopes():
    _, slopes, cf = _ten_by_ten_slopes(commuting=True)
    np.testing.assert_allclose(slopes, cf.rescaled_times, rtol=0.005)


def test_converge_figure_and_bad_input():
    task = r1_task()
    make = lambda a: _setup(ss.DiagonalLinear(2, init_scale=a), task, 1.0, 1e-6)
    with pytest.raises(ValueError, match="init_scales"):
        ss.converge(make, [1e-3])
    with pytest.raises(ValueError, match="init_scales"):
        ss.converge(make, [1e-3, 1e-3])
    with pytest.raises(ValueError, match="init_scales"):
        ss.converge(make, [1e-3, 2.0])
    with pytest.raises(ValueError, match="make_setup"):
        ss.converge(None, [1e-3, 1e-4])
    with pytest.raises(ValueError, match="make_setup"):
        ss.converge(lambda a: object(), [1e-3, 1e-4])
    import pandas as pd

    df = pd.DataFrame({
        "step": [1, 1], "feature": ["β[0]"] * 2, "init_scale": [1e-3, 1e-6],
        "log_inv": np.log([1e3, 1e6]), "rescaled_time": [0.25, 0.22], "predicted": [0.19, 0.19],
    })
    fig = ss.convergence_figure(df)
    assert isinstance(fig, matplotlib.figure.Figure)


def test_linear_noncommuting_slopes():
    # Σxx does not commute with Σyx. Steps 1–2 follow Conjecture 4.1 (= AGF's α → 0 limit) to
    # 0.3%. Step 3's slope is 7% high over α = 1e-6 … 1e-12 and still falling (pairwise 2.328,
    # 2.267 against 2.141): the flow carries a c·ln ln(1/α) term that AGF, finite α included,
    # does not have; a fit τ + c/ln(1/α) to the pairwise slopes gives τ = 2.11, c = 3.7. Float64
    # flows cannot go below α ≈ 1e-12 to settle it, so later steps are held only loosely.
    df, slopes, cf = _ten_by_ten_slopes(commuting=False)
    np.testing.assert_allclose(slopes[:2], cf.rescaled_times[:2], rtol=0.005)
    np.testing.assert_allclose(slopes[2:], cf.rescaled_times[2:], rtol=0.1)
    t3 = df[df.step == 3].sort_values("log_inv")
    pairwise = np.diff(t3["time"]) / np.diff(t3["log_inv"])
    assert pairwise[1] < pairwise[0]  # falling toward the conjecture


def test_degree_three_slopes_are_taken_against_one_over_alpha(tmp_path):
    # κ = 3: a dormant neuron's norm solves d‖θ‖/dt ∝ ‖θ‖², so jumps come at t ≈ c/α + b; the slope
    # dt_k/d(1/α) is the α → 0 limit of AGF's t_k·α, and ln(1/α) is the wrong clock.
    from saddlestep.tasks import fourier_template, ModularAddition

    task = ModularAddition(fourier_template(5, {1: 4.0, 2: 2.0}))

    def make(a):
        model = ss.QuadraticNetwork(5, 2, key=jax.random.PRNGKey(0), init_scale=a)
        return types.SimpleNamespace(model=model, task=task, t_max=60.0 / a, predict=None,
                                     simulate_kwargs={"rtol": 1e-7, "method": "auto", "save": ss.Save(n=4001)})

    df = ss.converge(make, [0.02, 0.01, 0.005], figure=str(tmp_path / "k3.png"))
    assert df.attrs["kappa"] == 3
    np.testing.assert_allclose(df["clock"], 1.0 / df["init_scale"])
    np.testing.assert_allclose(df["rescaled_time"], df["time"] * df["init_scale"])
    # AGF at α = 0.005 against the flow's slope: within the O(α) offset of AGF's own t·α.
    assert np.all(np.abs(df["slope_error"]) < 0.03)
    assert (tmp_path / "k3.png").exists()


def test_the_clock_unit_follows_the_degree():
    from saddlestep.clock import log_inv, unit

    a = np.array([0.1, 1e-3])
    np.testing.assert_allclose(unit(a), log_inv(a))
    np.testing.assert_allclose(unit(a, 2), log_inv(a))
    np.testing.assert_allclose(unit(a, 3), 1.0 / a)
    np.testing.assert_allclose(unit(a, 4), a**-2.0)
    assert np.isnan(unit(2.0, 3)) and np.isnan(unit(2.0))
    with pytest.raises(ValueError, match="init_scale"):
        unit(-1.0, 3)


def _own_slope(preset, alphas, seed, overrides):
    """`converge_preset`'s table, the slope of the preset's own predicted times over the same α
    (the oracle, a line through two of its predictions), and its rescaled times at the smallest α."""
    from saddlestep.runs import converge_preset, prepare

    df = converge_preset(preset, alphas, seed=seed, overrides=overrides)
    preds = [prepare(preset, init_scale=a, seed=seed, overrides=overrides)[2].predict() for a in alphas]
    L = [np.log(1 / a) for a in alphas]
    own = (preds[1].times - preds[0].times) / (L[1] - L[0])
    np.testing.assert_allclose(df.groupby("step")["predicted"].first().to_numpy(), own, rtol=1e-9)
    return df, own, preds[1].rescaled_times


def test_a_closed_form_that_drifts_with_alpha_is_compared_by_its_own_slope():
    """QWEM's closed form at finite α has rescaled times that still move with α; the flow's
    slope over a set of α is set against the closed form's slope over the same α (an exact line
    through its own times), not against its value at the smallest α."""
    df, own, rescaled = _own_slope("qwem", [1e-4, 1e-6], 1, {"vocab_size": "40", "d": "2"})
    assert np.max(np.abs(rescaled / own - 1)) > 0.02  # the drift the slope removes
    assert np.max(np.abs(df["slope_error"])) < 0.05


def test_a_drop_shorter_than_the_save_spacing_is_timed_on_the_solver_steps():
    """Every run of `converge` shares the smallest α's horizon, so the largest α's save grid can be
    coarse beside a fast drop (s = 10: the first drop lasts ~0.2 time units). Its time is read on the
    save grid merged with the solver steps (off the grid alone it was 9% late, its slope 2% off)."""
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 4, [10.0, 1.0])
    cf = theory.linear_network(task)

    def make(a):
        model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(1), init_scale=a)
        setup = _setup(model, task, 3.0 * cf.rescaled_times[-1] * np.log(1 / a) + 10, 1e-9)
        setup.simulate_kwargs["n_save"] = 41  # spacing ≥ 1: five times the first drop's width
        return setup

    df = ss.converge(make, [1e-4, 1e-8], prediction=cf)
    slopes = df.groupby("step")["slope"].first().to_numpy()
    np.testing.assert_allclose(slopes, cf.rescaled_times, rtol=0.003)


def test_a_deep_network_is_timed_against_its_depth():
    # A depth-3 linear network started balanced and aligned with the teacher's mode s keeps one
    # strength per layer, ȧ = a²(s − a³) (whitened inputs), so the drop comes at
    # t = ∫ da / (a²(s − a³)) = 1/(sα) + O(1): linear in 1/α with slope 1/s, not in ln(1/α).
    s = 2.0
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 3, 3, [s])
    u, v = np.asarray(task.left)[:, 0], np.asarray(task.right)[:, 0]
    r = np.array([0.0, 0.6, 0.8])

    def make(a):
        model = ss.DeepLinear([3, 3, 3, 3], key=jax.random.PRNGKey(0), init_scale=a)
        layers = tuple(a * np.outer(left, right) for left, right in ((r, v), (r, r), (u, r)))
        model = eqx.tree_at(lambda m: m.layers, model, tuple(jnp.asarray(w) for w in layers))
        return types.SimpleNamespace(model=model, task=task, t_max=3.0 / (s * a), predict=None,
                                     simulate_kwargs={"rtol": 1e-10, "max_steps": 400_000})

    assert ss.DeepLinear([3, 3, 3, 3], key=jax.random.PRNGKey(0)).kappa == 3
    alphas = [1e-2, 1e-3, 1e-4]
    limit = ss.Prediction("oracle", [1.0 / (s * alphas[-1])], [np.nan], [0.0], ["mode 1"],
                          initial_loss=float(task.loss(make(1e-4).model)), init_scale=alphas[-1])
    df = ss.converge(make, alphas, prediction=limit)
    assert df.attrs["kappa"] == 3
    np.testing.assert_allclose(df["clock"], 1.0 / df["init_scale"])
    np.testing.assert_allclose(df["predicted"], 1.0 / s)
    assert abs(df["slope_error"].iloc[0]) < 1e-3


def test_a_run_that_misses_a_step_says_why():
    task = r1_task()
    pf = theory.pesme_flammarion(task)
    # A horizon that ends between the steps: the second step's time is NaN, and a warning names
    # the cause (runs share the longest horizon, so both α miss it).
    make = lambda a: _setup(ss.DiagonalLinear(2, init_scale=a), task, 0.2 * np.log(1 / a), 1e-8)
    with pytest.warns(UserWarning, match=r"α = 0.0001 reached its horizon t = 1.842.* before crossing step 2's level"):
        df = ss.converge(make, [1e-3, 1e-4], prediction=pf)
    times = df.pivot(index="init_scale", columns="step", values="time")
    assert np.isfinite(times[1]).all() and times[2].isna().all()


def test_converge_says_which_flow_is_running_only_when_asked(capsys):
    task = r1_task()
    pf = theory.pesme_flammarion(task)
    make = lambda a: _setup(ss.DiagonalLinear(2, init_scale=a), task, 3.7 * np.log(1 / a) + 10, 1e-8)
    ss.converge(make, [1e-3, 1e-4], prediction=pf)
    assert capsys.readouterr().err == ""
    ss.converge(make, [1e-3, 1e-4], prediction=pf, progress=True)
    err = capsys.readouterr().err
    assert "converge: the flow at α = 0.001 (1 of 2)" in err and "converge: the flow at α = 0.0001 (2 of 2)" in err


def test_a_feature_learned_by_neurons_joining_one_by_one_is_timed_by_the_first(tmp_path):
    """Modular addition (κ = 3) on a random p = 5 template: AGF's first feature is three
    activations merged into one step timed by the first, and the flow's is a cascade of
    sub-drops. The flow's time is then its first sub-drop (the crossing between the plateau
    before and the one after AGF's first activation), not the middle of the whole cascade,
    which read 78% slow."""
    from saddlestep.presets import get_preset

    path = tmp_path / "t.npz"
    np.savez(path, template=np.random.default_rng(5).normal(size=5))
    preset = get_preset("modular")
    params = preset.parameters({"width": "6", "predictor": "agf"}, data=str(path))
    make = lambda a: preset.setup(params, init_scale=a, seed=0, data=str(path))
    pred = make(0.025).predict()
    assert len(pred.extra["activation_times"]) > pred.num_steps  # some step merges activations
    df = ss.converge(make, [0.1, 0.05, 0.025], prediction=pred)
    first = df[df["step"] == 1].iloc[0]
    assert abs(first["slope_error"]) < 0.1, df
    assert set(df["kind"]) == {"prediction"}
    bound = preset.setup(preset.parameters({"width": "6"}, data=str(path)), init_scale=0.025, seed=0,
                         data=str(path)).predict()
    assert bound.is_lower_bound
    assert set(ss.converge(make, [0.1, 0.05], prediction=bound)["kind"]) == {"lower-bound"}


def test_agf_from_random_directions_is_compared_by_its_own_slope():
    """AGF from a network's random directions has rescaled times that drift with α (the
    directions turn for O(1) time before the utility phase is all growth), as a finite-α closed
    form does: the flow's slope is set against AGF's own slope over the same α, which it meets,
    not against AGF's rescaled time at the smallest α (off by ~1% here, as a new user found)."""
    overrides = {"inputs": "gaussian", "n": "60", "d": "4", "width": "6", "teacher_norms": "2,-1"}
    df, own, rescaled = _own_slope("relu", [1e-4, 1e-7], 2, overrides)
    assert np.max(np.abs(rescaled / own - 1)) > 0.005  # the drift the slope removes
    assert np.max(np.abs(df["slope_error"])) < 2e-3


def test_a_killed_converge_resumes_from_its_finished_flows(tmp_path, monkeypatch, capsys):
    """`saddlestep converge` keeps each finished flow beside its --out until the output is written:
    killed at the third flow, the rerun runs only that one, and its table is the uninterrupted
    one's, bit for bit; the hidden checkpoint is gone once the output is written."""
    import pandas as pd

    import saddlestep.convergence as conv
    from saddlestep.runs import converge_preset

    overrides = {"d": "4", "width": "4", "singular_values": "3,1"}
    scales = [1e-3, 1e-4, 1e-5]
    whole = converge_preset("linear", scales, overrides=overrides, out=str(tmp_path / "whole"), progress=False)
    assert not any(p.name.endswith("converge-partial") for p in tmp_path.iterdir())
    real, calls = conv.simulate, []

    def dying(*args, **kwargs):
        calls.append(float(args[0].init_scale))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(conv, "simulate", dying)
    with pytest.raises(KeyboardInterrupt):
        converge_preset("linear", scales, overrides=overrides, out=str(tmp_path / "k"), progress=False)
    assert not (tmp_path / "k").exists()
    assert len(list((tmp_path / ".k.converge-partial").glob("flow-*.json"))) == 2
    calls.clear()
    again = converge_preset("linear", scales, overrides=overrides, out=str(tmp_path / "k"), progress=True)
    assert calls == [1e-5]
    assert "finished earlier" in capsys.readouterr().err
    pd.testing.assert_frame_equal(again, whole)
    assert (tmp_path / "k" / "convergence.csv").read_text() == (tmp_path / "whole" / "convergence.csv").read_text()
    assert not (tmp_path / ".k.converge-partial").exists()
    # Refused before any flow (no predictor): nothing is left behind.
    with pytest.raises(ValueError):
        converge_preset("deep-linear", scales, out=str(tmp_path / "none"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "whole"]


def test_converge_names_slope_errors_that_still_drift_with_alpha():
    # Step 1: t = 2L − 30 + 60/L·… a finite-α approach (local slopes move toward 2); step 2:
    # t = 3.3L + 1, a constant 10% slope error (a wrong prediction, not drift); step 3: exact.
    import warnings

    import pandas as pd

    from saddlestep.convergence import _warn_drift

    rows = []
    for a in (1e-3, 1e-5, 1e-7):
        L = math.log(1 / a)
        for k, t in ((1, 2.0 * L - 30.0 * math.exp(-L / 8)), (2, 3.3 * L + 1.0), (3, 5.0 * L)):
            rows.append({"step": k, "feature": f"f{k}", "init_scale": a, "clock": L, "time": t})
    df = pd.DataFrame(rows)
    slopes = {k: float(np.polyfit(g["clock"], g["time"], 1)[0]) for k, g in df.groupby("step")}
    predicted = np.array([2.0, 3.0, 5.0])
    assert abs(slopes[1] / 2.0 - 1) > 0.02 and abs(slopes[2] / 3.0 - 1) > 0.02
    with pytest.warns(UserWarning, match=r"local slopes still move with α at step 1 \(f1\)") as caught:
        _warn_drift(df, slopes, predicted)
    assert "step 2" not in str(caught[0].message) and "step 3" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_drift(df[df.init_scale > 1e-6], slopes, predicted)  # two α: no local slopes to compare
