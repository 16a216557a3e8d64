"""`saddlestep figures`: regenerate the gallery in `figures/`."""

from __future__ import annotations

import os
import tempfile

from . import plot
from .flow import simulate
from .presets import all_presets
from .runs import run_preset


def _save(fig, path: str) -> None:
    # Whole or not at all: render to a temporary file beside the target, then rename.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plot.plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_figures(out: str = "figures", presets: list[str] | None = None) -> list[str]:
    """Draw every gallery figure into `out`.

    - `staircase-NAME.png` for each preset (default α and seed, prediction overlaid when the preset has one);
    - `linear-flow-vs-gd.png`: the flow beside gradient descent at two learning rates;
    - `linear-init-scales.png`: the flow at α = 1e-3, 1e-6, 1e-12 against rescaled time.

    **Arguments:** `out`, the folder; `presets`, names to draw (default: all).

    **Returns:** the paths written.
    """
    os.makedirs(out, exist_ok=True)
    names = sorted(all_presets()) if presets is None else presets
    written = []
    for name in names:
        print(f"figures: {name} …", flush=True)
        result = run_preset(name, progress=False)
        fig = plot.staircase(result.trajectory, prediction=result.prediction, title=f"{name} (α={result.summary['init_scale']:g})")
        path = os.path.join(out, f"staircase-{name}.png")
        _save(fig, path)
        written.append(path)
        if name == "linear":
            setup = result.setup
            gds = [
                simulate(setup.model, setup.task, t_max=setup.t_max, learning_rate=lr, n_save=1001)
                for lr in (0.05, 0.01)
            ]
            fig = plot.staircase([result.trajectory, *gds], prediction=result.prediction, title="linear: gradient flow and gradient descent")
            path = os.path.join(out, "linear-flow-vs-gd.png")
            _save(fig, path)
            written.append(path)
            runs = [run_preset("linear", init_scale=a, progress=False).trajectory for a in (1e-3, 1e-6, 1e-12)]
            fig = plot.staircase(runs, prediction=result.prediction, mark_steps=False, title="linear: smaller α, sharper steps at t/ln(1/α) → 1/s_k")
            path = os.path.join(out, "linear-init-scales.png")
            _save(fig, path)
            written.append(path)
    return written
