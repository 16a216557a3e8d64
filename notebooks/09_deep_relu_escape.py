# %% [markdown]
# # Deep ReLU networks: escaping the saddle at the origin
#
# A deep network of depth L started at radius ε = ‖θ(0)‖ ≪ 1 sits near the saddle θ = 0, where the
# loss is ℒ(θ) ≈ ℒ(0) − G(θ) with G the correlation of the outputs with the residual. Writing θ = r·u,
# the direction u climbs G on the unit sphere and the radius escapes along a maximizer u*, the
# *escape direction*, at speed s* = G(u*), after a time ∝ ε^{−(L−2)}/s* for L ≥ 3 (Bantzis, Simon &
# Jacot 2025). So the first plateau grows like a *power* of 1/ε, not its logarithm as for L = 2,
# and the escape directions are balanced across layers with nearly rank-one deep layers.
# Below: a depth-3 ReLU network (64 → 16 → 16 → 10) on scikit-learn digits.

# %%
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import saddlestep as ss
from saddlestep.tasks import digits
from saddlestep.theory.deep_relu import basin_direction, direction_cosine, escape_time, parameter_norm

plt.rcParams["figure.dpi"] = 60

task = digits(256, seed=0)
dims = [64, 16, 16, 10]
unit = ss.DeepReLU(dims, key=jax.random.PRNGKey(0), init_scale=1.0)  # the direction of θ(0)

# %% [markdown]
# ## The escape direction
# `basin_direction` follows the ascent of G from θ(0)/‖θ(0)‖: the escape direction the flow will
# take from this initialization (`escape_direction` finds the global maximizer u* with random
# restarts, at more cost). Every escape direction is balanced, ‖W_ℓ‖² = 1/L, and its layers are
# nearly rank one, with a large gap s₁/s₂ between their top singular values.

# %%
basin = basin_direction(unit, task)
print(f"speed s* = {basin.speed:.4f}, ‖W_ℓ‖² = {np.round(basin.layer_norms**2, 4)}, s₁/s₂ per layer = {np.round(basin.singular_value_ratios(), 1)}")

# %% [markdown]
# ## The first plateau lasts ∝ ε^{−(L−2)}
# The flow from the same direction at three scales (one vmapped ensemble), each run stopped once the
# loss has fallen by 0.2 %: its escape time against the aligned bound ε^{−1}/(3 s*) of the basin's
# direction. On a log–log plot the slope is −(L − 2) = −1, and the flow's direction at the escape is
# the basin's escape direction (cosine ≈ 1).

# %%
alphas = np.array([1e-2, 3e-3, 1e-3])
models = eqx.filter_vmap(lambda a: ss.DeepReLU(dims, key=jax.random.PRNGKey(0), init_scale=a))(jnp.asarray(alphas))
eps = parameter_norm(unit) * alphas
t_max = 100.0 * escape_time(basin.speed, eps.min(), 3)
flow = ss.simulate(models, task, t_max=t_max, rtol=1e-7, n_save=11, n_snapshots=2, loss_floor=0.0, converge_tol=1.0 - 2e-3)
times = np.asarray(flow.t_final)
bound = np.array([escape_time(basin.speed, e, 3) for e in eps])
slope = np.polyfit(np.log(eps), np.log(times), 1)[0]
cosines = [direction_cosine(flow[i].final, basin) for i in range(len(alphas))]
print("status:", flow.status)
print(f"escape times {np.round(times, 1)}; slope d ln t / d ln ε = {slope:.3f} (theory −1)")
print("cos(θ/‖θ‖, basin u*) at the escape:", np.round(cosines, 4))

fig, ax = plt.subplots(figsize=(5.5, 3.2), constrained_layout=True)
ax.loglog(eps, times, "o-", label="gradient flow")
ax.loglog(eps, bound, "k--", label="aligned bound ε^{-1}/(3 s*)")
ax.set_xlabel("init radius ε = ‖θ(0)‖")
ax.set_ylabel("escape time")
ax.legend(fontsize=8);

# %% [markdown]
# The flow's times sit above the aligned bound by one ε-independent factor: a random direction first
# has to align with u*, which costs a fixed multiple of the escape time.

# %% [markdown]
# ## Check
# We assert that the basin's escape direction is balanced, ‖W_ℓ‖² = 1/L to 1e-3, with every layer
# nearly rank one (s₁/s₂ > 100); that every escape comes after the aligned bound (a bound: no
# tolerance); that the fitted slope d ln t / d ln ε is −(L − 2) = −1 to 0.05 and the ratio
# t / bound is one constant to 5 % (at the largest ε the direction has aligned only to cos ≈ 0.88 at
# the escape, an ε-dependent correction that shrinks as ε → 0, so the successive ratios must also
# settle); and that cos(θ, u*) at the escape increases as ε falls, past 0.99 at the smallest ε.

# %%
L = len(dims) - 1
np.testing.assert_allclose(basin.layer_norms**2, 1 / L, atol=1e-3)
assert np.all(np.asarray(basin.singular_value_ratios()) > 100), basin.singular_value_ratios()
assert list(flow.status) == ["converged"] * len(alphas)
assert np.all(times >= bound), (times, bound)
assert abs(slope + (L - 2)) <= 0.05, slope
ratio = times / bound
assert ratio.max() / ratio.min() - 1 <= 0.05, ratio
assert abs(ratio[2] / ratio[1] - 1) < abs(ratio[1] / ratio[0] - 1), ratio
assert np.all(np.diff(cosines) > 0) and cosines[-1] >= 0.99, cosines
print("t / bound:", np.round(ratio, 3), f" slope + (L − 2) = {slope + L - 2:+.3f}", " cosines:", np.round(cosines, 4))
