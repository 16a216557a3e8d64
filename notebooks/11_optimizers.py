# %% [markdown]
# # The flow against GD, SGD and Adam at finite learning rates
#
# Theory is about gradient *flow*; in practice one trains with a finite learning rate η. Gradient
# descent is the Euler discretization of the flow, so with time measured as t = η × steps it follows
# the flow's staircase up to O(η) (and, at small α, the plateaus are where the two agree best).
# Minibatch SGD adds noise that is small on the plateaus (the gradient is O(α) there) and keeps the
# staircase. Adam is different in kind: its sign-like updates move every parameter by ≈ η per step,
# escaping the O(α) saddles far faster, so its steps are not at ln(1/α)/s_k. `simulate(...,
# learning_rate=η, optimizer=optax.adam(η))` runs these on the flow's time axis.

# %%
import equinox as eqx
import jax
import matplotlib.pyplot as plt
import numpy as np
import optax

import saddlestep as ss

plt.rcParams["figure.dpi"] = 60

rng = np.random.default_rng(0)
n, d = 256, 10
X = rng.standard_normal((n, d))
B = np.diag([4.0, 2.0, 1.0] + [0.0] * (d - 3)) @ np.linalg.qr(rng.standard_normal((d, d)))[0]
task = ss.SampleRegression(X, X @ B.T)  # a rank-3 linear teacher on 256 samples
alpha = 1e-6
model = ss.TwoLayer(d, d, d, "linear", key=jax.random.PRNGKey(0), init_scale=alpha)
t_max = 25.0
prediction = ss.theory.linear_network(task, init_scale=alpha)

# %% [markdown]
# ## Flow and full-batch gradient descent
# Two learning rates: the drops of GD arrive a little late, by O(η) relative, and the plateau
# levels are the same.

# %%
flow = ss.simulate(model, task, t_max=t_max, n_save=501)
gds = [ss.simulate(model, task, t_max=t_max, learning_rate=lr, n_save=201) for lr in (0.1, 0.02)]
fig = ss.plot.staircase([flow, *gds], prediction=prediction, title="flow vs gradient descent (time = η × steps)")

# %% [markdown]
# ## Minibatch SGD and Adam
# SGD with batches of 32 (written out here in a few lines of JAX), and Adam through optax.

# %%
params, static = eqx.partition(model, eqx.is_inexact_array)


def sgd(lr, batch, steps, key, every=10):
    def loss(p, idx):
        sub = eqx.tree_at(lambda t: (t.X, t.Y), task, (task.X[idx], task.Y[idx]))
        return sub.loss(eqx.combine(p, static))

    def step(p, k):
        idx = jax.random.choice(k, n, (batch,), replace=False)
        p = jax.tree.map(lambda x, g: x - lr * g, p, jax.grad(loss)(p, idx))
        return p, p

    def block(p, ks):
        p, _ = jax.lax.scan(step, p, ks)
        return p, task.loss(eqx.combine(p, static))

    keys = jax.random.split(key, steps).reshape(steps // every, every, -1)
    _, losses = jax.jit(lambda p: jax.lax.scan(block, p, keys))(params)
    return lr * every * np.arange(1, steps // every + 1), np.asarray(losses)


t_sgd, L_sgd = sgd(0.02, 32, int(t_max / 0.02), jax.random.PRNGKey(1))
adam = ss.simulate(model, task, t_max=t_max, learning_rate=1e-3, optimizer=optax.adam(1e-3), n_save=201)

fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
ax.plot(flow.times, flow.loss, lw=2, label="gradient flow")
ax.plot(gds[1].times, gds[1].loss, "--", label="GD, η = 0.02")
ax.plot(t_sgd, L_sgd, lw=1, alpha=0.8, label="SGD, η = 0.02, batch 32")
ax.plot(adam.times, adam.loss, label="Adam, η = 1e-3")
ax.set_yscale("log")
ax.set_ylim(bottom=1e-3)
ax.set_xlabel("time t = η × steps")
ax.set_ylabel("loss")
ax.legend(fontsize=8)
ax.set_title("SGD keeps the staircase; Adam skips the plateaus");

# %%
print("steps of the flow at t =", [round(s.time, 2) for s in ss.detect_steps(flow)])
print("steps of GD η=0.1 at t =", [round(s.time, 2) for s in ss.detect_steps(gds[0])])
print("Adam: loss at its end", float(adam.loss[-1]), "after", int(adam.stats["steps"]), "steps")

# %% [markdown]
# ## Check
# We assert: the flow's drops sit at the closed form's times to a relative 2/ln(1/α) (an O(1) offset
# in t); GD's plateaus are the flow's to 1e-3 of the initial loss (GD has the same stationary
# points), and each GD drop is late by the discrete-growth delay ln(1/α)(η/ln(1 + ηs_k) − 1/s_k)
# ≈ η ln(1/α)/2, with s_k = 1/τ_k the mode's growth rate (a mode grows by 1 + ηs_k per step instead of
# e^{ηs_k}), to 10 % of it (the formula drops the O(η) change of the O(1) offset, and the modes'
# coupling through the unwhitened inputs); SGD's loss at the flattest point of each of the flow's
# plateaus is the flow's level to 2 % (room for the minibatch noise); and Adam is below the flow's
# last plateau before the flow's first drop.

# %%
L_alpha = np.log(1 / alpha)
steps = ss.detect_steps(flow)
assert len(steps) == prediction.num_steps == 3, steps
t_flow = np.array([s.time for s in steps])
rel = np.abs(t_flow / prediction.times - 1)
assert np.all(rel <= 2 / L_alpha), rel
rate = 1 / prediction.rescaled_times
for lr, gd in zip((0.1, 0.02), gds):
    gd_steps = ss.detect_steps(gd)
    assert len(gd_steps) == 3, (lr, gd_steps)
    delay = np.array([s.time for s in gd_steps]) - t_flow
    expected = L_alpha * (lr / np.log1p(lr * rate) - 1 / rate)
    assert np.all(np.abs(delay - expected) <= 0.1 * expected), (lr, delay, expected)
    loss_err = np.abs(np.array([s.loss_after - f.loss_after for s, f in zip(gd_steps, steps)]))
    assert np.all(loss_err <= 1e-3 * steps[0].loss_before), (lr, loss_err)
    print(f"GD η = {lr}: delays {np.round(delay, 3)}, expected {np.round(expected, 3)}")
plateau_ends = [s.end for s in steps[:-1]]
sgd_level = np.interp(plateau_ends, t_sgd, L_sgd)
flow_level = np.array([s.loss_after for s in steps[:-1]])
assert np.all(np.abs(sgd_level / flow_level - 1) <= 0.02), (sgd_level, flow_level)
t_adam = float(np.asarray(adam.times)[np.argmax(np.asarray(adam.loss) < steps[-1].loss_before)])
assert np.any(np.asarray(adam.loss) < steps[-1].loss_before) and t_adam < steps[0].time, (t_adam, steps[0].time)
print("SGD / flow on the plateaus:", np.round(sgd_level / flow_level, 4), f"; Adam below the last plateau at t = {t_adam:.2f}, flow's first drop at {steps[0].time:.2f}")
