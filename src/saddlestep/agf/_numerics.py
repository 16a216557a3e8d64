"""Private numerics of the AGF problems: flattening neuron pytrees, signed log-magnitudes (so no
direction component underflows at any α), and the relatively accurate Jacobi orthogonalization
that keeps a linear network's dormant block as singular components."""

from __future__ import annotations

import math

import jax
import numpy as np
from jaxtyping import PyTree

# Overlaps below this between two orthonormal bases are rounding of an exact zero.
SNAP = 1e-9


def flatten(neurons: PyTree) -> tuple[np.ndarray, tuple, tuple]:
    """(width, p) rows of flattened neurons, with what `unflatten` needs to rebuild the pytree."""
    leaves, treedef = jax.tree.flatten(neurons)
    width = leaves[0].shape[0]
    shapes = tuple(tuple(leaf.shape[1:]) for leaf in leaves)
    flat = np.concatenate([np.asarray(leaf, dtype=float).reshape(width, -1) for leaf in leaves], axis=1)
    return flat, treedef, shapes


def unflatten(flat, treedef, shapes) -> PyTree:
    """The neuron pytree of (width, p) rows (inverse of `flatten`)."""
    width = flat.shape[0]
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[:, start : start + size].reshape((width,) + shape))
        start += size
    return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------- log-magnitudes
# Directions of quadratic-utility neurons are stored as complex logarithms z = ln|x| + iπ[x < 0]:
# a not-yet-learned mode can shrink to e^-5000 relative to the learned ones at α = 1e-100 and
# must still grow back, which plain floats (underflow below e^-745) cannot represent.


def unit_rows(theta) -> tuple[np.ndarray, np.ndarray]:
    """Each row's direction and ln of its norm, with no underflow: at α ≲ 1e-154 the squares of
    O(α) parameters are below the smallest float64, their norms 0 and their logs −∞ (AGF, whose
    state is directions and log-norms, works at any α > 0 only if its start does too). A row of
    zeros has norm 0: direction 0, log-norm −∞."""
    theta = np.asarray(theta, dtype=float)
    top = np.max(np.abs(theta), axis=1, keepdims=True)
    safe = np.where(top > 0, top, 1.0)
    scaled = theta / safe
    norm = np.linalg.norm(scaled, axis=1)
    with np.errstate(divide="ignore"):
        log_norm = np.log(top[:, 0]) + np.log(np.where(norm > 0, norm, 1.0))
    return scaled / np.where(norm > 0, norm, 1.0)[:, None], np.where(top[:, 0] > 0, log_norm, -np.inf)


def log(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        return np.log(np.abs(x)) + 1j * np.pi * (x < 0)


def sign(z) -> np.ndarray:
    return np.where(np.cos(np.imag(z)) < 0, -1.0, 1.0)


def exp(z) -> np.ndarray:
    """The float value of log-magnitudes (tiny entries underflow to 0)."""
    with np.errstate(under="ignore"):
        return sign(z) * np.exp(np.real(z))


def logsum(z, axis) -> np.ndarray:
    """ln Σ exp(z) along `axis` for signed log-magnitudes (exact zeros are −∞)."""
    z = np.asarray(z)
    m = np.max(np.real(z), axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(under="ignore", invalid="ignore"):
        s = np.sum(sign(z) * np.exp(np.real(z) - m), axis=axis, keepdims=True)
    return np.squeeze(log(s) + m, axis=axis)


def lognorm(z, axis=-1) -> np.ndarray:
    """ln‖x‖ (real) of log-magnitudes."""
    return 0.5 * np.real(logsum(2.0 * np.real(z), axis))


def logmatmul(z, A) -> np.ndarray:
    """Log-magnitudes of x @ Aᵀ for rows x given as log-magnitudes."""
    return logsum(np.asarray(z)[:, None, :] + log(A)[None, :, :], axis=2)


# ----------------------------------------------------------------------------- linear-network frames
# The dormant neurons of a linear network are kept as the singular components of their block
# Θ_D = diag(e^ρ) W (rows: neurons; W orthonormal rows, ρ log-norms). Rows e^-500 apart must keep
# their relative precision, so the rotations are one-sided Jacobi on (ρ, W) (relatively accurate
# on graded rows, Demmel & Veselić 1992), re-applied every time the rows' growth spreads by e^H
# (as in Lyapunov-exponent QR), before they turn parallel to rounding.
H = 8.0
ORTH_TOL = 1e-15


def pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Round-robin rounds of disjoint pairs covering every pair of n rows once."""
    m = n + (n % 2)
    idx = list(range(m))
    rounds = []
    for _ in range(m - 1):
        r = np.array(idx[: m // 2])
        s = np.array(idx[m // 2 :][::-1])
        keep = (r < n) & (s < n)
        rounds.append((r[keep], s[keep]))
        idx = [idx[0], idx[-1]] + idx[1:-1]
    return rounds


def orthogonalize(rho, W):
    """The hidden-unit rotation that makes the rows diag(e^ρ)W mutually orthogonal: (ρ, W) of the
    singular components, largest first. Exact zero rows (ρ = −∞) are left as they are."""
    rho = np.asarray(rho, dtype=float).copy()
    W = np.asarray(W, dtype=float).copy()
    live = np.isfinite(rho)
    out_rho, out_W = rho[~live], W[~live]
    rho, W = rho[live], W[live]
    n = rho.size
    if n:
        norm = np.linalg.norm(W, axis=1)
        rho, W = rho + np.log(norm), W / norm[:, None]
    rounds = pairs(n)
    for _ in range(60):
        rotated = False
        for r, s in rounds:
            # Work on each pair with r the larger row, in units of it: the pair's Gram matrix is
            # [[1, e·cos], [e·cos, e²]] with e = e^{ρ_s − ρ_r} ≤ 1, so nothing overflows.
            big = rho[r] >= rho[s]
            r, s = np.where(big, r, s), np.where(big, s, r)
            cos = np.sum(W[r] * W[s], axis=1)
            go = np.abs(cos) > ORTH_TOL
            if not go.any():
                continue
            rotated = True
            r, s, cos = r[go], s[go], cos[go]
            e = np.exp(rho[s] - rho[r])
            z = (1.0 - e**2) / (2.0 * cos)
            u = -np.where(z >= 0, 1.0, -1.0) / (np.abs(z) + np.sqrt(z**2 + e**2))  # tan θ / e
            cs = 1.0 / np.sqrt(1.0 + (e * u) ** 2)
            Wr = cs[:, None] * (W[r] - (e**2 * u)[:, None] * W[s])
            Ws = cs[:, None] * (u[:, None] * W[r] + W[s])
            for rows, new in ((r, Wr), (s, Ws)):
                norm = np.linalg.norm(new, axis=1)
                rho[rows] += np.log(norm)
                W[rows] = new / norm[:, None]
        if not rotated:
            break
    order = np.argsort(-rho, kind="stable")
    return np.concatenate([rho[order], out_rho]), np.concatenate([W[order], out_W])


def log_top(rho, W, lam, t):
    """(ln σ₁, d ln σ₁/dt) of diag(e^ρ) W e^{Λt}."""
    top = float(np.max(rho))
    with np.errstate(under="ignore"):
        B = np.exp(rho - top)[:, None] * W * np.exp(lam * t)
    _, s, vt = np.linalg.svd(B, full_matrices=False)
    return top + math.log(s[0]), float(np.sum(lam * vt[0] ** 2))

