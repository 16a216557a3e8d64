# %% [markdown]
# # Quickstart: a staircase and its prediction
#
# A two-layer linear network started from a tiny initialization α learns its teacher one singular
# mode at a time: the loss sits on a plateau, drops, sits on the next plateau. This is the picture of
# Saxe, McClelland & Ganguli (2014). Below we (1) run the `linear` preset, (2) build the same
# experiment by hand with the Python API, and (3) overlay the theory's `Prediction`.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

import saddlestep as ss

plt.rcParams["figure.dpi"] = 60

# %% [markdown]
# ## 1. One preset, one call
# `run_preset` is what `saddlestep run linear` does: build the model and task, integrate the flow
# dθ/dt = −∇L(θ) with Diffrax, detect the steps, and predict them. The teacher has singular values
# s = 10, 5, 2.5, 1.25, 0.625. On the right, time is rescaled by ln(1/α): the drops sit near 1/s_k.

# %%
result = ss.run_preset("linear", init_scale=1e-6)
print(result.summary["solver"])
fig = ss.plot.staircase(result.trajectory, prediction=result.prediction, title="linear preset, α = 1e-6")

# %% [markdown]
# The dashed black staircase is the closed form (method `closed-form:conjecture-4.1`, which for
# whitened inputs is Saxe's 1/s_k); dots mark the drops
# that `detect_steps` found. `compare` puts the two side by side:

# %%
ss.compare(result.steps, result.prediction)[
    ["step", "feature_predicted", "time_predicted", "time_simulated", "loss_predicted", "loss_simulated"]
].round(4)

# %% [markdown]
# ## 2. The same by hand
# A task (here a teacher with a given spectrum), a model with `init_scale`, and `simulate`.
# `simulate(..., learning_rate=η)` runs plain gradient descent instead, on the same time axis
# t = η × steps, so the two curves are directly comparable.

# %%
task = ss.teacher_spectrum(jax.random.PRNGKey(0), 20, 20, [4.0, 2.0, 1.0])  # 20 inputs, 20 outputs
model = ss.TwoLayer(20, 20, 20, "linear", key=jax.random.PRNGKey(1), init_scale=1e-6)  # width 20
flow = ss.simulate(model, task, t_max=40.0)
gd = ss.simulate(model, task, t_max=40.0, learning_rate=0.05, n_save=401)  # 800 steps, saved every 2
prediction = ss.theory.linear_network(task, init_scale=1e-6)
fig = ss.plot.staircase([flow, gd], prediction=prediction, title="flow and GD, teacher s = 4, 2, 1")

# %%
for step in ss.detect_steps(flow):
    print(f"t = {step.time:6.2f}  (τ = {step.rescaled_time:.3f})  loss {step.loss_before:.4f} → {step.loss_after:.4f}  [{step.feature}]")
print("predicted τ_k = 1/s_k:", np.round(prediction.rescaled_times, 3))

# %% [markdown]
# ## 3. Your own data
# Any preset with a `--data` option takes a file. For `linear`, an `.npz` with samples `X`, `Y`
# (rows are examples) or second moments `Sxx`, `Syx`. The same call from the shell is
# `saddlestep run linear --data mydata.npz --out runs/mine`, which writes `staircase.png` with the
# overlay, `steps.csv`, `prediction.json` and `comparison.csv`.

# %%
import os
import tempfile

rng = np.random.default_rng(0)
X = rng.standard_normal((400, 20))
B = np.diag([3.0, 1.5, 0.5] + [0.0] * 17) @ np.linalg.qr(rng.standard_normal((20, 20)))[0]
Y = X @ B.T  # a rank-3 linear map; with noisy Y, the noise's small modes are learned last, slowly
folder = tempfile.mkdtemp()
np.savez(os.path.join(folder, "mydata.npz"), X=X, Y=Y)
mine = ss.run_preset("linear", data=os.path.join(folder, "mydata.npz"), out=os.path.join(folder, "run"))
print(sorted(os.listdir(os.path.join(folder, "run"))))
fig = ss.plot.staircase(mine.trajectory, prediction=mine.prediction, title="linear on my data")

# %% [markdown]
# ## Check
# We assert, against Saxe's formulas computed here from the teacher's singular values alone, that
# every drop of both flows sits at rescaled time 1/s_k to a relative 2/ln(1/α) (≈ 0.14 at α = 1e-6:
# a random start shifts each sigmoid by an O(1) time, ≈ ln(s_k)/(2 s_k) plus the projection), and that
# each plateau is ½ Σ_{j>k} s_j² to 1e-3 of the initial loss (the levels are exact up to O(α^{2/3})).

# %%
def check_saxe(steps, s, alpha):
    s = np.asarray(s, dtype=float)
    assert len(steps) == len(s), f"{len(steps)} drops detected, {len(s)} modes"
    tol = 2.0 / np.log(1 / alpha)
    tau = np.array([st.rescaled_time for st in steps])
    rel = np.abs(tau * s - 1.0)
    assert np.all(rel <= tol), f"τ_k·s_k − 1 = {rel} exceeds {tol:.3f}"
    levels = 0.5 * np.array([np.sum(s[k + 1:] ** 2) for k in range(len(s))])
    err = np.abs(np.array([st.loss_after for st in steps]) - levels)
    assert np.all(err <= 1e-3 * 0.5 * np.sum(s**2)), f"plateau errors {err}"
    return rel


print("preset: |τ_k s_k − 1| =", np.round(check_saxe(result.steps, [10, 5, 2.5, 1.25, 0.625], 1e-6), 4))
print("by hand: |τ_k s_k − 1| =", np.round(check_saxe(ss.detect_steps(flow), [4.0, 2.0, 1.0], 1e-6), 4))
