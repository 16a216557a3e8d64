"""The stiff path: matrix-free Newton on I + γh∇²L, its agreement with the explicit flow, and the
automatic explicit → implicit switch."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import saddlestep as ss
from saddlestep import stiff
from saddlestep.flow import TRACE_COUNT
from saddlestep.models import QuadraticNetwork
from saddlestep.models.base import parameters
from saddlestep.presets import get_preset
from saddlestep.crossings import first_crossing
from saddlestep.tasks import fourier_template, ModularAddition


def _modular(alpha, seed=0):
    task = ModularAddition(fourier_template(5, {1: 10.0, 2: 2.5}))
    model = QuadraticNetwork(5, 8, key=jax.random.PRNGKey(seed), init_scale=alpha)
    return model, task


def _flat_loss(model, task):
    params, static = eqx.partition(parameters(model), eqx.is_inexact_array)
    y, unravel = ravel_pytree(params)
    return y, lambda z: task.loss(eqx.combine(unravel(z), static))


def _feature_crossings(traj, level=0.5):
    F = traj.observables["features"]
    return np.array([first_crossing(traj.times, F[:, k], level) for k in range(F.shape[1])])


def test_hvp_matches_finite_differences():
    model, task = _modular(0.5)
    y, loss = _flat_loss(model, task)
    grad = jax.grad(loss)
    v = jax.random.normal(jax.random.PRNGKey(1), y.shape)
    eps = 1e-5
    fd = (grad(y + eps * v) - grad(y - eps * v)) / (2 * eps)
    np.testing.assert_allclose(stiff.hvp(grad, y, v), fd, rtol=1e-6, atol=1e-8 * np.max(np.abs(fd)))


@pytest.mark.parametrize("h", [1e-3, 1e-2])
def test_matrix_free_newton_matches_dense(h):
    # One implicit stage f = −∇L(y + γh f): Newton with CG on HVPs against Newton with LU.
    model, task = _modular(0.5)
    y, loss = _flat_loss(model, task)
    grad = jax.grad(loss)
    gamma = stiff.kvaerno5_gamma()
    fn = lambda f, args: (f + grad(y + gamma * h * f), None)

    def solve(ls):
        rf = stiff.NewtonCG(rtol=1e-9, atol=1e-12, linear_solver=ls, kappa=1e-3)
        import optimistix as optx

        return optx.root_find(lambda f, a: fn(f, a)[0], rf, -grad(y), max_steps=50).value

    cg = solve(lx.CG(rtol=1e-10, atol=0.0, max_steps=500))
    dense = solve(lx.LU())
    np.testing.assert_allclose(cg, dense, rtol=1e-8, atol=1e-9 * np.max(np.abs(dense)))
    np.testing.assert_allclose(fn(dense, None)[0], 0.0, atol=1e-8 * np.max(np.abs(dense)))


def test_deflation_preconditioner():
    # Exact Ritz pairs: M⁻¹ inverts I + s∇²L on their span, is the identity off it, and CG on
    # the preconditioned system gives the same solution in fewer iterations.
    model, task = _modular(0.5)
    y, loss = _flat_loss(model, task)
    H = np.asarray(jax.hessian(loss)(y))
    lam, U = np.linalg.eigh(H)
    k, s = 8, 0.5
    pre = stiff.Deflation(jnp.asarray(U[:, -k:]), jnp.asarray(np.maximum(lam[-k:], 0.0)), s)
    A = np.eye(y.size) + s * H
    np.testing.assert_allclose(A @ np.asarray(pre(U[:, -1])), U[:, -1], atol=1e-10)
    np.testing.assert_allclose(np.asarray(pre(U[:, 0])), U[:, 0], atol=1e-12)
    b = np.asarray(jax.random.normal(jax.random.PRNGKey(2), y.shape))
    op = lx.MatrixLinearOperator(jnp.asarray(A), lx.positive_semidefinite_tag)
    cg = lx.CG(rtol=1e-10, atol=1e-10, max_steps=2000)
    plain = lx.linear_solve(op, jnp.asarray(b), cg)
    precond = lx.linear_solve(op, jnp.asarray(b), cg, options={
        "preconditioner": lx.FunctionLinearOperator(pre, jax.eval_shape(lambda: jnp.asarray(b)), lx.positive_semidefinite_tag)})
    np.testing.assert_allclose(precond.value, np.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    assert precond.stats["num_steps"] < plain.stats["num_steps"]


def _small_linear():
    # The `linear` preset's teacher (s = 10 … 0.625) on d = width = 8: 128 parameters.
    preset = get_preset("linear")
    return preset.build(preset.parameters({"d": "8", "width": "8"}), init_scale=1e-6, seed=0, data=None)


def test_implicit_reproduces_linear_preset():
    setup = _small_linear()
    s = np.asarray(setup.task.singular_values)
    kw = dict(t_max=setup.t_max, rtol=1e-8, n_save=4001)
    ref = ss.simulate(setup.model, setup.task, **kw)
    for linear in ("dense", "cg"):
        imp = ss.simulate(setup.model, setup.task, solver="implicit", linear_solver=linear, **kw)
        t_ref = [first_crossing(ref.times, ref.observables["features"][:, k], s[k] / 2) for k in range(len(s))]
        t_imp = [first_crossing(imp.times, imp.observables["features"][:, k], s[k] / 2) for k in range(len(s))]
        np.testing.assert_allclose(t_imp, t_ref, rtol=1e-6)
        # Plateau levels: the loss on the save grid between drops.
        n = min(len(ref.loss), len(imp.loss))
        np.testing.assert_allclose(imp.loss[:n], ref.loss[:n], atol=1e-6 * ref.loss[0])
        assert imp.stats["t_switch"] == 0.0 and imp.stats["implicit_steps"] == imp.stats["steps"]


def test_newton_converges_at_tight_tolerance():
    # A teacher spanning 10³ at α = 1e-6 and rtol 1e-9: once the first mode has relaxed its
    # stage derivatives are ~0, and a Newton test on atol + rtol·|f| (1e-15) sat below the rounding
    # of ∇L, so every step after the first drop failed (2,736 of 5,000 steps rejected without
    # reaching the third drop). The test is now on the stage values.
    from saddlestep.tasks.regression import teacher_spectrum

    s = np.array([10.0, 1.0, 0.1, 0.01])
    task = teacher_spectrum(jax.random.PRNGKey(1), 8, 8, s)
    model = ss.models.TwoLayer(8, 8, 8, "linear", key=jax.random.PRNGKey(0), init_scale=1e-6)
    kw = dict(t_max=200.0, n_save=2001, converge_tol=1e-12)
    imp = ss.simulate(model, task, solver="implicit", linear_solver="dense", rtol=1e-9, max_steps=2000, **kw)
    assert imp.status != "max_steps" and imp.stats["rejected"] < imp.stats["steps"] / 4
    ref = ss.simulate(model, task, rtol=1e-6, **kw)  # Tsit5: stability-bound, far tighter than 1e-6
    F, G = imp.observables["features"], ref.observables["features"]
    t_imp = [first_crossing(imp.times, F[:, k], s[k] / 2) for k in range(3)]
    t_ref = [first_crossing(ref.times, G[:, k], s[k] / 2) for k in range(3)]
    np.testing.assert_allclose(t_imp, t_ref, rtol=1e-5)


def test_stiff_path_reproduces_small_modular_case():
    model, task = _modular(0.1)
    kw = dict(t_max=400.0, rtol=1e-8, n_save=2001, converge_tol=1e-9)
    ref = ss.simulate(model, task, **kw)
    auto = ss.simulate(model, task, solver="auto", **kw)
    imp = ss.simulate(model, task, solver="implicit", linear_solver="cg", **kw)
    t_ref = _feature_crossings(ref)
    assert np.all(np.isfinite(t_ref))
    for traj in (auto, imp):
        # atol: the first crossing lies in the first save interval (t ≈ 0.18, spacing 0.2).
        np.testing.assert_allclose(_feature_crossings(traj), t_ref, rtol=1e-6, atol=1e-6)
        n = min(len(ref.loss), len(traj.loss))
        np.testing.assert_allclose(traj.loss[:n], ref.loss[:n], atol=1e-6 * ref.loss[0])
    # The automatic choice went implicit after the first drop, and that paid.
    t_first = t_ref.min()
    assert 0 < auto.stats["t_switch"] and auto.stats["t_switch"] >= 0.5 * t_first
    assert auto.stats["implicit_steps"] > 0
    assert auto.stats["steps"] < ref.stats["steps"] / 3
    # The step record runs through both segments in time order, one entry per accepted step
    # (the two buffers are compacted, not sorted).
    assert len(auto.step_times) == auto.stats["accepted"] and np.all(np.diff(auto.step_times) > 0)
    assert auto.step_times[0] < auto.stats["t_switch"] < auto.step_times[-1]
    # Gradient flow only descends: the recorded losses fall step after step, across the switch.
    assert np.all(np.diff(auto.step_loss) <= 1e-9 * auto.step_loss[0])


def test_auto_stays_explicit_when_not_stiff():
    setup = _small_linear()
    traj = ss.simulate(setup.model, setup.task, t_max=setup.t_max, solver="auto")
    assert traj.stats["t_switch"] == -1.0 and traj.stats["implicit_steps"] == 0
    assert traj.method.startswith("auto")


def test_stiff_core_compiles_once_across_alpha_and_tolerances():
    before = TRACE_COUNT["stiff"]
    for alpha, rtol in ((0.3, 1e-5), (0.2, 1e-6)):
        model, task = _modular(alpha, seed=int(10 * alpha))
        ss.simulate(model, task, t_max=5.0 / alpha, rtol=rtol, solver="implicit", n_save=101)
    assert TRACE_COUNT["stiff"] - before <= 1


def test_bad_solver_name():
    model, task = _modular(0.1)
    with pytest.raises(ValueError, match="solver"):
        ss.simulate(model, task, t_max=1.0, solver="stiff")
    with pytest.raises(ValueError, match="linear_solver"):
        ss.simulate(model, task, t_max=1.0, solver="implicit", linear_solver="gmres")


def test_batched_auto_keeps_switch_times():
    # An ensemble over seeds: each member switches at its own time, and indexing the batch
    # keeps that time as a float (it once went through int()).
    kw = dict(t_max=200.0, rtol=1e-7, n_save=401, converge_tol=1e-9, solver="auto")
    models = eqx.filter_vmap(lambda k: QuadraticNetwork(5, 8, key=k, init_scale=0.1))(
        jax.random.split(jax.random.PRNGKey(0), 2))
    task = _modular(0.1)[1]
    batch = ss.simulate(models, task, **kw)
    for i in range(2):
        member = jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, models)
        single = ss.simulate(member, task, **kw)
        t = batch[i].stats["t_switch"]
        assert isinstance(t, float) and t > 0 and t != int(t)
        assert t == pytest.approx(single.stats["t_switch"], rel=1e-9)
