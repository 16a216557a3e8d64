"""Richness γ: the μP network with output/γ is small initialization; plateau ∝ ln γ or γ^{1−2/L}."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss
from saddlestep.tasks import digits


def test_gamma_is_small_initialization():
    # h_θ/γ = h_φ with φ = γ^{−1/L}θ (L-homogeneity), and the gradient flow clocks differ by γ^{2/L}.
    key = jax.random.PRNGKey(0)
    task = digits(32, seed=0)
    dims = [64, 8, 8, 10]
    gamma = 100.0
    rich = ss.RichReLU(dims, key=key, gamma=gamma)
    small = eqx.tree_at(lambda m: (m.layers, m.gamma), ss.RichReLU(dims, key=key),
                        (tuple(gamma ** (-1 / 3) * w for w in rich.layers), jnp.asarray(1.0)))
    np.testing.assert_allclose(jax.vmap(rich)(task.X), jax.vmap(small)(task.X), rtol=1e-12)
    g_rich = jax.grad(lambda m: task.loss(m))(rich).layers
    g_small = jax.grad(lambda m: task.loss(m))(small).layers
    for a, b in zip(g_rich, g_small):
        # dφ/dt = γ^{−1/L} dθ/dt = γ^{−2/L}·(−∇_φ ℒ).
        np.testing.assert_allclose(gamma ** (-1 / 3) * a, gamma ** (-2 / 3) * b, rtol=1e-10, atol=1e-300)
    # γ and the frozen copy are not trained.
    grads = jax.grad(lambda m: task.loss(m))(ss.RichReLU(dims, key=key, gamma=3.0, centred=True))
    assert float(grads.gamma) == 0.0 and all(float(jnp.abs(w).max()) == 0.0 for w in grads.initial)


def test_centred_starts_at_zero():
    model = ss.RichReLU([64, 8, 10], key=jax.random.PRNGKey(0), gamma=0.1, centred=True)
    X = digits(16).X
    assert float(jnp.abs(jax.vmap(model)(X)).max()) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="gamma"):
        ss.RichReLU([4, 4, 2], key=jax.random.PRNGKey(0), gamma=-1.0)
    with pytest.raises(ValueError, match="centred"):
        ss.RichReLU([4, 4, 2], key=jax.random.PRNGKey(0), centred="yes")


def _plateaus(depth, gammas, *, centred=False):
    task = digits(128, seed=0)
    width = 16
    dims = [64] + [width] * (depth - 1) + [10]
    key = jax.random.PRNGKey(0)
    batch = jax.tree.map(lambda *x: jnp.stack(x),
                         *[ss.RichReLU(dims, key=key, gamma=g, centred=centred) for g in gammas])
    # Each member stops when its loss has fallen by 10%: the plateau's end, at a level every γ
    # passes through on the same (γ-free) post-plateau curve.
    tr = ss.simulate(batch, task, t_max=1e4 * width * max(gammas), rtol=1e-7, n_save=11, n_snapshots=2,
                     loss_floor=0.0, converge_tol=0.9)
    assert tr.status == ["converged"] * len(gammas)
    return np.asarray(tr.t_final) / (width * np.asarray(gammas) ** (2.0 / depth))


@pytest.mark.parametrize("depth", [2, 3])
def test_plateau_law(depth):
    # τ_plateau(γ) = A·g(γ) + B with g = ln γ (L = 2) or γ^{1−2/L}: the γ-free offset B (the drop
    # itself) cancels in differences, so the ratio of successive increments is g's.
    gammas = np.array([10.0, 100.0, 1000.0])
    tau = _plateaus(depth, gammas)
    g = np.log(gammas) if depth == 2 else gammas ** (1 - 2 / depth)
    ratio = (tau[2] - tau[1]) / (tau[1] - tau[0])
    expected = (g[2] - g[1]) / (g[1] - g[0])
    assert abs(ratio / expected - 1) < 0.05


def test_the_preset_gamma_sweep_runs_at_the_runs_own_init_scale(tmp_path):
    # richness.json's plateau times came from a sweep built at α = 1 whatever --init-scale said:
    # at α = 0.5 they must be those of RichReLU at α = 0.5 (an independent run here), and differ
    # from α = 1's.
    import json

    from saddlestep.runs import run_preset

    over = {"depth": "2", "width": "8", "n": "64", "gamma": "10", "gammas": "10,30"}
    run_preset("richness", init_scale=0.5, overrides=over, out=str(tmp_path / "r"), progress=False)
    report = json.loads((tmp_path / "r" / "richness.json").read_text())
    assert report["init_scale"] == 0.5
    task = digits(64, seed=0)
    dims = [64, 8, 10]
    own = {}
    for alpha in (0.5, 1.0):
        batch = jax.tree.map(lambda *x: jnp.stack(x), *[ss.RichReLU(dims, key=jax.random.PRNGKey(0), gamma=g,
                                                                     init_scale=alpha) for g in (10.0, 30.0)])
        tr = ss.simulate(batch, task, t_max=1e4 * 8 * 30.0, rtol=1e-7, n_save=11, n_snapshots=2,
                         loss_floor=0.0, converge_tol=0.9)
        own[alpha] = np.asarray(tr.t_final) / (8 * np.array([10.0, 30.0]) ** (2.0 / 2))
    np.testing.assert_allclose(report["plateau_tau"], own[0.5], rtol=1e-6)
    assert abs(own[1.0][0] / own[0.5][0] - 1) > 0.05
