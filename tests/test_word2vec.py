"""Word2vec-like losses: QWEM closed forms (Karkada et al. 2025), exact SGNS, real text, presets."""

import json

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saddlestep as ss
from saddlestep.crossings import first_crossing
from saddlestep.presets.word2vec import synthetic_cooccurrence
from saddlestep.tasks.word2vec import AbstractCooccurrenceTask
from saddlestep.theory.word2vec import predict_qwem, qwem_aligned, qwem_closed_form, qwem_final

LAM = np.array([4.0, 2.0, 1.0, 0.5, -0.3, -1.0])


@pytest.fixture(scope="module")
def r1():
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))
    return Q, (Q * LAM) @ Q.T


def _half_rise(times, values, levels):
    return np.array([times[np.argmax(values[:, k] >= levels[k] / 2)] for k in range(values.shape[1])])


def test_r1_aligned_closed_form(r1):
    Q, M = r1
    task = ss.QWEM(M)
    model = ss.Embedding(6, 3, key=jax.random.PRNGKey(0), init_scale=1e-3, directions=Q[:, :3])
    traj = ss.simulate(model, task, t_max=32.0, rtol=1e-11, n_save=6401)
    theory = qwem_aligned(LAM[:3], [1e-6] * 3, traj.times)
    np.testing.assert_allclose(traj.observables["sv2"], theory, atol=1e-8)
    np.testing.assert_allclose(traj.observables["features"], theory, atol=1e-8)
    pred = predict_qwem(model, task)
    # Lemma 3.1: s_k² reaches λ_k/2 at ln(λ_k/s_k²(0) − 1)/λ_k; the loss ⅛(λ_k − s_k²)² falls
    # halfway at s_k² = (1 − 1/√2)λ_k, ln(1 + √2)/λ_k earlier: the step's time.
    half = np.log(LAM[:3] / 1e-6 - 1) / LAM[:3]
    np.testing.assert_allclose(pred.extra["half_rise_times"], half, rtol=1e-12)
    np.testing.assert_allclose(pred.times, half - np.log(1 + np.sqrt(2)) / LAM[:3], rtol=1e-12)
    assert pred.order == ["mode 1", "mode 2", "mode 3"]
    np.testing.assert_allclose(_half_rise(traj.times, traj.observables["sv2"], LAM), half, atol=6e-3)
    # The flow's drops, timed by `detect_steps`, fall at the loss-midpoint times to 0.25% (its
    # plateaus are read where the loss is flattest, with the neighbouring modes still moving); the
    # half-rise times are 3–6% later here.
    np.testing.assert_allclose([s.time for s in ss.detect_steps(traj)], pred.times, rtol=3e-3)
    # The task is in SGNS normalisation, ½ × the paper's ¼‖WWᵀ − M*‖²: plateaus 5.585 → … → 0.335.
    assert 2 * pred.initial_loss == pytest.approx(5.585, abs=1e-5)
    np.testing.assert_allclose(2 * pred.losses, [1.585, 0.585, 0.335], atol=1e-9)
    for t, level in [(0.5, 5.585), (5.5, 1.528), (10.0, 0.574), (20.0, 0.335)]:
        assert 2 * traj.loss[np.argmin(abs(traj.times - t))] == pytest.approx(level, abs=2e-3)
    W = np.asarray(traj.final.W)
    np.testing.assert_allclose(W @ W.T, qwem_final(M, 3) @ qwem_final(M, 3).T, atol=1e-5)


def test_r3_random_init_equals_exact_closed_form(r1):
    _, M = r1
    W0 = 1e-3 * np.random.default_rng(1).standard_normal((6, 3))
    model = eqx.tree_at(lambda m: m.W, ss.Embedding(6, 3, key=jax.random.PRNGKey(0)), jnp.asarray(W0))
    traj = ss.simulate(model, ss.QWEM(M), t_max=30.0, rtol=1e-11, n_save=31, n_snapshots=16)
    ts = traj.snapshot_times
    exact = qwem_closed_form(M, W0, ts)
    W = np.asarray(traj.snapshots.W)
    err = max(np.abs(W[i] @ W[i].T - exact[i]).max() for i in range(len(ts)))
    assert err < 1e-9


def test_r4_small_random_init_step_times(r1):
    Q, M = r1
    sigma = 1e-6
    W0 = sigma * np.random.default_rng(2).standard_normal((6, 3))
    model = eqx.tree_at(
        lambda m: m.W, ss.Embedding(6, 3, key=jax.random.PRNGKey(0), init_scale=sigma), jnp.asarray(W0)
    )
    task = ss.QWEM(M)
    traj = ss.simulate(model, task, t_max=45.0, rtol=1e-10, n_save=4501)
    sim = _half_rise(traj.times, traj.observables["features"], LAM)
    pred = predict_qwem(model, task)
    np.testing.assert_allclose(sim, pred.extra["half_rise_times"], rtol=0.03)
    # The loss's drops, timed at their midpoints, against the closed form's loss-midpoint times:
    # measured 1.5e-5 (at the half-rise times they would be 3% early).
    drops = [s.time for s in ss.detect_steps(traj)]
    np.testing.assert_allclose(drops, pred.times, rtol=1e-3)
    # The reference's cruder ln(λ/(dσ²))/λ is within its stated 10 %.
    np.testing.assert_allclose(sim, np.log(LAM[:3] / (3 * sigma**2)) / LAM[:3], rtol=0.10)
    np.testing.assert_allclose(traj.observables["sv2"][-1], LAM[:3], atol=1e-4)
    U = np.linalg.svd(np.asarray(traj.final.W), full_matrices=False)[0]
    assert np.linalg.norm(Q[:, :3].T @ U) ** 2 / 3 == pytest.approx(1.0, abs=1e-6)


def test_sgns_follows_qwem_at_small_init():
    P = synthetic_cooccurrence(40, topics=4, seed=3)
    qwem = ss.QWEM.from_cooccurrence(P)
    sgns = ss.SGNS(P)
    np.testing.assert_allclose(sgns.target, qwem.target)
    model = ss.Embedding(40, 3, key=jax.random.PRNGKey(0), init_scale=1e-6)
    pred = predict_qwem(model, qwem)
    lam = np.asarray(qwem.eigenvalues)[:3]
    runs = [ss.simulate(model, t, t_max=1.2 * pred.times[-1], rtol=1e-7, n_save=1201) for t in (qwem, sgns)]
    times = [_half_rise(r.times, r.observables["features"], lam) for r in runs]
    np.testing.assert_allclose(times[0], pred.times, rtol=0.03)
    # The logistic loss departs from its quartic expansion only once x = O(1): the steps agree.
    np.testing.assert_allclose(times[1], times[0], rtol=0.05)


def _weights(P, psi=None, k=1.0):
    """a = Ψ⁺P and b = kΨ⁻P_iP_j, the dense weights of `losses.sgns` (Setting 3.1 without `psi`)."""
    Pi = P.sum(1)
    psi = 1.0 / (P + k * np.outer(Pi, Pi)) if psi is None else psi
    return psi * P, k * psi * np.outer(Pi, Pi)


@pytest.mark.parametrize("reweighted", [False, True])
def test_tiled_sgns_is_the_dense_loss(reweighted):
    # Several tiles, a padded last block row, both the Setting 3.1 (s ≡ 1) and the general form:
    # loss, gradient and Hessian-vector products agree with autodiff of the dense `losses.sgns`.
    P = synthetic_cooccurrence(37, topics=3, seed=4)
    rng = np.random.default_rng(5)
    psi = None
    if reweighted:
        psi = rng.random((37, 37)) + 0.5
        psi = 200.0 * (psi + psi.T)
    a, b = _weights(P, psi, k=2.0)
    odd = jnp.asarray(ss.losses.symmetric_tiles(0.5 * (b - a), size=8))
    even = jnp.asarray(ss.losses.symmetric_tiles(a + b, size=8)) if reweighted else None
    assert odd.shape == (15, 8, 8)
    W, v = (jnp.asarray(rng.standard_normal((37, 3))) for _ in range(2))
    dense = lambda w: ss.losses.sgns(w @ w.T, jnp.asarray(a), jnp.asarray(b))
    tiled = lambda w: ss.losses.sgns_tiled(w, odd, even)
    assert float(tiled(W)) == pytest.approx(float(dense(W)), rel=1e-13)
    np.testing.assert_allclose(jax.jit(jax.grad(tiled))(W), jax.grad(dense)(W), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ss.losses.sgns_tiled_grad(W, odd, even), jax.grad(dense)(W), rtol=1e-12, atol=1e-13)
    hvp = lambda f: jax.jvp(jax.grad(f), (W,), (v,))[1]
    np.testing.assert_allclose(hvp(tiled), hvp(dense), rtol=1e-11, atol=1e-12)
    # The loss is linear in its weights; their derivative is the same sum (here against odd).
    e = jnp.zeros_like(odd).at[3, 1, 2].set(1.0)
    fd = (ss.losses.sgns_tiled(W, odd + 1e-3 * e, even) - ss.losses.sgns_tiled(W, odd - 1e-3 * e, even)) / 2e-3
    assert float(jax.grad(lambda o: ss.losses.sgns_tiled(W, o, even))(odd)[3, 1, 2]) == pytest.approx(float(fd), rel=1e-9)
    # One vmapped batch of embeddings, as an ensemble runs.
    batch = jnp.stack([W, 0.5 * W])
    np.testing.assert_allclose(jax.vmap(tiled)(batch), [dense(W), dense(0.5 * W)], rtol=1e-13)


def test_tiled_sgns_resolves_the_plateau_loss():
    # With a = b the loss is Σ s log cosh(x/2) ≈ Σ x²/8: the tiled form keeps it to ~1e-15
    # relative at x ~ 1e-8 (the first plateau's scale), where softplus − ln 2 loses it to rounding.
    V = 20
    W = 1e-4 * jnp.asarray(np.random.default_rng(6).standard_normal((V, 2)))
    x = np.asarray(W @ W.T)
    exact = np.sum(x**2 / 8 - x**4 / 192)
    odd = jnp.asarray(ss.losses.symmetric_tiles(np.zeros((V, V))))
    assert float(ss.losses.sgns_tiled(W, odd)) == pytest.approx(exact, rel=1e-13)
    half = jnp.full((V, V), 0.5)
    assert abs(float(ss.losses.sgns(jnp.asarray(x), half, half)) / exact - 1) > 1e-6


class _DenseSGNS(AbstractCooccurrenceTask):
    """The SGNS task as it was before the tiled loss: autodiff of `losses.sgns` on WWᵀ."""

    pos_weight: jax.Array
    neg_weight: jax.Array
    target: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array

    def __init__(self, P):
        a, b = _weights(P)
        self.pos_weight, self.neg_weight = jnp.asarray(a), jnp.asarray(b)
        tiled = ss.SGNS(P)
        self.target, self.eigenvalues, self.eigenvectors = tiled.target, tiled.eigenvalues, tiled.eigenvectors

    def loss(self, model):
        return ss.losses.sgns(model.gram(), self.pos_weight, self.neg_weight)


def test_sgns_flow_matches_the_dense_path_and_dopri8_matches_tsit5():
    # The word2vec preset's path (tiled loss, Dopri8) against the one it replaced (dense
    # autodiff, Tsit5): the same loss curve and mode rises to the solver's tolerance (rtol 1e-8).
    from saddlestep.methods import Explicit

    P = synthetic_cooccurrence(60, topics=4, seed=7)
    model = ss.Embedding(60, 4, key=jax.random.PRNGKey(1), init_scale=1e-6)
    tiled = ss.SGNS(P)
    lam = np.asarray(tiled.eigenvalues)[:4]
    t_max = 1.3 * float(predict_qwem(model, tiled).times[-1])
    run = lambda task, solver: ss.simulate(model, task, t_max=t_max, rtol=1e-8, n_save=2001,
                                           method=Explicit(solver))
    old = run(_DenseSGNS(P), dfx.Tsit5())
    same = run(tiled, dfx.Tsit5())
    new = run(tiled, dfx.Dopri8())
    assert same.stats["steps"] == old.stats["steps"] and new.stats["steps"] < 0.4 * old.stats["steps"]
    scale = np.max(np.abs(old.loss))
    rises = [_half_rise_interpolated(r.times, r.observables["features"], lam) for r in (old, same, new)]
    # Same solver: the same steps, to rounding (3e-13 measured).
    np.testing.assert_allclose(same.loss, old.loss, rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(rises[1], rises[0], rtol=1e-11)
    # Dopri8: a quarter of the steps, the same curve to the tolerance (2e-8 and 3e-9 measured).
    np.testing.assert_allclose(new.loss, old.loss, rtol=0, atol=2e-7 * scale)
    np.testing.assert_allclose(rises[2], rises[0], rtol=3e-8)


def _half_rise_interpolated(times, values, levels):
    """The first crossing of each column through half its level, linear between save points."""
    return np.array([first_crossing(times, values[:, k], levels[k] / 2, interpolation="linear") for k in range(values.shape[1])])


def test_agf_neuron_view_agrees_with_qwem(r1):
    from saddlestep.agf import predict

    _, M = r1
    model = ss.Embedding(6, 3, key=jax.random.PRNGKey(0), init_scale=1e-6)
    # ⅛‖WWᵀ − M*‖² is regression of x ↦ WWᵀx on x ↦ M*x over the basis vectors, scaled by V/4.
    agf = predict(model, ss.SampleRegression(np.eye(6), M))
    qwem = predict_qwem(model, ss.QWEM(M))
    np.testing.assert_allclose(agf.losses * 6 / 4, qwem.losses, rtol=1e-6)
    np.testing.assert_allclose(agf.times * 4 / 6, qwem.extra["half_rise_times"], rtol=0.06)


# ------------------------------------------------------------------------- real text
@pytest.fixture(scope="module")
def corpus():
    return ss.corpus_statistics(vocab_size=1000, window=8)


def test_corpus_statistics(corpus):
    P = corpus.P
    assert P.shape == (1000, 1000) and P.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(P, P.T)
    assert corpus.words[:3] == ("the", "of", "and")
    M, _ = ss.losses.qwem_target(P)
    assert np.abs(M).max() <= 2
    questions, sections = ss.analogy_questions(corpus.words)
    assert len(questions) > 20 and len(sections) == len(questions)


def test_real_corpus_qwem_learns_top_eigenvectors_in_order(corpus):
    task = ss.QWEM.from_cooccurrence(corpus.P)
    model = ss.Embedding(1000, 10, key=jax.random.PRNGKey(0), init_scale=1e-6)
    pred = predict_qwem(model, task)
    lam = np.asarray(task.eigenvalues)[:10]
    traj = ss.simulate(model, task, t_max=1.8 * pred.times[-1], rtol=1e-7, n_save=401)
    half = _half_rise(traj.times, traj.observables["features"], lam)
    # Modes rise in eigenvalue order. Near-ties (λ_9, λ_10 are 7 % apart) may swap: the random
    # init's amplitudes shift each time by O(1/λ), so the order is asserted where λ_i > 1.1 λ_j.
    separated = lam[:, None] > 1.1 * lam[None, :]
    assert np.all((half[:, None] < half[None, :])[separated])
    assert np.all(np.diff(half[:8]) > 0)
    np.testing.assert_allclose(half, pred.extra["half_rise_times"], rtol=0.03)
    # s_k² → λ_k (the last, near-tied modes are still finishing their rise at t_max).
    np.testing.assert_allclose(traj.observables["sv2"][-1][:8], lam[:8], rtol=1e-3)
    np.testing.assert_allclose(traj.observables["sv2"][-1], lam, rtol=0.05)
    U = np.linalg.svd(np.asarray(traj.final.W), full_matrices=False)[0]
    V = np.asarray(task.eigenvectors)[:, :10]
    assert np.linalg.norm(V.T @ U) ** 2 / 10 > 0.99
    acc = ss.analogy_accuracy(np.asarray(traj.final.W), ss.analogy_questions(corpus.words)[0])
    assert 0.0 <= acc <= 1.0


def test_analogy_accuracy_oracle():
    # Embeddings built so that b − a + c = d exactly.
    W = np.array([[1.0, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1.0]])
    assert ss.analogy_accuracy(W, [[0, 1, 2, 3]]) == 1.0
    assert ss.analogy_accuracy(W, [[0, 1, 2, 4]]) == 0.0


# ------------------------------------------------------------------------- presets and bad input
def test_qwem_preset_with_data(tmp_path):
    P = synthetic_cooccurrence(30, topics=3, seed=1)
    np.savez(tmp_path / "p.npz", P=P)
    res = ss.run_preset("qwem", data=str(tmp_path / "p.npz"), overrides={"d": "2"}, out=str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parameters"]["d"] == 2
    lam = np.sort(np.linalg.eigvalsh(ss.losses.qwem_target(P)[0]))[::-1][:2]
    np.testing.assert_allclose(summary["observables_final"]["sv2"], lam, rtol=1e-4)
    assert summary["prediction"]["method"] == "closed-form:qwem"
    assert (tmp_path / "run" / "eigenvalues.png").exists()
    assert len(res.steps) == 2


def test_bad_input(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"^data: .*0 tokens"):
        ss.corpus_statistics(str(empty))
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("the cat sat on the mat " * 30)
    with pytest.raises(ValueError, match=r"^vocab_size: .*5 distinct words.*pass vocab_size=5 or less"):
        ss.corpus_statistics(str(tiny), vocab_size=10)
    with pytest.raises(ValueError, match=r"^d: "):
        ss.Embedding(5, 10, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"^overrides d: "):
        ss.run_preset("word2vec", data=str(tiny), overrides={"vocab_size": "5", "d": "10"})
    np.savez(tmp_path / "bad.npz", P=np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"^data: P: .*sum"):
        ss.run_preset("qwem", data=str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match=r"^model: "):
        ss.simulate(ss.Embedding(7, 2, key=jax.random.PRNGKey(0)), ss.QWEM(np.eye(6)), t_max=1.0)
    with pytest.raises(ValueError, match=r"^target: "):
        ss.QWEM(np.arange(6.0).reshape(2, 3))


def test_user_text_keeps_words_of_any_script(tmp_path):
    from saddlestep.tasks.word2vec import read_text

    path = tmp_path / "fr.txt"
    path.write_text("Le garçon voit la Straße, 3 fois.\n\nÉcole d'été", encoding="utf-8")
    assert read_text(path) == (("le", "garçon", "voit", "la", "straße", "fois"), ("école", "d", "été"))


def _weak_mode_P(tmp_path):
    """A 40-word co-occurrence with four strong directions and a tail of weak modes: with d = 20
    the weakest learnable one comes ~10⁵ times later than the first."""
    rng = np.random.default_rng(42)
    V = 40
    u = 1.0 / np.arange(1, V + 1) ** 0.8
    vs = rng.standard_normal((V, 4))
    B = (vs * np.array([3.0, 2.0, 1.2, 0.6])) @ vs.T / np.sqrt(V) * 2
    P = np.outer(u, u) * np.exp(B)
    P = 0.5 * (P + P.T)
    np.savez(tmp_path / "P40.npz", P=P / P.sum())
    return str(tmp_path / "P40.npz")


def test_qwem_predicts_no_step_the_flow_cannot_show(tmp_path):
    # Three identical word clusters: M* has two eigenvalues 14.7 and the rest rounding (~1e-15),
    # which were predicted as three steps at t = 0. A weak mode the init already covers
    # (s²(0) above its loss midpoint, at α = 1e-2) was a step at t = 0 with the loss going up.
    from saddlestep.runs import prepare

    block = np.kron(np.eye(3), np.ones((8, 8)))
    P = np.exp(2 * block)
    np.savez(tmp_path / "deg.npz", P=P / P.sum())
    pred = prepare("qwem", data=str(tmp_path / "deg.npz"))[2].predict()
    assert pred.num_steps == 2 and np.all(pred.times > 0)
    setup = prepare("qwem", init_scale=1e-2, data=_weak_mode_P(tmp_path), overrides={"d": "20"})[2]
    pred = setup.predict()
    assert np.all(pred.times > 0) and np.all(np.diff(np.r_[pred.initial_loss, pred.losses]) < 0)
    lam, s0 = np.asarray(pred.extra["eigenvalues"]), np.asarray(pred.extra["s0_squared"])
    assert np.all(s0 < (1 - 1 / np.sqrt(2)) * lam)


def test_qwem_with_a_weak_mode_saves_on_a_geometric_grid_and_names_the_stiffness(tmp_path):
    # The weak mode puts the horizon at ~5.6e5 while the first drops come at t ~ 1–750: a uniform
    # grid of 1001 saves (spacing 555) left every drop unlabelled. And the explicit solver, held to
    # small steps by stability, runs out of steps: the advice names the implicit path, not only
    # a larger budget.
    from saddlestep.runs import prepare

    data = _weak_mode_P(tmp_path)
    setup = prepare("qwem", data=data, overrides={"d": "20"})[2]
    assert setup.simulate_kwargs["save_spacing"] == "log"
    assert setup.simulate_kwargs["save_start"] * setup.t_max < setup.predict().times[0]
    r = ss.run_preset("qwem", data=data, overrides={"d": "20", "max_steps": "2000"})
    assert r.summary["solver"]["status"] == "max_steps"
    assert "try --set solver=auto" in r.summary["warnings"][0]
    assert all(s.feature is not None for s in r.steps)
