"""`saddlestep figures`: regenerate the gallery in `figures/`."""

from __future__ import annotations

import os
import tempfile
import types
from collections.abc import Callable

import jax
import numpy as np

from . import plot
from .flow import simulate
from .outputs import owned, prepare_updatable, record_files
from .presets import all_presets
from .runs import run_preset

# Presets whose default run is too slow for the gallery are drawn at smaller sizes (every figure
# title says which). word2vec is drawn with QWEM, whose closed form the overlay shows.
_GALLERY_OVERRIDES: dict[str, dict[str, str]] = {
    "word2vec": {"loss": "qwem", "vocab_size": "500", "d": "8", "rtol": "1e-7"},
    # At the preset's α = 0.1 modular addition's staircase blurs into a cascade of sub-drops; at
    # α = 1e-3 (`_GALLERY_INIT_SCALE`) its steps are clean and AGF predicts them (the default
    # p = 20 flow takes over ten minutes there: two frequencies at p = 11 take one).
    "modular": {"predictor": "agf", "p": "11", "width": "6", "frequencies": "1,3", "magnitudes": "10,5"},
}
_GALLERY_INIT_SCALE: dict[str, float] = {"modular": 1e-3}


def _save(fig, path: str) -> None:
    # Whole or not at all: render to a temporary file beside the target, then rename.
    folder, name = os.path.split(path)
    if not owned(folder, name):
        plot.plt.close(fig)
        raise ValueError(f"out: {path} exists and was not written by saddlestep; choose a new folder")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.tmp-{os.getpid()}-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600
        os.replace(tmp, path)
        record_files(folder, "figures", [name])
    finally:
        plot.plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _title(name: str, result, overrides: dict[str, str] | None) -> str:
    extra = f", {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else ""
    return f"{name} (α={result.summary['init_scale']:g}{extra})"


# ------------------------------------------------------------------------------ extra figures
def _linear_extras(out: str, result) -> list[str]:
    setup = result.setup
    gds = [simulate(setup.model, setup.task, t_max=setup.t_max, learning_rate=lr, n_save=1001) for lr in (0.05, 0.01)]
    fig = plot.staircase([result.trajectory, *gds], prediction=result.prediction, title="linear: gradient flow and gradient descent")
    paths = [os.path.join(out, "linear-flow-vs-gd.png")]
    _save(fig, paths[-1])
    runs = [run_preset("linear", init_scale=a, progress=False).trajectory for a in (1e-3, 1e-6, 1e-12)]
    fig = plot.staircase(runs, prediction=result.prediction, mark_steps=False,
                         title="linear: smaller α, sharper steps at t/ln(1/α) → 1/s_k")
    paths.append(os.path.join(out, "linear-init-scales.png"))
    _save(fig, paths[-1])
    return paths


def _pesme_flammarion_task():
    """The 2-D example of Pesme & Flammarion (2023, §3.1): coordinate 0 is learned, switched off,
    and learned again with the other sign."""
    from .tasks import SampleRegression

    th = np.deg2rad(150.0)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    X = np.linalg.cholesky(R @ np.diag([1.0, 25.0]) @ R.T)
    return SampleRegression(X, X @ np.array([-0.2, 2.0]))


def _diagonal_extras(out: str, result) -> list[str]:
    from . import agf
    from .models import DiagonalLinear

    task = _pesme_flammarion_task()
    model = DiagonalLinear(2, key=jax.random.PRNGKey(0), init_scale=1e-6)
    pred = agf.predict(model, task)
    flow = simulate(model, task, t_max=1.3 * float(pred.times[-1]), n_save=1001)
    fig = plot.staircase(flow, prediction=pred, title="diagonal network, Pesme–Flammarion §3.1: flow and AGF (β[0] on, off, on)")
    # The right panel is log-time (one α); the left panel's upper right is empty after the first drops.
    ax = fig.axes[0].inset_axes([0.5, 0.52, 0.47, 0.44])
    beta = np.asarray(flow.observables["features"])
    for j in range(beta.shape[1]):
        ax.plot(flow.times, beta[:, j], lw=1.2, label=f"β[{j}]")
    ax.set_xlim(fig.axes[0].get_xlim())
    ax.axhline(0.0, color="gray", lw=0.5)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=6)
    path = os.path.join(out, "diagonal-deactivation.png")
    _save(fig, path)
    return [path]


def _convergence(out: str) -> list[str]:
    from . import agf
    from .convergence import converge, convergence_figure
    from .models import DiagonalLinear

    task = _pesme_flammarion_task()

    def setup(alpha):
        model = DiagonalLinear(2, key=jax.random.PRNGKey(0), init_scale=alpha)
        return types.SimpleNamespace(model=model, task=task, t_max=4.5 * np.log(1 / alpha),
                                     predict=lambda: agf.predict(model, task, limit=True))

    fig = convergence_figure(converge(setup, [1e-2, 1e-3, 1e-4, 1e-6]))
    fig.axes[0].set_title("diagonal network: flow → AGF (★) as α → 0")
    path = os.path.join(out, "convergence-diagonal.png")
    _save(fig, path)
    return [path]


def _optimizers(out: str) -> list[str]:
    import optax

    from . import theory
    from .models import TwoLayer
    from .tasks import SampleRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10))
    B = np.diag([4.0, 2.0, 1.0] + [0.0] * 7) @ np.linalg.qr(rng.standard_normal((10, 10)))[0]
    task = SampleRegression(X, X @ B.T)
    model = TwoLayer(10, 10, 10, "linear", key=jax.random.PRNGKey(0), init_scale=1e-6)
    runs = [simulate(model, task, t_max=25.0, n_save=501)]
    runs += [simulate(model, task, t_max=25.0, learning_rate=lr, n_save=201) for lr in (0.1, 0.02)]
    runs.append(simulate(model, task, t_max=25.0, learning_rate=1e-3, optimizer=optax.adam(1e-3), n_save=201))
    labels = ["gradient flow", "GD η=0.1", "GD η=0.02", "Adam η=1e-3"]
    fig = plot.staircase(runs, labels=labels, prediction=theory.linear_network(task, init_scale=1e-6), mark_steps=False,
                         title="flow, GD and Adam on one time axis t = η × steps (Adam skips the plateaus)")
    path = os.path.join(out, "optimizers.png")
    _save(fig, path)
    return [path]


def _modular_extras(out: str, result) -> list[str]:
    # κ = 3: jump times scale like 1/α, so runs at two α collapse on t·α (the staircase's
    # rescaled axis for κ > 2), with the AGF prediction of the smaller α.
    alpha = _GALLERY_INIT_SCALE["modular"]
    other = run_preset("modular", init_scale=10 * alpha, overrides=_GALLERY_OVERRIDES["modular"], progress=False)
    fig = plot.staircase([other.trajectory, result.trajectory], prediction=result.prediction, mark_steps=False,
                         title=f"modular (κ = 3): α = {10 * alpha:g} and {alpha:g} against t·α, AGF at α = {alpha:g}")
    path = os.path.join(out, "modular-init-scales.png")
    _save(fig, path)
    return [path]


_PRESET_EXTRAS: dict[str, Callable] = {"linear": _linear_extras, "diagonal": _diagonal_extras,
                                       "modular": _modular_extras}
_STANDALONE: dict[str, Callable] = {"convergence": _convergence, "optimizers": _optimizers}


def make_figures(out: str = "figures", presets: list[str] | None = None) -> list[str]:
    """Draw the gallery into `out`, each file written whole or not at all.

    - `staircase-NAME.png` for each preset (default α and seed, prediction overlaid when the preset
      has one; `word2vec` with the QWEM loss at V = 500 and its closed form, and
      `modular` at α = 1e-3, p = 11, with AGF);
    - with `linear`: `linear-flow-vs-gd.png` (the flow beside gradient descent at two learning
      rates) and `linear-init-scales.png` (α = 1e-3, 1e-6, 1e-12 against rescaled time);
    - with `modular`: `modular-init-scales.png` (α = 1e-2 and 1e-3 against t·α, κ = 3's rescaled time);
    - with `diagonal`: `diagonal-deactivation.png` (Pesme & Flammarion's 2-D example with AGF);
    - `convergence-diagonal.png`: step times against 1/ln(1/α), extrapolated to AGF (Kunin et al. 2025);
    - `optimizers.png`: the flow against GD and Adam at finite learning rates.

    **Arguments:**

    - `out`: the folder (created if needed).
    - `presets`: the preset names (and/or `"convergence"`, `"optimizers"`) to draw; default: every
      preset and every standalone figure.

    **Returns:** the paths written. A figure that fails does not stop the others; the failures are
    reported together at the end as a `ValueError`.
    """
    known = all_presets()
    names = sorted(known) + sorted(_STANDALONE) if presets is None else list(presets)
    unknown = [n for n in names if n not in known and n not in _STANDALONE]
    if unknown:
        raise ValueError(f"figures: unknown name(s) {', '.join(unknown)}; expected presets or {', '.join(_STANDALONE)}")
    out = prepare_updatable(out, kind="figures")
    written, failed = [], []
    for name in names:
        print(f"figures: {name} …", flush=True)
        try:
            written += _draw(out, name, known)
        except Exception as err:  # draw the rest of the gallery, then report every failure
            print(f"figures: {name} failed: {err}", flush=True)
            failed.append(f"{name} ({type(err).__name__}: {err})")
    if failed:
        raise ValueError(f"figures: could not draw {'; '.join(failed)}")
    return written


def _draw(out: str, name: str, known) -> list[str]:
    if name in _STANDALONE:
        return _STANDALONE[name](out)
    overrides = {k: v for k, v in _GALLERY_OVERRIDES.get(name, {}).items() if k in known[name].all_defaults}
    result = run_preset(name, init_scale=_GALLERY_INIT_SCALE.get(name), overrides=overrides, progress=False)
    fig = plot.staircase(result.trajectory, prediction=result.prediction, title=_title(name, result, overrides))
    path = os.path.join(out, f"staircase-{name}.png")
    _save(fig, path)
    paths = [path]
    if name in _PRESET_EXTRAS:
        paths += _PRESET_EXTRAS[name](out, result)
    return paths
