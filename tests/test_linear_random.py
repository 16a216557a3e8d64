"""Non-commuting linear regression on random problems (issue 15 item 2): Conjecture 4.1's
closed form and AGF's α → 0 limit against each other and against the flow's slopes
dt_k/d ln(1/α) over two α (the slopes remove the O(1) offset of each jump).

Known limit (documented in `theory.conjecture_jump_times`): the recursion assumes each plateau is
the rank-k reduced-rank optimum reached fast against ln(1/α). When two whitened singular values
nearly tie, the cost phase has a slow direction and the flow lingers away from that optimum at
practical α (Σxx = diag(1, .3, .1), B = default_rng(248): third slope 5.8 against 4.42). The
family here keeps consecutive whitened singular values ≥ 1.5× apart, where the limit is reached.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss
from saddlestep import agf, theory
from saddlestep.presets.base import Setup
from saddlestep.theory.linear import commuting_modes


def _problem(seed, rank_deficient=False):
    """Σxx = V diag(λ) Vᵀ with V random (not aligned with Σyx), Σyx = B Σxx (a linear teacher)."""
    rng = np.random.default_rng(3000 + seed)
    while True:
        d = 3
        V = np.linalg.qr(rng.standard_normal((d, d)))[0]
        Sxx = V @ np.diag(rng.uniform(0.3, 2.0, d)) @ V.T
        B = rng.standard_normal((d, d))
        if rank_deficient:
            u, s, vt = np.linalg.svd(B)
            B = (u[:, :2] * s[:2]) @ vt[:2]
        Syx = B @ Sxx
        Sxx = (Sxx + Sxx.T) / 2
        task = ss.PopulationRegression(Sxx, Syx)
        s = np.linalg.svd(np.asarray(task.target), compute_uv=False)
        s = s[s > 1e-8 * s[0]]
        if np.all(s[:-1] / s[1:] >= 1.5) and s[-1] > 0.15 and commuting_modes(Sxx, Syx) is None:
            return task, len(s)


def _make(task):
    def make(alpha):
        model = ss.TwoLayer(3, 3, 3, "linear", key=jax.random.PRNGKey(4), init_scale=alpha)
        return Setup(model, task, t_max=1.0)

    return make


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_conjecture_matches_agf_limit_on_random_problems(rank_deficient):
    worst_t = worst_l = 0.0
    for seed in range(12):
        task, rank = _problem(seed, rank_deficient)
        cf = theory.linear_network(task)
        p = agf.predict(_make(task)(1e-6).model, task, min_drop=0.0, limit=True)
        assert cf.num_steps == p.num_steps == rank
        worst_t = max(worst_t, float(np.max(np.abs(p.rescaled_times / cf.rescaled_times - 1))))
        worst_l = max(worst_l, float(np.max(np.abs(p.losses - cf.losses)) / cf.initial_loss))
        for q in (p, cf):
            assert np.all(np.diff(q.rescaled_times) > 0)
            assert np.all(np.diff(np.r_[q.initial_loss, q.losses]) < 0)
    print(f"rank_deficient={rank_deficient}: worst AGF/closed-form time error {worst_t:.1e}, loss {worst_l:.1e}")
    assert worst_t < 1e-4 and worst_l < 1e-9


@pytest.mark.parametrize("seed,rank_deficient,deep", [(0, False, False), (1, False, True), (2, False, False),
                                                    (3, True, False), (4, True, True)])
def test_flow_slopes_match_prediction_on_random_problems(seed, rank_deficient, deep):
    # `deep`: the flow of a 2-layer DeepLinear (its own random init), not of the TwoLayer net.
    task, rank = _problem(seed, rank_deficient)
    cf = theory.linear_network(task)
    if deep:
        make = lambda a: Setup(ss.DeepLinear([3, 3, 3], key=jax.random.PRNGKey(seed), init_scale=a), task, 1.0)
    else:
        make = _make(task)
    alphas = [1e-6, 1e-10]
    t_max = 1.3 * cf.rescaled_times[-1] * np.log(1 / alphas[-1]) + 20

    def setup(alpha):
        s = make(alpha)
        return Setup(s.model, s.task, t_max=t_max)

    df = ss.converge(setup, alphas, prediction=cf, simulate_kwargs={"n_save": 801, "rtol": 1e-9})
    err = df.groupby("step")["slope_error"].first().abs()
    print(f"seed {seed}: flow slope errors {err.to_numpy()}")
    assert len(err) == rank and err.max() < 0.02


@pytest.mark.parametrize("seed", range(3))
def test_a_network_narrower_than_the_target_learns_as_many_modes_as_it_has_units(seed):
    """Width 2 on a rank-3 target: the rank of W₂W₁ is at most 2, so the staircase stops after two
    modes; the prediction says so (it predicted all three, the third never came), and AGF, which
    runs out of dormant neurons, agrees."""
    task, rank = _problem(seed)
    assert rank == 3
    narrow = ss.TwoLayer(3, 2, 3, "linear", key=jax.random.PRNGKey(seed), init_scale=1e-6)
    cf = theory.predict_linear(narrow, task)
    wide = theory.linear_network(task, init_scale=1e-6)
    assert cf.num_steps == 2 and cf.order == wide.order[:2]
    np.testing.assert_allclose(cf.times, wide.times[:2], rtol=1e-12)
    assert agf.predict(narrow, task, min_drop=0.0, limit=True).num_steps == 2
    flow = ss.simulate(narrow, task, t_max=3.0 * float(cf.times[-1]))
    table = ss.compare(ss.detect_steps(flow), cf)
    assert list(table["kind"]) == ["prediction"] * 2
    # Deep linear networks: the narrowest layer caps Saxe's modes alike.
    whitened = ss.PopulationRegression(np.eye(3), np.diag([3.0, 2.0, 1.0]))
    deep = ss.DeepLinear((3, 4, 1, 3), key=jax.random.PRNGKey(seed), init_scale=1e-2)
    assert theory.saxe(whitened, init_scale=1e-2, depth=3).num_steps == 3
    assert theory.predict_saxe(deep, whitened).num_steps == 1


@pytest.mark.parametrize("seed", range(12))
def test_commuting_modes_are_named_by_the_whitened_mode_they_learn(seed):
    """Σxx and Σyx share an eigenbasis (random rotation), with variances λ_j drawn so that the
    growth order (σ_j) and the task's order (whitened strength σ_j/√λ_j) often differ: each
    predicted step carries the task's name of its mode, known here by construction, and the flow's
    drops pair with the predicted steps one for one, by name (times within the O(1)/ln(1/α)
    offset of a random init: 3/ln(1e8) = 16%; the slopes are tested above)."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 5))
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    P = np.linalg.qr(rng.standard_normal((d, d)))[0]
    sig = np.sort(rng.uniform(0.5, 4.0, d))[::-1]
    sig[1:] = np.minimum(sig[1:], sig[:-1] / 1.3)  # growth rates apart, so drops are distinct
    lam = rng.uniform(0.2, 5.0, d)
    Sxx = Q @ np.diag(lam) @ Q.T
    Syx = P @ np.diag(sig) @ Q.T
    task = ss.PopulationRegression((Sxx + Sxx.T) / 2, Syx)
    whitened_rank = np.argsort(np.argsort(-sig / np.sqrt(lam)))  # the task's mode index of each σ_j
    expected = [f"mode {k + 1}" for k in whitened_rank]
    model = ss.TwoLayer(d, d, d, "linear", key=jax.random.PRNGKey(seed), init_scale=1e-8)
    for pred in (theory.predict_linear(model, task), theory.predict_saxe(model, task)):
        assert list(pred.order) == expected, pred.method
    if seed < 3:
        pred = theory.predict_linear(model, task)
        flow = ss.simulate(model, task, t_max=1.2 * float(pred.times[-1]) + 20)
        table = ss.compare(flow, pred)
        assert list(table["kind"]) == ["prediction"] * d, table
        assert (table["feature_simulated"] == table["feature_predicted"]).all(), table
        assert table["time_rel_error"].abs().max() < 3 / np.log(1e8), table


def _narrow_problem(seed):
    """Four decoupled modes (Σxx, Σyx sharing a random eigenbasis) whose growth order (σ) differs
    from their fit order (σ²/λ): a narrow network learns the fast modes, then swaps."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    P = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    while True:
        sig = np.sort(rng.uniform(0.5, 3.0, 4))[::-1]
        lam = rng.uniform(0.1, 4.0, 4)
        fit = sig**2 / lam
        if np.all(sig[:-1] / sig[1:] > 1.25) and np.argmax(fit) != 0 and np.min(np.diff(np.sort(fit))) > 0.1 * fit.max():
            return ss.PopulationRegression(Q @ np.diag(lam) @ Q.T, P @ np.diag(sig) @ Q.T), sig, lam


def _flow_slopes(task, width, pred, d):
    import types

    def make(alpha):
        m = ss.TwoLayer(d, width, d, "linear", key=jax.random.PRNGKey(width), init_scale=alpha)
        return types.SimpleNamespace(model=m, task=task, t_max=1.3 * pred.rescaled_times[-1] * np.log(1 / alpha) + 30)

    df = ss.converge(make, [1e-6, 1e-10], prediction=pred, simulate_kwargs={"rtol": 1e-9, "n_save": 4001})
    return df.groupby("step")["slope_error"].first().abs()


def test_a_one_unit_network_swaps_its_mode_for_a_better_fitting_one():
    # Σxx = diag(1, 4), Σyx = diag(2, 3): one hidden unit learns the σ = 3 mode first (τ = 1/3,
    # loss 2), a saddle: the σ = 2 mode fits better (4 > 9/4), grows on the unit at the top rate μ
    # of [[−3, 2], [2, −3/4]] from the size α^{1−2/3} it reached, and replaces it (loss 1.125).
    task = ss.PopulationRegression(np.diag([1.0, 4.0]), np.diag([2.0, 3.0]))
    mu = np.linalg.eigvalsh([[-3.0, 2.0], [2.0, -0.75]])[-1]
    model = ss.TwoLayer(2, 1, 2, "linear", key=jax.random.PRNGKey(0), init_scale=1e-6)
    pred = theory.predict_linear(model, task)
    np.testing.assert_allclose(pred.rescaled_times, [1 / 3, 1 / 3 + (1 / 3) / mu], rtol=1e-12)
    np.testing.assert_allclose(pred.losses, [2.0, 1.125], rtol=1e-12)
    assert list(pred.order) == ["mode 2", "mode 1"] and pred.extra["given_up"] == [None, "mode 2"]
    assert _flow_slopes(task, 1, pred, 2).max() < 1e-3
    with pytest.warns(UserWarning, match="predict_linear predicts it"):
        assert theory.predict_saxe(model, task).num_steps == 1  # Saxe's per-mode solution has no swap


@pytest.mark.parametrize("seed", range(8))
def test_narrow_networks_on_random_decoupled_modes(seed):
    """Widths 1 and 2 on four modes: the predicted steps (learning while units are free, then swaps)
    have the flow's slopes dt_k/d ln(1/α); where a swap is predicted the last plateau is the best
    rank-w fit (reduced-rank regression, computed here from σ, λ); where modes compete for the units
    the prediction says so and stops before the swaps."""
    task, sig, lam = _narrow_problem(seed)
    total = 0.5 * float(np.sum(sig**2 / lam))
    for width in (1, 2):
        model = ss.TwoLayer(4, width, 4, "linear", key=jax.random.PRNGKey(width), init_scale=1e-6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = theory.predict_linear(model, task)
        competing = any("compete" in str(w.message) for w in caught)
        assert np.all(np.diff(pred.rescaled_times) > 0) and np.all(np.diff(np.r_[pred.initial_loss, pred.losses]) < 0)
        swapped = any(g is not None for g in pred.extra.get("given_up", []))
        if swapped and not competing:
            best = total - 0.5 * float(np.sum(np.sort(sig**2 / lam)[::-1][:width]))
            assert pred.losses[-1] == pytest.approx(best, rel=1e-9)
        # 1%: growth rates only 1.25× apart leave O(1/ln(1/α)) drift in the slopes over α = 1e-6 … 1e-10.
        assert _flow_slopes(task, width, pred, 4).max() < 1e-2


@pytest.mark.parametrize("seed", range(4))
def test_a_narrow_network_times_its_first_modes_from_its_init(seed):
    # Width below the rank on a whitened teacher (no swap: the fit order is σ's): each of the
    # first `width` modes is learned on a unit of its own, timed from the network's W(0), a(0)
    # as a wide network's modes are. Oracle: the flow. Approximate, since the modes left out
    # grow in the same units: measured 2e-5 … 1.8% here (2.9% with two σ 5% apart, α = 1e-8),
    # where the α → 0 times were 13–37% off.
    rng = np.random.default_rng(40 + seed)
    svals = np.sort(rng.uniform(0.5, 3.0, 4))[::-1]
    svals[1:] = np.minimum(svals[1:], svals[:-1] / 1.3)
    task = ss.teacher_spectrum(jax.random.PRNGKey(seed), 5, 4, list(svals))
    width, alpha = 1 + seed % 2, [1e-4, 1e-6][seed // 2]
    model = ss.TwoLayer(5, width, 4, "linear", key=jax.random.PRNGKey(seed), init_scale=alpha)
    pred = theory.predict_linear(model, task)
    assert pred.num_steps == width
    steps = ss.detect_steps(ss.simulate(model, task, t_max=2.0 * float(pred.times[-1]), rtol=1e-9))
    flow = np.array([s.time for s in steps])
    limit = np.asarray(pred.extra["limit_rescaled_times"]) * np.log(1 / alpha)
    error = np.abs(flow / pred.times - 1).max()
    assert error < 0.025 and error < 0.15 * np.abs(flow / limit - 1).max()


def test_saxe_deep_times_hold_from_an_aligned_init_and_a_random_init_is_warned():
    """At depth 3 a mode's time ∝ u₀^{−1/3} keeps its initial strength at leading order: from the
    aligned, balanced init Saxe's solution assumes (layers α Vᵀ, α I, α U) the flow's drops are its
    closed form to the solver's accuracy; from a random init they are not, and that is warned."""
    rng = np.random.default_rng(5)
    U = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    V = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    task = ss.PopulationRegression(np.eye(3), U @ np.diag([3.0, 1.5, 0.7]) @ V.T)
    alpha = 0.03
    model = ss.DeepLinear((3, 3, 3, 3), key=jax.random.PRNGKey(0), init_scale=alpha)
    with pytest.warns(UserWarning, match="Saxe's depth-3 times assume an init aligned"):
        theory.predict_saxe(model, task)
    aligned = eqx.tree_at(lambda m: m.layers, model, tuple(jnp.asarray(alpha * w) for w in (V.T, np.eye(3), U)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = theory.predict_saxe(aligned, task)
    flow = ss.simulate(aligned, task, t_max=1.5 * float(pred.times[-1]), rtol=1e-9)
    found = np.array([s.time for s in ss.detect_steps(flow)])
    assert len(found) == 3
    np.testing.assert_allclose(found, pred.times, rtol=1e-4)


def test_a_drop_that_grows_along_another_mode_than_its_plateau_learns_is_warned():
    """Σxx = R diag(λ) Rᵀ (not commuting), Σyx = diag(σ): a step whose drop grows along the
    residual's top singular pair reaches the rank-k optimum's mode only by turning after the drop,
    in O(1) time. Where the prediction warns nothing, the flow's drops (α = 1e-6) carry the
    predicted names in order; where the flow names a drop otherwise, it was warned. The case of
    the reference (rotated by 15°): warned, and the flow rests near 1.95, far above 0.9995."""
    th = np.deg2rad(15)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    cases = [(R @ np.diag([4.0, 1.0]) @ R.T, np.diag([3.0, 2.0]))]
    for seed in range(8, 16):
        rng = np.random.default_rng(seed)
        th = rng.uniform(0.1, 0.7)
        R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        lam, sig = rng.uniform(0.3, 5.0, 2), np.sort(rng.uniform(0.8, 4.0, 2))[::-1]
        cases.append((R @ np.diag(lam) @ R.T, np.diag(sig)))
    warned_cases = 0
    for i, (Sxx, Syx) in enumerate(cases):
        task = ss.PopulationRegression(Sxx, Syx)
        model = ss.TwoLayer(2, 4, 2, "linear", key=jax.random.PRNGKey(i), init_scale=1e-6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pred = theory.predict_linear(model, task)
        warned = any("grows along" in str(w.message) for w in caught)
        warned_cases += warned
        steps = ss.detect_steps(ss.simulate(model, task, t_max=1.5 * float(pred.times[-1]) + 5))
        if [s.feature for s in steps] != list(pred.order[: len(steps)]):
            assert warned, i
        if i == 0:
            assert warned and steps[0].feature == "mode 2"
            assert steps[0].loss_after > 1.9 and pred.losses[0] == pytest.approx(0.9995, abs=1e-4)
    assert 2 <= warned_cases < len(cases)
