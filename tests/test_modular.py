"""Modular addition with quadratic networks (κ = 3): oracles from the closed forms of
Kunin et al. 2025 (AGF reference §2.4, cases R6, R7, R9, R10)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss
from saddlestep import theory
from saddlestep.models import QuadraticNetwork
from saddlestep.presets import get_preset
from saddlestep.steps import feature_steps
from saddlestep.tasks import fourier_template, frequency_power, ModularAddition, one_hot_template


def _sphere_max(task, starts=8, iters=3000, lr=0.05, seed=0):
    """max over unit neurons of mean_ab⟨f_i, y⟩ by projected gradient ascent (independent of the
    closed form)."""
    m = QuadraticNetwork(task.p, starts, key=jax.random.PRNGKey(seed), init_scale=1.0)

    def utility(n):
        out = jax.vmap(lambda xi: m.neuron_outputs(n, xi))(task.X)
        return jnp.einsum("nho,no->h", out, task.Y) / task.X.shape[0]

    def normalize(n):
        s = jnp.sqrt(sum(jnp.sum(v**2, axis=1) for v in n.values()))
        return {k: v / s[:, None] for k, v in n.items()}

    @jax.jit
    def run(n):
        def body(_, n):
            g = jax.grad(lambda n: jnp.sum(utility(n)))(n)
            return normalize({k: n[k] + lr * g[k] for k in n})

        return jax.lax.fori_loop(0, iters, body, normalize(n))

    n = run(m.neurons())
    u = utility(n)
    return float(u.max()), {k: np.asarray(v[int(jnp.argmax(u))]) for k, v in n.items()}


@pytest.mark.parametrize("p, expected", [(7, 4.168872), (11, 0.702419)])
def test_utility_maximum_r7(p, expected):
    # The reference draws p = 7, then p = 11, from one generator.
    rng = np.random.default_rng(3)
    x = {7: rng.standard_normal(7), 11: rng.standard_normal(11)}[p]
    x -= x.mean()
    closed = theory.modular_utility_max(x)
    numeric, best = _sphere_max(ModularAddition(x))
    assert closed == pytest.approx(numeric, abs=1e-6)
    assert closed == pytest.approx(expected, abs=1e-6)
    # The maximizer splits its norm equally: ‖u‖² = ‖v‖² = ‖w‖² = 1/3.
    for k in ("u", "v", "w"):
        assert np.sum(best[k] ** 2) == pytest.approx(1 / 3, abs=1e-6)


def test_utility_maximum_nyquist():
    # An even p with all power at ξ = p/2: a real frequency, factor 2 instead of √2.
    x = np.array([1.0, -1.0] * 3)
    numeric, _ = _sphere_max(ModularAddition(x))
    assert theory.modular_utility_max(x) == pytest.approx(numeric, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_frequencies_of_equal_magnitude_are_learned_lowest_first(seed):
    # |x̂| tied at two frequencies (random phases, p odd or even): the order is the tie-break's
    # (lower ξ first), not the FFT's last digits, and the levels follow that order.
    rng = np.random.default_rng(seed)
    p = int(rng.integers(7, 16))
    xi = sorted(rng.choice(np.arange(1, (p - 1) // 2 + 1), 2, replace=False))
    spec = np.zeros(p, complex)
    for f in xi:
        spec[f] = 4.0 * np.exp(2j * np.pi * rng.random())
        spec[-f] = np.conj(spec[f])
    x = np.fft.ifft(spec).real
    order, levels, initial = theory.modular_levels(x)
    assert order == xi
    power = 2 * 16.0 / p  # (|x̂[ξ]|² + |x̂[−ξ]|²)/p
    np.testing.assert_allclose([initial, *levels], [power, power / 2, 0.0], atol=1e-12)


def test_r6_closed_forms():
    x = fourier_template(20, {1: 10.0, 3: 5.0, 5: 2.5})
    assert np.abs(np.fft.fft(x))[[1, 3, 5]] == pytest.approx([10, 5, 2.5])
    order, levels, initial = theory.modular_levels(x)
    assert order == [1, 3, 5]
    assert initial == pytest.approx(6.5625)
    assert levels == pytest.approx([1.5625, 0.3125, 0.0], abs=1e-12)
    util = theory.modular_utility_maxima(x)
    assert util[[1, 3, 5]] == pytest.approx([3.042903, 0.380363, 0.047545], abs=1e-6)
    _, bounds = theory.modular_lower_bounds(x, math.sqrt(2) * 0.01)
    assert bounds == pytest.approx([7.6364, 61.091, 488.73], rel=1e-4)
    pred = theory.modular_prediction(x, 0.01)
    assert pred.order == ["ξ=1", "ξ=3", "ξ=5"] and pred.extra["lower_bound"]


def test_alignment_time_r9():
    # ‖θ‖' = 3Ū‖θ‖² from ‖θ₀‖ reaches 1 at (1/‖θ₀‖ − 1)/(3Ū); integrate it independently.
    from scipy.integrate import solve_ivp

    u, n0 = 0.7, 1e-2
    t = theory.alignment_time(u, n0)
    sol = solve_ivp(lambda t, n: 3 * u * n**2, (0, 2 * t), [n0], rtol=1e-12, atol=1e-14,
                    events=lambda t, n: n[0] - 1.0)
    assert sol.t_events[0][0] == pytest.approx(t, rel=1e-8)
    assert theory.alignment_time(u, n0, kappa=2) == pytest.approx(math.log(1 / n0) / (2 * u))


def test_fourier_analysis_parseval(getkey):
    x = np.random.default_rng(0).standard_normal(9)
    assert frequency_power(x).sum() == pytest.approx(np.sum(x**2))
    assert frequency_power(np.arange(8.0)).sum() == pytest.approx(np.sum(np.arange(8.0) ** 2))
    task = ModularAddition(x)
    model = QuadraticNetwork(9, 4, key=getkey(), init_scale=0.5)
    assert float(jnp.sum(task.frequency_losses(model))) == pytest.approx(float(task.loss(model)), rel=1e-12)
    obs = task.observables(model)
    total = sum(np.sum(np.asarray(v) ** 2) for v in model.neurons().values())
    assert float(jnp.sum(obs["neuron_power"])) == pytest.approx(total, rel=1e-12)
    # One-hot: standard modular addition, every |x̂[ξ]| = 1.
    t1 = ModularAddition(one_hot_template(7))
    assert t1.magnitudes()[1:] == pytest.approx(np.ones(3))
    assert t1.frequencies == (1, 2, 3)


def _flow(template, alpha=0.1, width=18, seed=0, t_max=300.0):
    task = ModularAddition(template)
    model = QuadraticNetwork(task.p, width, key=jax.random.PRNGKey(seed), init_scale=alpha)
    traj = ss.simulate(model, task, t_max=t_max, rtol=1e-6, converge_tol=1e-5)
    return task, model, traj


def _check_staircase(template, expected_order):
    task, model, traj = _flow(template)
    order, levels, initial = theory.modular_levels(task.template)
    assert order == expected_order
    steps = feature_steps(ss.detect_steps(traj))
    assert [s.feature for s in steps] == [f"ξ={xi}" for xi in order]
    for s, level in zip(steps[:-1], levels[:-1]):
        assert s.loss_after == pytest.approx(level, rel=1e-2)
    assert steps[-1].loss_after < 1e-3 * initial
    # Each frequency is learned whole: the fitted fraction reaches 1.
    assert np.asarray(traj.observables["features"])[-1] == pytest.approx(1.0, abs=1e-2)
    # Time-exact conservation law ‖u‖² + ‖v‖² − 2‖w‖² per neuron (R10) measures integrator error.
    drift = np.abs(np.asarray(traj.final.conserved()) - np.asarray(model.conserved())).max()
    assert drift < 1e-4
    # The closed-form times are lower bounds: real jumps (unaligned directions) come later.
    bound = theory.modular_prediction(task.template, 0.1, init_norm=float(np.max(model.neuron_norms())))
    first = [next(t for t, f in zip(traj.times, traj.observables["features"][:, task.frequencies.index(xi)]) if f > 0.5)
             for xi in order]
    assert np.all(np.asarray(first) >= bound.times)
    assert traj.stats["steps"] < 40_000
    return traj


def test_modular_staircase_r6():
    # p = 11 keeps the R6 structure (|x̂| = 10, 5, 2.5 at ξ = 1, 3, 5); the levels scale as 2|x̂|²/p.
    _check_staircase(fourier_template(11, {1: 10.0, 3: 5.0, 5: 2.5}), [1, 3, 5])


def test_modular_staircase_non_monotone():
    # Magnitude order not monotone in ξ: learned by magnitude, 3, 5, then 1.
    _check_staircase(fourier_template(11, {1: 2.5, 3: 10.0, 5: 5.0}), [3, 5, 1])


def test_bad_input():
    with pytest.raises(ValueError, match="template"):
        ModularAddition([1.0, 2.0])
    with pytest.raises(ValueError, match="template"):
        ModularAddition(np.ones(5))
    with pytest.raises(ValueError, match="template"):
        ModularAddition(np.full((3, 3), 1.0))
    with pytest.raises(ValueError, match="magnitudes"):
        fourier_template(6, {4: 1.0})
    with pytest.raises(ValueError, match="width"):
        QuadraticNetwork(5, 0, key=jax.random.PRNGKey(0))
    task = ModularAddition(fourier_template(7, {1: 1.0}))
    with pytest.raises(ValueError, match="model"):
        task.validate(QuadraticNetwork(5, 3, key=jax.random.PRNGKey(0)))


def test_preset_data(tmp_path):
    preset = get_preset("modular")
    good = tmp_path / "t.npz"
    np.savez(good, template=fourier_template(9, {2: 3.0, 4: 1.0}))
    setup = preset.build(preset.parameters({"width": "6"}), init_scale=0.1, seed=0, data=str(good))
    assert setup.task.p == 9 and setup.task.frequencies == (2, 4)
    assert setup.t_max > 0
    for bad, match in [({"x": np.ones(5)}, "template"), ({"template": np.ones((3, 3))}, "template"),
                       ({"template": np.ones(5)}, "constant")]:
        path = tmp_path / "bad.npz"
        np.savez(path, **bad)
        with pytest.raises(ValueError, match=match):
            preset.build(preset.parameters(), init_scale=0.1, seed=0, data=str(path))
    with pytest.raises(ValueError, match="magnitudes"):
        preset.build(preset.parameters({"magnitudes": "1,2"}), init_scale=0.1, seed=0, data=None)


@pytest.mark.parametrize("seed", [24, 29])
def test_agf_steps_are_labelled_by_the_frequency_that_gives_up_the_most_loss(seed):
    # Random templates whose weak frequencies are fitted in passing by neurons of strong ones
    # (at these seeds a label from the fitted fraction names the weak one). Oracle: each
    # frequency's loss from a numpy DFT of the residual, between consecutive AGF plateaus.
    from saddlestep import agf
    from saddlestep.presets._features import label_and_merge

    x = np.random.default_rng(seed).normal(size=9)
    task = ModularAddition(x)
    model = QuadraticNetwork(9, 6, key=jax.random.PRNGKey(seed), init_scale=0.01)
    raw = agf.predict(model, task.as_regression())
    pred = label_and_merge(raw, task, model)

    def carried(m):
        r = np.fft.fft(np.asarray(task.Y) - np.asarray(task.outputs(m)), axis=-1)
        power = 0.5 * np.mean(np.abs(r) ** 2, axis=0) / task.p
        return np.array([power[xi] + power[task.p - xi] for xi in task.frequencies])

    losses = [carried(m) for m in [model, *raw.plateau_parameters]]
    expected = [f"ξ={task.frequencies[int(np.argmax(a - b))]}" for a, b in zip(losses[:-1], losses[1:])]
    assert pred.extra["activation_features"] == expected
    starts = [k for k, label in enumerate(expected) if k == 0 or expected[k - 1] != label]
    assert pred.order == [expected[k] for k in starts]
    # A merged step is timed by the first activation of its feature, as `feature_steps` times the flow's.
    np.testing.assert_allclose(pred.times, np.asarray(raw.times)[starts], rtol=1e-12)
    ends = [k - 1 for k in starts[1:]] + [raw.num_steps - 1]
    np.testing.assert_allclose(pred.losses, np.asarray(raw.losses)[ends], rtol=1e-12)


def test_a_noise_frequency_sets_neither_the_horizon_nor_the_first_save(tmp_path):
    # |x̂| = 31.6, 15.7, 0.07, 8.06: ξ = 3 holds ~4e-6 of the loss, and its κ = 3 lower bound
    # comes ~10⁶ times after ξ = 1's. The horizon follows the frequencies that show (each more
    # than 1e-4 of the loss); the log save grid starts before the first bound.
    from saddlestep import theory

    path = tmp_path / "noisy.npz"
    np.savez(path, template=fourier_template(9, {1: 31.6, 2: 15.7, 3: 0.07, 4: 8.06}))
    preset = get_preset("modular")
    setup = preset.build(preset.parameters({"width": "6"}), init_scale=0.01, seed=23, data=str(path))
    n0 = float(np.max(np.asarray(setup.model.neuron_norms())))
    bound = theory.modular_prediction(np.asarray(setup.task.template), 0.01, init_norm=n0)
    times = dict(zip(bound.order, np.asarray(bound.times)))
    x_hat = np.abs(np.fft.rfft(np.asarray(setup.task.template)))
    share = {f"ξ={xi}": x_hat[xi] ** 2 / np.sum(x_hat[1:] ** 2) for xi in (1, 2, 3, 4)}
    assert share["ξ=3"] < 1e-5 and min(share[k] for k in ("ξ=1", "ξ=2", "ξ=4")) > 1e-2
    assert all(setup.t_max >= 8 * times[k] for k in ("ξ=1", "ξ=2", "ξ=4"))
    assert setup.t_max < 1e-3 * times["ξ=3"]
    kw = setup.simulate_kwargs
    assert kw["save_spacing"] == "log" and kw["save_start"] * setup.t_max <= 0.1 * min(times.values())


def test_agf_warns_where_a_cost_phase_stops_short_of_a_critical_point():
    """A cost phase that BFGS converges onto slowly (thousands of steps: modular addition's
    restricted loss is degenerate) is flagged, from the first such activation on; the plateau it
    returns is not a critical point of the loss (the oracle: the gradient, computed here). Where
    every phase converges (attention), nothing is flagged and every plateau is critical."""
    import warnings

    def run(name, overrides, alpha):
        preset = get_preset(name)
        params = {**preset.parameters(), "predictor": "agf", **overrides}
        setup = preset.setup(params, init_scale=alpha, seed=0, data=None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = setup.predict()
        told = [str(w.message) for w in caught if "cost phase" in str(w.message)]
        grads = [float(jnp.linalg.norm(jax.flatten_util.ravel_pytree(
            jax.grad(lambda m: setup.task.loss(m))(model))[0])) for model in pred.plateau_parameters]
        return pred, told, grads

    import jax.flatten_util

    pred, told, grads = run("modular", {"p": 7, "width": 4, "magnitudes": (2.0, 1.0), "frequencies": (1, 2)}, 1e-2)
    steps, events = pred.extra["cost_steps"], pred.extra["events"]
    assert len(steps) == len(events) and all(isinstance(n, int) and n > 0 for n in steps)
    first = next(i for i, n in enumerate(steps) if n > 500)
    assert len(told) == 1 and f"t = {events[first][0]:.4g}" in told[0]
    assert max(grads) > 1e-6
    pred, told, grads = run("attention", {"heads": 2, "N": 8}, 1e-3)
    assert told == [] and max(pred.extra["cost_steps"]) < 500
    assert max(grads) < 1e-7


def test_a_run_its_horizon_cuts_mid_drop_says_so(tmp_path):
    """Near-tied ξ = 1, 2 (|x̂| = 3, 2.97) and a weaker ξ = 4 at α = 0.1: the auto horizon (8× the
    last lower bound) ends while ξ = 4 is still being learned (loss 0.029 on its way to ~1e-6: the
    same run to t = 2·10⁴ shows that drop finish at t ≈ 1,521). The run says its last step may be
    unfinished; a run to the longer horizon, flat at its end, does not."""
    rng = np.random.default_rng(11)
    xh = np.zeros(9, complex)
    for xi, m in [(1, 3.0), (2, 2.97), (4, 1.0)]:
        ph = np.exp(1j * rng.uniform(0, 2 * np.pi))
        xh[xi], xh[-xi] = m * ph, m * np.conj(ph)
    path = tmp_path / "tie9.npz"
    np.savez(path, template=np.fft.ifft(xh).real)
    cut = ss.run_preset("modular", data=str(path))
    assert cut.summary["solver"]["status"] == "t_max"
    loss = cut.trajectory.loss
    assert loss[np.isfinite(loss)][-1] > 1e-2  # the oracle: mid-drop, far above the ~1e-6 it reaches
    assert any("still falling" in w for w in cut.summary["warnings"])
    done = ss.run_preset("modular", data=str(path), overrides={"t_max": "4000"})
    assert done.summary["observables_final"]["loss"] < 1e-4
    assert not any("still falling" in w for w in done.summary["warnings"])
