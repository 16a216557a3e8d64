import jax
import numpy as np
import pytest
import scipy.integrate

import saddlestep as ss
from saddlestep import theory

from _agf_cases import r1_task, r3_task, ten_by_ten


def _mu(task):
    """Eigenvalues of Σyx Σxx⁺ Σxy, computed from the moments directly (RRR's spectrum)."""
    C, T = np.asarray(task.sqrt_cov), np.asarray(task.target)
    Sxx, Syx = C @ C.T, T @ C.T
    return np.sort(np.linalg.eigvalsh(Syx @ np.linalg.pinv(Sxx) @ Syx.T))[::-1]


def test_pesme_flammarion_r1():
    from test_theory_random import _pf_oracle

    task = r1_task()
    p = theory.pesme_flammarion(task)
    t, l, _ = _pf_oracle(np.asarray(task.X), np.asarray(task.Y)[:, 0])
    np.testing.assert_allclose(p.rescaled_times, t, rtol=1e-10)
    X, y = np.asarray(task.X), np.asarray(task.Y)[:, 0]
    assert p.rescaled_times[0] == pytest.approx(1 / np.abs(X.T @ y / 2).max(), rel=1e-12)
    assert p.order == ["β[0]", "β[1]", "β[0]"]
    np.testing.assert_allclose(p.plateau_parameters[0], [0.4619, 0.0], atol=1e-4)
    np.testing.assert_allclose(p.plateau_parameters[1], [0.0, 1.5843], atol=1e-4)
    np.testing.assert_allclose(p.plateau_parameters[2], [-0.2, 2.0], atol=1e-10)
    assert p.initial_loss == pytest.approx(2.31110, abs=1e-5)
    np.testing.assert_allclose(p.losses, [1.11465, 0.07, 0.0], atol=1e-5)
    # The sign vector of coordinate 0 swings from +1 to −1: its re-activation is the flip.
    assert p.extra["signs"][1][0] == 1 and p.extra["signs"][2][0] == -1


def test_linear_r3_closed_form():
    p = theory.linear_network(r3_task(), init_scale=1e-6)
    np.testing.assert_allclose(p.rescaled_times, [1 / 3, 1 / 2, 1, 2], rtol=1e-12)
    np.testing.assert_allclose(p.losses, [2.625, 0.625, 0.125, 0.0], atol=1e-10)
    assert p.initial_loss == pytest.approx(7.125, abs=1e-10)
    np.testing.assert_allclose(p.times, p.rescaled_times * np.log(1e6))
    assert p.order == ["mode 1", "mode 2", "mode 3", "mode 4"]


def test_linear_commuting_is_one_over_sigma():
    task = ten_by_ten(commuting=True)
    p = theory.linear_network(task)
    C, T = np.asarray(task.sqrt_cov), np.asarray(task.target)
    sigma = np.linalg.svd(T @ C.T, compute_uv=False)
    np.testing.assert_allclose(p.rescaled_times, 1 / sigma, rtol=1e-8)
    mu = _mu(task)
    levels = [0.5 * mu[k + 1 :].sum() for k in range(10)]
    np.testing.assert_allclose(p.losses, levels, atol=1e-10)
    assert p.initial_loss == pytest.approx(0.5 * mu.sum(), abs=1e-10)


def test_linear_noncommuting_recursion():
    task = ten_by_ten(commuting=False)
    C, T = np.asarray(task.sqrt_cov), np.asarray(task.target)
    Sxx, Syx = C @ C.T, T @ C.T
    tau = theory.conjecture_jump_times(Sxx, Syx)
    # Check the recursion Σ_j σ_{k−j+1}(A_{j−1})(τ_j − τ_{j−1}) = 1 from scratch.
    U = np.linalg.svd(T)[0]
    t = np.concatenate([[0.0], tau])
    for k in range(1, 11):
        total = 0.0
        for j in range(1, k + 1):
            A = (np.eye(10) - U[:, : j - 1] @ U[:, : j - 1].T) @ Syx
            total += np.linalg.svd(A, compute_uv=False)[k - j] * (t[j] - t[j - 1])
        assert total == pytest.approx(1.0, rel=1e-9)
    assert tau[0] == pytest.approx(1 / np.linalg.svd(Syx, compute_uv=False)[0], rel=1e-12)
    # Not 1/σ_k here: the covariances do not commute.
    assert np.max(np.abs(tau * np.linalg.svd(Syx, compute_uv=False) - 1)) > 0.05
    p = theory.linear_network(task)
    mu = _mu(task)
    np.testing.assert_allclose(p.losses, [0.5 * mu[k + 1 :].sum() for k in range(10)], atol=1e-10)


def test_reduced_rank_regression_is_optimal():
    task = ten_by_ten(commuting=False)
    beta, loss = theory.reduced_rank_regression(task, 2)
    assert np.linalg.matrix_rank(beta, tol=1e-8) == 2
    assert float(task.loss(_Linear(beta))) == pytest.approx(loss, rel=1e-10, abs=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):  # random rank-2 perturbations never do better
        other = beta + 1e-3 * rng.standard_normal((10, 2)) @ rng.standard_normal((2, 10))
        u, s, vt = np.linalg.svd(other)
        other = (u[:, :2] * s[:2]) @ vt[:2]
        assert float(task.loss(_Linear(other))) >= loss - 1e-12


class _Linear:
    def __init__(self, beta):
        self.beta = beta

    def matrix(self):
        return self.beta


def test_saxe_r8():
    u = theory.saxe_mode(3.0, 1e-6, [1, 2, 3, 4])
    np.testing.assert_allclose(u, [4.03375e-4, 0.154380, 2.868919, 2.999660], rtol=1e-5)
    assert theory.saxe_time(3.0, 1e-6, 1.5) == pytest.approx(2.485687, abs=1e-6)


def test_saxe_deep_time_matches_ode():
    s, u0, depth = 2.0, 1e-4, 3
    rhs = lambda t, u: depth * u ** (2 - 2 / depth) * (s - u)
    t_half = theory.saxe_time(s, u0, s / 2, depth=depth)
    sol = scipy.integrate.solve_ivp(rhs, (0, t_half), [u0], rtol=1e-11, atol=1e-14)
    assert sol.y[0, -1] == pytest.approx(s / 2, rel=1e-6)


def test_saxe_prediction_whitened():
    task = r3_task()
    p = theory.saxe(task, init_scale=1e-3)
    s = np.array([3.0, 2.0, 1.0, 0.5])
    # u = s e^{2st}/(e^{2st} − 1 + s/u₀) reaches s/2 at ln(s/u₀ − 1)/(2s), and c·s, where the
    # loss ½(s − u)² has fallen halfway (c = 1 − 1/√2), ln(1/c − 1)/(2s) earlier.
    half = np.log(s / 1e-6 - 1) / (2 * s)
    np.testing.assert_allclose(p.extra["half_rise_times"], half, rtol=1e-12)
    np.testing.assert_allclose(p.times, half - np.log(np.sqrt(2) + 1) / (2 * s), rtol=1e-12)
    np.testing.assert_allclose(p.losses, [2.625, 0.625, 0.125, 0.0], atol=1e-12)


def test_theory_bad_input():
    with pytest.raises(ValueError, match="task"):
        theory.pesme_flammarion(r3_task())
    with pytest.raises(ValueError, match="rank"):
        theory.reduced_rank_regression(r3_task(), -1)
    with pytest.raises(ValueError, match="depth"):
        theory.saxe(r3_task(), init_scale=1e-3, depth=1)
    with pytest.raises(ValueError, match="init_scale"):
        theory.linear_network(r3_task(), init_scale=-1.0)
    with pytest.raises(ValueError, match="commutes"):
        theory.saxe(ten_by_ten(commuting=False), init_scale=1e-3)


def test_every_predictor_takes_model_and_task_and_returns_a_prediction():
    # One convention (like agf.predict): predict_…(model, task, **options) -> Prediction.
    import jax

    from saddlestep.theory import predictors

    key = jax.random.PRNGKey(0)
    linear_task = ss.teacher_spectrum(key, 4, 4, [3.0, 1.0])
    diag_task = ss.sparse_regression(key, 20, 6, np.array([2.0, -1.0, 0, 0, 0, 0]))
    cases = {
        "predict_linear": (ss.TwoLayer(4, 4, 4, "linear", key=key, init_scale=1e-4), linear_task),
        "predict_saxe": (ss.DeepLinear([4, 4, 4], key=key, init_scale=1e-4), linear_task),
        "predict_pesme_flammarion": (ss.DiagonalLinear(6, key=key, init_scale=1e-4), diag_task),
        "predict_modular": (ss.QuadraticNetwork(5, 6, key=key, init_scale=1e-2),
                            ss.ModularAddition(ss.fourier_template(5, {1: 2.0}))),
        "predict_attention": (ss.LinearAttention(3, 2, key=key, init_scale=1e-2),
                              ss.InContextRegression(np.diag([1.0, 0.5, 0.25]), 8)),
    }
    public = {name for name in dir(predictors) if name.startswith("predict_")}
    assert public == set(cases)
    for name, (model, task) in cases.items():
        pred = getattr(ss.theory, name)(model, task)
        assert isinstance(pred, ss.Prediction) and pred.num_steps >= 1, name
        assert pred.init_scale == pytest.approx(float(model.init_scale)), name
        assert np.all(np.diff(pred.times) > 0) and np.all(np.diff(pred.losses) <= 1e-12), name


def test_the_older_data_level_calls_still_answer_the_same():
    key = jax.random.PRNGKey(1)
    task = ss.ModularAddition(ss.fourier_template(5, {1: 2.0}))
    model = ss.QuadraticNetwork(5, 6, key=key, init_scale=1e-2)
    n0 = float(model.neuron_norms().max())
    new = ss.theory.predict_modular(model, task)
    with pytest.warns(DeprecationWarning):
        old = ss.theory.predict_modular(task.template, 1e-2, init_norm=n0)
    np.testing.assert_allclose(old.times, new.times)
