"""`Prediction`: the one shape of every predictor's output, AGF or closed form."""

from __future__ import annotations

import dataclasses
import json
import os
import math
from typing import Any

import numpy as np
from .clock import unrescale


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted staircase: one entry per loss step, in the order the steps happen.

    **Fields:**

    - `method`: `"agf"` or `"closed-form:NAME"`.
    - `times`: physical jump times t_k (gradient-flow time, learning rate 1).
    - `rescaled_times`: t_k / ln(1/α).
    - `losses`: the loss on the plateau after step k.
    - `order`: the feature label learned at step k (e.g. `"mode 2"`, `"β[0]"`).
    - `initial_loss`: the loss on the first plateau (before any step).
    - `init_scale`: the α the times refer to (`math.nan` when the prediction is α-free).
    - `plateau_parameters`: optionally, the parameters (any pytree) on each plateau.
    - `extra`: method-specific numbers (e.g. utility maxima, lower bounds).
    """

    method: str
    times: np.ndarray
    rescaled_times: np.ndarray
    losses: np.ndarray
    order: list[str]
    initial_loss: float = math.nan
    init_scale: float = math.nan
    plateau_parameters: list[Any] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("times", "rescaled_times", "losses"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float).reshape(-1))
        object.__setattr__(self, "order", [str(o) for o in self.order])
        n = {len(self.times), len(self.rescaled_times), len(self.losses), len(self.order)}
        if len(n) != 1:
            raise ValueError(
                "Prediction: times, rescaled_times, losses and order must have one entry per step"
            )

    @property
    def num_steps(self) -> int:
        return len(self.times)

    @property
    def is_lower_bound(self) -> bool:
        """Whether the times are lower bounds, not predictions: `extra["lower_bound"]` is set
        (the degree-3 closed forms), the method says so, or it is the deep escape time
        (`closed-form:escape`, a lower bound: alignment costs time first)."""
        return bool(self.extra.get("lower_bound")) or "lower-bound" in self.method or self.method == "closed-form:escape"

    @classmethod
    def from_rescaled(
        cls, method, rescaled_times, losses, order, *, init_scale, **kwargs
    ) -> Prediction:
        """Build from rescaled times τ_k, with physical times t_k = τ_k ln(1/α)."""
        tau = np.asarray(rescaled_times, dtype=float)
        return cls(method, unrescale(tau, init_scale), tau, losses, order, init_scale=init_scale, **kwargs)

    def to_json(self) -> dict:
        """The `prediction.json` contract: method, times, rescaled_times, losses, order; for AGF
        also `extra`: the neurons activated and deactivated at each step (the full lists behind
        labels such as "27 neurons: 1–2, 4–7, …"), how its utility phases were solved, the
        activations dropped as too small to be steps (`minor`) and the cost phases that split
        near-copies (`split`)."""
        out = {
            "method": self.method,
            "times": [float(t) for t in self.times],
            "rescaled_times": [float(t) for t in self.rescaled_times],
            "losses": [float(v) for v in self.losses],
            "order": list(self.order),
        }
        if "activated" in self.extra:
            extra = {k: self.extra[k] for k in ("activated", "deactivated", "phases", "minor", "split") if k in self.extra}
            out["extra"] = json.loads(json.dumps(extra, default=_plain))
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    @classmethod
    def from_json(cls, doc: dict) -> Prediction:
        """The inverse of `to_json`. The file keeps no α and no first plateau: α comes back from
        the times, t_k / τ_k = ln(1/α) (NaN where no step has both); `initial_loss` is NaN, so
        `compare` takes the first plateau from the flow.

        **Arguments:** `doc`, a `prediction.json` document (a dict).

        **Returns:** the `Prediction`.
        """
        missing = [key for key in ("method", "times", "rescaled_times", "losses", "order") if key not in doc]
        if missing:
            raise ValueError(f"prediction: missing key(s) {', '.join(missing)} (expected a prediction.json document)")
        t = np.asarray(doc["times"], dtype=float)
        tau = np.asarray(doc["rescaled_times"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = t / tau
        logs = logs[np.isfinite(logs) & (logs > 0)]
        alpha = float(np.exp(-np.median(logs))) if logs.size else math.nan
        return cls(str(doc["method"]), t, tau, doc["losses"], doc["order"], init_scale=alpha,
                   extra=dict(doc.get("extra", {})))

    @classmethod
    def load(cls, path: str) -> Prediction:
        """A `prediction.json` file written by `saddlestep run` or `predict` (`from_json`); `path`
        may be the run's folder."""
        if os.path.isdir(path):
            path = os.path.join(path, "prediction.json")
        if not os.path.isfile(path):
            raise ValueError(f"path: no such file {path!r} (expected a prediction.json or the folder holding it)")
        with open(path, encoding="utf-8") as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"path: {path!r} is not a JSON file ({err.msg})") from None
            except UnicodeDecodeError:
                raise ValueError(f"path: {path!r} is a binary file, not a prediction.json") from None
        if not isinstance(doc, dict):
            raise ValueError(f"path: {path!r} does not hold a prediction (expected a JSON object)")
        return cls.from_json(doc)


def _plain(value):
    """NumPy scalars and arrays as JSON numbers and lists."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
