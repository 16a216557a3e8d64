"""Reference cases shared by the AGF, theory and convergence tests (reference/agf.md §5)."""

import numpy as np

import saddlestep as ss


def r1_task() -> ss.SampleRegression:
    """R1: the 2-D diagonal example of Pesme & Flammarion (2023), §3.1."""
    th = np.deg2rad(150.0)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    X = np.linalg.cholesky(R @ np.diag([1.0, 25.0]) @ R.T)
    return ss.SampleRegression(X, X @ np.array([-0.2, 2.0]))


def r3_task() -> ss.PopulationRegression:
    """R3: whitened inputs, axis-aligned Σyx = diag(3, 2, 1, 0.5)."""
    return ss.PopulationRegression(np.eye(4), np.diag([3.0, 2.0, 1.0, 0.5]))


def ten_by_ten(commuting: bool) -> ss.PopulationRegression:
    """R4-like: y = Bx with B Gaussian 10×10 and Σxx eigenvalues 1/i²; `commuting` rotates Σxx
    onto B's right singular vectors."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((10, 10))
    lam = 1.0 / np.arange(1, 11) ** 2
    V = np.linalg.svd(B)[2].T
    Sxx = V @ np.diag(lam) @ V.T if commuting else np.diag(lam)
    Sxx = (Sxx + Sxx.T) / 2
    return ss.PopulationRegression(Sxx, B @ Sxx, B @ Sxx @ B.T)
