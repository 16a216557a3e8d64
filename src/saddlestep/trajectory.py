"""`Trajectory`: what one simulation (or a batch of them) recorded."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .outputs import atomic_write_bytes as atomic_write_bytes, atomic_write_text as atomic_write_text

# The names of `saddlestep.flow.RESULTS`, in its order (kept here so that reading files needs no solver).
STATUSES = ("converged", "t_max", "max_steps", "diverged")


@dataclasses.dataclass
class Trajectory:
    """Loss, observables and parameters along a gradient flow or a discrete training run.

    Arrays carry a leading batch axis when the run was an ensemble (`batch_size` is then not
    None). Save-grid entries after a run stopped (converged, diverged) are NaN.

    **Fields:**

    - `times`: physical times of the save grid (learning rate × steps for discrete training).
    - `loss`: the loss on the save grid.
    - `observables`: name → values on the save grid (leading axes: [batch,] time): the task's
      and those of `simulate(..., observables=fn)`; saved as `observables/NAME` in the `.npz`.
    - `init_scale`: α (a float, or an array over the batch).
    - `status`: `"converged"`, `"t_max"`, `"max_steps"` or `"diverged"` (a list over the batch).
    - `t_final`: the time at which the run stopped.
    - `stats`: solver statistics: `steps`, `accepted`, `rejected` (arrays over the batch).
    - `method`: the solver or optimizer that ran.
    - `feature_labels`: labels of `observables["features"]`.
    - `snapshot_times`, `snapshots`: parameters (the model, leaves stacked over time) on a coarse grid.
    - `final`: the model at `t_final`.
    - `learning_rate`: the step size of a discrete run (None for a flow).
    - `step_times`, `step_loss`: the loss at every step the ODE solver took (None for discrete
      runs). The solver's steps are short exactly where the loss drops, so this record resolves
      drops that fall between two points of the save grid; `detect_steps` uses it. NaN-padded
      in a batch.
    - `phases`: which solver ran when, `[{"solver", "t_start", "t_end", "steps"}]` (a list of
      those over the batch; None when read from a file).
    - `kappa`: the model's degree κ (`models.base.degree`), which sets the rescaled clock
      (t·α^{κ−2} for κ > 2); None where unknown. Kept in the file, so a trajectory read back
      without `like` (its models then plain arrays) is still rescaled by it.
    """

    times: np.ndarray
    loss: np.ndarray
    observables: dict[str, np.ndarray]
    init_scale: Any
    status: Any
    t_final: Any
    stats: dict[str, Any]
    method: str
    feature_labels: list[str] = dataclasses.field(default_factory=list)
    snapshot_times: np.ndarray | None = None
    snapshots: Any = None
    final: Any = None
    learning_rate: float | None = None
    step_times: np.ndarray | None = None
    step_loss: np.ndarray | None = None
    phases: Any = None
    kappa: float | None = None

    @property
    def degree(self) -> float | None:
        """κ: of the model the trajectory holds (`final`, `snapshots`), else `kappa`."""
        from .models.base import AbstractModel, degree

        for model in (self.final, self.snapshots):
            if isinstance(model, AbstractModel):
                return degree(model)
        return self.kappa

    @property
    def batch_size(self) -> int | None:
        return None if self.loss.ndim == 1 else self.loss.shape[0]

    @property
    def rescaled_times(self) -> np.ndarray:
        """t / ln(1/α) (learning rate already folded into t)."""
        alpha = np.asarray(self.init_scale, dtype=float)
        log_inv = np.where(alpha < 1, np.log(1.0 / np.minimum(alpha, 1.0)), np.nan)  # undefined for α ≥ 1
        return self.times / (log_inv[..., None] if np.ndim(log_inv) else log_inv)

    @property
    def label(self) -> str:
        """What ran, for legends: the solver (`"Tsit5"`), or optimizer and step (`"adam, lr 1e-3"`)."""
        if self.learning_rate is None:
            return self.method
        from .methods import format_rate

        return f"{self.method}, lr {format_rate(self.learning_rate)}"

    def __getitem__(self, i: int) -> Trajectory:
        """Member `i` of a batched trajectory."""
        if self.batch_size is None:
            raise TypeError("Trajectory: only a batched trajectory can be indexed")
        pick = lambda x: None if x is None else jax.tree.map(lambda a: np.asarray(a)[i], x)
        return Trajectory(
            times=self.times[i],
            loss=self.loss[i],
            observables={k: v[i] for k, v in self.observables.items()},
            init_scale=float(np.asarray(self.init_scale)[i]),
            status=self.status[i],
            t_final=float(np.asarray(self.t_final)[i]),
            stats={k: np.asarray(v)[i].item() for k, v in self.stats.items()},
            method=self.method,
            feature_labels=self.feature_labels,
            snapshot_times=None if self.snapshot_times is None else self.snapshot_times[i],
            snapshots=pick(self.snapshots),
            final=pick(self.final),
            learning_rate=self.learning_rate,
            step_times=None if self.step_times is None else _finite_row(self.step_times[i], self.step_times[i]),
            step_loss=None if self.step_loss is None else _finite_row(self.step_loss[i], self.step_times[i]),
            phases=None if self.phases is None else self.phases[i],
            kappa=self.degree,
        )

    def snapshot(self, i: int) -> Any:
        """The model at `snapshot_times[i]` (single trajectories)."""
        if self.batch_size is not None:
            raise TypeError("Trajectory: index the batch first, e.g. trajectory[0].snapshot(i)")
        alpha = self.snapshots.init_scale
        params = eqx.tree_at(lambda m: m.init_scale, self.snapshots, None, is_leaf=lambda x: x is None)
        picked = jax.tree.map(lambda a: a[i], params)
        return eqx.tree_at(lambda m: m.init_scale, picked, alpha, is_leaf=lambda x: x is None)

    def valid(self) -> np.ndarray:
        """Mask of save-grid entries that were reached."""
        return np.isfinite(self.times) & np.isfinite(self.loss)

    # ---------------------------------------------------------------- tables
    def to_dataframe(self):
        """The save grid as a pandas `DataFrame`, one row per point reached.

        **Returns:** columns `t`, `rescaled_t`, `loss`, then one per observable (`name` for a
        scalar, `name[j]` or `name[i,j]` per entry of an array); a batch stacks its members'
        rows with columns `member` and `init_scale` first.
        """
        pd = _require("pandas", "to_dataframe")
        if self.batch_size is not None:
            frames = []
            for i in range(self.batch_size):
                frame = self[i].to_dataframe()
                frame.insert(0, "init_scale", float(np.asarray(self.init_scale)[i]))
                frame.insert(0, "member", i)
                frames.append(frame)
            return pd.concat(frames, ignore_index=True)
        keep = np.isfinite(self.times)
        columns = {"t": self.times[keep], "rescaled_t": np.asarray(self.rescaled_times)[keep], "loss": self.loss[keep]}
        for name, values in self.observables.items():
            values = np.asarray(values)[keep]
            if values.ndim == 1:
                columns[name] = values
                continue
            for index in np.ndindex(*values.shape[1:]):
                columns[f"{name}[{','.join(map(str, index))}]"] = values[(slice(None), *index)]
        return pd.DataFrame(columns)

    def to_xarray(self):
        """The save grid as an xarray `Dataset` (needs xarray).

        **Returns:** data variables `loss` and each observable over dims `([member,] time, …)`
        (`features` over `feature`, labelled by `feature_labels`; other axes `NAME_dimK`),
        coordinates `t`, `rescaled_t` (NaN where a run had stopped) and, for a batch,
        `init_scale` over `member`; the method, status and t_final as attributes.
        """
        xr = _require("xarray", "to_xarray")
        lead = ("time",) if self.batch_size is None else ("member", "time")
        data = {"loss": (lead, self.loss)}
        coords = {"t": (lead, self.times), "rescaled_t": (lead, np.asarray(self.rescaled_times))}
        for name, values in self.observables.items():
            values = np.asarray(values)
            extra = values.shape[len(lead):]
            if name == "features" and len(extra) == 1 and len(self.feature_labels) == extra[0]:
                dims = ("feature",)
                coords["feature"] = ("feature", list(self.feature_labels))
            else:
                dims = tuple(f"{name.replace('/', '_')}_dim{k}" for k in range(len(extra)))
            data[name] = (lead + dims, values)
        if self.batch_size is not None:
            coords["init_scale"] = ("member", np.asarray(self.init_scale, dtype=float))
        attrs = {"method": self.method, "status": self.status if isinstance(self.status, str) else list(self.status),
                 "t_final": self.t_final if np.ndim(self.t_final) == 0 else np.asarray(self.t_final)}
        if self.batch_size is None:
            attrs["init_scale"] = float(self.init_scale)
        if self.learning_rate is not None:
            attrs["learning_rate"] = self.learning_rate
        return xr.Dataset(data, coords=coords, attrs=attrs)

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write an `.npz` atomically (a temporary file in the same folder, then a rename)."""
        arrays = {
            "times": self.times,
            "rescaled_times": self.rescaled_times,
            "loss": self.loss,
            "init_scale": np.asarray(self.init_scale, dtype=float),
            "t_final": np.asarray(self.t_final, dtype=float),
        }
        for k, v in self.observables.items():
            arrays[f"observables/{k}"] = np.asarray(v)
        for k, v in self.stats.items():
            arrays[f"stats/{k}"] = np.asarray(v)
        # Added keys (older files lack them and still load): the solver-step record.
        if self.step_times is not None:
            arrays["step_times"] = np.asarray(self.step_times, dtype=float)
            arrays["step_loss"] = np.asarray(self.step_loss, dtype=float)
        if self.snapshot_times is not None:
            arrays["snapshot_times"] = np.asarray(self.snapshot_times)
        for prefix, tree in (("snapshots", self.snapshots), ("final", self.final)):
            if tree is not None:
                for j, leaf in enumerate(jax.tree.leaves(eqx.filter(tree, eqx.is_array))):
                    arrays[f"{prefix}/{j}"] = np.asarray(leaf)
        meta = {
            "format": "saddlestep.trajectory/1",
            "status": self.status,
            "method": self.method,
            "feature_labels": self.feature_labels,
            "learning_rate": self.learning_rate,
            "kappa": self.degree,
        }
        arrays["meta"] = np.asarray(json.dumps(meta))
        atomic_write_bytes(path, _npz_bytes(arrays))

    @classmethod
    def load(cls, path: str | os.PathLike, like: Any = None) -> Trajectory:
        """Read a trajectory written by `save`; `like` (a model) restores `final` and `snapshots`.
        `path` may be a run's folder (`saddlestep run --out`): its `trajectory.npz` is read.

        Raises a `ValueError` naming the file if it is missing, truncated or not a trajectory.
        """
        if os.path.isdir(path):
            inside = os.path.join(path, "trajectory.npz")
            if not os.path.isfile(inside):
                raise ValueError(f"{path}: a folder without trajectory.npz (expected a run's folder or the .npz "
                                 f"that Trajectory.save writes)")
            path = inside
        try:
            with open(path, "rb") as f:
                zipped = f.read(4) == b"PK\x03\x04"
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except OSError as err:
            raise ValueError(f"{path}: cannot read it ({err.strerror or err})") from None
        if not zipped:
            raise ValueError(f"{path}: not a trajectory file (expected the .npz that Trajectory.save writes)")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npz file ({err})") from None
        try:
            meta = json.loads(str(data["meta"]))
            assert meta.get("format") == "saddlestep.trajectory/1"
        except (KeyError, AssertionError, json.JSONDecodeError):
            raise ValueError(f"{path}: not a saddlestep trajectory file") from None

        def tree(prefix):
            leaves = [data[f"{prefix}/{j}"] for j in range(sum(k.startswith(prefix + "/") for k in data))]
            if not leaves:
                return None
            if like is None:
                return leaves
            params, static = eqx.partition(like, eqx.is_array)
            return eqx.combine(jax.tree.unflatten(jax.tree.structure(params), leaves), static)

        init_scale = data["init_scale"]
        return cls(
            times=data["times"],
            loss=data["loss"],
            observables={k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("observables/")},
            init_scale=float(init_scale) if init_scale.ndim == 0 else init_scale,
            status=meta["status"],
            t_final=float(data["t_final"]) if data["t_final"].ndim == 0 else data["t_final"],
            stats={k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("stats/")},
            method=meta["method"],
            feature_labels=meta["feature_labels"],
            snapshot_times=data.get("snapshot_times"),
            snapshots=tree("snapshots"),
            final=tree("final"),
            learning_rate=meta["learning_rate"],
            step_times=data.get("step_times"),
            step_loss=data.get("step_loss"),
            kappa=meta.get("kappa"),  # older files lack it
        )


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"Trajectory.{what} needs {module}: install it with `pip install {module}`") from None


def _finite_row(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    # One member's record without the batch's NaN padding.
    return np.asarray(values)[np.isfinite(np.asarray(times))]


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


