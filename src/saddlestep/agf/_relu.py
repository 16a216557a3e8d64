"""The exact utility phase of two-layer ReLU neurons on a sample, between kinks.

A dormant neuron θ = (w, a) of f = a·relu(wᵀx) has utility U = aᵀM_P w on the set P of samples
it is active on (M_P = Σ_{n∈P} r_n x_nᵀ / N). On a fixed pattern the unnormalized utility
ascent θ̇ = ∇U = Bθ is linear with B symmetric, so θ(τ) = V e^{Λτ} Vᵀθ(0) exactly and
ln‖θ‖ grows at 2U: the accumulated utility S is ln‖θ(τ)‖ (Kunin et al. 2025, κ = 2).

The pattern changes where some x_nᵀw crosses 0 (a kink). At a kink whose two sides both push
into it (a concave term: ⟨a, r_n⟩ < 0), the direction slides along it (Filippov): with K the
sliding samples, the velocity is the gradient projected off span{x_n : n ∈ K}, and the flow is
again linear and symmetric, θ̇ = B_K θ. It leaves the kink when its Filippov weight
λ_n = μ_n/c_n leaves [0, 1]. Every quantity watched for an event (x_nᵀw, μ_n, c_n − μ_n, ‖θ‖²)
is a sum of exponentials Σ_j β_j e^{λ_j τ}, so events are found by a sign scan and Brent's
method, with no step-size control to fight the kinks (the ODE phase crawls at its step floor
there). Degenerate configurations return None, and the engine solves that phase as an ODE.
"""

from __future__ import annotations

import math

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
# A direction whose w-part is below this fraction of ‖θ‖ has collapsed onto w = 0 (below, the
# kinks x_nᵀw = 0 are lost in rounding); it restarts from this size when it can grow again.
_COLLAPSE = 1e-7


class _Degenerate(Exception):
    """A configuration the exact phase does not resolve; the phase goes to the ODE solve."""


class ReluPhase:
    """The exact utility phase of `TwoLayer(..., "relu")` neurons (see the module docstring).

    **Arguments:** `X`, the inputs (N, d); `bias`, whether neurons carry a bias (then inputs get
    a column of ones); `cols_w`, `cols_a`, the flattened neuron's columns of (w[, b]) and of a.
    """

    def __init__(self, X, *, bias: bool, cols_w, cols_a):
        X = np.asarray(X, dtype=float)
        if bias:
            X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
        self.X = X
        self.xnorm = np.linalg.norm(X, axis=1)
        self.cols = np.asarray(list(cols_w) + list(cols_a))
        self.q = len(cols_w)

    def advance(self, x, S, c, dormant, r, horizon):
        """The utility phase: (duration, x, S, whether a neuron reached its threshold within
        `horizon`), or None where a neuron meets a configuration left to the ODE solve.

        **Arguments:** `x`, unit directions (width, p) in flattened-neuron columns; `S`, the
        accumulated utilities; `c`, the thresholds; `dormant`, which neurons move; `r`, the
        residual (N, out); `horizon`, the longest the phase may last.
        """
        R = np.asarray(r, dtype=float) / self.X.shape[0]
        x = np.asarray(x, dtype=float)
        S = np.asarray(S, dtype=float)
        end = float(horizon)
        paths = {}
        try:
            # The earliest activation bounds every later neuron's solve.
            for i in np.flatnonzero(dormant):
                path = _Path(self, R, x[i, self.cols], float(S[i]), float(c[i]))
                path.run(end)
                paths[i] = path
                if path.hit is not None:
                    end = min(end, path.hit)
        except (_Degenerate, RuntimeError):  # RuntimeError: a root search did not converge
            return None
        hit = end < float(horizon)
        x_new, S_new = x.copy(), S.copy()
        for i, path in paths.items():
            theta, s = path.at(end)
            x_new[i, self.cols] = theta
            S_new[i] = s
        return end, x_new, S_new, hit


class _Path:
    """One dormant neuron's exact path: a list of linear segments."""

    def __init__(self, phase: ReluPhase, R, theta, S, c):
        self.phase, self.R, self.c = phase, R, c
        self.q = phase.q
        self.theta = theta / np.linalg.norm(theta)
        self.S = S
        self.t = 0.0
        self.K: list[int] = []
        self.segments: list[tuple] = []
        self.hit: float | None = None
        self.frozen = np.linalg.norm(self.theta[: self.q]) < _COLLAPSE and not self._escape()
        self.on = phase.X @ self.theta[: self.q] > 0

    def _escape(self) -> bool:
        """From w ≈ 0 (a collapsed neuron), w turns at speed ∝ 1/‖w‖ up the 1-homogeneous
        φ(u) = Σ_n ⟨a, r_n⟩ relu(u·x_n) on the sphere: it grows again iff it finds φ > 0.
        Ascend φ from the current w-direction; if it becomes positive, restart w there at
        `_COLLAPSE` (True), else the neuron stays collapsed for this phase (False)."""
        q, X = self.q, self.phase.X
        coef = X.T * (self.R @ self.theta[q:])  # (q, N): column n is ⟨a, r_n⟩ x_n
        w = self.theta[:q]
        u0 = w / np.linalg.norm(w) if np.linalg.norm(w) > 0 else coef.sum(axis=1)
        if not np.linalg.norm(u0) > 0:
            return False

        def neg_phi(u):
            u = u / np.linalg.norm(u)
            on = X @ u > 0
            return -float(np.sum(coef[:, on].T @ u))

        res = scipy.optimize.minimize(neg_phi, u0, method="Powell", options={"xtol": 1e-10, "ftol": 1e-14})
        scale = float(np.linalg.norm(coef, axis=0).sum())
        if not -res.fun > 1e-10 * max(scale, 1e-300):
            return False
        u = res.x / np.linalg.norm(res.x)
        a = self.theta[q:] / np.linalg.norm(self.theta[q:])
        self.theta = np.concatenate([_COLLAPSE * 10 * u, a])
        self.theta /= np.linalg.norm(self.theta)
        return True

    # ------------------------------------------------------------------ linear algebra of a piece
    def _matrices(self, on, K):
        X, q = self.phase.X, self.q
        act = on.copy()
        act[K] = False
        M = self.R[act].T @ X[act]  # (out, q)
        if K:
            XK = X[K]
            G = XK @ XK.T
            if np.linalg.cond(G) > 1e10:
                raise _Degenerate("ill-conditioned sliding set")
            Pi = np.eye(q) - XK.T @ np.linalg.solve(G, XK)
        else:
            XK = G = None
            Pi = np.eye(q)
        return M, Pi, XK, G

    def _weights(self, theta, M, XK, G, K):
        """(μ, c) of the sliding samples at θ: Filippov weights λ = μ/c."""
        a = theta[self.q:]
        mu = -np.linalg.solve(G, XK @ (M.T @ a))
        return mu, self.R[K] @ a

    def _velocity_w(self, theta, on, K):
        M, Pi, _, _ = self._matrices(on, K)
        return Pi @ (M.T @ theta[self.q:])

    # ------------------------------------------------------------------ the march
    def run(self, end: float):
        events, zeno, last_gap = 0, 0, None
        while True:
            if self.frozen:
                # Collapsed on w = 0: U = 0, so S and the direction stay (for this residual).
                self.segments.append((self.t, None, None, self.theta.copy(), self.S))
                self.t = end
                return
            M, Pi, XK, G = self._matrices(self.on, self.K)
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
                theta = V @ (np.exp(lam * tau) * gamma)
                norm = np.linalg.norm(theta)
                self.S += math.log(norm)
                self.theta = theta / norm
                self.t += tau
                self.frozen = True
                continue
            theta = V @ (np.exp(lam * tau) * gamma)
            norm = np.linalg.norm(theta)
            self.S += math.log(norm)
            self.theta = theta / norm
            last_gap = tau
            self.t += tau
            events += 1
            zeno = zeno + 1 if tau <= _ZENO_GAP * max(1.0, self.t) else 0
            if events > _MAX_EVENTS:
                raise _Degenerate("too many events")
            if zeno > _ZENO_COUNT:
                raise _Degenerate("chattering")
            if kind == "kink":
                self._enter_kink(which)
            else:
                self._leave_kink(which, to_on=(kind == "leave-on"))
            self._settle()

    def _next_event(self, lam, V, gamma, M, XK, G, remaining, last_gap):
        """(τ, kind, sample) of the first event within `remaining`, or (remaining, "end", None).
        Kinds: "kink", "leave-off", "leave-on", "threshold", "collapse"."""
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
        X, q = self.phase.X, self.q
        # Watched functions: rows of coefficients over eigen-index j.
        K = self.K
        notK = np.ones(X.shape[0], bool)
        notK[K] = False
        idx = np.flatnonzero(notK)
        side = np.where(self.on[idx], 1.0, -1.0)
        Cw = (X[idx] @ V[:q]) * gamma  # x_nᵀw(τ)
        rows = [side[:, None] * Cw]
        kinds = [np.zeros(idx.size, int)]
        who = [idx]
        if K:
            Va = V[q:] * gamma
            Cmu = -np.linalg.solve(G, XK @ (M.T @ Va))
            Cc = self.R[K] @ Va
            sgn = np.sign(Cc.sum(axis=1))
            rows += [sgn[:, None] * Cmu, sgn[:, None] * (Cc - Cmu)]
            kinds += [np.ones(len(K), int), np.full(len(K), 2)]
            who += [np.asarray(K), np.asarray(K)]
        C = np.concatenate(rows)
        kind = np.concatenate(kinds)
        who = np.concatenate(who)
        if stop <= 0:
            return None
        # Bound on how far x_nᵀw can move by τ: ‖x_n‖·ρ·∫e^{max(λ,0)s}ds, ρ = max|λ|.
        rho = float(np.max(np.abs(lam)))
        lmax = max(float(np.max(lam)), 0.0)
        start_vals = C.sum(axis=1)
        scale = np.concatenate([self.phase.xnorm[idx]] + [np.full(2 * len(K), math.inf)] * bool(K))
        width = min(stop, 2.0 * last_gap if last_gap else 0.1 / max(rho, 1e-12))
        width = max(width, 1e-9 * max(1.0, self.t), min(stop, 1e-6))
        lo = 0.0
        while lo < stop:
            hi = min(stop, lo + width)
            reach = rho * (math.expm1(lmax * hi) / lmax if lmax > 0 else hi)
            near = np.flatnonzero(np.abs(start_vals) <= scale * reach * (1 + 1e-9) + 1e-300)
            grid = np.linspace(lo, hi, _GRID)
            E = np.exp(np.minimum(np.outer(lam, grid), 700.0))
            path = V @ (E * gamma[:, None])
            small = np.linalg.norm(path[:q], axis=0) < _COLLAPSE * np.linalg.norm(path, axis=0)
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
                        return lo, ("kink", "leave-off", "leave-on")[kind[k]], int(who[k])
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
                    return tau, ("kink", "leave-off", "leave-on")[kind[k]], int(who[k])
            if collapse < math.inf:
                return collapse, "collapse", None
            lo = hi
            width *= 2.0
        return None

    def _enter_kink(self, n):
        """Sample n reached its kink: cross it, or slide along it."""
        q = self.q
        w = self.theta[:q]
        xn = self.phase.X[n]
        came_on = bool(self.on[n])
        dest = self.on.copy()
        dest[n] = not came_on
        v = xn @ self._velocity_w(self.theta, dest, self.K)
        if (v > 0) != came_on and abs(v) > 1e-14 * np.linalg.norm(xn):
            self.on = dest  # the far side carries the direction on: a transversal crossing
            return
        self.theta[:q] = w - xn * (xn @ w) / (xn @ xn)
        self.on[n] = False
        self.K = self.K + [n]
        M, _, XK, G = self._matrices(self.on, self.K)
        mu, cn = self._weights(self.theta, M, XK, G, self.K)
        weight = mu[-1] / cn[-1] if cn[-1] != 0 else math.nan
        if math.isnan(weight):
            raise _Degenerate("kink with no Filippov weight")
        if not (-_WEIGHT_SLACK <= weight <= 1 + _WEIGHT_SLACK):
            # A grazing touch (the side it came from carries it away again, as the other
            # sliding samples now read it): it leaves on the side its weight points to.
            self._leave_kink(n, to_on=bool(weight > 1))

    def _leave_kink(self, n, *, to_on: bool):
        self.K = [k for k in self.K if k != n]
        self.on[n] = to_on

    def _settle(self):
        """Release sliding samples whose Filippov weight left [0, 1] after the set changed, and
        keep w exactly on the sliding kinks."""
        for _ in range(len(self.K) + 1):
            if not self.K:
                break
            M, Pi, XK, G = self._matrices(self.on, self.K)
            mu, cn = self._weights(self.theta, M, XK, G, self.K)
            with np.errstate(divide="ignore", invalid="ignore"):
                weight = mu / cn
            bad = ~((weight >= -_WEIGHT_SLACK) & (weight <= 1 + _WEIGHT_SLACK))
            if not bad.any():
                self.theta[: self.q] = Pi @ self.theta[: self.q]
                self.theta /= np.linalg.norm(self.theta)
                return
            k = int(np.argmax(bad))
            self._leave_kink(self.K[k], to_on=bool(weight[k] > 1))
        if self.K:
            raise _Degenerate("sliding set did not settle")

    # ------------------------------------------------------------------ reading the path
    def at(self, t: float):
        """(unit direction, S) at time t (within the path)."""
        for t0, lam, V, gamma, S0 in reversed(self.segments):
            if t0 <= t and lam is None:
                return gamma, S0  # collapsed: (θ, S) held
            if t0 <= t:
                theta = V @ (np.exp(lam * (t - t0)) * gamma)
                norm = np.linalg.norm(theta)
                return theta / norm, S0 + math.log(norm)
        raise AssertionError("t before the path's start")
