"""Real images available offline: scikit-learn's bundled 8×8 digits, as MSE regression."""

from __future__ import annotations

import numpy as np

from .regression import SampleRegression


def digits(n: int | None = None, *, seed: int = 0, classes: int = 10) -> SampleRegression:
    """The UCI handwritten digits (1797 images of 8×8 pixels, bundled with scikit-learn) as
    MSE regression on centred one-hot labels.

    Inputs are standardized per pixel (zero mean, unit variance; the pixels that are constant
    stay zero), and each one-hot column has its mean removed, so that a bias-free network starts
    at a saddle with no constant offset to fit. The loss is ½ mean_i ‖y_i − f(x_i)‖².

    **Arguments:**

    - `n`: the number of images, drawn without replacement (default: all 1797). Inputs and
      labels are standardized and centred on this subsample.
    - `seed`: the subsample's seed.
    - `classes`: keep the digits 0, …, classes − 1 (2 ≤ classes ≤ 10).

    **Returns:** a `SampleRegression` with X of shape (n, 64) and Y of shape (n, classes).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        # Name the cause: a missing package and a broken one (a local `rich.py` shadowing one
        # of scikit-learn's imports, say) need different mends.
        raise ValueError(
            f"digits: needs scikit-learn (pip install scikit-learn), which bundles the images; importing it failed: {err}"
        ) from None
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or not 2 <= classes <= 10:
        raise ValueError(f"classes: expected an integer between 2 and 10, got {classes!r}")
    data = load_digits()
    X = np.asarray(data.data, dtype=np.float64)
    labels = np.asarray(data.target)
    keep = labels < classes
    X, labels = X[keep], labels[keep]
    total = X.shape[0]
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= total:
            raise ValueError(f"n: expected an integer between 2 and {total}, got {n!r}")
        pick = np.sort(np.random.default_rng(seed).choice(total, size=int(n), replace=False))
        X, labels = X[pick], labels[pick]
    std = X.std(axis=0)
    X = np.where(std > 0, (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    Y = np.eye(classes)[labels]
    Y = Y - Y.mean(axis=0)
    return SampleRegression(X, Y)
