"""Plots: the loss staircase against time (`staircase`) and what the neurons learn (`features`).

- `staircase(runs, prediction, *, ax=, time="t"|"rescaled"|"log", xlim=, yscale=)`: loss curves,
  detected drops marked, a prediction overlaid; the loss axis is chosen from the data (log of L,
  log of L − L_ref for losses that reach zero or below, or linear), and runs over several α
  are coloured by α.
- `features(trajectory, *, what=, ax=, time=)`: the task's `features` observable, any other
  observable, or the per-neuron norms ‖θ_i‖ of any `AbstractNeuronModel`.
- one family's own figures, which its preset writes into a run folder: `power_heatmap`,
  `lower_bounds`, `coefficients`, `layer_spectra`, `plateau_collapse`, `eigenvalue_curves`;
  `save(fig, path)` writes and closes one.
"""

import matplotlib.pyplot as plt

from ._families import (
    coefficients as coefficients,
    eigenvalue_curves as eigenvalue_curves,
    layer_spectra as layer_spectra,
    lower_bounds as lower_bounds,
    plateau_collapse as plateau_collapse,
    power_heatmap as power_heatmap,
    save as save,
)
from ._features import features as features
from ._staircase import staircase as staircase

__all__ = ["coefficients", "eigenvalue_curves", "features", "layer_spectra", "lower_bounds", "plateau_collapse",
           "plt", "power_heatmap", "save", "staircase"]
