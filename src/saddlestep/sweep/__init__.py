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

The package: `grid` (axes and run names), `cells` (members, cells, one ensemble solve),
`executors` (local, Ray), `driver` (`sweep`: manifest, resume, writing), `collect` (`sweep.nc`).
"""

from .cells import Cell as Cell, CellResult as CellResult, Member as Member, run_cell as run_cell
from .collect import collect as collect, load as load
from .driver import MAX_RUNS as MAX_RUNS, sweep as sweep
from .executors import AbstractExecutor as AbstractExecutor, LocalExecutor as LocalExecutor, RayExecutor as RayExecutor
from .grid import parse_grid as parse_grid, run_name as run_name, SPECIAL_KEYS as SPECIAL_KEYS
