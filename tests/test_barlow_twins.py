"""Barlow Twins with a linear or kernel encoder: closed forms of Simon et al. (2023), R6–R8."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss
from saddlestep.theory.barlow_twins import barlow_twins_aligned, barlow_twins_final, predict_barlow_twins

GAM = np.array([1.0, 0.5, 0.25, 0.1, -0.2])


@pytest.fixture(scope="module")
def r6():
    R, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))
    return R, (R * GAM) @ R.T


def _half_rise(times, values):
    return np.array([times[np.argmax(values[:, k] >= 0.5)] for k in range(values.shape[1])])


def test_r6_aligned_closed_form(r6):
    R, G = r6
    task = ss.BarlowTwins(gamma=G)
    model = ss.LinearEncoder(5, 3, key=jax.random.PRNGKey(0), init_scale=1e-4, directions=R[:, :3].T)
    traj = ss.simulate(model, task, t_max=20.0, rtol=1e-11, n_save=4001)
    theory = barlow_twins_aligned(GAM[:3], GAM[:3] * 1e-8, traj.times)
    np.testing.assert_allclose(traj.observables["features"], theory, atol=5e-9)
    np.testing.assert_allclose(traj.observables["eigs_C"], np.sort(theory, axis=1)[:, ::-1], atol=5e-9)
    pred = predict_barlow_twins(model, task)
    c0 = GAM[:3] * 1e-8  # γ_j s_j(0)², s_j(0) = 1e-4
    # c_j reaches ½ at ln(1/c_j(0) − 1)/(8γ_j); the loss (1 − c_j)² has fallen halfway
    # ln(1 + √2)/(8γ_j) earlier (c_j = 1 − 1/√2): the step's time, where `detect_steps` puts the drop.
    half = np.log(1 / c0 - 1) / (8 * GAM[:3])
    np.testing.assert_allclose(pred.extra["half_rise_times"], half, rtol=1e-12)
    np.testing.assert_allclose(pred.times, half - np.log(1 + np.sqrt(2)) / (8 * GAM[:3]), rtol=1e-12)
    np.testing.assert_allclose(_half_rise(traj.times, traj.observables["features"]), half, atol=6e-3)
    np.testing.assert_allclose([s.time for s in ss.detect_steps(traj)], pred.times, rtol=3e-3)
    assert pred.initial_loss == pytest.approx(3.0, abs=1e-7)
    np.testing.assert_array_equal(pred.losses, [2.0, 1.0, 0.0])
    for t, level in [(1.0, 3.0), (3.5, 1.988), (7.0, 0.994), (15.0, 0.0)]:
        assert traj.loss[np.argmin(abs(traj.times - t))] == pytest.approx(level, abs=2e-3)
    W = np.asarray(traj.final.W)
    np.testing.assert_allclose(W @ G @ W.T, np.eye(3), atol=1e-5)  # the flow stops at L ≈ 1e-12·L(0)
    np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False), [2.0, np.sqrt(2), 1.0], atol=1e-5)
    # Final whitened projection: W* up to a left rotation, i.e. the same WᵀW.
    Wf = barlow_twins_final(G, 3)
    np.testing.assert_allclose(W.T @ W, Wf.T @ Wf, atol=1e-5)


def test_r7_small_random_init(r6):
    _, G = r6
    sigma = 1e-5
    W0 = sigma * np.random.default_rng(3).standard_normal((3, 5))
    model = eqx.tree_at(lambda m: m.W, ss.LinearEncoder(5, 3, key=jax.random.PRNGKey(0), init_scale=sigma), jnp.asarray(W0))
    task = ss.BarlowTwins(gamma=G)
    traj = ss.simulate(model, task, t_max=25.0, rtol=1e-10, n_save=5001)
    sim = _half_rise(traj.times, traj.observables["features"])
    pred = predict_barlow_twins(model, task)
    assert pred.order == ["mode 1", "mode 2", "mode 3"]
    np.testing.assert_allclose(sim, pred.times, rtol=0.05)
    assert np.all(np.diff(sim) > 0)
    # Plateaus 3, 2, 1, 0: one unit per step.
    for k, t in enumerate(list(0.5 * (np.r_[0.0, sim[:-1]] + sim)) + [24.0]):
        assert traj.loss[np.argmin(abs(traj.times - t))] == pytest.approx(3 - k, abs=0.02)


def test_negative_modes_are_never_learned(r6):
    R, G = r6
    model = ss.LinearEncoder(5, 5, key=jax.random.PRNGKey(1), init_scale=1e-5)
    task = ss.BarlowTwins(gamma=G)
    pred = predict_barlow_twins(model, task)
    assert pred.num_steps == 4 and task.loss_floor(model) == 1.0
    np.testing.assert_array_equal(pred.losses, [4.0, 3.0, 2.0, 1.0])
    traj = ss.simulate(model, task, t_max=1.3 * pred.times[-1] + 30.0, rtol=1e-9, n_save=2001)
    c = traj.observables["features"]
    assert np.all(c[:, 4] <= 1e-9)  # c_5 = γ_5‖Wv_5‖² stays at (negative) O(σ²) and decays
    assert abs(c[-1, 4]) < abs(c[0, 4])
    np.testing.assert_allclose(c[-1, :4], 1.0, atol=1e-3)
    assert traj.loss[-1] == pytest.approx(1.0, abs=1e-3)


def test_latent_pairs_have_the_prescribed_spectrum():
    xa, xb, G = ss.latent_pairs(GAM, 40000, 7, noise=0.3, seed=0)
    assert xa.shape == xb.shape == (40000, 7)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(G))[::-1][:5], np.r_[GAM[:4], 0.0], atol=1e-12)
    emp = np.sort(np.linalg.eigvalsh(ss.cross_correlation_matrix(xa, xb)))[::-1]
    np.testing.assert_allclose(emp[[0, 1, 2, 3, -1]], GAM, atol=0.03)


def test_digit_pairs_and_kernel_form():
    xa, xb, labels = ss.digit_pairs(60, shift=1, noise=0.05, seed=0)
    assert xa.shape == xb.shape == (60, 64) and labels.shape == (60,)
    # The kernel form with a linear kernel has the nonzero eigenvalues of the feature-space Γ (R8).
    X = np.vstack([xa, xb])
    psi = ss.kernel_features(X @ X.T)
    kernel_task = ss.BarlowTwins(psi[:60], psi[60:])
    feature_task = ss.BarlowTwins(xa, xb)
    np.testing.assert_allclose(kernel_task.gamma_eigenvalues[:10], feature_task.gamma_eigenvalues[:10], rtol=1e-8)
    # and embeds new points like the feature-space encoder: ψ(x)ᵀψ(y) = k(x, y).
    new = np.random.default_rng(0).standard_normal((3, 64))
    np.testing.assert_allclose(ss.kernel_features(X @ X.T, X @ new.T) @ psi.T, new @ X.T, atol=1e-8)
    K = ss.rbf_kernel(X, X, bandwidth=3.0)
    enc = ss.KernelEncoder(120, 4, key=jax.random.PRNGKey(0))
    task = ss.BarlowTwins(*np.split(ss.kernel_features(K), 2))
    task.validate(enc)
    assert predict_barlow_twins(enc, task).num_steps == 4


def test_barlow_twins_synthetic_preset(tmp_path):
    ss.run_preset("barlow-twins-synthetic", overrides={"n": "400", "m": "5"}, out=str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parameters"]["d"] == 3
    np.testing.assert_allclose(summary["observables_final"]["eigs_C"], 1.0, atol=1e-4)
    assert [s["feature"] for s in summary["steps"]] == ["mode 1", "mode 2", "mode 3"]
    t_sim = [s["time"] for s in summary["steps"]]
    np.testing.assert_allclose(t_sim, summary["prediction"]["times"], rtol=0.06)
    assert (tmp_path / "run" / "eigenvalues.png").exists()


def test_original_loss_ablation_runs():
    xa, xb, _ = ss.latent_pairs(GAM[:4], 200, 5, noise=0.1, seed=1)
    task = ss.BarlowTwins(xa, xb, loss="original", off_diagonal=0.0051)
    model = ss.LinearEncoder(5, 3, key=jax.random.PRNGKey(0), init_scale=1e-3)
    traj = ss.simulate(model, task, t_max=5.0, rtol=1e-6, n_save=101)
    assert traj.loss[-1] < 0.5 * traj.loss[0]
    with pytest.raises(ValueError, match=r"^task: "):
        predict_barlow_twins(model, task)


def test_bad_input():
    with pytest.raises(ValueError, match=r"^xb: .*match xa"):
        ss.BarlowTwins(np.ones((10, 4)), np.ones((10, 5)))
    with pytest.raises(ValueError, match=r"^xa, xb: "):
        ss.BarlowTwins(np.ones((10, 4)))
    with pytest.raises(ValueError, match=r"^loss: "):
        ss.BarlowTwins(gamma=np.eye(3), loss="original")
    with pytest.raises(ValueError, match=r"^gamma: .*symmetric"):
        ss.BarlowTwins(gamma=np.arange(9.0).reshape(3, 3))
    # The simplified loss has no λ and no prefactor: setting one is refused, not ignored.
    with pytest.raises(ValueError, match=r"^off_diagonal: applies to loss='original' only"):
        ss.BarlowTwins(gamma=np.eye(3), off_diagonal=0.05)
    with pytest.raises(ValueError, match=r"^scale: applies to loss='original' only"):
        ss.BarlowTwins(np.ones((10, 3)), np.ones((10, 3)), scale=2.0)
    with pytest.raises(ValueError, match=r"^model: "):
        ss.simulate(ss.LinearEncoder(4, 2, key=jax.random.PRNGKey(0)), ss.BarlowTwins(gamma=np.eye(3)), t_max=1.0)
    with pytest.raises(ValueError, match=r"^n: "):
        ss.digit_pairs(5000)
    with pytest.raises(ValueError, match=r"^m: "):
        ss.latent_pairs(GAM, 10, 3)


def test_preset_refuses_original_loss_settings_with_the_simplified_loss():
    """`--set off_diagonal=…` or `scale=…` with the default simplified loss changed nothing (the run
    was the default's, number for number): it is refused, naming the setting that would apply it."""
    from saddlestep.presets import get_preset

    preset = get_preset("barlow-twins-synthetic")
    for name, value in (("off_diagonal", "0.05"), ("scale", "3")):
        with pytest.raises(ValueError, match=rf"^overrides {name}: applies to loss=original only"):
            preset.setup(preset.parameters({name: value, "n": "200"}), init_scale=1e-3, seed=0)
    task = preset.setup(preset.parameters({"scale": "3", "loss": "original", "n": "200"}), init_scale=1e-3, seed=0).task
    assert task.scale == 3.0 and task.kind == "original"


def test_a_weak_mode_far_out_leaves_the_first_steps_named(tmp_path):
    # Γ spectrum (1, 0.5, −0.3), 4 latent dimensions: the third mode is learned from noise ~10⁴×
    # after the first two, and sets the horizon; on a uniform grid the first two drops fell
    # between two records and went unnamed; the record is now geometric in t.
    ss.run_preset("barlow-twins-synthetic", overrides={"spectrum": "1,0.5,-0.3", "d": "3", "m": "4", "n": "400"},
                  out=str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    times = summary["prediction"]["times"]
    assert times[-1] > 50 * times[0]
    assert [s["feature"] for s in summary["steps"]] == ["mode 1", "mode 2", "mode 3"]
    np.testing.assert_allclose([s["time"] for s in summary["steps"]], times, rtol=0.06)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_fewer_pairs_than_dimensions_learn_only_the_modes_they_have(n):
    # n pairs of 8-dimensional views: Γ (symmetrized cross-covariance) has rank ≤ 2n, its other
    # eigenvalues rounding noise (~1e-16 of the largest, of either sign). Only its positive
    # eigenvalues are steps; the floor is d minus their count.
    rng = np.random.default_rng(n)
    xa = rng.standard_normal((n, 8))
    xb = xa + 0.1 * rng.standard_normal((n, 8))
    task = ss.BarlowTwins(xa, xb)
    gamma = np.asarray(task.gamma)
    eigs = np.linalg.eigvalsh((gamma + gamma.T) / 2)
    positive = int(np.sum(eigs > 1e-10 * np.abs(eigs).max()))
    assert positive < 8 and np.sum(np.abs(eigs) < 1e-10 * np.abs(eigs).max()) >= 8 - 2 * n  # rank ≤ 2n
    model = ss.LinearEncoder(8, 8, key=jax.random.PRNGKey(0), init_scale=1e-3)
    pred = predict_barlow_twins(model, task)
    assert pred.num_steps == positive and pred.losses[-1] == 8 - positive
    # The task's floor counts the same modes, so a run that settles there is `converged`.
    assert task.loss_floor(model) == 8 - positive
    assert np.all(np.isfinite(pred.times)) and pred.times[-1] < 1e6


def test_the_original_loss_runs_without_a_prediction_and_says_why():
    from saddlestep.presets import get_preset

    preset = get_preset("barlow-twins-synthetic")
    with pytest.warns(UserWarning, match=r"^overrides loss: loss=original has no prediction"):
        setup = preset.setup(preset.parameters({"loss": "original"}), init_scale=1e-6, seed=0)
    assert setup.predict is None
    with pytest.raises(ValueError, match=r"^overrides scale: applies to loss=original only .*got 0.5; add --set loss=original"):
        preset.setup(preset.parameters({"scale": "0.5"}), init_scale=1e-6, seed=0)
