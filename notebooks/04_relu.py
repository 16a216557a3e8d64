# %% [markdown]
# # Two-layer ReLU networks: teacher neurons one at a time
#
# A two-layer ReLU student trained from small init on a two-layer ReLU teacher picks the teacher's
# neurons up one at a time, strongest first. The `relu` preset's teacher has two neurons with output
# weights +3 and −1.5 (opposite signs) on orthogonal inputs. ReLU neurons are homogeneous of
# degree κ = 2 (a neuron θ_i = (w_i, a_i) contributes a_i·relu(w_i·x)), so AGF applies (Kunin et al.
# 2025): dormant neurons align their directions to maximize a utility, the first to reach its
# threshold jumps, and the active neurons refit; teacher j is learned near rescaled time 2/|a*_j|.
# Here the preset at reduced sizes (d = 5, 10 student neurons, 256 samples).

# %%
import matplotlib.pyplot as plt

import saddlestep as ss

plt.rcParams["figure.dpi"] = 60

result = ss.run_preset("relu", init_scale=1e-6, overrides={"d": "5", "width": "10", "n": "256"})
print(result.summary["solver"])
fig = ss.plot.staircase(result.trajectory, prediction=result.prediction, title="ReLU teacher–student, α = 1e-6")

# %% [markdown]
# The features are the overlaps m_j of the student with each teacher neuron (1 when that neuron is
# learned exactly). AGF predicts the two steps, their order, times and plateau losses.

# %%
fig = ss.plot.features(result.trajectory, title="overlap with each teacher neuron")
ss.compare(result.steps, result.prediction)[["step", "feature_predicted", "feature_simulated", "time_predicted", "time_simulated", "loss_predicted", "loss_simulated"]].round(4)

# %% [markdown]
# ReLU flows on a finite sample are only piecewise smooth: the adaptive solver takes many small steps
# at the kinks (see `result.summary["solver"]`). For your own data: `saddlestep run relu --data
# mine.npz` with `X` (n, d) and `Y` (n, out).
