import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss


def test_population_loss_matches_sample_moments(getkey):
    X = np.asarray(jax.random.normal(getkey(), (200, 4))) @ np.diag([1.0, 2.0, 0.5, 1.5])
    Y = X @ np.asarray(jax.random.normal(getkey(), (4, 3))) + 0.1 * np.asarray(jax.random.normal(getkey(), (200, 3)))
    n = len(X)
    pop = ss.PopulationRegression(X.T @ X / n, Y.T @ X / n, Y.T @ Y / n)
    sample = ss.SampleRegression(X, Y)
    model = ss.TwoLayer(4, 5, 3, "linear", key=getkey(), init_scale=0.7)
    np.testing.assert_allclose(pop.loss(model), sample.loss(model), rtol=1e-12)
    # The floor is the least-squares residual.
    coef = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(pop.loss_floor(model), 0.5 * np.mean(np.sum((Y - X @ coef) ** 2, 1)), rtol=1e-10)


def test_teacher_modes_whitened(getkey):
    s = [4.0, 2.0, 1.0]
    task = ss.teacher_spectrum(getkey(), 6, 5, s)
    np.testing.assert_allclose(task.singular_values, s, rtol=1e-12)
    model = ss.TwoLayer(6, 6, 5, "linear", key=getkey(), init_scale=1e-3)
    np.testing.assert_allclose(task.loss(model), 0.5 * np.sum(np.square(s)), rtol=1e-5)


def test_teacher_modes_are_numbered_by_size_in_any_order_given(getkey):
    # "mode k" is the k-th largest singular value; the teacher S = U diag(s) Vᵀ is the one given.
    rng = np.random.default_rng(1)
    U = np.linalg.qr(rng.standard_normal((5, 5)))[0][:, :3]
    V = np.linalg.qr(rng.standard_normal((6, 6)))[0][:, :3]
    s = [1.0, 5.0, 2.5]
    task = ss.teacher_spectrum(getkey(), 6, 5, s, left=U, right=V)
    np.testing.assert_allclose(task.singular_values, [5.0, 2.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(task.target, U @ np.diag(s) @ V.T, atol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(np.asarray(task.left) * U[:, [1, 2, 0]], axis=0)), 1.0, rtol=1e-12)
    for bad in ([1.0, -2.0], [0.0, 1.0]):
        with pytest.raises(ValueError, match="singular_values: expected positive"):
            ss.teacher_spectrum(getkey(), 6, 5, bad)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.eye(3), np.ones((2, 4))), "Syx"),
        ((np.diag([1.0, -1.0, 1.0]), np.ones((2, 3))), "Sxx"),
        ((np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones((1, 2))), "Sxx"),
        ((np.eye(2) * np.nan, np.ones((1, 2))), "Sxx"),
        ((np.eye(2), np.ones((1, 2)), np.zeros((1, 1))), "joint covariance"),
        ((np.eye(2), np.ones((1, 2)), np.eye(3)), "Syy"),
    ],
)
def test_bad_population_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        ss.PopulationRegression(*args)


def test_bad_sample_arguments(getkey):
    with pytest.raises(ValueError, match="Y"):
        ss.SampleRegression(np.ones((5, 2)), np.ones((4,)))
    with pytest.raises(ValueError, match="X"):
        ss.SampleRegression(np.full((5, 2), np.inf), np.ones((5,)))
    task = ss.SampleRegression(np.ones((5, 2)), np.ones((5,)))
    with pytest.raises(ValueError, match="model"):
        task.validate(ss.TwoLayer(3, 2, 1, key=getkey()))
    with pytest.raises(ValueError, match="rank"):
        ss.teacher_spectrum(getkey(), 2, 2, [1.0, 1.0, 1.0])


def test_teacher_features_need_a_two_layer_view_and_are_skipped_otherwise():
    import equinox as eqx
    import jax.numpy as jnp

    class Scalars(ss.AbstractNeuronModel):  # a_i is a scalar per neuron: no (width, out) view
        W: jax.Array
        a: jax.Array
        init_scale: jax.Array

        @property
        def kappa(self):
            return 2

        def neurons(self):
            return {"w": self.W, "a": self.a}

        def neuron_outputs(self, neurons, x):
            return (jax.nn.relu(neurons["w"] @ x) * neurons["a"])[:, None]

        def with_neurons(self, neurons):
            return eqx.tree_at(lambda m: (m.W, m.a), self, (neurons["w"], neurons["a"]))

    task = ss.relu_teacher(jax.random.PRNGKey(0), 3, (1.0,), n=16)
    odd = Scalars(jnp.ones((2, 3)), jnp.ones(2), jnp.asarray(0.1))
    assert task.observables(odd) == {}
    usual = ss.TwoLayer(3, 2, 1, "relu", key=jax.random.PRNGKey(1), init_scale=0.1)
    assert task.observables(usual)["features"].shape == (1,)


def test_digits_names_why_scikit_learn_failed_to_import(monkeypatch):
    # A module that cannot be imported (None in sys.modules makes `import` fail at once).
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)
    with pytest.raises(ValueError, match=r"^digits: needs scikit-learn .*importing it failed: .*sklearn\.datasets"):
        ss.tasks.digits(20)


def test_teacher_overlaps_of_an_even_student_ignore_the_sign_of_w():
    # σ(z) = z² is even: a student neuron (−w*, a*) is the teacher neuron itself, overlap 1
    # (the ReLU-style (w·w*)₊ gave 0, so every drop of a quadratic staircase carried a label
    # picked from ~1e-6 overlaps). A ReLU student with −w* learns nothing of that teacher.
    # Also inside a traced function, where the task's arrays are tracers.
    import equinox as eqx
    from saddlestep.tasks.regression import SampleRegression

    rng = np.random.default_rng(4)
    d, m = 5, 3
    W = np.linalg.qr(rng.standard_normal((d, d)))[0][:m] * rng.uniform(0.5, 2.0, (m, 1))
    A = rng.standard_normal((m, 2))
    X = rng.standard_normal((40, d))
    task = SampleRegression(jnp.asarray(X), jnp.asarray(np.square(X @ W.T) @ A), teacher_w=W, teacher_a=A)
    for act, expected in (("quadratic", 1.0), ("relu", 0.0)):
        model = ss.TwoLayer(d, m, 2, act, key=jax.random.PRNGKey(0), init_scale=1.0)
        model = model.with_neurons({"w": jnp.asarray(-W), "a": jnp.asarray(A)})
        np.testing.assert_allclose(task.teacher_overlaps(model), expected, atol=1e-12)
        traced = eqx.filter_jit(lambda mdl, tsk: tsk.teacher_overlaps(mdl))(model, task)
        np.testing.assert_allclose(traced, expected, atol=1e-12)


def test_evaluate_observables_is_the_eager_value_compiled_once_per_shape():
    # AGF labels each step and `run` records the final observables with it: one compiled program
    # for every model and task of the same shapes (new seeds, new data), equal to the eager call.
    import logging

    from saddlestep.tasks.base import evaluate_observables

    compiled = []

    class Catch(logging.Handler):
        def emit(self, record):
            compiled.append(record.getMessage())

    rng = np.random.default_rng(9)
    d, m, width = 4, 2, 5
    counts = []
    for seed in range(3):
        W = np.linalg.qr(rng.standard_normal((d, d)))[0][:m] * rng.uniform(0.5, 2.0, (m, 1))
        A = rng.standard_normal((m, 1))
        X = rng.standard_normal((30, d))
        task = ss.tasks.SampleRegression(jnp.asarray(X), jnp.asarray(np.maximum(X @ W.T, 0) @ A),
                                         teacher_w=W, teacher_a=A)
        model = ss.TwoLayer(d, width, 1, "relu", key=jax.random.PRNGKey(seed), init_scale=0.5)
        handler = Catch()
        logging.getLogger("jax").addHandler(handler)
        try:
            with jax.log_compiles():
                got = evaluate_observables(task, model)
        finally:
            logging.getLogger("jax").removeHandler(handler)
        counts.append(len(compiled))
        want = task.observables(model)
        assert set(got) == set(want) == {"features"}
        np.testing.assert_allclose(np.asarray(got["features"]), np.asarray(want["features"]), rtol=1e-12, atol=1e-15)
        assert np.abs(np.asarray(want["features"])).max() > 0  # not a vacuous comparison
    assert counts[0] > 0 and counts[2] == counts[0]  # seeds 1, 2: nothing compiled
