"""Cells: the runs of a sweep that share everything but seed and α, stacked and integrated as one vmapped ensemble."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..flow import budget_noted_by_caller, simulate
from ..models.base import parameters
from ..presets import get_preset, Preset, Setup
from ..presets.base import extend_horizon
from ..trajectory import Trajectory


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
    setup = preset.setup(params, init_scale=member.init_scale, seed=member.seed, data=data)
    extend_horizon(setup, params)
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the driver built these runs first, and told their warnings)
        setups = [_build(preset, m, cell.data) for m in cell.members]
    first = setups[0]
    if any(_cell_key(s) != _cell_key(first) for s in setups[1:]):
        raise ValueError("cell: its runs differ in model shapes, task, horizon or solver settings")
    kwargs = dict(first.simulate_kwargs)
    if mesh is not None and mesh.devices.size > 1 and _simulate_takes_mesh():
        kwargs["mesh"] = mesh
    start = time.perf_counter()
    with budget_noted_by_caller():  # each run's summary notes its own
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
