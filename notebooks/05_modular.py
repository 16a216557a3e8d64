# %% [markdown]
# # Modular addition: Fourier features one frequency at a time
#
# A two-layer network with quadratic activation learning (a + b) mod p learns its answer in Fourier
# space: each neuron locks onto one frequency ξ, and the loss steps down once per frequency, in order
# of the template's Fourier magnitudes |x̂[ξ]|. Kunin et al. (2025, AGF) derive the plateau levels in
# closed form and, since the neurons are homogeneous of degree κ = 3, jump times that are *lower
# bounds* (a perfectly aligned neuron would jump then; real directions start unaligned and jump
# later). Here p = 11 and the template has |x̂| = 10, 5, 2.5 at ξ = 1, 3, 5.

# %%
import jax
import matplotlib.pyplot as plt
import numpy as np

import saddlestep as ss
from saddlestep.steps import feature_steps

plt.rcParams["figure.dpi"] = 60

template = ss.fourier_template(11, {1: 10.0, 3: 5.0, 5: 2.5})
task = ss.ModularAddition(template)
model = ss.QuadraticNetwork(task.p, 18, key=jax.random.PRNGKey(0), init_scale=0.1)
order, levels, initial = ss.theory.modular_levels(task.template)
bound = ss.theory.predict_modular(model, task)  # levels exact; times are lower bounds from ‖θ₀‖
print("order of frequencies:", order, " plateau levels:", np.round(levels, 4), " initial loss:", round(initial, 4))
print("jump-time lower bounds:", np.round(bound.times, 2))

# %% [markdown]
# ## The staircase
# The dashed staircase is the closed form: its levels are exact, its times are lower bounds. A
# frequency is often taken up by a few neurons one after another, which shows as a small staircase
# within each drop; `feature_steps` merges those into one step per frequency.

# %%
flow = ss.simulate(model, task, t_max=300.0, rtol=1e-6, converge_tol=1e-5, n_save=1001)
fig = ss.plot.staircase(flow, prediction=bound, title="quadratic network on modular addition, p = 11, α = 0.1")
for s in feature_steps(ss.detect_steps(flow)):
    print(f"{s.feature}: t = {s.time:6.2f}   loss {s.loss_before:.4f} → {s.loss_after:.4f}")

# %% [markdown]
# ## Fourier power of the neurons
# The power of all neurons' weights at each frequency, over time (normalized per time): the learned
# frequencies light up one at a time, 1 then 3 then 5.

# %%
P = np.asarray(flow.observables["neuron_power"])
rel = P / P.max(axis=1, keepdims=True)
fig, ax = plt.subplots(figsize=(6.5, 3), constrained_layout=True)
im = ax.imshow(rel.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
               extent=(flow.times[0], flow.times[-1], -0.5, P.shape[1] - 0.5))
ax.set_xlabel("time t")
ax.set_ylabel("frequency ξ")
fig.colorbar(im, ax=ax, label="power / max over ξ");

# %% [markdown]
# Your own template: `saddlestep run modular --data template.npz` with a key `template` of length p
# (its mean is removed); `--set predictor=lower-bound` skips the AGF engine and overlays the closed
# form.

# %% [markdown]
# ## Check
# We assert that the flow learns ξ = 1, 3, 5 in that order (decreasing |x̂[ξ]|), one merged step
# each, with plateaus at ½ Σ_{j>k} P_{ξ_j}, P_ξ = (|x̂[ξ]|² + |x̂[−ξ]|²)/p computed here by FFT of the
# template, to 1e-3 of the initial loss (the levels are exact; the tolerance covers reading them at
# α = 0.1, which is not small), that every drop comes *after* its lower bound (the claim is a bound,
# so no tolerance), and that at the end ≥ 99 % of the neurons' Fourier power sits on ξ ∈ {1, 3, 5}.

# %%
x = np.asarray(task.template) - np.mean(task.template)
mag2 = np.abs(np.fft.fft(x)) ** 2 / x.size
power = {xi: mag2[xi] + mag2[-xi] for xi in (1, 3, 5)}
oracle = [0.5 * sum(power[xi] for xi in (1, 3, 5)[k + 1:]) for k in range(3)]
steps = feature_steps(ss.detect_steps(flow))
assert [s.feature for s in steps] == ["ξ=1", "ξ=3", "ξ=5"] and order == [1, 3, 5], steps
initial_oracle = 0.5 * float(np.sum(mag2))
assert abs(initial - initial_oracle) <= 1e-9 * initial_oracle
loss_err = np.abs(np.array([s.loss_after for s in steps]) - oracle)
assert np.all(loss_err <= 1e-3 * initial_oracle), loss_err
np.testing.assert_allclose(levels, oracle, rtol=1e-9, atol=1e-12)
t_sim = np.array([s.time for s in steps])
assert np.all(t_sim >= bound.times), (t_sim, bound.times)
share = P[-1, [1, 3, 5]].sum() / P[-1].sum()
assert share >= 0.99, share
print("plateau errors / initial loss:", np.round(loss_err / initial_oracle, 5), " t_sim / bound:", np.round(t_sim / bound.times, 2), " power on ξ = 1, 3, 5:", round(float(share), 4))
