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

# %% [markdown]
# ## Check
# We assert that the flow learns teacher 1 (|a*| = 3) then teacher 2 (|a*| = 1.5), each drop at
# rescaled time 2/|a*_j| (written here from the teacher, not from the predictor) to a relative
# 1/ln(1/α) (≈ 0.07 at α = 1e-6: an O(1) offset in t), that AGF's times agree with the flow to the
# same tolerance and its plateau losses to 1e-3 of the initial loss, and that both overlaps end
# within 1e-2 of 1.

# %%
import numpy as np

alpha = 1e-6
a_star = np.array([3.0, -1.5])  # the preset's teacher_norms
steps = result.steps
assert [s.feature for s in steps] == ["teacher 1", "teacher 2"] == result.prediction.order, steps
tau = np.array([s.rescaled_time for s in steps])
rel = np.abs(tau * np.abs(a_star) / 2 - 1)
assert np.all(rel <= 1 / np.log(1 / alpha)), rel
rel_agf = np.abs(tau / result.prediction.rescaled_times - 1)
assert np.all(rel_agf <= 1 / np.log(1 / alpha)), rel_agf
loss_err = np.abs(np.array([s.loss_after for s in steps]) - result.prediction.losses)
assert np.all(loss_err <= 1e-3 * result.prediction.initial_loss), loss_err
m_final = np.asarray(result.trajectory.observables["features"])[-1]
assert np.all(np.abs(m_final - 1) <= 1e-2), m_final
print("|τ |a*|/2 − 1| =", np.round(rel, 4), " flow vs AGF:", np.round(rel_agf, 4), " final overlaps:", np.round(m_final, 4))
