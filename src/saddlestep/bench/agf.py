"""`saddlestep bench`'s `agf` section: for every preset whose predictor is AGF, the wall time of
`agf.predict` against the flow's, measured in one run (compilation included in both)."""

from __future__ import annotations

import time

from ..flow import simulate
from ..presets import all_presets, get_preset

# Small configurations for --quick (full runs use the presets' defaults); degree-3 presets are
# switched to their AGF predictor, whatever their default.
_QUICK = {
    "modular": {"p": 11, "width": 6, "frequencies": (1, 3), "magnitudes": (10.0, 5.0)},
    "attention": {"heads": 2, "N": 8},
}


# Cases beyond the presets' defaults, measured with them: (preset, parameters, α). The ReLU case of
# issue 16: Gaussian inputs, one output sign, 32 neurons, where the utility phases cross and slide
# along thousands of kinks.
CASES = {
    "relu-gaussian": ("relu", {"inputs": "gaussian", "n": 400, "d": 10, "teacher_norms": (3.0, 2.0, 1.0), "width": 32}, 1e-4),
}


def agf_presets() -> list[str]:
    """The presets that predict with AGF: by default (their `Preset.predictor` starts with "AGF")
    or on request (`--set predictor=agf`, the degree-3 presets)."""
    return sorted(name for name, p in all_presets().items()
                  if p.predictor.startswith("AGF") or p.defaults.get("predictor") in ("agf", "lower-bound"))


def run_agf_bench(quick: bool = True, *, presets: tuple[str, ...] | None = None) -> dict:
    """Predict time against simulate time on each AGF preset, at the preset's α, seed 0.

    **Arguments:** `quick`, small configurations; `presets`, the names to measure, presets or
    `CASES` (default: all AGF presets and all cases).

    **Returns:** `{"rows": [{preset, init_scale, predict_s, simulate_s, ratio, steps}], "max_ratio"}`.
    """
    rows = []
    for name in presets if presets is not None else agf_presets() + sorted(CASES):
        base, overrides, alpha = CASES.get(name, (name, {}, None))
        preset = get_preset(base)
        params = preset.parameters()
        if "predictor" in params:
            params["predictor"] = "agf"
        if quick:
            params.update({k: v for k, v in _QUICK.get(name, {}).items() if k in params})
        params.update(overrides)
        alpha = preset.init_scale if alpha is None else alpha
        setup = preset.setup(params, init_scale=alpha, seed=0, data=None)
        start = time.perf_counter()
        pred = setup.predict()
        predict_s = time.perf_counter() - start
        start = time.perf_counter()
        simulate(setup.model, setup.task, t_max=setup.t_max, progress=False, **setup.simulate_kwargs)
        simulate_s = time.perf_counter() - start
        rows.append({"preset": name, "init_scale": float(alpha), "predict_s": predict_s,
                     "simulate_s": simulate_s, "ratio": predict_s / max(simulate_s, 1e-12),
                     "steps": int(pred.num_steps)})
    return {"rows": rows, "max_ratio": max((r["ratio"] for r in rows), default=float("nan"))}


def agf_markdown(section: dict) -> str:
    """The `agf` table of `bench.md`."""
    lines = ["", "## AGF against the flow (predict / simulate wall time, compilation included)", "",
             "| preset | α | AGF steps | predict (s) | simulate (s) | ratio |", "|---|---|---|---|---|---|"]
    for r in section["rows"]:
        lines.append(f"| {r['preset']} | {r['init_scale']:.0e} | {r['steps']} | {r['predict_s']:.2f} | "
                     f"{r['simulate_s']:.2f} | {r['ratio']:.2f} |")
    lines += ["", f"Largest ratio: {section['max_ratio']:.2f}.", ""]
    return "\n".join(lines)
