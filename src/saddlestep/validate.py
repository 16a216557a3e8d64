"""Argument checks shared by the library and the command line (no JAX: they answer at once).

Each raises `ValueError("argument: expected …, got …")` naming the argument it was given, so
the command line can pass its flag's name (`--init-scale`) and the library its own (`init_scale`).
"""

from __future__ import annotations

import math

SEED_MAX = 2**32 - 1  # jax.random.key takes a 32-bit seed without folding it


def check_positive(name: str, value) -> float:
    """A positive finite number, or a `ValueError` naming the argument."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return v


def check_positive_int(name: str, value) -> int:
    """A size argument (width, dimension, depth): a positive integer (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return value


def check_init_scale(value, argument: str = "init_scale") -> float:
    """α, checked: the small-initialization theory (and every predictor) needs 0 < α < 1."""
    alpha = check_positive(argument, value)
    if alpha >= 1:
        raise ValueError(f"{argument}: expected a small init scale 0 < α < 1 (the theory needs α < 1), got {value!r}")
    return alpha


def check_seed(value, argument: str = "seed") -> int:
    """A seed, checked: an integer in [0, 2³² − 1] (a float such as 2.7 is refused, not truncated)."""
    expected = f"{argument}: expected an integer in [0, {SEED_MAX}], got {value!r}"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        if not float(value).is_integer():
            raise ValueError(expected)
        value = int(value)
    try:
        s = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if not 0 <= s <= SEED_MAX:
        raise ValueError(expected)
    return s
