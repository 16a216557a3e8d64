"""The sweep driver: manifest, resume (finished run folders are skipped), cells to executors, run
folders, `sweep.nc`."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ..outputs import (
    _foreign, _legacy_marker, _read_marker, _remove, _write_marker, atomic_write_bytes, atomic_write_text, check_out,
    is_output, MARKER, prepare_updatable, record_files, stale_temporary,
)
from ..presets import get_preset
from ..progress import Progress
from ..runs import _told
from .cells import _build, _cell_key, Cell, Member
from .collect import _read_summary, collect
from .executors import _executor, AbstractExecutor
from .grid import _default_for, _FORMAT, _label, _typed, MAX_RUNS, run_name, SPECIAL_KEYS


def sweep(
    preset_name: str,
    grid: Mapping[str, Sequence],
    *,
    overrides: Mapping[str, str] | None = None,
    executor: str | AbstractExecutor = "local",
    out: str | os.PathLike,
    data: str | None = None,
    init_scale=None,
    seed=None,
    overwrite: bool = False,
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
    - `init_scale`, `seed`: values for α and the seed when they are not grid axes (default: the
      preset's α, seed 0).
    - `overwrite`: replace an earlier sweep at `out` (its own files only) instead of resuming it;
      without it, a sweep of other settings there is refused.
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
    # A single value beside its own axis would be ignored, yet recorded as the sweep's setting.
    for key, value in (("init_scale", init_scale), ("seed", seed)):
        if value is not None and key in typed_grid:
            raise ValueError(f"{key}: also a grid axis; give it in one place")
    base = preset.parameters(overrides, data=data)
    if data is not None:
        preset.check_not_set_by_data(typed_grid, "grid")
    _check_grid_values(preset, overrides, typed_grid, data)
    alpha = preset.init_scale if init_scale is None else check_init_scale(init_scale)
    seed = check_seed(0 if seed is None else seed)
    if data is not None:
        if preset.data_help is None:
            raise ValueError(f"data: preset {preset_name!r} takes no data file")
        if not os.path.isfile(data):
            raise ValueError(f"data: no such file {data!r}")
        data = os.path.abspath(data)
    out = check_out(out, kind="sweep")
    runner = _executor(executor)  # (Ray missing is refused here, before the folder is made)
    total = math.prod(len(v) for v in typed_grid.values())
    if total > MAX_RUNS:
        raise ValueError(
            f"grid: {total:,} runs (the product of the axes' lengths) is more than {MAX_RUNS:,}; "
            f"split the sweep or check the ranges (a:b is b − a values)"
        )

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
    manifest = _check_manifest(out, preset.name, preset.recorded(base, data), data, alpha, seed, typed_grid,
                               overwrite=overwrite)
    _say(f"sweep {preset.name}: {total:,} runs over {', '.join(f'{k} ({len(v)})' for k, v in typed_grid.items())}")
    # An earlier sweep that is to be replaced has no finished runs to offer.
    replace = overwrite and is_output(out, "sweep")
    pending = [(n, m) for n, m in members if replace or not _finished(os.path.join(runs_dir, n))]
    if len(pending) < len(members):
        _say(f"sweep: {len(members) - len(pending):,} runs already finished in {out}, {len(pending):,} to go")

    # Build every pending run first: bad parameters fail here, before anything is written.
    setups, told = {}, {}
    for i, (n, m) in enumerate(pending):
        try:
            # What building a run warns about (its prediction, above all) goes into that run's
            # summary.json, as `saddlestep run` keeps it, and is said naming the run.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                setups[n] = _build(preset, m, data)
        except ValueError as err:
            raise _as_argument(err, typed_grid, base) from None
        told[n] = _told(caught)
        for line in told[n]:
            warnings.warn(f"{n}: {line}", stacklevel=2)
        if len(pending) >= 50 and (i + 1) % max(1, len(pending) // 5) == 0:
            _say(f"sweep: built {i + 1:,}/{len(pending):,} setups")
    cells, cell_names = _group(preset.name, data, pending, setups)
    if replace:
        _remove_earlier_sweep(out)
    prepare_updatable(out, kind="sweep")
    os.makedirs(runs_dir, exist_ok=True)
    atomic_write_text(os.path.join(out, "sweep.json"), json.dumps(manifest, indent=2) + "\n")
    record_files(out, "sweep", ["sweep.json", "runs"])  # what the marker says saddlestep wrote here
    _remove_partial_folders(runs_dir)

    runs_done = len(members) - len(pending)
    bar = Progress("sweep", len(cells), "cell", enabled=progress is not False)
    try:
        for i, result in runner.map(cells):
            size = len(cells[i].members)
            for name, member, traj in zip(cell_names[i], cells[i].members, result.trajectories):
                _write_run(
                    os.path.join(runs_dir, name), preset, member, setups[name], traj, data,
                    wall=result.wall_time_s, ensemble_size=size, device=result.device, told=told.get(name, []),
                    # A run folder of ours left unfinished (no summary: removed by hand, or a
                    # second copy of this sweep wrote it meanwhile) is redone, not refused.
                    overwrite=replace or is_output(os.path.join(runs_dir, name), "run"),
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
        # α and the seed of every run, unless they are grid axes (then the coordinates hold them).
        **{k: v for k, v in (("init_scale", alpha), ("seed", seed)) if k not in typed_grid},
    )
    atomic_write_bytes(os.path.join(out, "sweep.nc"), bytes(dataset.to_netcdf(engine="scipy")))
    record_files(out, "sweep", ["sweep.json", "runs", "sweep.nc"])
    return dataset




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
        # Only folders a writer of ours left (a user's `.notes.old-1` stays, as does a live
        # sweep's temporary beside this one).
        if stale_temporary(os.path.join(runs_dir, entry)):
            shutil.rmtree(os.path.join(runs_dir, entry), ignore_errors=True)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_manifest(out, preset, base, data, alpha, seed, grid, *, overwrite=False) -> dict:
    """Refuse to mix runs of different fixed settings in one folder (the grid may grow), unless
    the earlier sweep is to be replaced; returns the manifest to write. The `--data` file enters
    by its content digest, so a resume after the file changed is refused rather than mixing old
    and new results."""
    fixed = {"preset": preset, "parameters": _jsonable(base), "data": data, "init_scale": alpha, "seed": seed}
    digest = _file_digest(data) if data is not None else None
    path = os.path.join(out, "sweep.json")
    if os.path.exists(path) and not overwrite:
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, json.JSONDecodeError):
            raise ValueError(f"out: {path} is not a readable sweep manifest; pass overwrite=True to replace the "
                             f"sweep, or choose another folder") from None
        if not isinstance(old, dict):
            raise ValueError(f"out: {path} is not a readable sweep manifest; pass overwrite=True to replace the "
                             f"sweep, or choose another folder")
        if old.get("format") != _FORMAT or {k: old.get(k) for k in fixed} != json.loads(json.dumps(fixed)):
            raise ValueError(
                f"out: {out} holds a sweep with other settings (preset, overrides, data, init_scale "
                f"or seed); pass overwrite=True to replace it, or choose another folder"
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


def _check_grid_values(preset, overrides, grid, data) -> None:
    """Check every combination of the gridded parameters as `--set` would be checked, before
    anything is built or written (a bad value would otherwise surface in its cell's solve, after
    the other cells were written)."""
    keys = [k for k in grid if k not in SPECIAL_KEYS]
    warned = set()
    for combo in itertools.product(*(grid[k] for k in keys)):
        texts = {k: _text(v) for k, v in zip(keys, combo)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                preset.parameters({**overrides, **texts}, data=data)
            except ValueError as err:
                raise _in_grid(err, keys) from None
        for w in caught:  # the overrides' own warnings were given once already
            message = str(_in_grid(ValueError(str(w.message)), keys))
            if message != str(w.message) and message not in warned:
                warned.add(message)
                warnings.warn(message, w.category, stacklevel=3)


def _text(value) -> str:
    """A typed grid value as `--set` text (parses back to the same value)."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(_text, value))
    return repr(value) if isinstance(value, float) else str(value)


def _in_grid(err: ValueError, keys) -> ValueError:
    """`overrides KEY …` as `grid KEY …` where KEY is a grid axis."""
    message = str(err)
    head = message.split(":", 1)[0].split("=", 1)[0]
    if head.startswith("overrides ") and head.removeprefix("overrides ").strip() in keys:
        return ValueError("grid " + message.removeprefix("overrides "))
    return err


def _as_argument(err: ValueError, grid, params) -> ValueError:
    """A library error naming a parameter (`variant: expected …`) as the argument that gave it:
    `grid variant: …` for a grid axis, `overrides variant: …` for a fixed parameter."""
    message = str(err)
    if message.startswith("overrides "):
        # A preset's own check already names it as an override: a grid axis is named as such.
        message = message[len("overrides "):]
        key = message.partition(":")[0]
        return ValueError(f"grid {message}" if key in grid else f"overrides {message}")
    key, colon, _ = message.partition(":")
    if colon and key in grid:
        return ValueError(f"grid {message}")
    if colon and key in params:
        return ValueError(f"overrides {message}")
    return err


# What a sweep writes into its folder; inside `runs/`, each run folder carries its own marker.
_SWEEP_FILES = ("runs", "sweep.json", "sweep.nc")


def _remove_earlier_sweep(out: str) -> None:
    """Remove what an earlier sweep in `out` wrote, by its markers, and nothing else: a file of
    the user's, in the folder or among the run folders, stays where it is."""
    marker = _read_marker(out) or _legacy_marker(out, "sweep")
    ours = [n for n in (marker["files"] if marker else []) if n in _SWEEP_FILES]
    runs_dir = os.path.join(out, "runs")
    if "runs" in ours and os.path.isdir(runs_dir) and not os.path.islink(runs_dir):
        for entry in os.listdir(runs_dir):
            folder = os.path.join(runs_dir, entry)
            if os.path.islink(folder) or not os.path.isdir(folder):
                continue
            run_marker = _read_marker(folder) or _legacy_marker(folder, "run")
            if run_marker is None or run_marker.get("kind") != "run":
                continue  # not a run saddlestep wrote
            for name in run_marker["files"]:
                _remove(os.path.join(folder, name))
            if _foreign(folder, run_marker):
                _write_marker(folder, "run", [])  # the user's files stay; the new run joins them
            else:
                _remove(os.path.join(folder, MARKER))
                os.rmdir(folder)
        if not os.listdir(runs_dir):
            os.rmdir(runs_dir)
    for name in ("sweep.json", "sweep.nc"):
        if name in ours:
            _remove(os.path.join(out, name))
    # The marker keeps naming only what is still ours (`runs/`, when a user's file holds it).
    _write_marker(out, "sweep", [n for n in ours if os.path.lexists(os.path.join(out, n))])


def _group(preset_name, data, pending, setups) -> tuple[list[Cell], list[list[str]]]:
    groups: dict[tuple, list] = {}
    for name, member in pending:
        groups.setdefault(_cell_key(setups[name]), []).append((name, member))
    cells = [Cell(preset_name, data, tuple(m for _, m in g)) for g in groups.values()]
    return cells, [[n for n, _ in g] for g in groups.values()]


def _write_run(folder, preset, member, setup, traj, data, *, wall, ensemble_size, device, overwrite=False,
               told=()) -> None:
    """The run folder `saddlestep run` would write, from a member of an ensemble (`told`: what
    building it warned about)."""
    from ..runs import _jsonable as jsonable, effective_parameters, summarize, write_run_folder

    params = effective_parameters(preset, member.params, setup, data)  # as `saddlestep run` records them
    # The ensemble's wall time is shared among its members (compilation included).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, steps, prediction = summarize(
            preset.name, params, setup, member.init_scale, member.seed, traj, wall / ensemble_size, data=data
        )
    summary["warnings"] = list(dict.fromkeys([*told, *_told(caught), *summary["warnings"]]))
    summary["sweep"] = {
        "point": jsonable(member.point),
        "ensemble_size": ensemble_size,
        "ensemble_wall_time_s": wall,
        "device": device,
    }
    write_run_folder(folder, summary, traj, steps, prediction, setup, overwrite=overwrite)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
