"""The grid of a sweep: axes parsed from `KEY=V1,V2|A:B`, typed from the preset's defaults, and run names."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..presets import get_preset, Preset
from ..presets.base import parse_value


SPECIAL_KEYS = ("init_scale", "seed")


_FORMAT = "saddlestep.sweep/1"


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
        raise ValueError("grid: expected at least one axis, e.g. seed=0:8")
    grid: dict[str, list] = {}
    for item in specs:
        key, sep, spec = str(item).partition("=")
        key, spec = key.strip(), spec.strip()
        if not sep or not key:
            raise ValueError(f"grid: expected key=v1,v2 or key=a:b, got {item!r}")
        if key in grid:
            raise ValueError(f"grid {key}: given twice; give each axis once")
        if not spec:
            raise ValueError(f"grid {key}: no values; expected v1,v2 or a:b")
        grid[key] = _parse_axis(key, spec, preset)
    return grid


# The most runs one sweep takes.
MAX_RUNS = 100_000


def _parse_axis(key: str, spec: str, preset: Preset | None) -> list:
    default = _default_for(key, preset)
    is_tuple = isinstance(default, tuple)
    if ":" in spec and not is_tuple:
        if not (isinstance(default, int) and not isinstance(default, bool)) and default is not None:
            raise ValueError(f"grid {key}: a range a:b needs an integer parameter; list values as v1,v2")
        lo, _, hi = spec.partition(":")
        try:
            lo_i, hi_i = int(lo), int(hi)
        except ValueError:
            raise ValueError(f"grid {key}: expected an integer range a:b, got {spec!r}") from None
        if hi_i <= lo_i:
            raise ValueError(f"grid {key}: empty range {spec!r}; expected a:b with a < b")
        if hi_i - lo_i > MAX_RUNS:
            # Refused before the values are built: a typo of a few zeros would take minutes and
            # gigabytes to reach the product's check.
            raise ValueError(f"grid {key}: {spec!r} is {hi_i - lo_i:,} values, more than a sweep's {MAX_RUNS:,} "
                             "runs; check the range (a:b is b − a values)")
        texts = [str(i) for i in range(lo_i, hi_i)]
    else:
        texts = [t.strip() for t in spec.split(";" if is_tuple else ",")]
        if any(not t for t in texts):
            raise ValueError(f"grid {key}: empty value in {spec!r}")
    values = [_typed(key, t, default) for t in texts]
    if len({_label(v) for v in values}) != len(values):
        raise ValueError(f"grid {key}: repeated value in {spec!r}")
    return values


def _default_for(key: str, preset: Preset | None):
    if key == "init_scale":
        return 1.0
    if key == "seed":
        return 0
    if preset is None:
        return None
    if key not in preset.all_defaults:
        known = ", ".join(sorted([*preset.all_defaults, *SPECIAL_KEYS]))
        raise ValueError(f"grid {key}: unknown parameter for preset {preset.name!r}; expected one of {known}")
    return preset.all_defaults[key]


def _typed(key: str, value, default):
    """`value` (text or already typed) as the type of `default`, with a `--grid` error."""
    if default is None:
        return value
    text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    try:
        typed = parse_value(key, text, default)
    except ValueError:
        kind = "comma-separated numbers" if isinstance(default, tuple) else type(default).__name__
        raise ValueError(f"grid {key}: expected {kind}, got {text!r}") from None
    if key == "init_scale":
        from ..validate import check_init_scale

        check_init_scale(typed, "grid init_scale")  # 0 < α < 1, as `run --init-scale` asks
    if key == "seed":
        from ..validate import check_seed

        check_seed(typed, "grid seed")  # [0, 2³² − 1], as `run --seed` asks
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
