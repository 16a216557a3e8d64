"""The generic AGF neuron problem's cost phase: neurons kept balanced along their rescaling orbits."""

import jax
import numpy as np
import pytest

import saddlestep as ss
from saddlestep.agf import neuron as agf_neuron

KEY = jax.random.PRNGKey(0)


def _cube(z):
    return z**3


# Each model with its input dimension (the task's X columns).
MODELS = {
    "relu": (lambda: ss.TwoLayer(4, 5, 2, "relu", key=KEY, init_scale=1e-3), 4),
    "relu with bias": (lambda: ss.TwoLayer(4, 5, 1, "relu", bias=True, key=KEY, init_scale=1e-3), 4),
    "cubic": (lambda: ss.TwoLayer(4, 5, 1, _cube, kappa=4, key=KEY, init_scale=1e-3), 4),
    "quadratic network": (lambda: ss.QuadraticNetwork(3, 5, key=KEY, init_scale=1e-3), 6),
    "attention": (lambda: ss.LinearAttention(2, 5, key=KEY, init_scale=1e-3), 9),
}


def _problem(name, seed=0):
    make, d = MODELS[name]
    model = make()
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, d))
    out = model.neuron_outputs(model.neurons(), X[0]).shape[-1]
    return model, agf_neuron.NeuronProblem(model, ss.SampleRegression(X, rng.standard_normal((40, out))))


def _conserved(model):
    # The model's own conservation law, written independently of `neuron_factors`.
    c = model.conserved()
    return np.concatenate([np.ravel(v) for v in c.values()]) if isinstance(c, dict) else np.ravel(c)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_factors_cover_every_leaf_once_with_degrees_summing_to_kappa(name):
    model = MODELS[name][0]()
    factors = model.neuron_factors()
    keys = [k for group, _ in factors for k in group]
    assert sorted(keys) == sorted(model.neurons()) and len(keys) == len(set(keys))
    assert sum(deg for _, deg in factors) == model.kappa


@pytest.mark.parametrize("name", sorted(MODELS))
def test_balancing_keeps_each_neuron_and_zeroes_the_conserved_quantity(name):
    model, problem = _problem(name)
    rng = np.random.default_rng(1)
    flat = rng.standard_normal(agf_neuron.nx.flatten(model.neurons())[0].shape)
    # Unbalance every factor of every neuron by a random factor in e^{±2}.
    for cols, _ in problem.factors:
        flat[:, list(cols)] *= np.exp(rng.uniform(-2, 2, size=(flat.shape[0], 1)))
    assert np.abs(_conserved(problem.model(flat))).max() > 0.1
    out = problem.balanced(flat)
    np.testing.assert_allclose(problem._outputs(out), problem._outputs(flat), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_conserved(problem.model(out)), 0.0, atol=1e-10 * np.sum(out**2))
    np.testing.assert_allclose(problem.balanced(out), out, rtol=1e-12)


def test_a_model_without_factors_is_left_as_it_is():
    class Plain(ss.TwoLayer):
        def neuron_factors(self):
            return None

    model = Plain(3, 2, 1, "relu", key=KEY)
    problem = agf_neuron.NeuronProblem(model, ss.SampleRegression(np.eye(3), np.ones(3)))
    flat = np.arange(8.0).reshape(2, 4)
    assert problem.factors == () and problem.balanced(flat) is flat


@pytest.mark.parametrize("name", ["relu", "quadratic network"])
def test_cost_phase_reaches_the_unbalanced_minimum_at_a_balanced_point(name):
    # Against the cost phase without balancing (an independent BFGS run): the same loss, and the
    # balanced neurons are the ones gradient flow from small initialization would hold.
    model, problem = _problem(name, seed=3)
    plain = agf_neuron.NeuronProblem(model, problem.task, balance=False)
    rng = np.random.default_rng(4)
    start = np.zeros(agf_neuron.nx.flatten(model.neurons())[0].shape)
    active = np.zeros(start.shape[0], bool)
    active[:2] = True
    start[:2] = 0.5 * rng.standard_normal((2, start.shape[1]))
    order = np.where(active, 0, 10**9)
    out, still, _ = problem.cost(start, active, order)
    ref, ref_still, _ = plain.cost(start, active, order)
    loss = float(agf_neuron._residual(problem, out, still.astype(float))[1])
    ref_loss = float(agf_neuron._residual(plain, ref, ref_still.astype(float))[1])
    assert loss <= ref_loss * (1 + 1e-8) + 1e-12
    kept = _conserved(problem.model(out))
    assert np.abs(kept).max() <= 1e-8 * max(np.sum(out**2), 1.0)


@pytest.mark.parametrize("name", ["relu", "attention"])
def test_cost_phase_on_the_active_rows_equals_the_masked_one(name, monkeypatch):
    # Large problems run BFGS on the active rows only (padded to a power of two); masked rows have
    # zero gradient, so the iterates are the same up to rounding. Forced here on small problems
    # (κ = 2 and 3, whose cost phases converge cleanly), against the masked run over all rows.
    model, problem = _problem(name, seed=5)
    rng = np.random.default_rng(6)
    start = np.zeros(agf_neuron.nx.flatten(model.neurons())[0].shape)
    active = np.zeros(start.shape[0], bool)
    active[[1, 3, 4]] = True
    start[active] = 0.5 * rng.standard_normal((3, start.shape[1]))
    full, _ = agf_neuron._minimize_rows(problem, start, active)
    shapes = []
    minimize = agf_neuron._minimize
    monkeypatch.setattr(agf_neuron, "_minimize", lambda p, x, m: (shapes.append(x.shape), minimize(p, x, m))[1])
    monkeypatch.setattr(agf_neuron, "_RESTRICT_SIZE", 0)
    rows, _ = agf_neuron._minimize_rows(problem, start, active)
    assert shapes == [(4, start.shape[1])]  # three active rows, one padding row
    assert np.all(rows[~active] == 0.0)
    loss = lambda x: float(agf_neuron._residual(problem, x, active.astype(float))[1])
    np.testing.assert_allclose(loss(rows), loss(full), rtol=1e-9)
    # The network's function (the neurons may share it differently: the minimum is degenerate).
    f = lambda x: np.sum(problem._outputs(x * active[:, None]), axis=1)
    np.testing.assert_allclose(f(rows), f(full), rtol=1e-4, atol=1e-6)


def test_a_model_that_ignores_the_rows_it_is_given_keeps_all_rows(monkeypatch):
    class Fixed(ss.TwoLayer):
        def neuron_outputs(self, neurons, x):
            # Always one row per neuron of the model, whatever rows it is given.
            out = super().neuron_outputs(neurons, x)
            return jax.numpy.zeros((self.width, out.shape[1])).at[: out.shape[0]].set(out)

    model = Fixed(4, 5, 1, "relu", key=KEY, init_scale=1e-3)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 4))
    problem = agf_neuron.NeuronProblem(model, ss.SampleRegression(X, rng.standard_normal((30, 1))))
    start = np.zeros(agf_neuron.nx.flatten(model.neurons())[0].shape)
    active = np.zeros(start.shape[0], bool)
    active[0] = True
    start[0] = rng.standard_normal(start.shape[1])
    shapes = []
    minimize = agf_neuron._minimize
    monkeypatch.setattr(agf_neuron, "_minimize", lambda p, x, m: (shapes.append(x.shape), minimize(p, x, m))[1])
    monkeypatch.setattr(agf_neuron, "_RESTRICT_SIZE", 0)
    agf_neuron._minimize_rows(problem, start, active)
    assert shapes == [start.shape]
