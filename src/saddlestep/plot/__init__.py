"""Plots: the loss staircase against time (`staircase`) and what the neurons learn (`features`).

- `staircase(runs, prediction, *, ax=, time="t"|"rescaled"|"log", xlim=, yscale=)`: loss curves,
  detected drops marked, a prediction overlaid; the loss axis is chosen from the data (log of L,
  log of L − L_min for losses that reach zero or below, or linear), and runs over several α
  are coloured by α.
- `features(trajectory, *, what=, ax=, time=)`: the task's `features` observable, any other
  observable, or the per-neuron norms ‖θ_i‖ of any `AbstractNeuronModel`.
"""

import matplotlib.pyplot as plt

from ._features import features as features
from ._staircase import staircase as staircase

__all__ = ["features", "plt", "staircase"]
