import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss


@pytest.mark.parametrize(
    "make",
    [
        lambda k: ss.TwoLayer(5, 7, 3, "relu", bias=True, key=k, init_scale=0.3),
        lambda k: ss.TwoLayer(5, 7, 3, "quadratic", key=k, init_scale=0.3),
        lambda k: ss.TwoLayer(5, 7, 3, "linear", key=k, init_scale=0.3),
        lambda k: ss.TwoLayer(5, 7, 2, "tanh", bias=True, key=k, init_scale=0.3),
        lambda k: ss.DiagonalLinear(5, key=k, init_scale=0.3),
        lambda k: ss.DiagonalLinear(5, key=k, init_scale=0.3, variant="squares"),
    ],
)
def test_neuron_view_sums_to_model(make, getkey):
    model = make(getkey())
    # Make the diagonal model non-trivial (v starts at 0).
    model = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(getkey(), p.shape) if eqx.is_inexact_array(p) and p.ndim else p, model)
    x = jax.random.normal(getkey(), (5,))
    per_neuron = model.neuron_outputs(model.neurons(), x)
    assert per_neuron.shape[0] == jax.tree.leaves(model.neurons())[0].shape[0]
    np.testing.assert_allclose(per_neuron.sum(0), model(x), rtol=1e-13, atol=1e-15)
    rebuilt = model.with_neurons(model.neurons())
    np.testing.assert_allclose(rebuilt(x), model(x), rtol=0, atol=0)


def test_homogeneity_degree(getkey):
    for act, kappa in [("relu", 2), ("linear", 2), ("quadratic", 3)]:
        m = ss.TwoLayer(4, 3, 2, act, key=getkey(), init_scale=1.0)
        x = jax.random.normal(getkey(), (4,))
        n = m.neurons()
        scaled = jax.tree.map(lambda p: 1.7 * p, n)
        np.testing.assert_allclose(m.neuron_outputs(scaled, x), 1.7**kappa * m.neuron_outputs(n, x), rtol=1e-12)
        assert m.kappa == kappa
    assert ss.TwoLayer(4, 3, 2, "tanh", key=getkey(), init_scale=1.0).kappa is None


def test_init_conventions(getkey):
    alpha = 1e-4
    diag = ss.DiagonalLinear(6, init_scale=alpha)
    np.testing.assert_allclose(diag.u, np.sqrt(2) * alpha)
    np.testing.assert_allclose(diag.v, 0.0)
    wide = ss.TwoLayer(400, 2000, 400, "linear", key=getkey(), init_scale=alpha)
    # Each neuron starts at norm ≈ √2·α (the AGF convention).
    assert abs(float(jnp.mean(wide.neuron_norms())) / (np.sqrt(2) * alpha) - 1) < 0.02
    deep = ss.DeepLinear([8, 9, 10, 3], key=getkey(), init_scale=alpha)
    np.testing.assert_allclose(deep.matrix(), deep.layers[2] @ deep.layers[1] @ deep.layers[0])
    relu = ss.DeepReLU([8, 9, 3], key=getkey(), init_scale=alpha)
    assert relu(jnp.ones(8)).shape == (3,)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda k: ss.TwoLayer(3, 0, 1, key=k), "width"),
        (lambda k: ss.TwoLayer(3, 2, 1, "sigmoid", key=k), "activation"),
        (lambda k: ss.TwoLayer(3, 2, 1, key=k, init_scale=0.0), "init_scale"),
        (lambda k: ss.TwoLayer(3, 2, 1, key=k, init_scale=float("nan")), "init_scale"),
        (lambda k: ss.TwoLayer(3, 2, 1, key=k, init_scale=float("inf")), "init_scale"),
        (lambda k: ss.DeepLinear([3, 2], key=k), "dims"),
        (lambda k: ss.DiagonalLinear(-1, key=k), "d"),
        (lambda k: ss.DiagonalLinear(3, variant="cubes"), "variant"),
    ],
)
def test_bad_model_arguments(make, message, getkey):
    with pytest.raises(ValueError, match=message):
        make(getkey())


def _cube(z):
    return z**3


def test_custom_activation_has_the_degree_it_is_given(getkey):
    m = ss.TwoLayer(4, 3, 2, _cube, kappa=4, key=getkey(), init_scale=1.0)
    x = jax.random.normal(getkey(), (4,))
    n = m.neurons()
    scaled = jax.tree.map(lambda p: 1.7 * p, n)
    np.testing.assert_allclose(m.neuron_outputs(scaled, x), 1.7**4 * m.neuron_outputs(n, x), rtol=1e-12)
    assert m.kappa == 4 and m.activation_name == "_cube"
    # The same network written by hand: a @ σ(W x).
    np.testing.assert_allclose(m(x), m.a @ (m.W @ x) ** 3, rtol=1e-13)


def test_custom_relu_flows_exactly_like_the_named_one():
    key = jax.random.PRNGKey(3)
    task = ss.relu_teacher(jax.random.PRNGKey(0), 4, (2.0,), n=64)
    named = ss.simulate(ss.TwoLayer(4, 5, 1, "relu", key=key, init_scale=1e-2), task, t_max=20.0, n_save=50)
    custom = ss.simulate(ss.TwoLayer(4, 5, 1, jax.nn.relu, kappa=2, key=key, init_scale=1e-2), task, t_max=20.0,
                         n_save=50)
    np.testing.assert_allclose(custom.loss, named.loss, rtol=1e-12)


def test_custom_activation_conserves_its_balance_along_the_flow():
    # a·σ(wᵀx) with σ of degree 2 (κ = 3): (κ−1)‖a_i‖² − ‖w_i‖² is conserved by gradient flow.
    def square(z):
        return z**2

    task = ss.relu_teacher(jax.random.PRNGKey(1), 3, (1.0,), n=32)
    model = ss.TwoLayer(3, 4, 1, square, kappa=3, key=jax.random.PRNGKey(2), init_scale=0.3)
    traj = ss.simulate(model, task, t_max=5.0, n_save=20, n_snapshots=5, rtol=1e-10)
    first = np.asarray(model.conserved())
    for i in range(len(traj.snapshot_times)):
        np.testing.assert_allclose(np.asarray(traj.snapshot(i).conserved()), first, atol=1e-7)
    assert not np.allclose(np.asarray(traj.snapshot(-1).W), np.asarray(model.W))  # it did move


@pytest.mark.parametrize(
    "kwargs, message",
    [({"activation": _cube}, "kappa"), ({"activation": _cube, "kappa": 0}, "kappa"),
     ({"activation": _cube, "kappa": 2.5}, "kappa"), ({"activation": "relu", "kappa": 3}, "kappa")],
)
def test_bad_custom_activation(kwargs, message, getkey):
    with pytest.raises(ValueError, match=message):
        ss.TwoLayer(3, 2, 1, key=getkey(), **kwargs)
