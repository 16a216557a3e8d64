"""Named experiments: a preset turns parameters (and optional user data) into a `Setup`."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import zipfile
from collections.abc import Callable
from typing import Any, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # JAX is imported only when a preset is built: `saddlestep list` stays instant.
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
    - `settle`: when set, the horizon comes from the prediction (`predicted_horizon`) unless the
      user fixed `t_max`: the time a drop takes to finish after its predicted jump.

    `predict` is called at most once (its result is kept), so a preset may ask for the
    prediction to choose the horizon and `saddlestep run` compare with it later for free.
    """

    model: AbstractModel
    task: AbstractTask
    t_max: float
    predict: Callable[[], Prediction] | None = None
    simulate_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    summarize: Callable[[Trajectory], dict[str, Any]] | None = None
    write_extra: Callable[[Trajectory, str], None] | None = None
    settle: float | None = None

    def __post_init__(self):
        # `dataclasses.replace` builds a new Setup from one whose predict is already kept: keep it.
        if self.predict is not None and not hasattr(self.predict, "done"):
            self.predict = _once(self.predict)


def _once(predict: Callable[[], Prediction]) -> Callable[[], Prediction]:
    """`predict`, run on the first call only; `.seconds` is what that call took (wall time)."""
    kept: list[Prediction] = []

    def prediction() -> Prediction:
        if not kept:
            start = time.perf_counter()
            kept.append(predict())
            prediction.seconds = time.perf_counter() - start  # type: ignore[attr-defined]
            prediction.done = True  # type: ignore[attr-defined]
        return kept[0]

    prediction.seconds = 0.0  # type: ignore[attr-defined]
    prediction.done = False  # type: ignore[attr-defined]
    return prediction


# Finite-α corrections put the flow's jumps up to ~40% after their small-α prediction (the
# non-commuting linear case of issue 15 is the worst seen); twice the last predicted jump
# leaves room for them, and a converged run stops early anyway (`converge_tol`).
HORIZON_FACTOR = 2.0


def stretched_save(times, t_max: float) -> dict[str, Any]:
    """Save-grid keywords for a horizon that a weak mode stretches decades past the first drops
    (predicted `times`, the last over 10× the first), which a uniform grid would see in a point
    or two and so could not name their features: a geometric grid from a tenth of the first
    time. Otherwise none (`{}`)."""
    times = np.asarray(times, dtype=float)
    if times.size and 0 < times[0] and times[-1] > 10 * times[0]:
        return {"save_spacing": "log", "save_start": 0.1 * float(times[0]) / float(t_max)}
    return {}


def predicted_horizon(setup: Setup, params: dict[str, Any]) -> float:
    """The horizon a run should use: `setup.t_max`, or, when the user left `t_max` on `auto` and
    the preset sets `settle`, long enough for the last predicted jump to happen and settle:
    `max(t_max, HORIZON_FACTOR · t_last + settle)`. Lower bounds do not set horizons.

    **Returns:** the horizon, physical time.
    """
    if setup.settle is None or setup.predict is None or params.get("t_max") != "auto":
        return float(setup.t_max)
    prediction = setup.predict()
    if not prediction.num_steps or prediction.is_lower_bound:
        return float(setup.t_max)
    last = float(np.max(prediction.times))
    limit = prediction.extra.get("limit_rescaled_times")
    if limit and 0 < prediction.init_scale < 1:
        # Times from the init vary with the seed; their α → 0 limit does not, so a sweep's seeds
        # keep one horizon and share an ensemble (`settle` covers the init's O(1/σ) offset).
        last = float(np.max(limit)) * float(np.log(1.0 / prediction.init_scale))
    if not np.isfinite(last):
        return float(setup.t_max)
    return max(float(setup.t_max), HORIZON_FACTOR * last + float(setup.settle))


def extend_horizon(setup: Setup, params: dict[str, Any]) -> None:
    """Set `setup.t_max` to `predicted_horizon`, keeping a log save grid's start where the preset
    put it (a fraction of its own horizon, not that fraction of the longer one, which could pass
    the first drop). `saddlestep run` and every member of a sweep go through here alike."""
    before = float(setup.t_max)
    setup.t_max = predicted_horizon(setup, params)
    if "save_start" in setup.simulate_kwargs and setup.t_max > before:
        setup.simulate_kwargs = {**setup.simulate_kwargs,
                                 "save_start": setup.simulate_kwargs["save_start"] * before / setup.t_max}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named experiment.

    - `name`, `description`: shown by `saddlestep list`.
    - `defaults`: every parameter `--set` may change, with its default (the type is taken from it).
    - `build(params, init_scale, seed, data)`: returns a `Setup`; `data` is a path or None.
    - `init_scale`: the default α.
    - `data_help`: what `--data` accepts (None: the preset takes no data).
    - `data_sets`: the parameters a `--data` file replaces (the synthetic problem's sizes and
      seeds): refused as `--set` beside `--data`, and not recorded for such a run.
    - `predictor`: what `saddlestep run` sets beside the flow ("" for none): AGF, a closed
      form or a lower bound, and whose.
    - `runtime_s`: wall seconds of the default `saddlestep run` on 2 CPU cores (measured,
      compilation included; shown by `saddlestep list`).
    - `rtol`, `solver`: the defaults of the parameters every preset has: the flow's relative
      tolerance, and the method (a name in `saddlestep.methods.METHODS`). The other two, `t_max`
      and `max_steps`, default to `auto`: the horizon the build computes, and the step budget
      the build sets (else the method's, `saddlestep.methods.MAX_STEPS`).

    `build` makes the model, task, predictor and automatic horizon; `setup` applies what every
    preset shares (`t_max`, `max_steps`, `rtol`, `solver`, discrete training) on top.
    """

    name: str
    description: str
    defaults: dict[str, Any]
    build: Callable[..., Setup]
    init_scale: float = 1e-6
    data_help: str | None = None
    data_sets: tuple[str, ...] = ()
    predictor: str = ""
    runtime_s: float | None = None
    rtol: float = 1e-6
    solver: str = "explicit"

    @property
    def all_defaults(self) -> dict[str, Any]:
        """Every parameter `--set` may change: the preset's own, then `solver`, `rtol`, `t_max`,
        `max_steps`."""
        return {**self.defaults, "solver": self.solver, "rtol": self.rtol, "t_max": "auto", "max_steps": "auto"}

    def parameters(self, overrides: dict[str, str] | None = None, *, data: str | None = None) -> dict[str, Any]:
        """The defaults with `--set key=value` overrides parsed to the defaults' types (with a
        `data` file, an override of a parameter the data replaces is refused)."""
        params = self.all_defaults
        if data is not None:
            self.check_not_set_by_data(overrides or {}, "overrides")
        for key, text in (overrides or {}).items():
            if key not in params and key not in TRAINING:
                raise ValueError(
                    f"overrides {key}: unknown parameter for preset {self.name!r}; "
                    f"expected one of {', '.join(sorted([*params, *TRAINING]))}"
                )
            params[key] = parse_value(key, text, params.get(key, TRAINING.get(key)))
        check_training(params)
        check_tolerances(params)
        check_sizes(params)
        check_memory(params)
        check_horizon(params)
        check_step_budget(params)
        check_solver(params)
        return params

    def check_not_set_by_data(self, keys, where: str) -> None:
        """Refuse `keys` that a `--data` file replaces (`where`: the argument that gave them)."""
        for key in keys:
            if key in self.data_sets:
                raise ValueError(f"{where} {key}: the --data file sets it for preset {self.name!r}; "
                                 f"leave it out (or drop --data for the synthetic problem)")

    def recorded(self, params: dict[str, Any], data: str | None) -> dict[str, Any]:
        """The effective parameters of a run: without those a `data` file replaced."""
        return params if data is None else {k: v for k, v in params.items() if k not in self.data_sets}

    def setup(self, params: dict[str, Any], *, init_scale: float, seed: int, data: str | None = None) -> Setup:
        """`build`, then what every preset shares: a fixed `t_max` replaces the automatic one, the
        flow runs at `rtol` with the `solver` method, or trains discretely when `params` ask.

        **Arguments:** `params`, from `parameters`; `init_scale`, α; `seed`; `data`, a user file.

        **Returns:** the `Setup` that `saddlestep run`, `sweep` and `converge` integrate.
        """
        try:
            setup = self.build(params, init_scale=init_scale, seed=seed, data=data)
        except ValueError as err:
            # A task checks its arrays by their names (`X: expected a 2-dimensional array…`):
            # coming from the user's file, the error names the file's flag too.
            head, colon, _ = str(err).partition(":")
            if data is not None and colon and head in DATA_KEYS:
                raise ValueError(f"data: key {err}") from None
            raise
        kwargs = dict(setup.simulate_kwargs)
        kwargs.setdefault("rtol", params["rtol"])
        if "method" not in kwargs and "solver" not in kwargs:
            kwargs["method"] = params["solver"]
        t_max = setup.t_max if params["t_max"] == "auto" else float(params["t_max"])
        if params.get("max_steps", "auto") != "auto":
            kwargs["max_steps"] = step_budget(params["max_steps"])
        return with_training(dataclasses.replace(setup, t_max=t_max, simulate_kwargs=kwargs), params)


def check_horizon(params: dict[str, Any]) -> None:
    """`t_max` is `auto` or a positive finite number (checked before anything is built)."""
    if "t_max" not in params or params["t_max"] == "auto":
        return
    value = params["t_max"]
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (t > 0 and t < float("inf")):
        raise ValueError(f"overrides t_max: expected a positive number or 'auto', got {value!r}")


def step_budget(value: Any) -> int:
    """`max_steps` as a positive whole number (`200000`, `2e5`), or a `ValueError` naming it."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        n = float("nan")
    if not (n >= 1 and n < float("inf") and n == int(n)):
        raise ValueError(f"overrides max_steps: expected a positive whole number of solver steps or 'auto', "
                         f"got {value!r}")
    return int(n)


def check_step_budget(params: dict[str, Any]) -> None:
    """`max_steps` is `auto` or a positive whole number (checked before anything is built)."""
    if params.get("max_steps", "auto") != "auto":
        step_budget(params["max_steps"])


_TOLERANCES = ("rtol", "atol")
RTOL_RELIABLE = 1e-3


def check_tolerances(params: dict[str, Any]) -> None:
    """Solver tolerances lie in (0, 1); above `RTOL_RELIABLE` step times are not reliable (warned)."""
    import warnings

    for key in _TOLERANCES:
        value = params.get(key)
        if isinstance(value, float) and not 0.0 < value < 1.0:
            raise ValueError(f"overrides {key}: expected a tolerance in (0, 1), e.g. 1e-6, got {value:g}")
    rtol = params.get("rtol")
    if isinstance(rtol, float) and rtol > RTOL_RELIABLE:
        warnings.warn(
            f"overrides rtol={rtol:g}: above {RTOL_RELIABLE:g} the solver's error can exceed a plateau's "
            f"loss differences, so step times will not be reliable",
            stacklevel=2,
        )


_SIZES = ("d", "width", "N", "heads", "n", "m", "p", "vocab_size", "samples", "depth")
# What one float64 array of the largest shape costs, times the copies the solver keeps
# (Runge–Kutta stages, error estimate, saved states, gradients): a deliberate upper estimate.
_COPIES = 16


def check_sizes(params: dict[str, Any]) -> None:
    """Sizes (widths, dimensions, counts) are positive integers (`samples = 0` is the population form)."""
    for key in _SIZES:
        value = params.get(key)
        if key != "samples" and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"overrides {key}: expected a positive integer, got {value}")


def check_memory(params: dict[str, Any]) -> None:
    """Refuse sizes whose arrays cannot fit in this machine's memory, before anything is allocated."""
    sizes = sorted((int(params[k]) for k in _SIZES if isinstance(params.get(k), int) and not isinstance(params.get(k), bool)
                    and params[k] > 0), reverse=True)
    if len(sizes) < 1:
        return
    if isinstance(params.get("vocab_size"), int) and params["vocab_size"] > 0:
        # Co-occurrence statistics are V × V whatever the embedding dimension.
        sizes = [max(sizes[0], params["vocab_size"]), params["vocab_size"]]
    elements = sizes[0] * (sizes[1] if len(sizes) > 1 else 1)
    estimate = 8 * _COPIES * elements
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if estimate > total:
        big = [k for k in _SIZES if isinstance(params.get(k), int) and params[k] in sizes[:2]]
        raise ValueError(
            f"overrides {big[0] if big else 'size'}: arrays of {sizes[0]:,} × {sizes[1] if len(sizes) > 1 else 1:,} float64 "
            f"need about {estimate / 2**30:,.0f} GiB with the solver's copies; this machine has {total / 2**30:.0f} GiB"
        )


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
            kind: type = type(default[0]) if default else float
            values = tuple(kind(v) for v in text.split(",") if v.strip())
            if not values or not all(np.isfinite(v) for v in values):
                raise ValueError
            return values
        return str(text)
    except ValueError:
        what = "comma-separated numbers" if isinstance(default, tuple) else type(default).__name__
        raise ValueError(f"overrides {key}: expected {what}, got {text!r}") from None


# The arrays a preset's --data file may hold (every preset's keys).
DATA_KEYS = frozenset({"X", "Y", "y", "Sxx", "Syx", "Syy", "P", "template", "teacher_w", "teacher_a"})

def sample_scales(X: Any, Y: Any) -> tuple[float, float]:
    """The root mean squares of a sample's X and Y, refusing data a network cannot learn from:
    squares that overflow float64 (the loss would be inf from the start), X ≡ 0 or Y ≡ 0."""
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        rms_x, rms_y = float(np.sqrt(np.mean(X**2))), float(np.sqrt(np.mean(Y**2)))
    if not (math.isfinite(rms_x) and math.isfinite(rms_y)):
        raise ValueError(f"data: X and Y overflow float64 in the loss (|X| up to {np.abs(X).max():.3g}, "
                         f"|Y| up to {np.abs(Y).max():.3g}); rescale the data")
    if not rms_x > 0:
        raise ValueError("data: X is zero; a network of it predicts nothing")
    if not rms_y > 0:
        raise ValueError("data: Y is zero; there is nothing to learn")
    return rms_x, rms_y


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def load_npz(path: str, *, required: tuple[str, ...] = (), one_of: tuple[tuple[str, ...], ...] = ()) -> dict[str, np.ndarray]:
    """Read a user's `.npz` (or a `.npy` where one array is enough), with one clear error for a
    missing, truncated, foreign or text file.

    **Arguments:**

    - `path`: the file.
    - `required`: keys that must be present.
    - `one_of`: groups of keys of which at least one whole group must be present.

    **Returns:** `{key: array}`, every array numeric and finite.
    """
    needs = _needs(required, one_of)
    if os.path.isdir(path):
        raise ValueError(f"data: {path!r} is a folder; expected an .npz file with keys {needs}")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise ValueError(f"data: no such file {path!r}") from None
    except OSError as err:
        raise ValueError(f"data: cannot read {path!r} ({err.strerror or err})") from None
    if head.startswith(_NPY_MAGIC):
        data = _load_npy(path, required, one_of, needs)
    elif head.startswith(_ZIP_MAGIC) or head[:2] == b"PK":
        data = _load_zip(path, needs)
    else:
        raise ValueError(f"data: {path!r} is {_what(head)}, not an .npz file; expected keys {needs} "
                         f"(write it with numpy.savez)")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"data: {path!r} lacks key(s) {', '.join(missing)} (has: {', '.join(sorted(data)) or 'none'})")
    if one_of and not any(all(k in data for k in group) for group in one_of):
        groups = " or ".join("(" + ", ".join(g) + ")" for g in one_of)
        raise ValueError(f"data: {path!r} needs keys {groups} (has: {', '.join(sorted(data)) or 'none'})")
    for k, v in data.items():
        if v.dtype.kind not in "fiub":
            raise ValueError(f"data: key {k!r} in {path!r} is not numeric (dtype {v.dtype})")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"data: key {k!r} in {path!r} contains NaN or infinite values")
    return data


def _needs(required, one_of) -> str:
    if required:
        return ", ".join(required)
    return " or ".join("(" + ", ".join(g) + ")" for g in one_of) or "(any)"


def _what(head: bytes) -> str:
    if not head:
        return "empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of another format"
    first = text.splitlines()[0] if text.splitlines() else ""
    if "," in first or "\t" in first:
        return "a text (CSV) file"
    return "a text file"


def _load_npy(path, required, one_of, needs) -> dict[str, np.ndarray]:
    singles = [required[0]] if len(required) == 1 else [g[0] for g in one_of if len(g) == 1]
    if len(singles) != 1:
        groups = [list(required)] if required else [list(g) for g in one_of]
        how = " or ".join(f"numpy.savez(path, {', '.join(f'{k}=…' for k in g)})" for g in groups)
        raise ValueError(f"data: {path!r} is a single .npy array; this preset needs an .npz with keys {needs} "
                         f"({how})")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"data: {path!r} holds Python objects, not numbers; save numeric arrays") from None
        raise ValueError(f"data: {path!r} is not a readable .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"data: {path!r} is not a readable .npy file ({err})") from None
    return {singles[0]: array}


def _load_zip(path, needs) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"data: {path!r} is not a readable .npz file ({err})") from None
    foreign = [m for m in members if not m.endswith(".npy")]
    if foreign or not members:
        raise ValueError(f"data: {path!r} is a zip archive but not an .npz (members such as "
                         f"{(foreign or ['none'])[0]!r} are not .npy arrays); expected keys {needs}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"data: {path!r} holds Python objects, not numbers; save numeric arrays") from None
        raise ValueError(f"data: {path!r} is not a readable .npz file ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"data: {path!r} is not a readable .npz file ({err})") from None


SOLVERS = ("explicit", "implicit", "auto")
# Every preset also trains discretely on request (`--set optimizer=adam --set learning_rate=1e-3`);
# the keys appear in a run's parameters only when given, so a flow run's stay as they were.
TRAINING = {"optimizer": "gd", "learning_rate": 0.01}
OPTIMIZERS = ("gd", "sgd", "adam")


def check_training(params: dict[str, Any]) -> None:
    """`optimizer` names one of `OPTIMIZERS` and comes with a positive `learning_rate`."""
    if "optimizer" in params and params["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"overrides optimizer: expected one of {', '.join(OPTIMIZERS)}, got {params['optimizer']!r}")
    if "optimizer" in params and "learning_rate" not in params:
        raise ValueError("overrides optimizer: needs learning_rate=… as well (the step size sets the time axis)")
    if "learning_rate" in params and not params["learning_rate"] > 0:
        raise ValueError(f"overrides learning_rate: expected a positive number, got {params['learning_rate']:g}")


def with_training(setup: Setup, params: dict[str, Any]) -> Setup:
    """`setup` trained by the discrete optimizer that `params` asks for (unchanged without one)."""
    if "learning_rate" not in params:
        return setup
    from ..methods import Discrete

    flow_only = ("solver", "method", "max_steps", "linear_solver", "stiffness", "count_evals")
    kwargs = {k: v for k, v in setup.simulate_kwargs.items() if k not in flow_only}
    method = Discrete(params["learning_rate"], params.get("optimizer", TRAINING["optimizer"]))
    return dataclasses.replace(setup, simulate_kwargs={**kwargs, "method": method})


def check_solver(params: dict) -> None:
    """The `solver` parameter names a method: `explicit` (Tsit5), `implicit` (Kvaerno5 with
    Newton on I + γh∇²L) or `auto` (explicit until the flow turns stiff); see `simulate`."""
    value = params.get("solver", SOLVERS[0])
    if value not in SOLVERS:
        raise ValueError(f"overrides solver: expected one of {', '.join(SOLVERS)}, got {value!r}")


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
