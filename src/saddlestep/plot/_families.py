"""Figures particular to one family, which presets write beside the staircase: Fourier power
(modular), lower bounds and coefficients (degree 3), layer spectra (deep ReLU escape) and the
plateau collapse across richness γ. Each returns a Figure; `save` writes and closes one."""

from __future__ import annotations

import os

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from jaxtyping import Float

from ..prediction import Prediction
from ..trajectory import Trajectory


def save(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write `fig` to `path` and release it (a preset writes many figures in one process)."""
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def power_heatmap(traj: Trajectory, key: str, *, ylabel: str, title: str):
    """The observable `key` (time × component powers) as a heat map on a log scale: dormant
    components grow from O(α²) long before they show in the loss."""
    P = np.asarray(traj.observables[key])
    t = np.asarray(traj.times)
    keep = np.isfinite(t)
    P, t = P[keep], t[keep]
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    top = max(float(np.nanmax(P)), 1e-300)
    logP = np.log10(np.maximum(P, top * 1e-12))
    im: mpl.cm.ScalarMappable
    if _geometric(t):  # a log save grid: draw it on log time, where its points are even
        im = ax.pcolormesh(t[1:], np.arange(P.shape[1]), logP[1:].T, shading="nearest", cmap="magma")
        ax.set_xscale("log")
    else:
        im = ax.imshow(logP.T, aspect="auto", origin="lower", extent=(t[0], t[-1], -0.5, P.shape[1] - 0.5),
                       cmap="magma", interpolation="nearest")
    ax.set_xlabel("time t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log10 power")
    return fig


def _geometric(t: np.ndarray) -> bool:
    """Whether the save times after t = 0 grow by a constant factor (`Save(spacing="log")`)."""
    r = t[2:] / t[1:-1] if len(t) > 3 and t[1] > 0 else np.ones(1)
    return bool(r[0] > 1.0 + 1e-9 and np.allclose(r, r[0], rtol=1e-6))


def lower_bounds(traj: Trajectory, bound: Prediction):
    """Loss with the closed-form levels and the perfect-alignment lower bounds, drawn as
    vertical lines with arrows pointing right (the true jump is later), as the paper does."""
    t, L = np.asarray(traj.times), np.asarray(traj.loss)
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.plot(t, L, color="C0", label="gradient flow")
    for v in bound.losses:
        ax.axhline(v, color="0.6", lw=0.8, ls=":")
    top = float(np.nanmax(L))
    log_t = _geometric(t[np.isfinite(t)])
    if log_t:
        ax.set_xscale("log")
    for tb, lab in zip(bound.times, bound.order):
        if tb <= np.nanmax(t):
            ax.axvline(tb, color="C3", lw=0.9, ls="--")
            ax.annotate("", xy=(1.6 * tb if log_t else tb + 0.06 * np.nanmax(t), 0.9 * top), xytext=(tb, 0.9 * top),
                        arrowprops=dict(arrowstyle="->", color="C3"))
            ax.text(tb, 0.95 * top, f" {lab}", color="C3", fontsize=8)
    ax.set_xlabel("time t")
    ax.set_ylabel("loss")
    ax.set_title("levels (dotted) and jump-time lower bounds (dashed →)")
    ax.legend(fontsize=8)
    return fig


def coefficients(traj: Trajectory, eigenvalues: Float[np.ndarray, " D"], target: Float[np.ndarray, " D"]):
    """In-context regression: each principal component's coefficient e_iᵀΓe_i over time against
    its learned value 1/(tr Λ + (N+1)λ_i) (dotted)."""
    t = np.asarray(traj.times)
    C = np.asarray(traj.observables["coefficients"])
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for i in range(C.shape[1]):
        ax.plot(t, C[:, i], color=f"C{i}", label=f"PC {i + 1} (λ={float(eigenvalues[i]):.3g})")
        ax.axhline(target[i], color=f"C{i}", lw=0.8, ls=":")
    ax.set_xlabel("time t")
    ax.set_ylabel("coefficient e_iᵀΓe_i")
    ax.set_title("principal-component coefficients; dotted: 1/(tr Λ + (N+1)λ_i)")
    ax.legend(fontsize=8)
    return fig


def layer_spectra(escape_values: list[np.ndarray], escape_ratios: np.ndarray, flow_values: list[np.ndarray]):
    """Per-layer singular values (top 10, over s₁) of the escape direction u* and of the flow
    before the drop; and s₁/s₂ against depth ℓ beside Bantzis, Simon & Jacot's ℓ^{1/4} bound."""
    L = len(escape_values)
    fig, axes = plt.subplots(1, L + 1, figsize=(3.0 * (L + 1), 3.0))
    for ell, (ax, s_opt, s_flow) in enumerate(zip(axes, escape_values, flow_values), 1):
        k = np.arange(1, min(10, len(s_opt)) + 1)
        ax.semilogy(k, s_opt[: len(k)] / s_opt[0], "o-", label="u* (ascent)")
        ax.semilogy(k, s_flow[: len(k)] / s_flow[0], "s--", label="flow, before the drop")
        ax.set_title(f"layer {ell}")
        ax.set_xlabel("k")
    axes[0].set_ylabel("s_k / s_1")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    layers = np.arange(1, L + 1)
    # A layer with one singular value (a one-output last layer) has no gap to draw.
    gap = lambda s: s[0] / s[1] if len(s) > 1 and s[1] > 0 else np.nan
    ax.loglog(layers, np.where(np.isfinite(escape_ratios), escape_ratios, np.nan), "o-", label="u*")
    ax.loglog(layers, [gap(s) for s in flow_values], "s--", label="flow")
    ax.loglog(layers, layers**0.25, "k:", label="ℓ^{1/4}")
    ax.set_xlabel("layer ℓ")
    ax.set_ylabel("s_1 / s_2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plateau_collapse(curves: list[tuple[np.ndarray, np.ndarray]], gammas: np.ndarray, tau_plateau: np.ndarray,
                     *, depth: int, law: str):
    """Loss against τ = t/(N γ^{2/L}) for each richness γ, and against τ − τ_plateau(γ), where
    the curves collapse onto one."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for (tau, loss), g, tp in zip(curves, gammas, tau_plateau):
        axes[0].plot(tau, loss, label=f"γ = {g:g}")
        axes[1].plot(tau - tp, loss, label=f"γ = {g:g}")
    axes[0].set_xlabel("τ = t / (N γ^{2/L})")
    axes[1].set_xlabel("τ − τ_plateau(γ)")
    axes[0].set_ylabel("loss")
    axes[1].set_xlim(-0.5 * float(np.min(tau_plateau)), 1.0 * float(np.min(tau_plateau)))
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"depth {depth}: plateau ∝ {law}")
    axes[1].set_title("after the shift")
    fig.tight_layout()
    return fig


def eigenvalue_curves(traj: Trajectory, key: str, theory: np.ndarray | None, *, ylabel: str, title: str):
    """The observable `key` (time × eigenvalues) against its closed form (dashed), for the
    self-supervised embeddings whose eigenvalues each follow a logistic curve."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(traj.times, np.asarray(traj.observables[key]), lw=1.5)
    if theory is not None:
        ax.plot(traj.times, theory, "k--", lw=0.8)
    ax.set_xlabel("time t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig
