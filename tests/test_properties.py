"""Property-based tests on random small problems (shapes fixed so that nothing recompiles)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import saddlestep as ss
from saddlestep.flow import PrecisionWarning

N, D, WIDTH, OUT = 12, 3, 4, 2
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)


def problem(seed, alpha, activation):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    Y = np.tanh(X @ rng.normal(size=(D, OUT))) + 0.1 * rng.normal(size=(N, OUT))
    model = ss.TwoLayer(D, WIDTH, OUT, activation, key=jax.random.PRNGKey(seed), init_scale=alpha)
    return model, ss.SampleRegression(X, Y)


@SETTINGS
@given(seed=st.integers(0, 10**6), log_alpha=st.floats(-4, -1), activation=st.sampled_from(["linear", "relu"]))
def test_loss_never_increases(seed, log_alpha, activation):
    model, task = problem(seed, 10**log_alpha, activation)
    traj = ss.simulate(model, task, t_max=25.0, rtol=1e-7, n_save=201)
    increase = np.diff(traj.loss)
    assert np.all(increase <= 1e-7 * traj.loss[0])


@SETTINGS
@given(seed=st.integers(0, 10**6), log_alpha=st.floats(-3, -1))
def test_balancedness_is_conserved(seed, log_alpha):
    model, task = problem(seed, 10**log_alpha, "linear")
    traj = ss.simulate(model, task, t_max=40.0, rtol=1e-9, n_save=51)
    c0, c1 = model.conserved(), traj.final.conserved()
    scale = float(jnp.sum(traj.final.W**2) + jnp.sum(traj.final.a**2))
    assert float(jnp.max(jnp.abs(c1 - c0))) <= 1e-7 * scale


@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), log_alpha=st.floats(-4, -1), activation=st.sampled_from(["linear", "relu"]))
def test_neuron_order_does_not_matter(seed, log_alpha, activation):
    model, task = problem(seed, 10**log_alpha, activation)
    perm = np.random.default_rng(seed).permutation(WIDTH)
    permuted = model.with_neurons(jax.tree.map(lambda p: p[perm], model.neurons()))
    a = ss.simulate(model, task, t_max=20.0, rtol=1e-7, n_save=101)
    b = ss.simulate(permuted, task, t_max=20.0, rtol=1e-7, n_save=101)
    n = min(len(a.loss), len(b.loss))
    np.testing.assert_allclose(a.loss[:n], b.loss[:n], rtol=1e-6, atol=1e-9 * a.loss[0])


@settings(max_examples=5, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), log_alpha=st.floats(-4, -1))
def test_batched_equals_single(seed, log_alpha):
    _, task = problem(seed, 0.1, "linear")
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(seed, seed + 2))
    alphas = jnp.asarray([10**log_alpha, 10 ** (log_alpha - 1)])
    batch = eqx.filter_vmap(lambda k, a: ss.TwoLayer(D, WIDTH, OUT, "linear", key=k, init_scale=a))(keys, alphas)
    traj = ss.simulate(batch, task, t_max=30.0, n_save=101)
    for i in range(2):
        single = ss.simulate(jax.tree.map(lambda x: x[i], batch), task, t_max=30.0, n_save=101)
        np.testing.assert_allclose(traj.loss[i][: len(single.loss)], single.loss, rtol=1e-10)


def test_precision_floor_warns():
    model, task = problem(0, 1e-14, "linear")
    with pytest.warns(PrecisionWarning, match="float64 floor"):
        ss.simulate(model, task, t_max=1.0, n_save=11)
    diag = ss.DiagonalLinear(D, init_scale=1e-9)
    with pytest.warns(PrecisionWarning, match="float64 floor"):
        ss.simulate(diag, ss.SampleRegression(np.eye(D), np.ones(D)), t_max=1.0, n_save=11)


def test_float32_with_tiny_init_scale_warns():
    model, task = problem(0, 1e-6, "linear")
    model32 = jax.tree.map(lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model)
    with pytest.warns(PrecisionWarning, match="float32"):
        ss.simulate(model32, task, t_max=1.0, n_save=11)
