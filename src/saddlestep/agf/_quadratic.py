"""The closed-form utility phase of neurons whose utility is a quadratic form, U_i = ½ θᵀKθ.

In the eigenbasis Q of K (eigenvalues `lam`), a dormant neuron obeys the linear ODE θ̇ = Kθ
(κ = 2, reference agf.md §1.4), so each utility phase is solved in closed form:
x_k(t) ∝ x_k(0) e^{λ_k t} and S(t) = S(0) + ln‖e^{Λt}x(0)‖. Directions are stored as complex
log-magnitudes (`_numerics.log`), so no component underflows at any α. Problems with such
utilities (diagonal, linear, embedding) use these functions as their phase component.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _numerics as nx


class QuadraticState(eqx.Module):
    """Residual state of a quadratic utility: eigenvalues `lam` (width, p) of K per neuron and its
    eigenbasis `Q` (p, p)."""

    lam: Float[np.ndarray, "width p"]
    Q: Float[np.ndarray, "p p"]


def utility(x: Float[Array, "width p"], rstate: QuadraticState) -> Float[Array, " width"]:
    """½ Σ_k λ_k x_k² per row of directions in the eigenbasis."""
    return 0.5 * jnp.sum(jnp.asarray(rstate.lam) * x**2, axis=1)


def growth_rate(rstate: QuadraticState) -> float:
    """The fastest rate κU = Σ_k λ_k x_k² of any unit direction: max λ."""
    return float(np.max(np.asarray(rstate.lam)))


def advance(x, S, c, dormant, rstate: QuadraticState, horizon):
    """The utility phase in closed form: (duration, x, S, whether a neuron reached its threshold
    within `horizon`), directions renormalized (log-magnitudes)."""
    lam = np.asarray(rstate.lam)
    a = np.real(x)
    need = np.asarray(c) - np.asarray(S)
    grows = np.isfinite(a) & (lam > 0)
    can = dormant & np.any(grows, axis=1)
    tau = np.full(x.shape[0], np.inf)
    if can.any():
        aa, ll, D = a[can], lam[can], np.maximum(need[can], 0.0)
        # ½ln Σ e^{2(a_k + λ_k t)} is convex and 0 at t = 0, so it reaches D > 0 once; any
        # single term bounds it from below, which gives a start to the right of the root,
        # from where Newton's iterates decrease monotonically onto it.
        with np.errstate(invalid="ignore", divide="ignore"):
            hi = np.where(grows[can], (D[:, None] - aa) / np.where(ll > 0, ll, 1.0), np.inf)
        t = np.maximum(np.min(hi, axis=1), 0.0)
        for _ in range(200):
            e = 2.0 * (aa + ll * t[:, None])
            m = np.max(e, axis=1, keepdims=True)
            with np.errstate(under="ignore", invalid="ignore"):
                w = np.exp(e - m)
            g = 0.5 * (np.log(np.sum(w, axis=1)) + m[:, 0])
            slope = np.sum(w * ll, axis=1) / np.sum(w, axis=1)
            step = np.where(slope > 0, (g - D) / np.where(slope > 0, slope, 1.0), 0.0)
            t_new = np.maximum(t - np.maximum(step, 0.0), 0.0)
            if np.all(np.abs(t_new - t) <= 1e-15 * np.maximum(t, 1e-300)):
                t = t_new
                break
            t = t_new
        tau[can] = t
    dt = float(np.min(tau, initial=np.inf))
    if not dt <= horizon:
        return horizon, x, S, False
    grown = np.where(dormant[:, None], x + lam * dt, x)
    gain = np.where(dormant, nx.lognorm(grown), 0.0)
    return dt, grown - gain[:, None], np.where(dormant, S + gain, S), True


def to_params(x, rstate: QuadraticState) -> np.ndarray:
    """θ̄ = Q x (tiny components underflow to 0)."""
    return nx.exp(x) @ np.asarray(rstate.Q).T


def rebase(x, old: QuadraticState, new: QuadraticState) -> np.ndarray:
    """Log-magnitude directions from the eigenbasis of `old` into that of `new`."""
    P = np.asarray(new.Q).T @ np.asarray(old.Q)
    # Overlaps that vanish in exact arithmetic (modes shared by both bases) come out
    # O(1e-16): zero them, or they would swamp components far smaller than that.
    P = np.where(np.abs(P) < nx.SNAP, 0.0, P)
    return nx.logmatmul(x, P)


def absorb_symmetric(x, S, log_norm0, crossed, dormant):
    """Hidden units that rotate into each other (tied embeddings): each crossing neuron collects
    every dormant neuron's share of the mode it carries; returns (x, S)."""
    x, S = np.array(x), np.array(S, dtype=float)
    pool = dormant.copy()
    for i in np.flatnonzero(crossed):
        m = int(np.argmax(np.real(x[i])))
        logn = log_norm0 + S
        ln = np.minimum(logn - logn[i], 50.0)  # ln of each norm relative to neuron i's
        v = np.where(pool, ln + x[:, m], -np.inf)
        g = v - nx.lognorm(v, axis=0)
        # The rotated hidden unit Σ_j g_j θ_j carries all of mode m; the others keep the rest.
        combined = nx.logsum(g[:, None] + ln[:, None] + x, axis=0)
        pool[i] = False
        J = np.flatnonzero(pool)  # each row on its own, all at once
        z = nx.logsum(np.stack([ln[J, None] + x[J], g[J, None] + combined[None, :] + 1j * np.pi]), axis=0)
        z[:, m] = -np.inf
        size = nx.lognorm(z, axis=1)
        ok = np.isfinite(size)
        J, z, size = J[ok], z[ok], size[ok]
        x[J] = z - size[:, None]
        S[J] = size + logn[i] - log_norm0[J]
    return x, S


def exhausted(x, dormant, rstate: QuadraticState) -> bool:
    """No dormant neuron has a component on a growing mode."""
    lam = np.asarray(rstate.lam)
    scale = max(np.abs(lam).max(initial=0.0), 1e-300)
    grow = (lam > 1e-10 * scale) & np.isfinite(np.real(x))
    return not np.any(grow[dormant])
