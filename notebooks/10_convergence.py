# %% [markdown]
# # Gradient flow converges to AGF as α → 0
#
# Alternating Gradient Flows (Kunin et al. 2025) is the α → 0 limit of gradient flow in rescaled
# time τ = t/ln(1/α). At finite α each jump time carries an O(1) offset in t, so a single run's
# ratio τ_sim/τ_pred is off by O(1/ln(1/α)), which closes only slowly. The sharp test is the
# **slope** dt_k/d ln(1/α) across several α: it equals τ_k exactly in the limit. `ss.converge` runs the
# flow at several α (one compilation: α is traced) and fits those slopes; `saddlestep converge
# PRESET --init-scales …` does the same from the shell.

# %%
import types

import jax
import matplotlib.pyplot as plt
import numpy as np

import saddlestep as ss

plt.rcParams["figure.dpi"] = 60

# %% [markdown]
# ## Diagonal network (Pesme–Flammarion's 2-D example)
# Three steps, the third after a deactivation; AGF's rescaled times are the targets (★ at
# 1/ln(1/α) = 0). Each line is t_k/ln(1/α) against 1/ln(1/α); its intercept is the slope.

# %%
th = np.deg2rad(150.0)
R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
X = np.linalg.cholesky(R @ np.diag([1.0, 25.0]) @ R.T)
task = ss.SampleRegression(X, X @ np.array([-0.2, 2.0]))


def diagonal_setup(alpha):
    model = ss.DiagonalLinear(2, key=jax.random.PRNGKey(0), init_scale=alpha)
    return types.SimpleNamespace(model=model, task=task, t_max=4.5 * np.log(1 / alpha), predict=lambda: ss.agf.predict(model, task, limit=True))


df = ss.converge(diagonal_setup, [1e-2, 1e-3, 1e-4, 1e-6])
df_diagonal = df  # kept for the check at the end
fig = ss.convergence_figure(df)
df.groupby("step")[["feature", "predicted", "slope", "slope_error"]].first().round(4)

# %% [markdown]
# ## Two-layer linear network, non-commuting covariances
# The same measurement for the setting of notebook 03, against Conjecture 4.1.

# %%
B = np.random.default_rng(6).standard_normal((3, 3))
Sxx = np.diag([1.0, 0.3, 0.1])
lin_task = ss.PopulationRegression(Sxx, B @ Sxx, B @ Sxx @ B.T)


def linear_setup(alpha):
    model = ss.TwoLayer(3, 3, 3, "linear", key=jax.random.PRNGKey(0), init_scale=alpha)
    return types.SimpleNamespace(model=model, task=lin_task, t_max=8.0 * np.log(1 / alpha), predict=lambda: ss.theory.linear_network(lin_task, init_scale=alpha))


df = ss.converge(linear_setup, [1e-3, 1e-5, 1e-7, 1e-9])
fig = ss.convergence_figure(df)
df.groupby("step")[["feature", "predicted", "slope", "slope_error"]].first().round(4)

# %% [markdown]
# The single-α ratios (column `ratio` of the table) drift towards 1 like 1/ln(1/α), while the slopes
# already agree with the prediction to a few parts in a thousand: the flow's staircase converges to AGF's.

# %% [markdown]
# ## Check
# For both systems we assert that every fitted slope dt_k/d ln(1/α) equals the predicted τ_k to 1 %
# (five times the largest error seen, 2e-3, and well under the 1/ln(1/α) ≈ 0.05–0.2 that a single
# run is allowed: the fit cancels the O(1) offset); that each step's single-α error |ratio − 1|
# shrinks as α falls; and that at the smallest α it is within 3/ln(1/α), i.e. an O(1) offset in t of
# at most 3τ_k (the other notebooks allow 2τ_k: an O(1) offset in t, from the random init's
# projection on each mode, is constant across α, which is what makes the slope exact).

# %%
for name, table in (("diagonal", df_diagonal), ("linear", df)):
    err = table["slope_error"].abs()
    assert err.max() <= 1e-2, (name, table.to_string())
    for step, rows in table.sort_values("init_scale", ascending=False).groupby("step"):
        gap = (rows["ratio"] - 1).abs().to_numpy()
        assert np.all(np.diff(gap) < 0), (name, step, gap)
        assert gap[-1] * rows["log_inv"].iloc[-1] <= 3, (name, step, gap)
    print(f"{name}: max |slope/τ − 1| = {err.max():.1e};", "|ratio − 1| from the largest to the smallest α:",
          [np.round((r.sort_values("init_scale", ascending=False)["ratio"] - 1).abs().to_numpy(), 3).tolist() for _, r in table.groupby("step")])
