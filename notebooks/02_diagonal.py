# %% [markdown]
# # Diagonal linear networks: Pesme–Flammarion and AGF, with a deactivation
#
# A diagonal network β = u ⊙ v trained from u = v ≈ α is a sparse regressor: at small α it follows a
# *saddle-to-saddle* path, switching coordinates of β on one at a time (Pesme & Flammarion 2023).
# Their 2-D example (§3.1) has a twist: the coordinate learned first is later switched **off**, and
# comes back with the opposite sign. Alternating Gradient Flows (Kunin et al. 2025) predict the same
# path from the neuron view (each coordinate is a neuron of degree κ = 2): below, the flow, the
# closed form and AGF agree on the order β[0], β[1], β[0], on the plateau losses, and on the times.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

import saddlestep as ss

plt.rcParams["figure.dpi"] = 60

# The 2-D example of Pesme & Flammarion (2023): correlated inputs, target β* = (−0.2, 2).
th = np.deg2rad(150.0)
R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
X = np.linalg.cholesky(R @ np.diag([1.0, 25.0]) @ R.T)
task = ss.SampleRegression(X, X @ np.array([-0.2, 2.0]))

# %% [markdown]
# ## Two predictions: the closed form and AGF
# `theory.pesme_flammarion` solves the constrained least-squares problems of the paper's algorithm;
# `agf.predict` runs the AGF engine from the model's own initialization. Both give rescaled jump
# times τ_k = t_k / ln(1/α), the plateau losses, and the saddles β on each plateau.

# %%
alpha = 1e-6
model = ss.DiagonalLinear(2, key=jax.random.PRNGKey(0), init_scale=alpha)
pf = ss.theory.pesme_flammarion(task, init_scale=alpha)
agf = ss.agf.predict(model, task)
for name, p in (("Pesme–Flammarion", pf), ("AGF", agf)):
    print(f"{name:17s} τ = {np.round(p.rescaled_times, 4)}  losses = {np.round(p.losses, 4)}  order = {p.order}")
print("AGF: coordinates switched off at each step:", agf.extra["deactivated"])
print("saddles β on the plateaus:", [np.round(b, 3).tolist() for b in pf.plateau_parameters])

# %% [markdown]
# ## The flow
# The exact gradient flow from α = 1e-6. Left: the loss staircase with AGF's prediction dashed.
# Right: the coordinates of β. β[0] grows to ≈ 0.46, is pushed back to 0 when β[1] switches on (the
# *deactivation*: AGF returns that neuron to dormant), then crosses over to −0.2.

# %%
flow = ss.simulate(model, task, t_max=1.3 * agf.times[-1], n_save=1001)
fig = ss.plot.staircase(flow, prediction=agf, title="diagonal network, Pesme–Flammarion §3.1, α = 1e-6")

# %%
beta = np.asarray(flow.observables["features"])
fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
for j in range(2):
    ax.plot(flow.rescaled_times, beta[:, j], label=f"β[{j}]")
for tau in agf.rescaled_times:
    ax.axvline(tau, color="k", ls=":", lw=0.8)
ax.axhline(0, color="gray", lw=0.5)
ax.set_xlabel("rescaled time t / ln(1/α)")
ax.set_ylabel("β")
ax.legend()
ax.set_title("β[0] switches on, off, and on again with the other sign");

# %%
ss.compare(flow, agf)[["step", "feature_predicted", "feature_simulated", "rescaled_predicted", "rescaled_simulated", "loss_predicted", "loss_simulated"]].round(4)

# %% [markdown]
# (`detect_steps` labels a drop by the feature that moved most across it, so the third drop, where
# β[1] also moves from 1.58 to 2, is labelled β[1].) The simulated times sit a little after the α → 0 prediction: the gap is an O(1) offset in t, so it
# shrinks like 1/ln(1/α) in rescaled time (notebook `10_convergence` measures it). For sparse
# regression with your own `X`, `y`: `saddlestep run diagonal --data sparse.npz`.

# %% [markdown]
# ## Check
# We assert that the two independent predictions (PF's constrained least squares and the AGF engine)
# agree to 1e-6 on times, losses and order β[0], β[1], β[0], with β[0] switched off at step 2; that
# the flow's drops sit at AGF's rescaled times to a relative 1/ln(1/α) (≈ 0.07: the O(1) offset in
# t), its plateaus at the predicted losses to 1e-3 of the initial loss, and that β at the flattest
# point of each plateau is PF's saddle to 2e-3 (room for the finite-α residue of the coordinates
# still in motion, which is ≈ 2e-4 here).

# %%
assert pf.order == agf.order == ["β[0]", "β[1]", "β[0]"]
assert agf.extra["deactivated"][1] == [0]
np.testing.assert_allclose(pf.rescaled_times, agf.rescaled_times, rtol=1e-6)
np.testing.assert_allclose(pf.losses, agf.losses, rtol=1e-6, atol=1e-9)
steps = ss.detect_steps(flow)
assert len(steps) == 3, steps
tau = np.array([s.rescaled_time for s in steps])
rel = np.abs(tau / agf.rescaled_times - 1)
assert np.all(rel <= 1 / np.log(1 / alpha)), rel
loss_err = np.abs(np.array([s.loss_after for s in steps]) - agf.losses)
assert np.all(loss_err <= 1e-3 * agf.initial_loss), loss_err
beta_plateau = np.array([[np.interp(s.end, flow.times, beta[:, j]) for j in range(2)] for s in steps])
beta_err = np.abs(beta_plateau - np.array([np.asarray(b) for b in pf.plateau_parameters]))
assert np.all(beta_err <= 2e-3), beta_err
print("relative time errors:", np.round(rel, 4), " β errors on the plateaus:", np.round(beta_err.max(axis=1), 4))
