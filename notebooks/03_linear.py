# %% [markdown]
# # Two-layer linear networks: Saxe's modes and Conjecture 4.1
#
# With whitened inputs, a two-layer linear network from small init learns the singular modes of the
# input–output covariance Σyx one at a time; each mode strength follows Saxe's sigmoid
# u(t) = s e^{2st}/(e^{2st} − 1 + s/u₀) (Saxe, McClelland & Ganguli 2014), so mode k jumps at
# t ≈ ln(1/α)/s_k. When the input covariance does **not** commute with the target, the modes are
# those of reduced-rank regression and the jump times follow the recursion of Conjecture 4.1 in
# Kunin et al. (2025, AGF) instead of 1/σ_k. This notebook shows both.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

import saddlestep as ss

plt.rcParams["figure.dpi"] = 60
alpha = 1e-6

# %% [markdown]
# ## Whitened inputs: Saxe's sigmoids
# Σxx = I and Σyx = diag(3, 2, 1, 0.5). The `features` observable holds the strength of each
# singular mode; dashed lines are Saxe's closed form from an aligned start u₀ = α², whose jumps sit
# at 1/s_k in rescaled time. A random start projects onto each mode with an O(1) factor, which shifts
# each sigmoid by an O(1) time: a vanishing shift in t/ln(1/α).

# %%
task = ss.PopulationRegression(np.eye(4), np.diag([3.0, 2.0, 1.0, 0.5]))
model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(0), init_scale=alpha)
flow = ss.simulate(model, task, t_max=2.5 * np.log(1 / alpha) / 0.5, n_save=801)
F = np.asarray(flow.observables["features"])
fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
for k, s in enumerate([3.0, 2.0, 1.0, 0.5]):
    (line,) = ax.plot(flow.rescaled_times, F[:, k], label=f"mode {k + 1}, s = {s:g}")
    ax.plot(flow.rescaled_times, ss.theory.saxe_mode(s, alpha**2, flow.times), "--", color=line.get_color(), lw=1)
    ax.axvline(1 / s, color=line.get_color(), ls=":", lw=0.8)
ax.set_xlabel("rescaled time t / ln(1/α)")
ax.set_ylabel("mode strength")
ax.legend(fontsize=8)
ax.set_title("flow (solid) vs Saxe's closed form (dashed)");

# %% [markdown]
# ## Non-commuting covariances: Conjecture 4.1
# Now y = Bx with a Gaussian B and anisotropic inputs Σxx = diag(1, 0.3, 0.1), so Σxx does not
# commute with Σyx = BΣxx. The plateaus are still the reduced-rank-regression losses, but the k-th
# jump time solves Σ_{j≤k} σ_{k−j+1}(A_{j−1})(τ_j − τ_{j−1}) = 1, where A_j is the cross-covariance
# left after j modes: it is *not* 1/σ_k(Σyx). AGF (`agf.predict`) reaches the same times from the
# neuron view.

# %%
B = np.random.default_rng(6).standard_normal((3, 3))
Sxx = np.diag([1.0, 0.3, 0.1])
task = ss.PopulationRegression(Sxx, B @ Sxx, B @ Sxx @ B.T)
model = ss.TwoLayer(3, 3, 3, "linear", key=jax.random.PRNGKey(0), init_scale=alpha)
conj = ss.theory.linear_network(task, init_scale=alpha)
agf = ss.agf.predict(model, task)
naive = 1 / np.linalg.svd(B @ Sxx, compute_uv=False)
print("Conjecture 4.1 τ_k:", np.round(conj.rescaled_times, 3))
print("AGF τ_k:           ", np.round(agf.rescaled_times, 3))
print("naive 1/σ_k(Σyx):  ", np.round(naive, 3))

# %%
flow = ss.simulate(model, task, t_max=1.25 * conj.times[-1], n_save=801)
fig = ss.plot.staircase(flow, prediction=conj, title="non-commuting Σxx, Σyx: flow vs Conjecture 4.1")
ss.compare(flow, conj)[["step", "rescaled_predicted", "rescaled_simulated", "loss_predicted", "loss_simulated"]].round(4)

# %% [markdown]
# The first jump is at 1/σ₁ in both theories; the third comes ≈ 30 % earlier than
# 1/σ₃, and the flow follows Conjecture 4.1 (up to the O(1/ln(1/α)) offset of a finite α).
# From the shell: `saddlestep run linear --data moments.npz` with keys `Sxx`, `Syx`.
