"""Checks of the `--set` values that several presets share."""

from __future__ import annotations


def check_dimension(params, limit: int, what: str) -> int:
    d = params["d"]
    if d < 1:
        raise ValueError(f"overrides d: expected a positive embedding dimension, got {d}")
    if d > limit:
        # The default d can be the one too large (a small vocabulary in --data): say what to pass.
        raise ValueError(f"overrides d: the embedding dimension d = {d} exceeds {what}; pass d={limit} or less")
    return d


def check_choice(params, allowed):
    if params["loss"] not in allowed:
        raise ValueError(f"overrides loss: expected one of {', '.join(allowed)}, got {params['loss']!r}")
    return params["loss"]
