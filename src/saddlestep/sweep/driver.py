"""The sweep driver: manifest, resume (finished run folders are skipped), cells to executors, run
folders, `sweep.nc`."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence

import numpy as np

from ..outputs import atomic_write_bytes, atomic_write_text, check_out, prepare_updatable, record_files
from ..presets import get_preset
from ..progress import Progress
from .cells import _build, _cell_key, Cell, Member
from .collect import _read_summary, collect
from .executors import _executor, AbstractExecutor
from .grid import _default_for, _FORMAT, _label, _typed, run_name, SPECIAL_KEYS


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
    from ..validate import check_init_scale, check_seed

    preset = get_preset(preset_name)
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid: expected at least one axis, e.g. seed=0:8")
    typed_grid: dict[str, list] = {}
    for key, values in grid.items():
        default = _default_for(key, preset)
        values = list(values) if not isinstance(values, str) else [values]
        if not values:
            raise ValueError(f"grid {key}: no values; expected v1,v2 or a:b")
        typed_grid[key] = [_typed(key, v, default) for v in values]
        if len({_label(v) for v in typed_grid[key]}) != len(values):
            raise ValueError(f"grid {key}: repeated value")
    overrides = dict(overrides or {})
    both = sorted(set(overrides) & set(typed_grid))
    if both:
        raise ValueError(f"overrides {both[0]}: also a grid axis; give it in one place")
    base = preset.parameters(overrides, data=data)
    if data is not None:
        preset.check_not_set_by_data(typed_grid, "grid")
    alpha = preset.init_scale if init_scale is None else check_init_scale(init_scale)
    seed = check_seed(seed)
    if data is not None:
        if preset.data_help is None:
            raise ValueError(f"data: preset {preset_name!r} takes no data file")
        if not os.path.isfile(data):
            raise ValueError(f"data: no such file {data!r}")
        data = os.path.abspath(data)
    out = check_out(out, kind="sweep")
    total = math.prod(len(v) for v in typed_grid.values())
    if total > MAX_RUNS:
        raise ValueError(
            f"grid: {total:,} runs (the product of the axes' lengths) is more than {MAX_RUNS:,}; "
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
            raise ValueError(f"grid: two grid points share the folder name {name!r}")
        names.add(name)
        members.append((name, m))

    runs_dir = os.path.join(out, "runs")
    manifest = _check_manifest(out, preset.name, preset.recorded(base, data), data, alpha, seed, typed_grid)
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
    record_files(out, "sweep", ["sweep.json", "runs"])  # what the marker says saddlestep wrote here
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
        parameters=json.dumps(_jsonable(preset.recorded(base, data))),
        data=data or "",
        init_scale=alpha,
        seed=seed,
    )
    atomic_write_bytes(os.path.join(out, "sweep.nc"), bytes(dataset.to_netcdf(engine="scipy")))
    record_files(out, "sweep", ["sweep.json", "runs", "sweep.nc"])
    return dataset


MAX_RUNS = 100_000


def _say(line: str) -> None:
    from ..progress import say

    say(line)  # "saddlestep: …", as every other progress line


def _finished(folder: str) -> bool:
    # Folders appear whole by rename, so a summary inside means the run is complete.
    path = os.path.join(folder, "summary.json")
    if not os.path.isfile(path):
        return False
    _read_summary(path)
    return True


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
            raise ValueError(f"out: {path} is not a readable sweep manifest; choose another folder") from None
        if not isinstance(old, dict):
            raise ValueError(f"out: {path} is not a readable sweep manifest; choose another folder")
        if old.get("format") != _FORMAT or {k: old.get(k) for k in fixed} != json.loads(json.dumps(fixed)):
            raise ValueError(
                f"out: {out} holds a sweep with other settings (preset, overrides, data, init_scale "
                f"or seed); choose another folder"
            )
        if data is not None and old.get("data_sha256") not in (None, digest):
            raise ValueError(
                f"data: {data} changed since the sweep in {out} started (sha256 differs); "
                f"choose another out folder for the new data"
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
    from ..runs import _jsonable as jsonable, effective_parameters, summarize, write_run_folder

    params = effective_parameters(preset, member.params, setup, data)  # as `saddlestep run` records them
    # The ensemble's wall time is shared among its members (compilation included).
    summary, steps, prediction = summarize(
        preset.name, params, setup, member.init_scale, member.seed, traj, wall / ensemble_size, data=data
    )
    summary["sweep"] = {
        "point": jsonable(member.point),
        "ensemble_size": ensemble_size,
        "ensemble_wall_time_s": wall,
        "device": device,
    }
    write_run_folder(folder, summary, traj, steps, prediction, setup)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
