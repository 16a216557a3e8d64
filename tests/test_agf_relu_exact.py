"""The exact ReLU utility phase (`agf._relu`) against two independent solutions: a fine fixed-step
RK4 integration of the unnormalized utility ascent written here (kinks and Filippov sliding
included: on a sliding kink the explicit steps chatter about it, converging at O(h) to the
sliding motion), and the engine's ODE phase on whole AGF runs (issue 16: the fast path against the
old one, same order, times within the solver's tolerance)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss
from saddlestep import agf
from saddlestep.agf import neuron
from saddlestep.agf._relu import ReluPhase
from saddlestep.tasks.regression import SampleRegression

_H = 2.5e-4  # RK4 step of the oracle: its error at sliding kinks is O(h)


def _ascent_rk4(X, R, theta, T, h=_H):
    """θ' = ∇U(θ), U = Σ_n ⟨a, R_n⟩ relu(x_nᵀw) with relu'(0) = 0; returns θ on the grid."""
    q = X.shape[1]

    def f(th):
        w, a = th[:q], th[q:]
        z = X @ w
        return np.concatenate([X.T @ ((R @ a) * (z > 0)), R.T @ np.maximum(z, 0.0)])

    out = [theta]
    th = theta.copy()
    for _ in range(int(round(T / h))):
        k1 = f(th)
        k2 = f(th + h / 2 * k1)
        k3 = f(th + h / 2 * k2)
        k4 = f(th + h * k3)
        th = th + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(th)
    return np.array(out)


def _single_neuron(seed):
    rng = np.random.default_rng(seed)
    N, d, out, bias = 12, 2 + seed % 2, 1 + seed % 3 // 2, seed % 4 == 1
    X = rng.standard_normal((N, d))
    r = rng.standard_normal((N, out))
    theta = rng.standard_normal(d + bias + out)
    theta /= np.linalg.norm(theta)
    q = d + bias
    return ReluPhase(X, bias=bias, cols_w=range(q), cols_a=range(q, theta.size)), r, theta


@pytest.mark.parametrize("seed", range(8))
def test_exact_phase_follows_the_ascent(seed):
    phase, r, theta = _single_neuron(seed)
    T = 4.0
    dt, x, S, hit = phase.advance(theta[None], np.zeros(1), np.array([1e9]), np.array([True]), r, T)
    assert dt == T and not hit
    ref = _ascent_rk4(phase.X, r / r.shape[0], theta, T)[-1]
    # S is ln‖θ(T)‖ of the unnormalized ascent from a unit θ(0) (κ = 2).
    np.testing.assert_allclose(S[0], np.log(np.linalg.norm(ref)), atol=1e-4)
    np.testing.assert_allclose(x[0], ref / np.linalg.norm(ref), atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_exact_phase_shared_kink_surfaces(seed):
    # Repeated rows and ±x pairs put several samples on one kink surface (x_nᵀw = 0); a zero
    # row never activates.
    rng = np.random.default_rng(50 + seed)
    base = rng.standard_normal((6, 3))
    X = np.concatenate([base, base, -base[:3], 2.5 * base[3:], np.zeros((1, 3))])
    r = rng.standard_normal((X.shape[0], 1))
    theta = rng.standard_normal(4)
    theta /= np.linalg.norm(theta)
    phase = ReluPhase(X, bias=False, cols_w=range(3), cols_a=[3])
    assert len(phase.normals) == 6
    T = 4.0
    dt, x, S, hit = phase.advance(theta[None], np.zeros(1), np.array([1e9]), np.array([True]), r, T)
    ref = _ascent_rk4(X, r / X.shape[0], theta, T)[-1]
    np.testing.assert_allclose(S[0], np.log(np.linalg.norm(ref)), atol=1e-4)
    np.testing.assert_allclose(x[0], ref / np.linalg.norm(ref), atol=1e-4)


def test_exact_phase_starts_on_a_kink():
    # Orthogonal inputs ±e_i and w with exact zeros: w starts on kink surfaces, and the flow
    # with relu'(0) = 0 keeps those coordinates at 0 (as the RK4 oracle does).
    rng = np.random.default_rng(7)
    E = np.eye(4)
    X = np.concatenate([E, -E, E, -E])
    r = rng.standard_normal((16, 1))
    theta = np.array([0.7, 0.0, -0.4, 0.0, 0.6])
    theta /= np.linalg.norm(theta)
    phase = ReluPhase(X, bias=False, cols_w=range(4), cols_a=[4])
    T = 3.0
    dt, x, S, hit = phase.advance(theta[None], np.zeros(1), np.array([1e9]), np.array([True]), r, T)
    ref = _ascent_rk4(X, r / 16, theta, T)[-1]
    assert ref[1] == 0.0 and ref[3] == 0.0
    np.testing.assert_allclose(S[0], np.log(np.linalg.norm(ref)), atol=1e-4)
    np.testing.assert_allclose(x[0], ref / np.linalg.norm(ref), atol=1e-4)


def test_exact_phase_collapsed_neuron_stops_moving():
    # Measured: w reaches ~1e-16 near τ ≈ 15; RK4 leaves it at ~1e-5, chattering (S to 6e-5).
    # Every active sample pulls a > 0 down (⟨a, r_n⟩ < 0) and the samples surround the origin:
    # w is squeezed between kinks onto w = 0.
    rng = np.random.default_rng(2)
    X = rng.standard_normal((12, 2))
    r = -np.abs(rng.standard_normal((12, 1)))
    theta = np.abs(rng.standard_normal(3))
    theta /= np.linalg.norm(theta)
    phase = ReluPhase(X, bias=False, cols_w=range(2), cols_a=[2])
    T = 20.0
    dt, x, S, hit = phase.advance(theta[None], np.zeros(1), np.array([1e9]), np.array([True]), r, T)
    ref = _ascent_rk4(phase.X, r / r.shape[0], theta, T)
    assert np.linalg.norm(x[0, :2]) < 1e-6
    np.testing.assert_allclose(S[0], np.log(np.linalg.norm(ref[-1])), atol=2e-4)
    np.testing.assert_allclose(x[0], ref[-1] / np.linalg.norm(ref[-1]), atol=1e-4)
    # Collapsed, the neuron holds still: a longer horizon changes nothing.
    dt2, x2, S2, _ = phase.advance(theta[None], np.zeros(1), np.array([1e9]), np.array([True]), r, 2 * T)
    np.testing.assert_allclose(S2, S, atol=1e-12)


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_exact_phase_threshold_time(seed):
    phase, r, theta = _single_neuron(seed)
    T = 4.0
    ref = _ascent_rk4(phase.X, r / r.shape[0], theta, T)
    S_ref = np.log(np.linalg.norm(ref, axis=1))
    c = 0.8 * S_ref.max()
    assert c > 0.05  # these seeds grow
    k = int(np.argmax(S_ref >= c))
    t_ref = (k - 1 + (c - S_ref[k - 1]) / (S_ref[k] - S_ref[k - 1])) * _H
    dt, x, S, hit = phase.advance(theta[None], np.zeros(1), np.array([c]), np.array([True]), r, T)
    assert hit
    np.testing.assert_allclose(dt, t_ref, rtol=1e-4)
    np.testing.assert_allclose(S[0], c, atol=1e-12)


def _random_relu(seed, alpha=1e-4):
    rng = np.random.default_rng(100 + seed)
    n, d, width, out = int(rng.integers(20, 50)), int(rng.integers(2, 5)), int(rng.integers(2, 6)), int(rng.integers(1, 3))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    teachers = rng.standard_normal((2, d))
    heads = rng.choice([-1, 1], (out, 2)) * rng.uniform(1, 3, (out, 2))
    Y = np.maximum(X @ teachers.T, 0.0) @ heads.T
    task = SampleRegression(jnp.asarray(X), jnp.asarray(Y))
    model = ss.TwoLayer(d, width, out, "relu", key=jax.random.PRNGKey(seed), init_scale=alpha, bias=bool(seed % 2))
    return model, task


# Seeds whose ODE reference runs in seconds (where a neuron slides along kinks for long the
# ODE phase crawls at its step floor: minutes). Covered: one and two outputs, with and without bias.
@pytest.mark.parametrize("seed", [0, 1, 3, 5])
def test_agf_exact_phases_match_ode_phases(seed, monkeypatch):
    model, task = _random_relu(seed)
    fast = agf.predict(model, task)
    assert fast.extra["phases"]["ode"] == 0 and fast.extra["phases"]["exact"] >= len(fast.times)
    # prediction.json keeps the contract's keys and adds AGF's neuron lists and phase counts.
    doc = json.loads(fast.dumps())
    assert set(doc) == {"method", "times", "rescaled_times", "losses", "order", "extra"}
    assert doc["extra"]["phases"] == fast.extra["phases"]
    assert doc["extra"]["activated"] == [[int(i) for i in step] for step in fast.extra["activated"]]
    monkeypatch.setattr(neuron, "_exact_phase", lambda *args: None)
    slow = agf.predict(model, task)
    assert slow.extra["phases"]["exact"] == 0
    assert fast.order == slow.order
    # Measured: 3e-7 … 1e-5 (the ODE phase's rtol 1e-8 and its step floor at kinks).
    np.testing.assert_allclose(fast.times, slow.times, rtol=1e-4)
    np.testing.assert_allclose(fast.losses, slow.losses, rtol=1e-6, atol=1e-12)


def test_agf_exact_phases_match_ode_phases_on_a_teacher(monkeypatch):
    # Gaussian teacher with norms 3, 2, 1 (one output sign): a neuron touches a kink and is
    # carried away by the side it came from (a grazing touch, once in this run); measured
    # exact against ODE phases: times to 1.2e-5, plateau losses to 1e-9.
    task = ss.relu_teacher(jax.random.PRNGKey(4), 6, [3.0, 2.0, 1.0], inputs="gaussian", n=191)
    model = ss.TwoLayer(6, 11, 1, "relu", key=jax.random.PRNGKey(4), init_scale=1e-4)
    fast = agf.predict(model, task)
    assert fast.extra["phases"] == {"exact": 3, "ode": 0}
    monkeypatch.setattr(neuron, "_exact_phase", lambda *args: None)
    slow = agf.predict(model, task)
    assert fast.order == slow.order
    np.testing.assert_allclose(fast.times, slow.times, rtol=1e-4)
    np.testing.assert_allclose(fast.losses[:-1], slow.losses[:-1], rtol=1e-6)


def _generic_only(monkeypatch):
    """Every neuron on the generic path (eigendecomposition and scan), no closed forms."""
    from saddlestep.agf import _relu

    monkeypatch.setattr(_relu.ReluPhase, "_marchable", lambda self, theta: np.zeros(len(theta), bool))
    monkeypatch.setattr(_relu._Path, "_on_axis", lambda self, *args: None)


@pytest.mark.parametrize("seed", range(8))
def test_batched_march_matches_the_generic_path(seed, monkeypatch):
    # One output, many dormant neurons on a Gaussian sample with a two-ReLU residual: the
    # batched closed-form march (and `_Path`'s closed-form segments after a handover) against
    # the eigendecomposition and scan of every segment, on the same phase. Measured on these
    # seeds: phases that activate and phases that reach the horizon; neurons handed over at a
    # kink they slide along (seeds 4, 5, 6).
    rng = np.random.default_rng(900 + seed)
    n, d, width, bias = int(rng.integers(40, 120)), int(rng.integers(2, 6)), int(rng.integers(3, 9)), bool(seed % 2)
    X = rng.standard_normal((n, d))
    r = (np.maximum(X @ rng.standard_normal(d), 0) - np.maximum(X @ rng.standard_normal(d), 0))[:, None]
    q = d + bias
    theta = rng.standard_normal((width, q + 1))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    c = rng.uniform(0.5, 6.0, width) * (1 + 3 * (seed % 3 == 0))
    dormant = rng.random(width) < 0.8
    dormant[0] = True
    phase = ReluPhase(X, bias=bias, cols_w=range(q), cols_a=[q])
    S0 = np.zeros(width)
    fast = phase.advance(theta, S0, c, dormant, r, 10.0)
    _generic_only(monkeypatch)
    slow = phase.advance(theta, S0, c, dormant, r, 10.0)
    assert fast is not None and slow is not None
    assert fast[3] == slow[3]
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-9)
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-8)
    np.testing.assert_allclose(fast[2], slow[2], atol=1e-8)


def test_batched_march_takes_one_output_neurons(monkeypatch):
    # The march is what runs (not a silent fallback): rows off every kink are marchable, one on
    # a kink is not, and a phase of marchable neurons that only cross kinks never builds a
    # `_Path`.
    from saddlestep.agf import _relu

    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 3))
    r = (X @ np.array([1.0, -0.5, 0.3]))[:, None]
    phase = ReluPhase(X, bias=False, cols_w=range(3), cols_a=[3])
    theta = rng.standard_normal((5, 4))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    assert phase._marchable(theta).all()
    on_kink = theta[:1].copy()
    on_kink[0, :3] -= phase.normals[0] * (phase.normals[0] @ on_kink[0, :3])
    assert not phase._marchable(on_kink)[0]

    def no_path(*args, **kwargs):
        raise AssertionError("a neuron left the march")

    monkeypatch.setattr(_relu._Path, "__init__", no_path)
    monkeypatch.setattr(_relu._Path, "resume", classmethod(no_path))
    dt, x, S, hit = phase.advance(theta, np.zeros(5), np.full(5, 1.0), np.ones(5, bool), r, 3.0)
    assert hit and 0 < dt < 3.0
    assert np.isclose(S.max(), 1.0)
