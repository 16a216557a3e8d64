"""Losses: algebraic identities of the word2vec family and Barlow Twins (reference R5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saddlestep import losses


def _random_P(V, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.random((V, V)) ** 3
    P = A + A.T
    return P / P.sum()


def test_quartic_is_taylor_expansion_of_sgns():
    # 2[log(1+e^{−x}) − log 2] = −x + x²/4 − x⁴/96 + O(x⁶)  (R5)
    for x in (0.01, 0.05):
        exact = 2 * (np.log1p(np.exp(-x)) - np.log(2))
        assert exact == pytest.approx(-x + x**2 / 4 - x**4 / 96, abs=x**6)
    P = _random_P(7)
    M, G = losses.qwem_target(P)
    Pi = P.sum(1)
    a, b = P / (P + np.outer(Pi, Pi)), np.outer(Pi, Pi) / (P + np.outer(Pi, Pi))
    rng = np.random.default_rng(1)
    W = 1e-3 * rng.standard_normal((7, 3))
    x = jnp.asarray(W @ W.T)
    sgns = float(losses.sgns(x, jnp.asarray(a), jnp.asarray(b)))
    quartic = float(losses.qwem(x, jnp.asarray(M)) - 0.125 * np.sum(M**2))
    # They differ at fourth order in x = O(1e-6), far below the rounding of the constant ⅛ΣM*².
    assert sgns == pytest.approx(quartic, abs=1e-13)
    g1 = jax.grad(lambda w: losses.sgns(w @ w.T, jnp.asarray(a), jnp.asarray(b)))(jnp.asarray(W))
    g2 = 0.5 * (W @ W.T - M) @ W
    np.testing.assert_allclose(g1, g2, atol=1e-14)


def test_mstar_is_two_tanh_half_pmi_and_shifted_with_negatives():
    P = _random_P(9, seed=2)
    Pi = P.sum(1)
    pmi = np.log(P / np.outer(Pi, Pi))
    M, G = losses.qwem_target(P)
    np.testing.assert_allclose(M, 2 * np.tanh(pmi / 2), atol=1e-12)
    np.testing.assert_array_equal(G, 1.0)
    assert np.abs(M).max() <= 2
    M5, _ = losses.qwem_target(P, negatives=5.0)
    np.testing.assert_allclose(M5, 2 * np.tanh((pmi - np.log(5.0)) / 2), atol=1e-12)
    # Setting 3.1 as explicit Ψ± gives the same target with G ≡ 1.
    psi = 1.0 / (P + np.outer(Pi, Pi))
    M2, G2 = losses.qwem_target(P, psi, psi)
    np.testing.assert_allclose(M2, M, atol=1e-12)
    np.testing.assert_allclose(G2, 1.0, atol=1e-12)


def test_reweighted_form_completes_the_square():
    P = _random_P(6, seed=3)
    rng = np.random.default_rng(4)
    pp, pn = rng.random((6, 6)) + 0.1, rng.random((6, 6)) + 0.1
    pp, pn = pp + pp.T, pn + pn.T
    M, G = losses.qwem_target(P, pp, pn, negatives=2.0)
    Pi = P.sum(1)
    x = rng.standard_normal((6, 6))
    x = x + x.T
    direct = np.sum(pp * P * (-x / 2 + x**2 / 8) + 2 * pn * np.outer(Pi, Pi) * (x / 2 + x**2 / 8))
    assert direct == pytest.approx(float(losses.qwem(x, M, G)) - 0.125 * np.sum(G * M**2), rel=1e-12)


def test_barlow_twins_losses():
    rng = np.random.default_rng(5)
    za, zb = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    C = losses.cross_correlation(za, zb)
    np.testing.assert_allclose(C, C.T)
    assert float(losses.barlow_twins(C)) == pytest.approx(np.sum((C - np.eye(4)) ** 2))
    # The original loss is invariant to per-dimension scale and shift (batch-norm), and zero
    # for identical, decorrelated views.
    s = np.array([1.0, 3.0, 0.5, 2.0])
    l1 = float(losses.barlow_twins_original(za, zb, 0.1, eps=0.0))
    l2 = float(losses.barlow_twins_original(za * s + 1, zb * s - 2, 0.1, eps=0.0))
    assert l1 == pytest.approx(l2, rel=1e-10)
    q, _ = np.linalg.qr(rng.standard_normal((50, 4)))
    q = (q - q.mean(0)) / q.std(0)
    white = np.linalg.cholesky(np.cov(q.T, bias=True))
    z = q @ np.linalg.inv(white).T
    assert float(losses.barlow_twins_original(z, z, 0.0051, eps=0.0)) == pytest.approx(0.0, abs=1e-20)


@pytest.mark.parametrize(
    "P, match",
    [
        (np.ones((3, 3)), "sum"),
        (np.array([[0.5, 0.2], [0.1, 0.2]]), "symmetric"),
        (np.array([[0.6, -0.1], [-0.1, 0.6]]), "negative"),
        (np.ones(4) / 4, "square"),
        (np.array([[np.nan, 0.5], [0.5, 0.0]]), "NaN"),
    ],
)
def test_bad_cooccurrence_names_P(P, match):
    with pytest.raises(ValueError, match=rf"^P: .*{match}"):
        losses.qwem_target(P)
