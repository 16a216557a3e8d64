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
