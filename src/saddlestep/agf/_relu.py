"""The exact utility phase of two-layer ReLU neurons on a sample, between kinks.

A dormant neuron θ = (w, a) of f = a·relu(wᵀx) has utility U = aᵀM_P w on the set P of samples
it is active on (M_P = Σ_{n∈P} r_n x_nᵀ / N). On a fixed pattern the unnormalized utility
ascent θ̇ = ∇U = Bθ is linear with B symmetric, so θ(τ) = V e^{Λτ} Vᵀθ(0) exactly and
ln‖θ‖ grows at 2U: the accumulated utility S is ln‖θ(τ)‖ (Kunin et al. 2025, κ = 2).

The pattern changes where w crosses a kink surface {uᵀw = 0} (the samples on one line through
the origin, x_n = ±‖x_n‖u, share one). Where both sides push w into a surface it slides along
it (Filippov): with K the sliding surfaces, the velocity is the gradient projected off
span{u_k : k ∈ K}, and the flow is again linear and symmetric, θ̇ = B_K θ. A surface releases w
when its Filippov weight λ = (μ − c₋)/(c₊ − c₋) leaves [0, 1] (μ: the normal force holding w
on it; c±: the force of its samples active on either side). A neuron squeezed onto w = 0 by
surfaces that meet only there has collapsed: it holds still until the next phase, where it
restarts if some direction has positive utility. Every quantity watched for an event (uᵀw,
μ − c₋, c₊ − μ, ‖θ‖²) is a sum of exponentials Σ_j β_j e^{λ_j τ}, so events are found by a
sign scan and Brent's method, with no step-size control to fight the kinks (the ODE phase
crawls at its step floor there). Degenerate configurations (nearly parallel sliding surfaces,
chattering) return None, and the engine solves that phase as an ODE.
"""

from __future__ import annotations

import math

import equinox as eqx
import numpy as np
import scipy.optimize

# Events per neuron and phase before the exact phase gives the phase to the ODE solve.
_MAX_EVENTS = 20_000
# Consecutive events closer than this (relative to the time) mean chattering: ODE fallback.
_ZENO_GAP = 1e-13
_ZENO_COUNT = 50
# Filippov weights this far outside [0, 1] are rounding of a boundary value.
_WEIGHT_SLACK = 1e-9
# Grid points per scan window.
_GRID = 17
_UNIT = np.linspace(0.0, 1.0, _GRID)
# A direction whose w-part is below this fraction of ‖θ‖ has collapsed onto w = 0 (below, the
# kinks x_nᵀw = 0 are lost in rounding); it restarts from this size when it can grow again.
_COLLAPSE = 1e-7
# Off every sliding surface, with one output, ‖w‖²/‖θ‖² stays above W2/(2·W2 + 1) on a segment
# (W2 = ‖w⊥‖², see `_March`): from this W2 on, no collapse can happen within it.
_RESOLVED = 4 * _COLLAPSE**2


class _Degenerate(Exception):
    """A configuration the exact phase does not resolve; the phase goes to the ODE solve."""


class ReluPhase(eqx.Module):
    """The exact utility phase of `TwoLayer(..., "relu")` neurons (see the module docstring).

    A module of arrays, so that an AGF problem holding it passes through `jax.jit` as data: a new
    sample, seed or init scale reuses the cost phase's compilation.

    **Arguments:** `X`, the inputs (N, d); `bias`, whether neurons carry a bias (then inputs get
    a column of ones); `cols_w`, `cols_a`, the flattened neuron's columns of (w[, b]) and of a.
    """

    keep: np.ndarray
    X: np.ndarray
    normals: np.ndarray
    group: np.ndarray
    sign: np.ndarray
    xnorm: np.ndarray
    cols: np.ndarray
    eye: np.ndarray
    q: int = eqx.field(static=True)

    def __init__(self, X, *, bias: bool, cols_w, cols_a):
        X = np.asarray(X, dtype=float)
        if bias:
            X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
        # Samples on one line through the origin share a kink surface {w : uᵀw = 0} (repeated
        # rows, ±x pairs): the surfaces, not the samples, are what the path crosses and slides
        # on. Zero rows never activate and are dropped.
        norm = np.linalg.norm(X, axis=1)
        keep = norm > 0
        X, norm = X[keep], norm[keep]
        self.keep = keep
        U = X / norm[:, None]
        lead = U[np.arange(len(U)), np.argmax(np.abs(U) > 1e-12, axis=1)]
        sign = np.where(lead > 0, 1.0, -1.0)
        normals, group = np.unique(np.round(U * sign[:, None], 12), axis=0, return_inverse=True)
        group = group.reshape(-1)
        normals = np.stack([np.mean(U[group == g] * sign[group == g, None], axis=0) for g in range(len(normals))])
        self.X = X
        self.normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)  # (surfaces, q)
        self.group = group  # each sample's surface
        self.sign = sign  # x_n = sign_n·‖x_n‖·u_{group_n}
        self.xnorm = norm
        self.cols = np.asarray(list(cols_w) + list(cols_a))
        self.q = len(cols_w)
        self.eye = np.eye(self.q)

    def advance(self, x, S, c, dormant, r, horizon):
        """The utility phase: (duration, x, S, whether a neuron reached its threshold within
        `horizon`), or None where a neuron meets a configuration left to the ODE solve.

        **Arguments:** `x`, unit directions (width, p) in flattened-neuron columns; `S`, the
        accumulated utilities; `c`, the thresholds; `dormant`, which neurons move; `r`, the
        residual (N, out); `horizon`, the longest the phase may last.
        """
        R = np.asarray(r, dtype=float)[self.keep] / self.keep.size
        # Each surface's normal force from its samples active on either side, c± = Σ ±‖x_n‖r_n
        # (a sliding surface's Filippov weight interpolates them); shared by every neuron.
        plus = np.zeros((len(self.normals), R.shape[1]))
        minus = np.zeros_like(plus)
        np.add.at(plus, self.group, np.where(self.sign[:, None] > 0, self.xnorm[:, None] * R, 0.0))
        np.add.at(minus, self.group, np.where(self.sign[:, None] < 0, -self.xnorm[:, None] * R, 0.0))
        # Each surface's share of M_P = Σ_{n∈P} r_n x_nᵀ / N from its samples of sign + and −: a
        # pattern's M is then two matrix-vector products over surfaces, not a masked sum over
        # samples (rebuilt at every event, a seventh of the phase's time before).
        out, q = R.shape[1], self.X.shape[1]
        RX = (R[:, :, None] * self.X[:, None, :]).reshape(len(R), out * q)
        pos = self.sign > 0
        shares = []
        for which in (pos, ~pos):
            share = np.zeros((len(self.normals), out * q))
            np.add.at(share, self.group[which], RX[which])
            shares.append(share)
        per_surface = (plus, minus, *shares)
        x = np.asarray(x, dtype=float)
        S = np.asarray(S, dtype=float)
        c = np.asarray(c, dtype=float)
        end = float(horizon)
        paths, resumed = {}, {}
        march, marched = None, np.zeros(0, int)
        try:
            serial = np.flatnonzero(dormant)
            if R.shape[1] == 1:
                together = self._marchable(x[serial][:, self.cols])
                marched, serial = serial[together], serial[~together]
                if marched.size:
                    march = _March(self, per_surface, x[marched][:, self.cols], S[marched], c[marched], end)
                    end = march.end
            # The earliest activation bounds every later neuron's solve.
            for i in serial:
                path = _Path(self, R, per_surface, x[i, self.cols], float(S[i]), float(c[i]))
                path.run(end)
                paths[i] = path
                if path.hit is not None:
                    end = min(end, path.hit)
            if march is not None:
                # Neurons the march handed over (at a kink they do not cross) go on alone, in
                # the order they met it; past the earliest activation they no longer matter.
                for k in np.argsort(march.handed_at):
                    if not march.handed_at[k] < end:
                        break
                    path = resumed[k] = march.resume(k, R)
                    path.run(end)
                    if path.hit is not None:
                        end = min(end, path.hit)
        except (_Degenerate, RuntimeError):  # RuntimeError: a root search did not converge
            return None
        hit = end < float(horizon)
        x_new, S_new = x.copy(), S.copy()
        if march is not None:
            theta, s = march.at(end)
            for k, i in enumerate(marched):
                if k in resumed and end > march.handed_at[k]:
                    paths[i] = resumed[k]  # past its handover, the neuron is on its own path
                else:
                    x_new[i, self.cols], S_new[i] = theta[k], s[k]
        for i, path in paths.items():
            theta, s = path.at(end)
            x_new[i, self.cols] = theta
            S_new[i] = s
        return end, x_new, S_new, hit

    def _marchable(self, theta):
        """Which unit directions (rows) start off every kink surface and away from w = 0: those
        the batched march takes (the others start on a kink or collapsed: `_Path` alone)."""
        w = theta[:, : self.q]
        wn = np.linalg.norm(w, axis=1)
        h = np.abs(w @ self.normals.T)
        return (wn >= _COLLAPSE) & np.all(h > 1e-12 * wn[:, None], axis=1)


class _March:
    """Dormant neurons of a one-output network marched together, event by event, while each
    crosses kinks transversally (the common case: thousands of crossings per phase on a
    Gaussian sample, where a neuron slides along a kink a few times at most).

    With one output and no sliding surface, B = [[0, vᵀ], [v, 0]] (v = M, the pattern's row), so
    on a segment w = w⊥ + p·v̂ with w⊥ fixed and p ± a ∝ e^{±sτ}, s = ‖v‖:
    p = A z + B/z, a = A z − B/z, z = e^{sτ}. A kink uᵀw(τ) = 0 is then a quadratic in z and
    the threshold ‖θ‖² = ‖w⊥‖² + 2A²z² + 2B²/z² = e^{2(c − S)} one in z²: every neuron's next
    event over every surface in a few array operations, no scan and no eigendecomposition. A
    neuron that meets a kink it does not cross (it slides, touches or collapses), or whose w⊥
    is too small to resolve, is handed to `_Path` at that point (`handed_at`, `resume`).

    **Arguments:** `theta`, unit directions (n, q + 1); `S`, `c`, accumulated utilities and
    thresholds; `end`, the horizon. After construction, `end` is the earliest activation (or the
    horizon) among the neurons the march kept.
    """

    def __init__(self, phase: ReluPhase, per_surface, theta, S, c, end):
        self.phase, self.per_surface = phase, per_surface
        _, _, Mplus, Mminus = per_surface
        U, q = phase.normals, phase.q
        n = len(theta)
        w, a = theta[:, :q].copy(), theta[:, q].copy()
        S, c = np.array(S, dtype=float), np.asarray(c, dtype=float)
        side = np.where(w @ U.T > 0, 1.0, -1.0)
        t = np.zeros(n)
        self.handed_at = np.full(n, math.inf)
        self._handed: dict[int, tuple] = {}
        marching = np.ones(n, bool)
        history = []
        zeno = np.zeros(n, int)
        for _ in range(_MAX_EVENTS):
            idx = np.flatnonzero(marching)
            if not idx.size:
                break
            sd, wi, ai = side[idx], w[idx], a[idx]
            v = (sd > 0) @ Mplus + (sd < 0) @ Mminus
            s = np.linalg.norm(v, axis=1)
            vh = v / np.where(s > 0, s, 1.0)[:, None]
            p0 = np.sum(vh * wi, axis=1)
            wperp = wi - p0[:, None] * vh
            A, B = (p0 + ai) / 2, (p0 - ai) / 2
            history.append((idx, t[idx].copy(), wperp, vh, s, A, B, S[idx].copy()))
            W2 = np.sum(wperp**2, axis=1)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tau_thr = self._threshold(W2, A, B, s, 2.0 * (c[idx] - S[idx]))
                c0 = sd * (wperp @ U.T)
                c1 = sd * (vh @ U.T)
                tau_kink, g = self._first_kink(c0, c1, A, B, s)
            # Too little of w off the pattern's axis to rule out a collapse: `_Path` takes it. (On
            # a segment a² − p² is constant and A² + B² ≤ ½, so ‖w‖²/‖θ‖² ≥ W2/(2·W2 + 1).)
            unresolved = W2 < _RESOLVED
            horizon = end - t[idx]
            hits = (tau_thr <= np.minimum(tau_kink, horizon)) & ~unresolved
            if hits.any():
                end = min(end, float(np.min(t[idx[hits]] + tau_thr[hits])))
            stop = ~hits & ~unresolved & (t[idx] + tau_kink >= end)
            kink = ~hits & ~unresolved & ~stop
            marching[idx[hits | stop]] = False
            for k in idx[unresolved & (t[idx] < end)]:
                self._hand(k, t[k], w[k], a[k], S[k], side[k], None)
            marching[idx[unresolved]] = False
            if not kink.any():
                continue
            j, tau, g = idx[kink], tau_kink[kink], g[kink]
            sk, Ak, Bk, vk = s[kink], A[kink], B[kink], vh[kink]
            tau = self._polish(c0[kink, g], c1[kink, g], Ak, Bk, sk, tau)
            theta, log_norm = self._state(wperp[kink], vk, Ak, Bk, sk, tau)
            w[j], a[j] = theta[:, :q], theta[:, q]
            S[j] += log_norm
            t[j] += tau
            zeno[j] = np.where(tau <= _ZENO_GAP * np.maximum(1.0, t[j]), zeno[j] + 1, 0)
            if np.any(zeno[j] > _ZENO_COUNT):
                raise _Degenerate("chattering")
            # Across: the far side's field carries w on through the surface (as `_enter_kink`).
            came = side[j, g]
            far = np.where((came > 0)[:, None], Mminus[g] - Mplus[g], Mplus[g] - Mminus[g])
            normal = np.sum(U[g] * (v[kink] + far), axis=1) * a[j]
            across = (normal * came < 0) & (np.abs(normal) > 1e-14)
            side[j[across], g[across]] = -came[across]
            for k, gk in zip(j[~across], g[~across]):
                self._hand(k, t[k], w[k], a[k], S[k], side[k], int(gk))
            marching[j[~across]] = False
        else:
            raise _Degenerate("too many events")
        self.end = end
        self._n = n
        self._c = c
        # Per neuron, its segments in time order: (start time, w⊥, v̂, s, A, B, S at the start).
        self._history = [np.concatenate(parts) for parts in zip(*history)] if history else None

    def _hand(self, k, t, w, a, S, side, kink):
        self.handed_at[k] = t
        self._handed[int(k)] = (np.concatenate([w, [a]]), float(S), float(t), side.copy(), kink)

    def resume(self, k, R) -> _Path:
        """Neuron k's `_Path` from its handover (having met the kink it does not cross)."""
        theta, S, t, side, kink = self._handed[int(k)]
        path = _Path.resume(self.phase, R, self.per_surface, theta, S, float(self._c[k]), t, side)
        if kink is not None:
            path._enter_kink(kink)
            if not path.frozen:
                path._settle()
        return path

    @staticmethod
    def _threshold(W2, A, B, s, need):
        """τ at which ‖θ(τ)‖² = e^need (0 if already there; ∞ if never): the root y = z² > 1 of
        2A²y² + (W2 − e^need)y + 2B² = 0 (negative at y = 1, where ‖θ‖ = 1)."""
        # In u = y·e^{−need}, so that e^need (up to e^{2c}, c ~ 100 in the α → 0 limit) is
        # never formed: 2A²u² − (1 − W2·e^{−need})u + 2B²e^{−2·need} = 0.
        shrink = np.exp(-np.maximum(need, 0.0))
        b = 1.0 - W2 * shrink
        u = (b + np.sqrt(np.maximum(b**2 - 16 * A**2 * B**2 * shrink**2, 0.0))) / (4 * A**2)
        tau = (need + np.log(u)) / (2 * s)
        tau = np.where((A != 0) & (s > 0) & np.isfinite(tau), np.maximum(tau, 0.0), math.inf)
        return np.where(need <= 0, 0.0, tau)

    @staticmethod
    def _first_kink(c0, c1, A, B, s):
        """Each row's first surface crossed from its side, and when: the smallest root z > 1 of
        c1·A z² + c0 z + c1·B = 0 where f = c0 + c1(A z + B/z) goes negative (f' < 0 there),
        or τ = 0 for a surface already (by rounding) just past and still going."""
        qa, qc = c1 * A[:, None], c1 * B[:, None]
        disc = c0**2 - 4 * qa * qc
        root = np.sqrt(np.maximum(disc, 0.0))
        qq = -0.5 * (c0 + np.copysign(root, c0))
        best = np.full(c0.shape, math.inf)
        for z in (qq / qa, qc / qq):
            falling = c1 * (A[:, None] * z - B[:, None] / z) < 0
            ok = (disc >= 0) & np.isfinite(z) & (z > 1) & falling
            best = np.where(ok, np.minimum(best, np.log(np.where(ok, z, 1.0))), best)
        past = (c0 + c1 * (A + B)[:, None] < 0) & (c1 * (A - B)[:, None] < 0)
        best = np.where(past, 0.0, best)
        g = np.argmin(best, axis=1)
        first = best[np.arange(len(g)), g] / np.where(s > 0, s, 1.0)
        return np.where(s > 0, first, math.inf), g

    @staticmethod
    def _polish(c0, c1, A, B, s, tau):
        """Two Newton steps on f(τ) = c0 + c1(A e^{sτ} + B e^{−sτ}) from the quadratic's root
        (which loses digits to cancellation where sτ is small)."""
        for _ in range(2):
            z = np.exp(s * tau)
            f = c0 + c1 * (A * z + B / z)
            df = c1 * s * (A * z - B / z)
            step = np.where(df != 0, f / np.where(df != 0, df, 1.0), 0.0)
            tau = np.maximum(tau - step, 0.0)
        return tau

    def at(self, t: float):
        """(unit directions (n, q + 1), S) of every marched neuron at time t."""
        idx, t0, wperp, vh, s, A, B, S0 = self._history
        # Rows were appended in time order, so a neuron's last row starting by t is its segment.
        last = np.zeros(self._n, int)
        started = np.flatnonzero(t0 <= t)
        np.maximum.at(last, idx[started], started)
        theta, log_norm = self._state(wperp[last], vh[last], A[last], B[last], s[last], t - t0[last])
        return theta, S0[last] + log_norm

    @staticmethod
    def _state(wperp, vh, A, B, s, tau):
        """(unit θ, ln‖θ‖) τ into segments from unit θ: θ = A z(v̂, 1) + B/z (v̂, −1) + (w⊥, 0),
        computed as θ/z (z = e^{sτ} ≥ 1 may pass the largest float in the α → 0 limit)."""
        zi = np.exp(-s * tau)
        p, a = A + B * zi**2, A - B * zi**2
        theta = np.concatenate([wperp * zi[:, None] + p[:, None] * vh, a[:, None]], axis=1)
        norm = np.linalg.norm(theta, axis=1)
        return theta / norm[:, None], s * tau + np.log(norm)


def _direction(lam, V, gamma, tau) -> tuple[np.ndarray, float]:
    """The unit direction and ln‖θ‖ of θ(τ) = V(e^{λτ}γ) from a unit θ(0), with the largest
    exponent factored out: a segment can last a whole phase, O(ln(1/α)), and e^{λτ} overflows
    float64 past α ≈ 1e-150 where the direction itself is O(1)."""
    present = lam[gamma != 0]
    shift = float(np.max(present)) * tau if present.size else 0.0
    theta = V @ (np.exp(lam * tau - shift) * gamma)
    norm = float(np.linalg.norm(theta))
    return theta / norm, shift + math.log(norm)


class _Path:
    """One dormant neuron's exact path: a list of linear segments."""

    def __init__(self, phase: ReluPhase, R, per_surface, theta, S, c):
        self.phase, self.R, self.c = phase, R, c
        self.q = phase.q
        self.theta = theta / np.linalg.norm(theta)
        self.S = S
        self.t = 0.0
        self.K: list[int] = []
        self.segments: list[tuple] = []
        self.hit: float | None = None
        self.frozen = np.linalg.norm(self.theta[: self.q]) < _COLLAPSE and not self._escape()
        # Which side of each surface w is on (+1: its samples of sign +1 are active).
        h = phase.normals @ self.theta[: self.q]
        self.side = np.where(h > 0, 1.0, -1.0)
        self.Pplus, self.Pminus, self.Mplus, self.Mminus = per_surface
        self._memo: tuple = (None, None)
        # Surfaces w starts on (sliding at the end of the last phase, or exact zeros in the
        # data's coordinates) start in the sliding set. Where the rest of the field has no
        # normal component (μ = 0), the flow with relu'(0) = 0 holds w there, all the surface's
        # samples inactive, for as long as that lasts (checked at every event).
        self.held: set[int] = set()
        if not self.frozen:
            touching = np.abs(h) <= 1e-14 * np.linalg.norm(self.theta[: self.q])
            if touching.any():
                self.K = [int(g) for g in np.flatnonzero(touching)]
                M, _, XK, G = self._matrices(self.side, self.K)
                mu = self._forces(self.theta, M, XK, G, self.K)[0]
                quiet = np.abs(mu) <= 1e-12 * (np.linalg.norm(M.T @ self.theta[self.q:]) + 1e-300)
                self.held = {g for g, z in zip(self.K, quiet) if z}
                self._settle()

    @classmethod
    def resume(cls, phase: ReluPhase, R, per_surface, theta, S, c, t, side) -> _Path:
        """A path that goes on from time `t` at unit θ, off the sliding surfaces, on the pattern
        `side` (which the caller knows: θ may sit on a kink it has just crossed)."""
        self = cls.__new__(cls)
        self.phase, self.R, self.c = phase, R, c
        self.q = phase.q
        self.theta = theta / np.linalg.norm(theta)
        self.S, self.t = S, t
        self.K, self.segments, self.hit, self.frozen = [], [], None, False
        self.side = side.copy()
        self.Pplus, self.Pminus, self.Mplus, self.Mminus = per_surface
        self._memo = (None, None)
        self.held = set()
        return self

    def _escape(self) -> bool:
        """From w ≈ 0 (a collapsed neuron), w turns at speed ∝ 1/‖w‖ up the 1-homogeneous
        φ(u) = Σ_n ⟨a, r_n⟩ relu(u·x_n) on the sphere: it grows again iff it finds φ > 0.
        Ascend φ from the current w-direction; if it becomes positive, restart w there at
        `_COLLAPSE` (True), else the neuron stays collapsed for this phase (False)."""
        q, X = self.q, self.phase.X
        weights = self.R @ self.theta[q:]  # ⟨a, r_n⟩
        coef = X.T * weights  # (q, N): column n is ⟨a, r_n⟩ x_n
        w = self.theta[:q]
        u0 = w / np.linalg.norm(w) if np.linalg.norm(w) > 0 else coef.sum(axis=1)
        if not np.linalg.norm(u0) > 0:
            return False

        def neg_phi(u):
            return -float(weights @ np.maximum(X @ (u / np.linalg.norm(u)), 0.0))

        # φ is piecewise linear: Powell ends at one of several nearby corners whatever its
        # tolerance (tighter ones, 1e-10, ran to its 10⁴ evaluations with directions 1e-2 apart and
        # the same predicted times), so a restart direction is a local ascent, not a unique one.
        res = scipy.optimize.minimize(neg_phi, u0, method="Powell", options={"xtol": 1e-7, "ftol": 1e-11})
        scale = float(np.linalg.norm(coef, axis=0).sum())
        if not -res.fun > 1e-10 * max(scale, 1e-300):
            return False
        u = res.x / np.linalg.norm(res.x)
        a = self.theta[q:] / np.linalg.norm(self.theta[q:])
        self.theta = np.concatenate([_COLLAPSE * 10 * u, a])
        self.theta /= np.linalg.norm(self.theta)
        return True

    # ------------------------------------------------------------------ linear algebra of a piece
    def _matrices(self, side, K):
        """(M, Π, X_K, G) of the pattern `side` with sliding set `K` (the last one is kept: an
        event asks for the same pattern several times)."""
        key = (side.tobytes(), tuple(K))
        if self._memo[0] == key:
            return self._memo[1]
        phase, q = self.phase, self.q
        on = np.ones(len(side), bool)
        on[K] = False
        M = ((((side > 0) & on) @ self.Mplus) + (((side < 0) & on) @ self.Mminus)).reshape(-1, q)  # (out, q)
        if K:
            XK = phase.normals[K]
            G = XK @ XK.T
            if np.linalg.cond(G) > 1e10:
                raise _Degenerate("ill-conditioned sliding set")
            Pi = phase.eye - XK.T @ np.linalg.solve(G, XK)
        else:
            XK = G = None
            Pi = phase.eye
        self._memo = (key, (M, Pi, XK, G))
        return M, Pi, XK, G

    def _forces(self, theta, M, XK, G, K):
        """(μ, c₋, c₊) of the sliding surfaces at θ: μ, the normal force that keeps w on them;
        c±, the force of their samples active on the − and + sides. w slides while the normal
        velocities c₊ − μ ≤ 0 ≤ c₋ − μ, i.e. its Filippov weight λ = (μ − c₋)/(c₊ − c₋) ∈ [0, 1]."""
        a = theta[self.q:]
        mu = -np.linalg.solve(G, XK @ (M.T @ a))
        return mu, self.Pminus[K] @ a, self.Pplus[K] @ a

    @staticmethod
    def _weight(mu, lo, hi):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (mu - lo) / (hi - lo)

    def _exit_side(self, g, mu, lo, hi) -> bool:
        """The side (True: +) a surface that cannot hold w (λ ∉ [0, 1]) releases it to: the
        side whose normal velocity points away from it; where both do (a repelling surface),
        the side it came from."""
        up, down = hi - mu > 0, lo - mu < 0
        if up and down:
            return bool(self.side[g] > 0)
        return bool(up) if up != down else bool(self._weight(mu, lo, hi) > 1)

    def _velocity_w(self, theta, side, K):
        M, Pi, _, _ = self._matrices(side, K)
        return Pi @ (M.T @ theta[self.q:])

    # ------------------------------------------------------------------ the march
    def run(self, end: float):
        events, zeno, last_gap, last, repeats = 0, 0, None, None, 0
        while True:
            if self.frozen:
                # Collapsed on w = 0: U = 0, so S and the direction stay (for this residual).
                self.segments.append((self.t, None, None, self.theta.copy(), self.S))
                self.t = end
                return
            M, Pi, XK, G = self._matrices(self.side, self.K)
            axis = self._on_axis(M, Pi, XK, G, end - self.t) if M.shape[0] == 1 else None
            if axis is not None:
                lam, V, gamma, (tau, kind, which) = axis
                self.segments.append((self.t, lam, V, gamma, self.S))
            else:
                q = self.q
                m = self.theta.size
                B = np.zeros((m, m))
                B[:q, q:] = Pi @ M.T
                B[q:, :q] = M @ Pi
                lam, V = np.linalg.eigh(B)
                gamma = V.T @ self.theta
                self.segments.append((self.t, lam, V, gamma, self.S))
                tau, kind, which = self._next_event(lam, V, gamma, M, XK, G, end - self.t, last_gap)
            if kind == "end":
                self.t = end
                return
            if kind == "threshold":
                self.hit = self.t + tau
                return
            if kind == "collapse":
                theta, log_norm = _direction(lam, V, gamma, tau)
                self.S += log_norm
                self.theta = theta
                self.t += tau
                self.frozen = True
                continue
            theta, log_norm = _direction(lam, V, gamma, tau)
            self.S += log_norm
            self.theta = theta
            last_gap = tau
            self.t += tau
            events += 1
            zeno = zeno + 1 if tau <= _ZENO_GAP * max(1.0, self.t) else 0
            # The same surface met again and again with nothing between: chattering too.
            repeats = repeats + 1 if (kind, which) == last else 0
            last = (kind, which)
            if events > _MAX_EVENTS:
                raise _Degenerate("too many events")
            if zeno > _ZENO_COUNT or repeats > _ZENO_COUNT:
                raise _Degenerate("chattering")
            if kind == "kink":
                self._enter_kink(which)
            else:
                self._leave_kink(which, plus=(kind == "leave-plus"))
            if not self.frozen:
                self._settle()

    def _on_axis(self, M, Pi, XK, G, remaining):
        """The segment and its first event in closed form for one output (as `_March`, with the
        pattern's row projected onto the sliding surfaces): (λ, V, γ, (τ, kind, surface)) with
        θ(τ) = V(e^{λτ}γ), or None where w⊥ is too small to rule out a collapse, or where a
        sliding neuron's a is at its zero (there the generic scan decides the releases).

        While sliding, the normal force μ and the forces c± of a surface's samples are all
        proportional to a (one output), so every Filippov weight holds until a changes sign,
        where the surfaces turn repelling: the release is at a's zero, z² = B/A."""
        q, U, K = self.q, self.phase.normals, self.K
        v = Pi @ M[0]
        s = float(np.linalg.norm(v))
        w, a = self.theta[:q], float(self.theta[q])
        vh = v / s if s > 0 else v
        p0 = float(vh @ w)
        wperp = w - p0 * vh
        W2 = float(wperp @ wperp)
        if not s > 0 or W2 < _RESOLVED:
            return None
        A, B = np.array([(p0 + a) / 2]), np.array([(p0 - a) / 2])
        sv = np.array([s])
        c0, c1 = self.side * (U @ wperp), self.side * (U @ vh)
        # Surfaces slid along are not crossed: their events are releases.
        c0[K], c1[K] = 1.0, 0.0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tau_thr = float(_March._threshold(np.array([W2]), A, B, sv, np.array([2.0 * (self.c - self.S)]))[0])
            tau_kink, g = _March._first_kink(c0[None], c1[None], A, B, sv)
        tau_kink, g = float(tau_kink[0]), int(g[0])
        tau_rel, release = math.inf, None
        slide = [i for i, k in enumerate(K) if k not in self.held]
        if slide:
            if abs(a) < 1e-12:
                return None
            Ks = [K[i] for i in slide]
            mu = -np.linalg.solve(G, XK @ M[0])[slide]
            lo, hi = self.Pminus[Ks, 0], self.Pplus[Ks, 0]
            sgn = np.sign((hi - lo) * a)
            # The scan's rows (μ − c₋, then c₊ − μ, per surface, signed by sgn) at τ = 0: those
            # positive now turn negative at a's zero; the first in the scan's order is released.
            for kind, row in (("leave-minus", sgn * (mu - lo) * a), ("leave-plus", sgn * (hi - mu) * a)):
                if (row > 0).any() and B[0] / A[0] > 1:
                    tau_rel = math.log(B[0] / A[0]) / (2 * s)
                    release = (kind, Ks[int(np.argmax(row > 0))])
                    break
        lam = np.array([s, -s, 0.0])
        V = np.stack([np.append(vh, 1.0), np.append(vh, -1.0), np.append(wperp, 0.0)], axis=1)
        gamma = np.array([A[0], B[0], 1.0])
        if tau_thr <= min(tau_kink, tau_rel, remaining):
            return lam, V, gamma, (tau_thr, "threshold", None)
        if tau_rel < min(tau_kink, remaining):
            return lam, V, gamma, (tau_rel, *release)
        if tau_kink < remaining:
            tau = float(_March._polish(c0[g], c1[g], A, B, sv, np.array([tau_kink]))[0])
            return lam, V, gamma, (tau, "kink", g)
        return lam, V, gamma, (remaining, "end", None)

    def _next_event(self, lam, V, gamma, M, XK, G, remaining, last_gap):
        """(τ, kind, sample) of the first event within `remaining`, or (remaining, "end", None).
        Kinds: "kink", "leave-minus", "leave-plus", "threshold", "collapse"."""
        # The threshold: ln‖θ(τ)‖² = ln Σ γ_j² e^{2λ_j τ} is convex in τ, so it is crossed
        # before the first other event τ_e iff it is above at τ_e (one evaluation per segment).
        need = 2.0 * (self.c - self.S)
        g2 = gamma**2
        sq = lambda tau: math.log(max(np.sum(g2 * np.exp(2 * lam * tau)), 1e-300)) - need
        if sq(0.0) >= 0:
            return 0.0, "threshold", None
        # Any one growing component alone reaches the threshold by (need − ln γ_j²)/2λ_j.
        pos = (g2 > 1e-30 * g2.max()) & (lam > 0)
        bound = float(np.min((need - np.log(g2[pos])) / (2 * lam[pos]))) if pos.any() else math.inf
        stop = min(max(bound, 0.0), remaining)
        event = self._scan(lam, V, gamma, M, XK, G, stop, last_gap)
        t_end = event[0] if event is not None else stop
        if sq(t_end) >= 0:
            return scipy.optimize.brentq(sq, 0.0, t_end, xtol=1e-15, rtol=1e-15, maxiter=1000), "threshold", None
        if event is not None:
            return event
        if stop < remaining:  # at the bound, rounding: the threshold is there
            return stop, "threshold", None
        return remaining, "end", None

    def _scan(self, lam, V, gamma, M, XK, G, stop, last_gap):
        """The first kink, release or collapse event (τ, kind, sample) in [0, stop], or None."""
        normals, q = self.phase.normals, self.q
        # Watched functions: rows of coefficients over eigen-index j, each ≥ 0 until its event.
        K = self.K
        if K:
            notK = np.ones(len(normals), bool)
            notK[K] = False
            idx = np.flatnonzero(notK)
            Cw = (normals[idx] @ V[:q]) * gamma  # uᵀw(τ)
            rows = [self.side[idx, None] * Cw]
        else:
            idx = np.arange(len(normals))
            rows = [(self.side[:, None] * (normals @ V[:q])) * gamma]
        kinds = [np.zeros(idx.size, int)]
        who = [idx]
        slide = [i for i, k in enumerate(K) if k not in self.held]
        if slide:
            Va = V[q:] * gamma
            Cmu = -np.linalg.solve(G, XK @ (M.T @ Va))[slide]
            Ks = [K[i] for i in slide]
            Clo, Chi = self.Pminus[Ks] @ Va, self.Pplus[Ks] @ Va
            sgn = np.sign((Chi - Clo).sum(axis=1))  # λ = (μ − c₋)/(c₊ − c₋) within [0, 1]
            rows += [sgn[:, None] * (Cmu - Clo), sgn[:, None] * (Chi - Cmu)]
            kinds += [np.ones(len(slide), int), np.full(len(slide), 2)]
            who += [np.asarray(Ks), np.asarray(Ks)]
        C = np.concatenate(rows)
        kind = np.concatenate(kinds)
        who = np.concatenate(who)
        if stop <= 0:
            return None
        # Bound on how far x_nᵀw can move by τ: ‖x_n‖·ρ·∫e^{max(λ,0)s}ds, ρ = max|λ|.
        rho = float(np.max(np.abs(lam)))
        lmax = max(float(np.max(lam)), 0.0)
        start_vals = C.sum(axis=1)
        scale = np.concatenate([np.ones(idx.size), np.full(2 * len(slide), math.inf)])
        width = min(stop, 2.0 * last_gap if last_gap else 0.1 / max(rho, 1e-12))
        width = max(width, 1e-9 * max(1.0, self.t), min(stop, 1e-6))
        lo = 0.0
        while lo < stop:
            hi = min(stop, lo + width)
            reach = rho * (math.expm1(lmax * hi) / lmax if lmax > 0 else hi)
            with np.errstate(invalid="ignore"):  # ∞·0 where nothing moves: not near
                near = np.flatnonzero(np.abs(start_vals) <= scale * reach * (1 + 1e-9) + 1e-300)
            grid = lo + (hi - lo) * _UNIT
            grid[-1] = hi
            E = np.exp(np.minimum(lam[:, None] * grid, 700.0))
            path = np.square(V @ (E * gamma[:, None]))
            w2 = path[:q].sum(axis=0)
            small = w2 < _COLLAPSE**2 * (w2 + path[q:].sum(axis=0))
            collapse = grid[int(np.argmax(small))] if small.any() else math.inf
            if near.size:
                vals = C[near] @ E
                if lo == 0.0:
                    vals[:, 0] = np.maximum(vals[:, 0], 0.0)  # at a just-crossed kink: 0 ± rounding
                neg = vals < 0
                if neg.any():
                    first = int(np.argmax(neg.any(axis=0)))
                    if first == 0:  # rounding at a window's edge: the event is there
                        if collapse <= lo:
                            return lo, "collapse", None
                        k = int(near[np.argmax(neg[:, 0])])
                        return lo, ("kink", "leave-minus", "leave-plus")[kind[k]], int(who[k])
                    a, b = grid[first - 1], grid[first]
                    best = (math.inf, None)
                    for k in near[neg[:, first] & ~neg[:, first - 1]]:
                        f = lambda s, row=C[k]: float(row @ np.exp(lam * s))
                        root = b if f(a) * f(b) > 0 else scipy.optimize.brentq(f, a, b, xtol=1e-15, rtol=1e-15, maxiter=1000)
                        if root < best[0]:
                            best = (root, k)
                    tau, k = best
                    if collapse < tau:
                        return collapse, "collapse", None
                    return tau, ("kink", "leave-minus", "leave-plus")[kind[k]], int(who[k])
            if collapse < math.inf:
                return collapse, "collapse", None
            lo = hi
            width *= 2.0
        return None

    def _enter_kink(self, g):
        """w reached surface g: cross it, or slide along it."""
        q = self.q
        w = self.theta[:q]
        u = self.phase.normals[g]
        came = self.side[g]
        dest = self.side.copy()
        dest[g] = -came
        v = u @ self._velocity_w(self.theta, dest, self.K)
        if v * came < 0 and abs(v) > 1e-14:
            self.side = dest  # the far side carries the direction on: a transversal crossing
            return
        self.theta[:q] = w - u * (u @ w)
        if np.linalg.matrix_rank(self.phase.normals[self.K + [g]], tol=1e-8) == q:
            # Squeezed between surfaces that meet only at w = 0: the neuron has collapsed.
            self.theta[:q] = 0.0
            self.theta /= np.linalg.norm(self.theta)
            self.K = []
            self.frozen = True
            return
        vel = self._velocity_w(self.theta, self.side, self.K)
        if (u @ vel) * came > 1e-9 * np.linalg.norm(vel):
            # A touch: the side it came from carries it away again (the kink was reached by
            # rounding, e.g. after a projection onto other sliding surfaces).
            self._place_on(self.K + [g])
            return
        self.K = self.K + [g]
        M, _, XK, G = self._matrices(self.side, self.K)
        mu, lo, hi = (f[-1] for f in self._forces(self.theta, M, XK, G, self.K))
        weight = self._weight(mu, lo, hi)
        if math.isnan(weight):
            raise _Degenerate("kink with no Filippov weight")
        if not (-_WEIGHT_SLACK <= weight <= 1 + _WEIGHT_SLACK):
            # A grazing touch (the side it came from carries it away again, as the other
            # sliding surfaces now read it).
            self._release(g, plus=self._exit_side(g, mu, lo, hi))

    def _place_on(self, K):
        """Put w exactly on the surfaces K (a rounding-size move), so that a path leaving one of
        them starts on it, not a rounding error beyond it on the side it left."""
        N = self.phase.normals[K]
        if K and np.linalg.matrix_rank(N, tol=1e-8) < self.q:  # else they meet only at w = 0
            w = self.theta[: self.q]
            self.theta[: self.q] = w - np.linalg.pinv(N, rcond=1e-10) @ (N @ w)
            self.theta /= np.linalg.norm(self.theta)

    def _release(self, g, *, plus: bool):
        """Let surface g go to the preferred side, or to the other where the field there turns
        w straight back into g (sliding surfaces couple through their projections)."""
        self._place_on(self.K)
        u = self.phase.normals[g]
        rest = [k for k in self.K if k != g]
        for up in (plus, not plus):
            side = self.side.copy()
            side[g] = 1.0 if up else -1.0
            vel = self._velocity_w(self.theta, side, rest)
            v = u @ vel
            if (v > 0) == up or abs(v) <= 1e-9 * np.linalg.norm(vel):  # 0: at a release boundary
                self._leave_kink(g, plus=up)
                return
        raise _Degenerate("no side releases the surface")

    def _leave_kink(self, g, *, plus: bool):
        self.K = [k for k in self.K if k != g]
        self.held.discard(g)
        self.side[g] = 1.0 if plus else -1.0

    def _settle(self):
        """Release sliding samples whose Filippov weight left [0, 1] after the set changed, and
        keep w exactly on the sliding kinks."""
        for _ in range(len(self.K) + 1):
            if not self.K:
                break
            M, Pi, XK, G = self._matrices(self.side, self.K)
            mu, lo, hi = self._forces(self.theta, M, XK, G, self.K)
            weight = self._weight(mu, lo, hi)
            held = np.array([k in self.held for k in self.K])
            # A held surface goes where the field's normal component (−μ) takes it.
            pushed = np.abs(mu) > 1e-12 * (np.linalg.norm(M.T @ self.theta[self.q:]) + 1e-300)
            bad = np.where(held, pushed, ~((weight >= -_WEIGHT_SLACK) & (weight <= 1 + _WEIGHT_SLACK)))
            if not bad.any():
                self.theta[: self.q] = Pi @ self.theta[: self.q]
                self.theta /= np.linalg.norm(self.theta)
                return
            k = int(np.argmax(bad))
            g = self.K[k]
            self._release(g, plus=bool(mu[k] < 0) if held[k] else self._exit_side(g, mu[k], lo[k], hi[k]))
        if self.K:
            raise _Degenerate("sliding set did not settle")

    # ------------------------------------------------------------------ reading the path
    def at(self, t: float):
        """(unit direction, S) at time t (within the path)."""
        for t0, lam, V, gamma, S0 in reversed(self.segments):
            if t0 <= t and lam is None:
                return gamma, S0  # collapsed: (θ, S) held
            if t0 <= t:
                theta, log_norm = _direction(lam, V, gamma, t - t0)
                return theta, S0 + log_norm
        raise AssertionError("t before the path's start")
