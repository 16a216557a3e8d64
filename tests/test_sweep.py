"""Sweeps: grid parsing, equality with single runs, one trace, resume after SIGKILL, shard_map, Ray."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import saddlestep.flow as flow
from saddlestep import sweep as sw
from saddlestep.cli import main
from saddlestep.runs import run_preset
from saddlestep.trajectory import Trajectory

# A small linear teacher: two modes, 4×4 network (a few ms per solve).
SMALL = {"d": "4", "width": "4", "singular_values": "3,1"}
SMALL_ARGS = [arg for k, v in SMALL.items() for arg in ("--set", f"{k}={v}")]


def _env(devices: int | None = None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


# ----------------------------------------------------------------------------- parse_grid
def test_parse_grid_types_and_ranges():
    grid = sw.parse_grid(
        ["seed=0:3", "init_scale=1e-3,1e-6", "width=4,8", "singular_values=3,1;4,2"], "linear"
    )
    assert list(grid) == ["seed", "init_scale", "width", "singular_values"]
    assert grid["seed"] == [0, 1, 2]
    assert grid["init_scale"] == [1e-3, 1e-6]
    assert grid["width"] == [4, 8] and all(isinstance(w, int) for w in grid["width"])
    assert grid["singular_values"] == [(3.0, 1.0), (4.0, 2.0)]


@pytest.mark.parametrize(
    "specs, match",
    [
        ([], "grid: expected at least one axis"),
        (["nonsense=1,2"], "grid nonsense: unknown parameter"),
        (["seed"], "grid: expected key=v1,v2"),
        (["seed="], "grid seed: no values"),
        (["seed=3:1"], "grid seed: empty range"),
        (["seed=a:b"], "grid seed: expected an integer range"),
        (["init_scale=0:3"], "grid init_scale: a range a:b needs an integer"),
        (["init_scale=-1"], "grid init_scale: expected a positive"),
        (["init_scale=1e-3,3"], "grid init_scale: expected a small init scale 0 < α < 1"),
        (["width=four"], "grid width: expected int"),
        (["seed=1,1"], "grid seed: repeated value"),
        (["seed=1", "seed=2"], "grid seed: given twice"),
    ],
)
def test_parse_grid_errors(specs, match):
    with pytest.raises(ValueError, match=match) as info:
        sw.parse_grid(specs, "linear")
    assert "\n" not in str(info.value)


def test_sweep_bad_input(tmp_path):
    with pytest.raises(ValueError, match="grid: expected at least one axis"):
        sw.sweep("linear", {}, out=tmp_path / "a")
    with pytest.raises(ValueError, match="overrides width: also a grid axis"):
        sw.sweep("linear", {"width": [4]}, overrides={"width": "4"}, out=tmp_path / "b")
    with pytest.raises(ValueError, match="executor"):
        sw.sweep("linear", {"seed": [0]}, overrides=SMALL, executor="slurm", out=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- local sweep
@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    grid = sw.parse_grid(["init_scale=1e-3,1e-6", "seed=0:3"], "linear")
    before = flow.TRACE_COUNT["flow"]
    ds = sw.sweep("linear", grid, overrides=SMALL, out=out, progress=False)
    return out, grid, ds, flow.TRACE_COUNT["flow"] - before


def test_sweep_one_trace_for_alphas_and_seeds(small_sweep):
    *_, traces = small_sweep
    assert traces == 1


def test_sweep_dataset_and_folders(small_sweep):
    out, grid, ds, _ = small_sweep
    assert ds.loss.dims == ("init_scale", "seed", "save")
    assert ds.drop_time.dims == ("init_scale", "seed", "detected_step")
    assert list(ds.seed.values) == [0, 1, 2]
    assert list(ds.feature.values) == ["mode 1", "mode 2"]
    assert np.all(ds.status.values == 0)  # converged
    assert np.all(np.isfinite(ds.drop_time.values))  # two drops found in every run
    # The prediction beside the drops, for every α and seed: each run's prediction times the
    # whitened modes from its own init (τ_k → 1/s_k only as α → 0), where its flow drops.
    assert ds.predicted_rescaled_time.dims == ("init_scale", "seed", "predicted_step")
    predicted = ds.predicted_rescaled_time.values * np.log(1 / ds.init_scale.values)[:, None, None]
    np.testing.assert_allclose(predicted, ds.drop_time.values, rtol=1e-3)
    # Every run names its drops, and `compare` pairs each predicted step with one of them.
    assert {tuple(v) for v in ds.drop_feature.values.reshape(-1, 2)} == {("mode 1", "mode 2")}
    np.testing.assert_allclose(ds.matched_time.values, ds.drop_time.values, rtol=0)
    np.testing.assert_allclose(ds.matched_rescaled_time.values,
                               ds.matched_time.values / np.log(1 / ds.init_scale.values)[:, None, None], rtol=1e-15)
    assert "closed-form" in ds.attrs["prediction_method"]
    names = sorted(os.listdir(out / "runs"))
    assert len(names) == 6 and not any(n.startswith(".") for n in names)
    for name in names:
        assert {"summary.json", "trajectory.npz", "steps.csv", "staircase.png"} <= set(os.listdir(out / "runs" / name))
    loaded = sw.load(out)
    np.testing.assert_array_equal(loaded.loss.values, ds.loss.values)
    assert loaded.attrs["preset"] == "linear"
    # The marker lists what the sweep wrote (and only that: nothing else is its to replace).
    assert json.loads((out / ".saddlestep").read_text())["files"] == ["runs", "sweep.json", "sweep.nc"]


@pytest.mark.parametrize("alpha, seed", [(1e-3, 0), (1e-6, 2)])
def test_sweep_equals_single_runs(small_sweep, alpha, seed):
    _, _, ds, _ = small_sweep
    single = run_preset("linear", init_scale=alpha, seed=seed, overrides=SMALL)
    cell = ds.sel(init_scale=alpha, seed=seed)
    n = len(single.trajectory.times)
    np.testing.assert_allclose(cell.time.values[:n], single.trajectory.times, rtol=0, atol=0)
    np.testing.assert_allclose(cell.loss.values[:n], single.trajectory.loss, rtol=1e-12, atol=1e-14)
    assert np.all(np.isnan(cell.loss.values[n:]))
    np.testing.assert_allclose(cell.drop_time.values, [s.time for s in single.steps], rtol=1e-10)
    assert int(cell.solver_steps) == single.summary["solver"]["steps"]
    # The member's run folder records what `saddlestep run` records (the effective step budget).
    out = small_sweep[0]
    summaries = [json.loads((out / "runs" / n / "summary.json").read_text()) for n in os.listdir(out / "runs")]
    (member,) = [m for m in summaries if m["init_scale"] == alpha and m["seed"] == seed]
    assert member["parameters"] == single.summary["parameters"]


def test_sweep_rerun_computes_nothing(small_sweep):
    out, grid, ds, _ = small_sweep
    stamps = {n: os.stat(out / "runs" / n / "summary.json").st_mtime_ns for n in os.listdir(out / "runs")}
    before = flow.TRACE_COUNT["flow"]
    again = sw.sweep("linear", grid, overrides=SMALL, out=out, progress=False)
    assert flow.TRACE_COUNT["flow"] == before
    assert stamps == {n: os.stat(out / "runs" / n / "summary.json").st_mtime_ns for n in os.listdir(out / "runs")}
    np.testing.assert_array_equal(again.loss.values, ds.loss.values)


def test_sweep_refuses_other_settings_in_same_folder(small_sweep):
    out, grid, *_ = small_sweep
    with pytest.raises(ValueError, match="out: .* holds a sweep with other settings"):
        sw.sweep("linear", grid, overrides={**SMALL, "rtol": "1e-8"}, out=out, progress=False)


# ----------------------------------------------------------------------------- SIGKILL + resume
def test_sweep_killed_and_rerun_completes(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "saddlestep", "sweep", "linear", *SMALL_ARGS,
           "--grid", "init_scale=1e-3,1e-4,1e-5,1e-6,1e-7,1e-8", "--grid", "seed=0:2", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if runs.is_dir() and any(not n.startswith(".") for n in os.listdir(runs)):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep ended before it could be killed: " + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = {n: os.stat(runs / n / "summary.json").st_mtime_ns
                for n in os.listdir(runs) if not n.startswith(".") and (runs / n / "summary.json").exists()}
    assert 1 <= len(finished) < 12
    assert not (out / "sweep.nc").exists()

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = os.listdir(runs)
    assert len(names) == 12 and not any(n.startswith(".") for n in names)  # no temporary leftovers
    for name, stamp in finished.items():  # nothing redone
        assert os.stat(runs / name / "summary.json").st_mtime_ns == stamp
    ds = sw.load(out)
    assert ds.loss.shape[:2] == (6, 2)
    assert np.all(ds.status.values == 0)
    for name in names:  # nothing corrupt
        json.loads((runs / name / "summary.json").read_text())
        Trajectory.load(runs / name / "trajectory.npz")


# ----------------------------------------------------------------------------- shard_map
_SHARD_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from saddlestep import sweep as sw
    from saddlestep.flow import simulate
    import inspect
    assert len(jax.devices()) == 4, jax.devices()
    grid = {"seed": [0, 1, 2, 3, 4, 5]}  # 6 members over 4 devices: padded to 8
    ov = %r
    sharded = sw.sweep("linear", grid, overrides=ov, out="%s/sharded",
                       executor=sw.LocalExecutor(), progress=False)
    plain = sw.sweep("linear", grid, overrides=ov, out="%s/plain",
                     executor=sw.LocalExecutor(jax.devices()[:1]), progress=False)
    assert sw.LocalExecutor().mesh.devices.size == 4
    for name in ("loss", "time", "features", "drop_time", "solver_steps"):
        np.testing.assert_allclose(sharded[name].values, plain[name].values, rtol=1e-12, atol=0)
    print("OK")
    """
)


def test_shard_map_over_four_cpu_devices_equals_unsharded(tmp_path):
    script = _SHARD_SCRIPT % (SMALL, tmp_path, tmp_path)
    done = subprocess.run([sys.executable, "-c", script], env=_env(devices=4), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


# ----------------------------------------------------------------------------- Ray
@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_executor_equals_local(ray_cluster, small_sweep, tmp_path):
    _, grid, local, _ = small_sweep
    remote = sw.sweep("linear", grid, overrides=SMALL, executor="ray", out=tmp_path / "ray", progress=False)
    for name in ("loss", "time", "features", "drop_time", "solver_steps", "status"):
        np.testing.assert_allclose(remote[name].values, local[name].values, rtol=1e-12, atol=0)
    summary = json.loads(next((tmp_path / "ray" / "runs").iterdir()).joinpath("summary.json").read_text())
    assert summary["sweep"]["ensemble_size"] == 3


def test_sweep_bad_parameter_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="width"):
        sw.sweep("linear", {"width": [0]}, overrides={"d": "4", "singular_values": "3,1"}, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- up-front checks, --overwrite
@pytest.mark.parametrize(
    "grid, kwargs, match",
    [
        ({"t_max": ["50", "-1"]}, {}, r"^grid t_max: expected a positive number"),
        ({"rtol": [1e-6, 5.0]}, {}, r"^grid rtol: expected a tolerance in \(0, 1\)"),
        ({"variant": ["uv", "bad"]}, {}, r"^grid variant: expected 'uv' or 'squares'"),
        ({"seed": [0, 1]}, {"seed": 3}, r"^seed: also a grid axis; give it in one place"),
        ({"init_scale": [1e-3, 1e-4]}, {"init_scale": 1e-5}, r"^init_scale: also a grid axis"),
    ],
)
def test_sweep_checks_every_grid_value_before_writing(tmp_path, grid, kwargs, match):
    # The valid cell used to be integrated and written before the bad one failed in its solve.
    overrides = {"n": "8", "d": "4", "beta_star": "2,-1"}
    with pytest.raises(ValueError, match=match):
        sw.sweep("diagonal", grid, overrides=overrides, out=tmp_path / "s", progress=False, **kwargs)
    assert not (tmp_path / "s").exists()


def test_sweep_overwrite_keeps_the_users_files_among_the_runs(tmp_path):
    out = tmp_path / "s"
    sw.sweep("linear", {"seed": [0, 1]}, overrides=SMALL, out=out, progress=False)
    (out / "runs" / "seed=0" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="other settings.*pass overwrite=True to replace it"):
        sw.sweep("linear", {"seed": [0]}, overrides={**SMALL, "rtol": "1e-8"}, out=out, progress=False)
    ds = sw.sweep("linear", {"seed": [0]}, overrides={**SMALL, "rtol": "1e-8"}, out=out, overwrite=True,
                  progress=False)
    assert list(ds.seed.values) == [0] and sorted(os.listdir(out / "runs")) == ["seed=0"]
    assert (out / "runs" / "seed=0" / "notes.txt").read_text() == "mine"
    summary = json.loads((out / "runs" / "seed=0" / "summary.json").read_text())
    assert summary["parameters"]["rtol"] == 1e-8
    assert json.loads((out / "sweep.json").read_text())["parameters"]["rtol"] == 1e-8
    assert json.loads((out / ".saddlestep").read_text())["files"] == ["runs", "sweep.json", "sweep.nc"]


def test_a_huge_range_and_a_missing_ray_are_refused_before_anything_is_written(tmp_path, capsys):
    import time as _time
    start = _time.perf_counter()
    assert main(["sweep", "linear", "--grid", "seed=0:1000000000", "--out", str(tmp_path / "huge")]) == 2
    assert "1,000,000,000 values" in capsys.readouterr().err
    assert _time.perf_counter() - start < 30  # refused from the range, not after building it
    try:
        import ray  # noqa: F401
    except ImportError:
        assert main(["sweep", "linear", "--grid", "seed=0:1", "--executor", "ray", "--out", str(tmp_path / "g")]) == 2
        assert "Ray is not installed" in capsys.readouterr().err
    assert not (tmp_path / "huge").exists() and not (tmp_path / "g").exists()


def test_a_run_folder_left_without_its_summary_is_redone_on_resume(tmp_path):
    """A run folder of the sweep's own with no summary.json (removed to force a redo, or written
    meanwhile by a second copy of the sweep) is redone; it used to stop the resume with a hint to
    pass --overwrite, which would have thrown away every finished run."""
    out = tmp_path / "sw"
    grid = {"seed": [0, 1]}
    sw.sweep("linear", grid, overrides=SMALL, out=out, progress=False)
    (victim,) = [n for n in os.listdir(out / "runs") if n.endswith("seed=1")]
    (out / "runs" / victim / "summary.json").unlink()
    (out / "runs" / victim / "notes.txt").write_text("mine")
    kept = os.stat(out / "runs" / next(n for n in os.listdir(out / "runs") if n != victim) / "summary.json").st_mtime_ns
    sw.sweep("linear", grid, overrides=SMALL, out=out, progress=False)
    assert (out / "runs" / victim / "summary.json").is_file()
    assert (out / "runs" / victim / "notes.txt").read_text() == "mine"
    assert kept == os.stat(out / "runs" / next(n for n in os.listdir(out / "runs") if n != victim) / "summary.json").st_mtime_ns


def test_collect_pairs_each_predicted_step_with_its_own_drop_in_every_run(tmp_path):
    # At α = 1e-2 the flow learns β[7] and β[2] in one drop (10 → 5, named β[2]), at 1e-4 in two:
    # detected step 1 is β[11] in one run and β[2] in the other, so a slope fitted along it mixes
    # features. `matched_time` holds each predicted step's own drop (β[7]'s is the shared one at
    # 1e-2, as compare merges it); and seeds past 2³¹ (netCDF3 has no int64) are kept exactly.
    from saddlestep.prediction import Prediction
    from saddlestep.sweep.collect import collect
    from saddlestep.sweep.grid import run_name

    order = ["β[7]", "β[2]", "β[11]"]
    runs = {1e-2: [("β[2]", 2.0, 10.0, 5.0), ("β[11]", 7.0, 5.0, 1.0)],
            1e-4: [("β[7]", 2.5, 10.0, 8.0), ("β[2]", 4.0, 8.0, 5.0), ("β[11]", 14.0, 5.0, 1.0)]}
    seeds = [3_000_000_000, 1]
    for alpha, found in runs.items():
        L = np.log(1 / alpha)
        times = np.array([1.1, 1.8, 3.2]) * L
        pred = Prediction("closed-form:test", times, times / L, [8.0, 5.0, 1.0], order, init_scale=alpha)
        for seed in seeds:
            folder = tmp_path / "runs" / run_name({"init_scale": alpha, "seed": seed})
            folder.mkdir(parents=True)
            t = np.linspace(0.0, 20.0, 11)
            Trajectory(times=t, loss=np.linspace(10.0, 1.0, 11), observables={}, init_scale=alpha, status="converged",
                       t_final=20.0, stats={}, method="test").save(folder / "trajectory.npz")
            steps = [{"time": tm, "rescaled_time": tm / L, "loss_before": b, "loss_after": a, "feature": f}
                     for f, tm, b, a in found]
            summary = {"init_scale": alpha, "steps": steps, "prediction": pred.to_json(), "wall_time_s": 1.0,
                       "solver": {"t_final": 20.0, "steps": 10, "status": "converged"}}
            (folder / "summary.json").write_text(json.dumps(summary))
    ds = collect(tmp_path, {"init_scale": [1e-2, 1e-4], "seed": seeds})
    first = ds.sel(seed=seeds[0])
    assert list(first.drop_feature.sel(init_scale=1e-2).values) == ["β[2]", "β[11]", ""]
    np.testing.assert_array_equal(first.matched_time.sel(init_scale=1e-2).values, [2.0, 2.0, 7.0])
    np.testing.assert_array_equal(first.matched_time.sel(init_scale=1e-4).values, [2.5, 4.0, 14.0])
    assert first.drop_time.sel(init_scale=1e-2).values[1] == 7.0  # detected step 1 there: β[11]
    import io

    import xarray as xr

    back = xr.open_dataset(io.BytesIO(ds.to_netcdf(engine="scipy")), engine="scipy").load()
    assert [int(v) for v in back.seed.values] == seeds
    assert list(back.drop_feature.values[1, 1]) == ["β[7]", "β[2]", "β[11]"]


def test_sweep_keeps_each_runs_warnings_and_names_its_own_arguments(tmp_path):
    # A non-commuting teacher with nearly tied whitened modes: its prediction warns (`theory`),
    # and `saddlestep run` keeps that in summary.json; so must every run of a sweep, and the
    # sweep says which run it was. sweep.nc's attrs carry no α or seed a grid axis varies; a
    # preset's own check of a grid value names --grid.
    import warnings

    rng = np.random.default_rng(107)
    A = rng.standard_normal((4, 4))
    Sxx = A @ A.T / 4 + 0.3 * np.eye(4)
    path = tmp_path / "tied.npz"
    np.savez(path, Sxx=Sxx, Syx=1.5 * rng.standard_normal((4, 4)) @ Sxx)
    grid = sw.parse_grid(["seed=0:2"], "linear")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = sw.sweep("linear", grid, data=str(path), init_scale=1e-3, out=tmp_path / "s", progress=False)
    said = [str(w.message) for w in caught if "nearly tied" in str(w.message)]
    assert sorted(m.split(":")[0] for m in said) == ["seed=0", "seed=1"]  # each once, named by its run
    for name in os.listdir(tmp_path / "s" / "runs"):
        summary = json.loads((tmp_path / "s" / "runs" / name / "summary.json").read_text())
        assert any("nearly tied" in line for line in summary["warnings"]), name
    assert "seed" not in ds.attrs and ds.attrs["init_scale"] == 1e-3
    with pytest.raises(ValueError, match=r"^grid depth: expected an integer ≥ 2"):
        sw.sweep("deep-linear", sw.parse_grid(["depth=1,2"], "deep-linear"), out=tmp_path / "d", progress=False)


def test_a_sweep_member_is_set_up_as_saddlestep_run_sets_it_up():
    # attention saves on a log grid from a fraction of its horizon; when the prediction lengthens
    # the horizon, `run` keeps the grid's start where the preset put it, and so must a sweep.
    from saddlestep.presets import get_preset
    from saddlestep.runs import prepare
    from saddlestep.sweep.cells import _build, Member

    over = {"heads": "2", "N": "8"}
    _, params, single, alpha, seed = prepare("attention", init_scale=1e-3, seed=0, overrides=over)
    preset = get_preset("attention")
    member = Member(point={"seed": 0}, params=preset.parameters(over), init_scale=alpha, seed=seed)
    swept = _build(preset, member, None)
    assert "save_start" in single.simulate_kwargs
    assert swept.t_max == single.t_max
    assert swept.simulate_kwargs == single.simulate_kwargs
