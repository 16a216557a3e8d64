"""Named experiments: a preset turns parameters (and optional user data) into a `Setup`."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ..models.base import AbstractModel
from ..prediction import Prediction
from ..tasks.base import AbstractTask
from ..trajectory import Trajectory


@dataclasses.dataclass
class Setup:
    """Everything `saddlestep run` needs for one experiment.

    - `model`, `task`: what to integrate.
    - `t_max`: the horizon.
    - `predict`: returns the theory's `Prediction` for this model and task (None: no predictor).
    - `simulate_kwargs`: extra keyword arguments for `simulate` (solver, rtol, n_save, …).
    - `summarize`: extra entries for `summary.json`'s `observables_final`, from the trajectory.
    - `write_extra`: writes preset-specific files into the run folder (called with a temporary
      folder that is moved into place whole).
    """

    model: AbstractModel
    task: AbstractTask
    t_max: float
    predict: Callable[[], Prediction] | None = None
    simulate_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    summarize: Callable[[Trajectory], dict[str, Any]] | None = None
    write_extra: Callable[[Trajectory, str], None] | None = None


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named experiment.

    - `name`, `description`: shown by `saddlestep list`.
    - `defaults`: every parameter `--set` may change, with its default (the type is taken from it).
    - `build(params, init_scale, seed, data)`: returns a `Setup`; `data` is a path or None.
    - `init_scale`: the default α.
    - `data_help`: what `--data` accepts (None: the preset takes no data).
    """

    name: str
    description: str
    defaults: dict[str, Any]
    build: Callable[..., Setup]
    init_scale: float = 1e-6
    data_help: str | None = None

    def parameters(self, overrides: dict[str, str] | None = None) -> dict[str, Any]:
        """The defaults with `--set key=value` overrides parsed to the defaults' types."""
        params = dict(self.defaults)
        for key, text in (overrides or {}).items():
            if key not in params:
                raise ValueError(
                    f"--set {key}: unknown parameter for preset {self.name!r}; "
                    f"expected one of {', '.join(sorted(params))}"
                )
            params[key] = parse_value(key, text, params[key])
        return params


def parse_value(key: str, text: str, default: Any) -> Any:
    """Parse `text` to the type of `default` (bool, int, float, str, or a tuple of numbers)."""
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if not np.isfinite(value):
                raise ValueError
            return value
        if isinstance(default, tuple):
            kind = type(default[0]) if default else float
            values = tuple(kind(v) for v in text.split(",") if v.strip())
            if not values or not all(np.isfinite(v) for v in values):
                raise ValueError
            return values
        return str(text)
    except ValueError:
        kind = "comma-separated numbers" if isinstance(default, tuple) else type(default).__name__
        raise ValueError(f"--set {key}: expected {kind}, got {text!r}") from None


def load_npz(path: str, *, required: tuple[str, ...] = (), one_of: tuple[tuple[str, ...], ...] = ()) -> dict[str, np.ndarray]:
    """Read a user's `.npz`, with one clear error for a missing, truncated or foreign file.

    **Arguments:**

    - `path`: the file.
    - `required`: keys that must be present.
    - `one_of`: groups of keys of which at least one whole group must be present.
    """
    if not os.path.exists(path):
        raise ValueError(f"--data: no such file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"--data: {path!r} is not a readable .npz file ({err})") from None
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"--data: {path!r} lacks key(s) {', '.join(missing)} (has: {', '.join(sorted(data)) or 'none'})")
    if one_of and not any(all(k in data for k in group) for group in one_of):
        groups = " or ".join("(" + ", ".join(g) + ")" for g in one_of)
        raise ValueError(f"--data: {path!r} needs keys {groups} (has: {', '.join(sorted(data)) or 'none'})")
    for k, v in data.items():
        if v.dtype.kind not in "fiub":
            raise ValueError(f"--data: key {k!r} in {path!r} is not numeric (dtype {v.dtype})")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"--data: key {k!r} in {path!r} contains NaN or infinite values")
    return data


SOLVERS = ("explicit", "implicit", "auto")


def solver_choice(params: dict) -> str:
    """The preset's `solver` parameter, checked: `explicit` (Tsit5), `implicit` (Kvaerno5 with
    Newton on I + γh∇²L) or `auto` (explicit until the flow turns stiff); see `simulate`."""
    value = params["solver"]
    if value not in SOLVERS:
        raise ValueError(f"--set solver: expected one of {', '.join(SOLVERS)}, got {value!r}")
    return value


_REGISTRY: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add a preset to the registry that `saddlestep list` shows."""
    if preset.name in _REGISTRY:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _REGISTRY[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a `ValueError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"preset: unknown preset {name!r}; expected one of {', '.join(sorted(_REGISTRY))}") from None


def all_presets() -> dict[str, Preset]:
    return dict(_REGISTRY)
