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
