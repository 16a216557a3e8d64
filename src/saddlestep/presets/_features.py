"""What the degree-3 presets (`modular`, `attention`) share: AGF steps labelled and merged by the
task feature they learn, the `predictor` choice (AGF or the closed-form lower bounds), and the
feature-merged summary and comparison."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..clock import rescale
from ..prediction import Prediction

# ----------------------------------------------------------------------------- feature merging
def label_and_merge(pred: Prediction, task, model) -> Prediction:
    """Label each AGF step by the task feature learned most across it (`steps.feature_change`
    between consecutive plateau models, the first against the initial `model`), then merge
    consecutive steps with the same feature, timed by the first (see `feature_steps`)."""
    from ..steps import feature_change
    from ..tasks.base import evaluate_observables  # (not at import: `saddlestep list` loads no JAX)

    if not pred.num_steps or pred.plateau_parameters is None:
        return pred
    records = [evaluate_observables(task, m) for m in [model, *pred.plateau_parameters]]
    labels = task.feature_labels(pred.plateau_parameters[0])
    order = [labels[int(np.argmax(feature_change(a, b)))] for a, b in zip(records[:-1], records[1:])]
    keep_t, keep_l, keep_o, keep_p, first_l = [], [], [], [], []
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and order[j + 1] == order[k]:
            j += 1
        keep_t.append(pred.times[k])  # its first activation, as `feature_steps` times the flow's
        first_l.append(float(pred.losses[k]))
        keep_l.append(pred.losses[j])
        keep_o.append(order[k])
        keep_p.append(pred.plateau_parameters[j])
        k = j + 1
    alpha = pred.init_scale
    extra = dict(pred.extra, activation_times=[float(t) for t in pred.times], activation_features=order,
                 first_activation_losses=first_l)
    return Prediction(pred.method, keep_t, rescale(keep_t, alpha), keep_l, keep_o,
                      initial_loss=pred.initial_loss, init_scale=alpha, plateau_parameters=keep_p, extra=extra)


def predictor(model, task, params, closed_form, cache):
    def predict() -> Prediction:
        bound = closed_form()
        if params["predictor"] == "lower-bound":
            cache["prediction"] = bound
            return bound
        from .. import agf  # the engine is only needed when predicting

        pred = label_and_merge(agf.predict(model, task.as_regression()), task, model)
        extra = dict(pred.extra, lower_bounds=[float(t) for t in bound.times], lower_bound_order=bound.order,
                     theory_levels=[float(v) for v in bound.losses])
        cache["prediction"] = dataclasses.replace(pred, extra=extra)
        return cache["prediction"]

    if params["predictor"] not in ("agf", "lower-bound"):
        raise ValueError(f"overrides predictor: expected 'agf' or 'lower-bound', got {params['predictor']!r}")
    return predict


# ----------------------------------------------------------------------------- plots and files
def summarize(traj, bound: Prediction):
    from ..steps import feature_steps

    from ..steps import detect_steps

    merged = feature_steps(detect_steps(traj))
    return {
        "feature_steps": [s.to_json() for s in merged],
        "theory": {"order": bound.order, "levels": [float(v) for v in bound.losses],
                   "lower_bounds": [float(t) for t in bound.times], **{k: v for k, v in bound.extra.items() if k != "lower_bound"}},
    }


def feature_comparison(traj, folder, cache):
    """`feature_comparison.csv`: flow steps merged by feature against the (merged) prediction,
    always (`comparison.csv` merges only when the flow shows more steps than the prediction)."""
    from ..steps import feature_steps

    from ..steps import compare, detect_steps

    if "prediction" in cache:
        table = compare(feature_steps(detect_steps(traj)), cache["prediction"])
        table.to_csv(os.path.join(folder, "feature_comparison.csv"), index=False)


