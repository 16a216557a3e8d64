"""Executors: where cells run — in this process (over local devices) or on a Ray cluster."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Sequence

from .cells import _local_mesh, _run_cell_remote, Cell, CellResult, run_cell


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
            raise ValueError("executor ray: Ray is not installed; pip install 'saddlestep[ray]'") from None
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
    raise ValueError(f"executor: expected 'local' or 'ray', got {executor!r}")
