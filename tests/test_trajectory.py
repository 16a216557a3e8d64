import jax
import numpy as np
import pytest

import saddlestep as ss


@pytest.fixture(scope="module")
def traj():
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    return model, ss.simulate(model, task, t_max=30.0, n_save=201)


def test_save_load_round_trip(traj, tmp_path):
    model, tr = traj
    path = tmp_path / "t.npz"
    tr.save(path)
    back = ss.Trajectory.load(path, like=model)
    np.testing.assert_array_equal(back.loss, tr.loss)
    np.testing.assert_array_equal(back.observables["features"], tr.observables["features"])
    assert back.status == tr.status and back.method == tr.method
    np.testing.assert_array_equal(back.final.W, tr.final.W)
    np.testing.assert_allclose(back.rescaled_times, tr.rescaled_times)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # A run's folder stands for its trajectory.npz; a folder without one says so.
    (tmp_path / "run").mkdir()
    tr.save(tmp_path / "run" / "trajectory.npz")
    np.testing.assert_array_equal(ss.Trajectory.load(tmp_path / "run").loss, tr.loss)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a folder without trajectory.npz"):
        ss.Trajectory.load(tmp_path / "empty")


def test_truncated_or_foreign_files_are_refused(traj, tmp_path):
    _, tr = traj
    good = tmp_path / "t.npz"
    tr.save(good)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match="cut.npz"):
        ss.Trajectory.load(cut)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.ones(3))
    with pytest.raises(ValueError, match="not a saddlestep trajectory"):
        ss.Trajectory.load(foreign)
    with pytest.raises(ValueError, match="no such file"):
        ss.Trajectory.load(tmp_path / "missing.npz")


def test_solver_step_record_round_trips_and_old_files_still_load(traj, tmp_path):
    import json

    model, tr = traj
    assert tr.step_times is not None and len(tr.step_times) == tr.stats["accepted"]
    path = tmp_path / "t.npz"
    tr.save(path)
    back = ss.Trajectory.load(path, like=model)
    np.testing.assert_array_equal(back.step_times, tr.step_times)
    np.testing.assert_array_equal(back.step_loss, tr.step_loss)
    # A file written before the record existed (same format, no step keys) loads without it.
    with np.load(path) as f:
        old = {k: f[k] for k in f.files if not k.startswith("step_")}
    assert json.loads(str(old["meta"]))["format"] == "saddlestep.trajectory/1"
    np.savez(tmp_path / "old.npz", **old)
    legacy = ss.Trajectory.load(tmp_path / "old.npz")
    assert legacy.step_times is None and legacy.step_loss is None
    np.testing.assert_array_equal(legacy.loss, tr.loss)


# ---------------------------------------------------------------- user observables
def _norms(model):
    return {"norms": model.neuron_norms()}


def test_user_observables_match_the_snapshots(tmp_path):
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    # Snapshots every 10 save points: each snapshot time is a save-grid time.
    tr = ss.simulate(model, task, t_max=30.0, n_save=201, n_snapshots=21, observables=_norms)
    assert tr.observables["norms"].shape == (len(tr.times), 3) and "features" in tr.observables
    for i, t in enumerate(tr.snapshot_times):
        if np.isfinite(t):
            j = int(np.argmin(np.abs(tr.times - t)))
            assert tr.times[j] == pytest.approx(t, rel=1e-14)
            np.testing.assert_allclose(tr.observables["norms"][j], tr.snapshot(i).neuron_norms(), rtol=1e-12)
    assert tr.observables["norms"][-1].max() > 100 * tr.observables["norms"][0].max()  # it learned
    # Saved under new keys; old files (without them) load as before.
    tr.save(tmp_path / "t.npz")
    back = ss.Trajectory.load(tmp_path / "t.npz", like=model)
    np.testing.assert_array_equal(back.observables["norms"], tr.observables["norms"])


def test_user_observables_forms_and_errors():
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    model = ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=1e-4)
    kw = dict(t_max=10.0, n_save=51)
    # fn(model, task), nested dicts, a lone array; the discrete path records them too.
    with_task = lambda m, t: {"again": {"loss": t.loss(m)}}
    tr = ss.simulate(model, task, observables=with_task, **kw)
    np.testing.assert_allclose(tr.observables["again/loss"], tr.loss, rtol=1e-12)
    gd = ss.simulate(model, task, method=ss.Discrete(0.01), observables=lambda m: m.neuron_norms(), **kw)
    assert gd.observables["observable"].shape == (len(gd.times), 3)
    batch = jax.vmap(lambda k: ss.TwoLayer(4, 3, 3, "linear", key=k, init_scale=1e-4))(jax.random.split(jax.random.PRNGKey(0), 2))
    bt = ss.simulate(batch, task, observables=_norms, **kw)
    assert bt.observables["norms"].shape == (2, 51, 3) and bt[1].observables["norms"].shape[1:] == (3,)
    with pytest.raises(ValueError, match="observables: 'features'"):
        ss.simulate(model, task, observables=lambda m: {"features": m.neuron_norms()}, **kw)
    with pytest.raises(ValueError, match="observables"):
        ss.simulate(model, task, observables="norms", **kw)


# ---------------------------------------------------------------- tables
def test_to_dataframe(traj):
    pytest.importorskip("pandas")
    _, tr = traj
    df = tr.to_dataframe()
    assert list(df.columns[:3]) == ["t", "rescaled_t", "loss"] and len(df) == len(tr.times)
    np.testing.assert_array_equal(df["loss"], tr.loss)
    np.testing.assert_allclose(df["rescaled_t"], tr.times / np.log(1 / 1e-4))
    np.testing.assert_array_equal(df["features[1]"], tr.observables["features"][:, 1])


def test_batched_tables_name_members_and_init_scales():
    pytest.importorskip("pandas")
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 3, [2.0, 1.0])
    batch = jax.vmap(lambda a: ss.TwoLayer(4, 3, 3, "linear", key=jax.random.PRNGKey(1), init_scale=a))(
        jax.numpy.array([1e-4, 1e-6]))
    tr = ss.simulate(batch, task, t_max=40.0, n_save=101)
    df = tr.to_dataframe()
    assert list(df.columns[:5]) == ["member", "init_scale", "t", "rescaled_t", "loss"]
    for i, alpha in enumerate((1e-4, 1e-6)):
        rows = df[df["member"] == i]
        assert np.all(rows["init_scale"] == alpha) and len(rows) == np.sum(np.isfinite(tr.times[i]))
        np.testing.assert_array_equal(rows["loss"], tr[i].loss[np.isfinite(tr[i].times)])
    xr = pytest.importorskip("xarray")
    ds = tr.to_xarray()
    assert isinstance(ds, xr.Dataset) and ds["loss"].dims == ("member", "time")
    assert ds["features"].dims == ("member", "time", "feature") and list(ds["feature"].values) == tr.feature_labels
    np.testing.assert_array_equal(ds["init_scale"], [1e-4, 1e-6])
    np.testing.assert_array_equal(ds["t"].values, tr.times)
    single = tr[0].to_xarray()
    assert single["loss"].dims == ("time",) and single.attrs["status"] == tr.status[0]


def test_missing_table_library_is_named(traj, monkeypatch):
    import sys

    _, tr = traj
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray now raises ImportError
    with pytest.raises(ImportError, match="to_xarray needs xarray"):
        tr.to_xarray()


def test_degree_three_trajectory_read_without_its_model_keeps_its_clock(tmp_path):
    # κ = 3 neurons rescale time by α (t·α), not by ln(1/α); read back without `like=` (how a
    # run's folder is read) the models are plain arrays, and the file's κ must say it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 3))
    task = ss.SampleRegression(X, (X @ np.array([1.0, 0.0, 0.0])) ** 2)
    alpha = 1e-2
    model = ss.TwoLayer(3, 3, 1, lambda z: z**2, kappa=3, key=jax.random.PRNGKey(0), init_scale=alpha)
    tr = ss.simulate(model, task, t_max=50.0, n_save=101)
    assert tr.kappa == tr.degree == 3
    tr.save(tmp_path / "k3.npz")
    back = ss.Trajectory.load(tmp_path / "k3.npz")
    assert not isinstance(back.final, ss.models.AbstractModel) and back.degree == 3
    for t in (tr, back):
        ax = ss.plot.staircase(t, time="rescaled").axes[0]
        (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("flow")]
        np.testing.assert_allclose(line.get_xdata()[-1], 50.0 * alpha)  # t·α, not t/ln(1/α) = 10.9
        plt.close("all")
    assert ss.Trajectory.load(tmp_path / "k3.npz").kappa == 3
