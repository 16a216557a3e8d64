"""Sweeps: a grid over seeds, init scales and preset parameters, run as vmapped ensembles.

Vocabulary:

- a **run** is one grid point (one seed, one α, one value of every gridded parameter); it gets
  its own run folder `OUT/runs/NAME/`, the same files `saddlestep run` writes;
- a **cell** is the runs that share everything but the seed (and α, where the horizon does not
  depend on it): their models are stacked and integrated as one vmapped ensemble, which is the
  unit of work an executor schedules.

Runs whose folder exists are finished (folders appear whole, by rename), so re-running the same
sweep skips them and computes only what is missing. The labeled result (`sweep.nc`, an xarray
Dataset with one dimension per grid axis) is assembled from the run folders at the end.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import io
import itertools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .flow import simulate
from .models.base import parameters
from .presets import get_preset, Preset, Setup
from .presets.base import parse_value, predicted_horizon
from .outputs import atomic_write_bytes, atomic_write_text, check_out, prepare_updatable
from .trajectory import STATUSES, Trajectory
from .progress import Progress

SPECIAL_KEYS = ("init_scale", "seed")
_FORMAT = "saddlestep.sweep/1"


# ----------------------------------------------------------------------------- the grid
def parse_grid(specs: Sequence[str], preset: str | Preset | None = None) -> dict[str, list]:
    """Parse `--grid key=spec` arguments into `{key: [values]}`, in the order given.

    A spec is `v1,v2,…` or an integer range `a:b` (a, a+1, …, b−1). Values are typed by the
    preset's defaults; `init_scale` (float) and `seed` (int) are grid keys too. A parameter whose
    default is a tuple (e.g. `singular_values`) takes its values separated by `;`:
    `singular_values=4,2,1;8,4,2`.

    **Arguments:**

    - `specs`: the `key=spec` strings.
    - `preset`: the preset (or its name) whose defaults type the values; None keeps strings.

    **Returns:** an ordered dict from key to its list of values.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    if not specs:
        raise ValueError("--grid: expected at least one axis, e.g. --grid seed=0:8")
    grid: dict[str, list] = {}
    for item in specs:
        key, sep, spec = str(item).partition("=")
        key, spec = key.strip(), spec.strip()
        if not sep or not key:
            raise ValueError(f"--grid: expected key=v1,v2 or key=a:b, got {item!r}")
        if key in grid:
            raise ValueError(f"--grid {key}: given twice; give each axis once")
        if not spec:
            raise ValueError(f"--grid {key}: no values; expected v1,v2 or a:b")
        grid[key] = _parse_axis(key, spec, preset)
    return grid


def _parse_axis(key: str, spec: str, preset: Preset | None) -> list:
    default = _default_for(key, preset)
    is_tuple = isinstance(default, tuple)
    if ":" in spec and not is_tuple:
        if not (isinstance(default, int) and not isinstance(default, bool)) and default is not None:
            raise ValueError(f"--grid {key}: a range a:b needs an integer parameter; list values as v1,v2")
        lo, _, hi = spec.partition(":")
        try:
            lo_i, hi_i = int(lo), int(hi)
        except ValueError:
            raise ValueError(f"--grid {key}: expected an integer range a:b, got {spec!r}") from None
        if hi_i <= lo_i:
            raise ValueError(f"--grid {key}: empty range {spec!r}; expected a:b with a < b")
        texts = [str(i) for i in range(lo_i, hi_i)]
    else:
        texts = [t.strip() for t in spec.split(";" if is_tuple else ",")]
        if any(not t for t in texts):
            raise ValueError(f"--grid {key}: empty value in {spec!r}")
    values = [_typed(key, t, default) for t in texts]
    if len({_label(v) for v in values}) != len(values):
        raise ValueError(f"--grid {key}: repeated value in {spec!r}")
    return values


def _default_for(key: str, preset: Preset | None):
    if key == "init_scale":
        return 1.0
    if key == "seed":
        return 0
    if preset is None:
        return None
    if key not in preset.defaults:
        known = ", ".join(sorted([*preset.defaults, *SPECIAL_KEYS]))
        raise ValueError(f"--grid {key}: unknown parameter for preset {preset.name!r}; expected one of {known}")
    return preset.defaults[key]


def _typed(key: str, value, default):
    """`value` (text or already typed) as the type of `default`, with a `--grid` error."""
    if default is None:
        return value
    text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    try:
        typed = parse_value(key, text, default)
    except ValueError:
        kind = "comma-separated numbers" if isinstance(default, tuple) else type(default).__name__
        raise ValueError(f"--grid {key}: expected {kind}, got {text!r}") from None
    if key == "init_scale" and not (typed > 0 and math.isfinite(typed)):
        raise ValueError(f"--grid init_scale: expected positive finite numbers, got {text!r}")
    if key == "seed" and typed < 0:
        raise ValueError(f"--grid seed: expected non-negative integers, got {text!r}")
    return typed


def _label(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_label(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def run_name(point: Mapping[str, Any]) -> str:
    """The folder name of a grid point, e.g. `init_scale=1e-06__seed=3`."""
    parts = []
    for key, value in point.items():
        text = _label(value)
        for bad in (os.sep, " ", "\\", ":"):
            text = text.replace(bad, "_")
        parts.append(f"{key}={text}")
    return "__".join(parts)


# ----------------------------------------------------------------------------- cells
@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a cell: its grid point, its effective parameters, α and seed."""

    point: dict[str, Any]
    params: dict[str, Any]
    init_scale: float
    seed: int


@dataclasses.dataclass(frozen=True)
class Cell:
    """Runs integrated together as one vmapped ensemble (everything an executor needs; picklable)."""

    preset: str
    data: str | None
    members: tuple[Member, ...]


@dataclasses.dataclass
class CellResult:
    """Each member's trajectory and the ensemble's wall time (compilation included)."""

    trajectories: list[Trajectory]
    wall_time_s: float
    device: str


def _build(preset: Preset, member: Member, data: str | None) -> Setup:
    # The same horizon rule as a single run (from the prediction where the preset says so), so
    # a sweep's member equals `saddlestep run` with its settings; the prediction is kept for its summary.
    params = dict(member.params)
    setup = preset.build(params, init_scale=member.init_scale, seed=member.seed, data=data)
    setup.t_max = predicted_horizon(setup, params)
    return setup


def _digest(tree) -> str:
    """A fingerprint of a pytree: structure, static fields, and the bytes of every array."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    h = hashlib.sha256(str(jax.tree.structure(arrays)).encode())
    h.update(str(jax.tree.structure(static)).encode())
    h.update(repr(jax.tree.leaves(static)).encode())
    for leaf in jax.tree.leaves(arrays):
        leaf = np.asarray(leaf)
        h.update(f"{leaf.shape}{leaf.dtype}".encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def _cell_key(setup: Setup) -> tuple:
    """Runs with equal keys can share one ensemble: same model structure and shapes, the same
    task (data included), horizon and solver settings."""
    arrays, static = eqx.partition(parameters(setup.model), eqx.is_array)
    shapes = tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(arrays))
    return (
        str(jax.tree.structure(arrays)),
        repr(jax.tree.leaves(static)),
        shapes,
        _digest(setup.task),
        float(setup.t_max),
        repr(sorted(setup.simulate_kwargs.items())),
    )


def _stack(models: Sequence) -> Any:
    arrays, static = eqx.partition(list(models), eqx.is_array)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *arrays)
    return eqx.combine(stacked, static[0])


def _trim(traj: Trajectory) -> Trajectory:
    # As `simulate` does for a single run: drop save-grid points after the run stopped.
    keep = np.isfinite(traj.times)
    return dataclasses.replace(
        traj,
        times=traj.times[keep],
        loss=traj.loss[keep],
        observables={k: np.asarray(v)[keep] for k, v in traj.observables.items()},
    )


def run_cell(cell: Cell, mesh: jax.sharding.Mesh | None = None) -> CellResult:
    """Integrate a cell's runs as one vmapped ensemble (sharded over `mesh` when given).

    **Arguments:**

    - `cell`: the runs (they must share a cell key: model shapes, task, horizon, solver).
    - `mesh`: a one-axis mesh of local devices; None runs on the default device.

    **Returns:** a `CellResult` with one (trimmed) trajectory per member, in order.
    """
    preset = get_preset(cell.preset)
    setups = [_build(preset, m, cell.data) for m in cell.members]
    first = setups[0]
    if any(_cell_key(s) != _cell_key(first) for s in setups[1:]):
        raise ValueError("cell: its runs differ in model shapes, task, horizon or solver settings")
    kwargs = dict(first.simulate_kwargs)
    if mesh is not None and mesh.devices.size > 1 and _simulate_takes_mesh():
        kwargs["mesh"] = mesh
    start = time.perf_counter()
    traj = simulate(_stack([s.model for s in setups]), first.task, t_max=first.t_max, progress=False, **kwargs)
    wall = time.perf_counter() - start
    device = str(jax.devices()[0].device_kind)
    return CellResult([_trim(traj[i]) for i in range(len(setups))], wall, device)


def _simulate_takes_mesh() -> bool:
    return "mesh" in inspect.signature(simulate).parameters


def _run_cell_remote(cell: Cell) -> CellResult:
    # A worker process may hold a GPU beside others: take memory as needed, not 75 % up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return run_cell(cell, _local_mesh())


def _local_mesh(devices: Sequence | None = None) -> jax.sharding.Mesh | None:
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) < 2:
        return None
    # Explicit axis_types: without them diffrax fails to find the axis (engineering.md §5.1).
    return jax.sharding.Mesh(
        np.asarray(devices), ("batch",), axis_types=(jax.sharding.AxisType.Auto,)
    )


# ----------------------------------------------------------------------------- executors
class AbstractExecutor(abc.ABC):
    """Runs cells; `map` yields `(index, CellResult)` as each cell finishes, in any order."""

    @abc.abstractmethod
    def map(self, cells: Sequence[Cell]) -> Iterator[tuple[int, CellResult]]:
        """Run every cell of `cells`."""


class LocalExecutor(AbstractExecutor):
    """Cells one after another in this process; each is a vmapped ensemble, split over the local
    devices with `shard_map` when there are several (each device runs its own adaptive loop)."""

    def __init__(self, devices: Sequence | None = None):
        """**Arguments:**

        - `devices`: the devices to shard each ensemble over (default: all local devices).
        """
        self.mesh = _local_mesh(devices)

    def map(self, cells):
        for i, cell in enumerate(cells):
            yield i, run_cell(cell, self.mesh)


class RayExecutor(AbstractExecutor):
    """One Ray task per cell (Ray schedules them over the cluster); one GPU per task when the
    cluster has GPUs. Each worker process compiles once per cell shape.

    Uses the running Ray session if there is one, else starts (and afterwards stops) one with
    `ray.init(address)`. Run folders are written by this process, so workers need no shared disk
    (but `--data` must be readable at the same path on every node).
    """

    def __init__(self, address: str | None = None, *, num_gpus: float | None = None, max_retries: int = 2):
        """**Arguments:**

        - `address`: a Ray cluster address (default: the running session, else a local one).
        - `num_gpus`: GPUs per task (default: 1 if the cluster has GPUs, else 0).
        - `max_retries`: retries of a task whose worker died.
        """
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray: Ray is not installed; pip install 'saddlestep[ray]'") from None
        self.ray = ray
        self.address = address
        self.num_gpus = num_gpus
        self.max_retries = max_retries

    def map(self, cells):
        ray = self.ray
        started = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            started = True
        try:
            gpus = self.num_gpus
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            task = ray.remote(_run_cell_remote).options(num_cpus=1, num_gpus=gpus, max_retries=self.max_retries)
            pending = {task.remote(cell): i for i, cell in enumerate(cells)}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started:
                ray.shutdown()


def _executor(executor) -> AbstractExecutor:
    if isinstance(executor, AbstractExecutor):
        return executor
    if executor == "local":
        return LocalExecutor()
    if executor == "ray":
        return RayExecutor()
    raise ValueError(f"--executor: expected 'local' or 'ray', got {executor!r}")


# ----------------------------------------------------------------------------- the sweep
def sweep(
    preset_name: str,
    grid: Mapping[str, Sequence],
    *,
    overrides: Mapping[str, str] | None = None,
    executor: str | AbstractExecutor = "local",
    out: str | os.PathLike,
    data: str | None = None,
    init_scale=None,
    seed=0,
    progress: bool | None = None,
):
    """Run a preset over a grid, resumably; write one run folder per grid point and `sweep.nc`.

    **Arguments:**

    - `preset_name`: a registered preset.
    - `grid`: `{key: [values]}` (see `parse_grid`; values may be text or typed); keys are preset
      parameters, `init_scale` or `seed`.
    - `overrides`: `{parameter: text}` as given to `--set` (fixed across the grid).
    - `executor`: `"local"` (vmap, and `shard_map` over several local devices), `"ray"`, or an
      executor object.
    - `out`: the sweep folder; re-running with the same folder skips finished runs.
    - `data`: a user data file, as for `saddlestep run`.
    - `init_scale`, `seed`: values for α and the seed when they are not grid axes.
    - `progress`: progress over cells — a bar on a terminal, a few plain lines elsewhere
      (default: yes; False: silent).

    **Returns:** an `xarray.Dataset` with one dimension per grid axis (in the order given) and
    `save` (the save grid) and `drop` (detected steps); also written to `OUT/sweep.nc`.
    """
    from .runs import check_init_scale_arg, check_seed_arg

    preset = get_preset(preset_name)
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("--grid: expected at least one axis, e.g. --grid seed=0:8")
    typed_grid: dict[str, list] = {}
    for key, values in grid.items():
        default = _default_for(key, preset)
        values = list(values) if not isinstance(values, str) else [values]
        if not values:
            raise ValueError(f"--grid {key}: no values; expected v1,v2 or a:b")
        typed_grid[key] = [_typed(key, v, default) for v in values]
        if len({_label(v) for v in typed_grid[key]}) != len(values):
            raise ValueError(f"--grid {key}: repeated value")
    overrides = dict(overrides or {})
    both = sorted(set(overrides) & set(typed_grid))
    if both:
        raise ValueError(f"--set {both[0]}: also a --grid axis; give it in one place")
    base = preset.parameters(overrides)
    alpha = preset.init_scale if init_scale is None else check_init_scale_arg(init_scale)
    seed = check_seed_arg(seed)
    if data is not None:
        if preset.data_help is None:
            raise ValueError(f"--data: preset {preset_name!r} takes no data file")
        if not os.path.isfile(data):
            raise ValueError(f"--data: no such file {data!r}")
        data = os.path.abspath(data)
    out = check_out(out, kind="sweep")
    total = math.prod(len(v) for v in typed_grid.values())
    if total > MAX_RUNS:
        raise ValueError(
            f"--grid: {total:,} runs (the product of the axes' lengths) is more than {MAX_RUNS:,}; "
            f"split the sweep or check the ranges (a:b is b − a values)"
        )
    _say(f"sweep {preset.name}: {total:,} runs over {', '.join(f'{k} ({len(v)})' for k, v in typed_grid.items())}")

    # Every grid point, with its effective parameters, and its folder.
    members = []
    names = set()
    for combo in itertools.product(*typed_grid.values()):
        point = dict(zip(typed_grid, combo))
        params = {**base, **{k: v for k, v in point.items() if k not in SPECIAL_KEYS}}
        m = Member(point, params, float(point.get("init_scale", alpha)), int(point.get("seed", seed)))
        name = run_name(point)
        if name in names:
            raise ValueError(f"--grid: two grid points share the folder name {name!r}")
        names.add(name)
        members.append((name, m))

    runs_dir = os.path.join(out, "runs")
    manifest = _check_manifest(out, preset.name, base, data, alpha, seed, typed_grid)
    pending = [(n, m) for n, m in members if not _finished(os.path.join(runs_dir, n))]
    if len(pending) < len(members):
        _say(f"sweep: {len(members) - len(pending):,} runs already finished in {out}, {len(pending):,} to go")

    # Build every pending run first: bad parameters fail here, before anything is written.
    setups = {}
    for i, (n, m) in enumerate(pending):
        setups[n] = _build(preset, m, data)
        if len(pending) >= 50 and (i + 1) % max(1, len(pending) // 5) == 0:
            _say(f"sweep: built {i + 1:,}/{len(pending):,} setups")
    cells, cell_names = _group(preset.name, data, pending, setups)
    prepare_updatable(out, kind="sweep")
    os.makedirs(runs_dir, exist_ok=True)
    atomic_write_text(os.path.join(out, "sweep.json"), json.dumps(manifest, indent=2) + "\n")
    _remove_partial_folders(runs_dir)

    runs_done = len(members) - len(pending)
    bar = Progress("sweep", len(cells), "cell", enabled=progress is not False)
    try:
        for i, result in _executor(executor).map(cells):
            size = len(cells[i].members)
            for name, member, traj in zip(cell_names[i], cells[i].members, result.trajectories):
                _write_run(
                    os.path.join(runs_dir, name), preset, member, setups[name], traj, data,
                    wall=result.wall_time_s, ensemble_size=size, device=result.device,
                )
            runs_done += size
            bar.update(1, runs=f"{runs_done}/{len(members)}")
    finally:
        bar.close()

    dataset = collect(out, typed_grid, [n for n, _ in members])
    dataset.attrs.update(
        preset=preset.name,
        parameters=json.dumps(_jsonable(base)),
        data=data or "",
        init_scale=alpha,
        seed=seed,
    )
    atomic_write_bytes(os.path.join(out, "sweep.nc"), bytes(dataset.to_netcdf(engine="scipy")))
    return dataset


MAX_RUNS = 100_000


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _finished(folder: str) -> bool:
    # Folders appear whole by rename, so a summary inside means the run is complete.
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        return False
    _read_summary(path)
    return True


def _read_summary(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"--out: {path} is not a readable run summary ({type(err).__name__}: {err}); "
            f"delete that run folder to recompute it"
        ) from None
    if not isinstance(summary, dict):
        raise ValueError(f"--out: {path} is not a run summary; delete that run folder to recompute it")
    return summary


def _remove_partial_folders(runs_dir: str) -> None:
    """Delete temporary folders left by a sweep that was killed while writing."""
    if not os.path.isdir(runs_dir):
        return
    for entry in os.listdir(runs_dir):
        if entry.startswith(".") and (".tmp-" in entry or ".old-" in entry):
            shutil.rmtree(os.path.join(runs_dir, entry), ignore_errors=True)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_manifest(out, preset, base, data, alpha, seed, grid) -> dict:
    """Refuse to mix runs of different fixed settings in one folder (the grid may grow); returns
    the manifest to write. The `--data` file enters by its content digest, so a resume after the
    file changed is refused rather than mixing old and new results."""
    fixed = {"preset": preset, "parameters": _jsonable(base), "data": data, "init_scale": alpha, "seed": seed}
    digest = _file_digest(data) if data is not None else None
    path = os.path.join(out, "sweep.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, json.JSONDecodeError):
            raise ValueError(f"--out: {path} is not a readable sweep manifest; choose another folder") from None
        if not isinstance(old, dict):
            raise ValueError(f"--out: {path} is not a readable sweep manifest; choose another folder")
        if old.get("format") != _FORMAT or {k: old.get(k) for k in fixed} != json.loads(json.dumps(fixed)):
            raise ValueError(
                f"--out: {out} holds a sweep with other settings (preset, --set, --data, --init-scale "
                f"or --seed); choose another folder"
            )
        if data is not None and old.get("data_sha256") not in (None, digest):
            raise ValueError(
                f"--data: {data} changed since the sweep in {out} started (sha256 differs); "
                f"choose another --out for the new data"
            )
    manifest = {"format": _FORMAT, **fixed, "grid": {k: [_jsonable(v) for v in vs] for k, vs in grid.items()}}
    if digest is not None:
        manifest["data_sha256"] = digest
    return manifest


def _group(preset_name, data, pending, setups) -> tuple[list[Cell], list[list[str]]]:
    groups: dict[tuple, list] = {}
    for name, member in pending:
        groups.setdefault(_cell_key(setups[name]), []).append((name, member))
    cells = [Cell(preset_name, data, tuple(m for _, m in g)) for g in groups.values()]
    return cells, [[n for n, _ in g] for g in groups.values()]


def _write_run(folder, preset, member, setup, traj, data, *, wall, ensemble_size, device) -> None:
    """The run folder `saddlestep run` would write, from a member of an ensemble."""
    from .runs import _jsonable as jsonable, summarize, write_run_folder

    params = {**member.params, "t_max": setup.t_max}
    if data is not None:
        params["data"] = data
    # The ensemble's wall time is shared among its members (compilation included).
    summary, steps, prediction = summarize(
        preset.name, params, setup, member.init_scale, member.seed, traj, wall / ensemble_size
    )
    summary["sweep"] = {
        "point": jsonable(member.point),
        "ensemble_size": ensemble_size,
        "ensemble_wall_time_s": wall,
        "device": device,
    }
    write_run_folder(folder, summary, traj, steps, prediction, setup)


# ----------------------------------------------------------------------------- the result
def collect(out: str | os.PathLike, grid: Mapping[str, Sequence], names: Sequence[str] | None = None):
    """Assemble the labeled result of a sweep from its run folders.

    **Arguments:**

    - `out`: the sweep folder.
    - `grid`: `{key: [values]}`, the axes in order.
    - `names`: the run folder of each grid point in `itertools.product` order (default: `run_name`).

    **Returns:** an `xarray.Dataset` with dims (*grid axes, `save`, [`feature`,] `drop`):
    `time`, `rescaled_time`, `loss`, `features` on the save grid; `t_final`, `solver_steps`,
    `status` (index into the `status` attribute's list), `wall_time_s`; and per detected step
    `drop_time`, `drop_rescaled_time`, `loss_before`, `loss_after` (NaN-padded); where the
    preset predicts, per predicted step (dim `predicted_step`) `predicted_time`,
    `predicted_rescaled_time`, `predicted_loss`, with the method in `attrs["prediction_method"]`.
    """
    import xarray as xr

    axes = list(grid)
    shape = tuple(len(grid[k]) for k in axes)
    points = [dict(zip(axes, c)) for c in itertools.product(*grid.values())]
    names = [run_name(p) for p in points] if names is None else list(names)
    runs = []
    for name in names:
        folder = os.path.join(os.fspath(out), "runs", name)
        summary = _read_summary(os.path.join(folder, "summary.json"))
        runs.append((summary, Trajectory.load(os.path.join(folder, "trajectory.npz"))))
    n_save = max(len(t.times) for _, t in runs)
    n_drop = max([len(s["steps"]) for s, _ in runs] + [1])
    n_feat = max(np.asarray(t.observables.get("features", np.zeros((1, 0)))).reshape(len(t.times), -1).shape[1] for _, t in runs)
    predictions = [s.get("prediction") for s, _ in runs]
    n_pred = max([len(p["times"]) for p in predictions if p] + [0])

    def empty(*tail):
        return np.full((len(runs), *tail), np.nan)

    time_, loss, rescaled = empty(n_save), empty(n_save), empty(n_save)
    feats = empty(n_save, n_feat)
    drops = {k: empty(n_drop) for k in ("time", "rescaled_time", "loss_before", "loss_after")}
    predicted = {k: empty(n_pred) for k in ("times", "rescaled_times", "losses")}
    t_final, wall = empty(), empty()
    steps = np.zeros(len(runs), np.int32)
    status = np.zeros(len(runs), np.int32)
    for i, (summary, traj) in enumerate(runs):
        n = len(traj.times)
        time_[i, :n], loss[i, :n], rescaled[i, :n] = traj.times, traj.loss, traj.rescaled_times
        if n_feat and "features" in traj.observables:
            f = np.asarray(traj.observables["features"]).reshape(n, -1)
            feats[i, :n, : f.shape[1]] = f
        for j, step in enumerate(summary["steps"]):
            for k in drops:
                drops[k][i, j] = np.nan if step[k] is None else step[k]
        for k in predicted:
            values = (predictions[i] or {}).get(k) or []
            predicted[k][i, : len(values)] = [np.nan if v is None else v for v in values]
        t_final[i] = summary["solver"]["t_final"]
        wall[i] = summary["wall_time_s"]
        steps[i] = summary["solver"]["steps"]
        status[i] = STATUSES.index(summary["solver"]["status"])

    dims = tuple(axes)
    grid_shape = lambda a: a.reshape(*shape, *a.shape[1:])
    variables = {
        "time": (dims + ("save",), grid_shape(time_)),
        "rescaled_time": (dims + ("save",), grid_shape(rescaled)),
        "loss": (dims + ("save",), grid_shape(loss)),
        "t_final": (dims, grid_shape(t_final)),
        "solver_steps": (dims, grid_shape(steps)),
        "status": (dims, grid_shape(status), {"flag_values": list(range(len(STATUSES))), "flag_meanings": " ".join(STATUSES)}),
        "wall_time_s": (dims, grid_shape(wall)),
        "drop_time": (dims + ("drop",), grid_shape(drops["time"])),
        "drop_rescaled_time": (dims + ("drop",), grid_shape(drops["rescaled_time"])),
        "loss_before": (dims + ("drop",), grid_shape(drops["loss_before"])),
        "loss_after": (dims + ("drop",), grid_shape(drops["loss_after"])),
    }
    if n_feat:
        variables["features"] = (dims + ("save", "feature"), grid_shape(feats))
    if n_pred:
        # The preset's prediction for each run (AGF or closed form), beside the detected drops.
        variables["predicted_time"] = (dims + ("predicted_step",), grid_shape(predicted["times"]))
        variables["predicted_rescaled_time"] = (dims + ("predicted_step",), grid_shape(predicted["rescaled_times"]))
        variables["predicted_loss"] = (dims + ("predicted_step",), grid_shape(predicted["losses"]))
    coords = {k: [_label(v) if isinstance(v, (tuple, list)) else v for v in grid[k]] for k in axes}
    labels = {tuple(t.feature_labels) for _, t in runs}
    if n_feat and len(labels) == 1 and len(next(iter(labels))) == n_feat:
        coords["feature"] = list(next(iter(labels)))
    dataset = xr.Dataset(variables, coords=coords)
    methods = sorted({p["method"] for p in predictions if p})
    if methods:
        dataset.attrs["prediction_method"] = ", ".join(methods)
    return dataset


def load(out: str | os.PathLike):
    """Read `OUT/sweep.nc` written by `sweep`.

    **Returns:** an `xarray.Dataset`.
    """
    import xarray as xr

    path = os.path.join(os.fspath(out), "sweep.nc")
    if not os.path.exists(path):
        raise ValueError(f"--out: {path} does not exist (has the sweep finished?)")
    with open(path, "rb") as f:
        return xr.open_dataset(io.BytesIO(f.read()), engine="scipy").load()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
