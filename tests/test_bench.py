"""`saddlestep bench` in a reduced configuration: files, keys, and what the numbers must satisfy
(never wall times)."""

import json

import numpy as np
import pytest

from saddlestep import bench
from saddlestep.trajectory import Trajectory


def test_bench_reduced(tmp_path, capsys):
    from saddlestep.progress import reporting

    with reporting():  # as the CLI runs it: each section says when it starts
        result = bench.run_bench(
            tmp_path, quick=True, gd_targets=(1e-2,), alphas=(1e-3, 1e-6), batches=(1, 3), stiff_alphas=(0.5, 0.4),
            agf_presets=("diagonal",), sgns_vocab_size=40,
            relu_case={"inputs": "gaussian", "n": 40, "d": 4, "width": 6, "teacher_norms": (2.0, 1.0)},
            stiff_large=({"p": 7, "frequencies": "1,2", "magnitudes": "10,5", "width": 3}, (0.3,)),
        )
    said = capsys.readouterr().err
    for section in ("bench --quick: linear", "bench: stiff…", "bench: agf…", "bench: word2vec…", "bench: relu…"):
        assert section in said
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["speedup_vs_gd"] == result["speedup_vs_gd"] > 0
    md = (tmp_path / "bench.md").read_text()
    for heading in ("Accuracy against cost", "ln(1/α)", "Ensemble throughput", "Compile time"):
        assert heading in md
    rows = {(r["method"], r["target_error"]): r for r in result["accuracy_vs_cost"]}
    flow = rows[("flow Tsit5", 1e-6)]
    assert flow["error"] < 2e-6  # Tsit5 at rtol 1e-6 tracks the drop times to ~1e-6
    for method in ("GD (lax loop)", "GD (optax.sgd)"):
        gd = rows[(method, 1e-2)]
        assert 0.5e-2 < gd["error"] < 2e-2  # the calibrated learning rate lands near its target
        assert gd["vf_evals"] > flow["vf_evals"]
    # The reference matches Saxe's ordering: stronger modes drop first.
    assert np.all(np.diff(result["reference"]["drop_times"]) > 0)
    scaling = result["steps_vs_log_inv_alpha"]
    steps = [r["steps"] for r in scaling["runs"]]
    assert steps[1] > steps[0] and scaling["at_most_linear"]
    assert all(r["status"] == "converged" for r in scaling["runs"])
    assert [r["batch"] for r in result["throughput"]] == [1, 3]
    assert on_disk["agf_max_ratio"] == result["agf"]["max_ratio"] and "AGF against the flow" in md
    assert on_disk["sgns_wall_s"] == result["word2vec"]["sgns_wall_s"] > 0 and "## Exact SGNS" in md
    assert result["word2vec"]["vocab_size"] == 40
    assert on_disk["relu_speedup_vs_gd"] == result["relu"]["relu_speedup_vs_gd"] > 0
    assert "## Two-layer ReLU on a finite sample" in md
    # The stiff section: every method at both α, the implicit ones on the explicit solution.
    stiff = result["stiff"]
    assert "Stiff gradient flows" in md and result["stiff_speedup"] == stiff["stiff_speedup"] > 0
    for a in (0.5, 0.4):
        rows = {r["method"]: r for r in stiff["runs"] if r["init_scale"] == a}
        assert set(rows) == {"Tsit5", "implicit dense", "implicit matrix-free", "auto", "GD (stability limit)"}
        for m in ("implicit dense", "implicit matrix-free", "auto"):
            assert rows[m]["drop_time_error"] < 1e-4 and rows[m]["loss_error"] < 1e-4
            assert rows[m]["steps"] < rows["Tsit5"]["steps"] and rows[m]["hvp_evals"] > 0
        assert np.isfinite(rows["GD (stability limit)"]["wall_s"])
    assert stiff["step_fits"]["implicit dense"]["alphas"] == [0.5, 0.4]
    # The large stiff case (here a 63-parameter `modular`): Tsit5, auto and matrix-free on one flow.
    large = result["stiff_large"]
    assert on_disk["stiff_large_speedup"] == large["stiff_large_speedup"] > 0 and "Large stiff case" in md
    assert large["n_params"] == 3 * 3 * 7
    rows = {r["method"]: r for r in large["runs"]}
    assert set(rows) == {"Tsit5", "auto", "implicit matrix-free"}
    for m in ("auto", "implicit matrix-free"):
        assert len(rows[m]["drop_times"]) >= 2 and rows[m]["drop_time_error"] < 1e-3
        assert rows[m]["steps"] < rows["Tsit5"]["steps"] / 10


def test_drop_times_cubic_crossing():
    # A logistic u(t) = s / (1 + e^{-2s(t - t0)}) crosses s/2 at t0 exactly.
    t = np.linspace(0.0, 10.0, 201)
    s, t0 = np.array([4.0, 1.0]), np.array([2.345, 6.789])
    u = s / (1 + np.exp(-2 * s * (t[:, None] - t0)))
    traj = Trajectory(times=t, loss=np.zeros_like(t), observables={"features": u}, init_scale=1e-3,
                            status="t_max", t_final=10.0, stats={}, method="test")
    np.testing.assert_allclose(bench.drop_times(traj, s / 2), t0, rtol=1e-5)


def test_stiff_markdown_without_degree3_case():
    # A stiff section of the linear teacher alone has no speed-up to report; its table still renders.
    row = {"case": "linear-1e3", "init_scale": 1e-2, "method": "implicit dense", "steps": 201, "rejected": 11,
           "grad_evals": None, "hvp_evals": None, "wall_s": 0.6, "t_switch": 0.0, "drop_time_error": 2.5e-6,
           "loss_error": 6e-7, "drop_time_error_vs": "Tsit5", "status": "converged"}
    sec = {"case": "linear teacher", "rtol": 1e-6, "implicit_rtol": 1e-7, "linear_implicit_rtol": 1e-8,
           "runs": [row], "step_fits": {"implicit dense": None}, "stiff_speedup": None}
    md = bench.stiff_markdown(sec)
    assert "stiff_speedup: not measured" in md and "| linear-1e3 | 1e-02 | implicit dense | 201 |" in md


def test_agf_section_shapes():
    from saddlestep.bench.agf import agf_markdown, agf_presets, run_agf_bench

    assert {"modular", "attention", "diagonal", "relu"} <= set(agf_presets())
    from saddlestep.bench.agf import CASES

    assert all(base in agf_presets() for base, _, _ in CASES.values())  # issue 16's ReLU case rides on `relu`
    section = run_agf_bench(quick=True, presets=("diagonal",))
    (row,) = section["rows"]
    assert set(row) == {"preset", "init_scale", "predict_s", "simulate_s", "ratio", "steps"}
    assert row["preset"] == "diagonal" and row["steps"] > 0 and row["ratio"] >= 0
    assert section["max_ratio"] == row["ratio"]
    assert "AGF against the flow" in agf_markdown(section)


def test_sgns_section_shapes():
    from saddlestep.bench.word2vec import run_sgns_bench, sgns_markdown

    section = run_sgns_bench(quick=True, vocab_size=40, d=3)
    assert set(section) == {"vocab_size", "d", "init_scale", "method", "rtol", "n_save", "t_max", "steps",
                            "rejected", "grad_evals", "grad_ms", "loss_ms", "compile_s", "sgns_wall_s", "drops",
                            "last_drop", "status"}
    assert (section["vocab_size"], section["d"], section["method"]) == (40, 3, "Dopri8")
    assert section["grad_evals"] == 13 * section["steps"] > 0 and section["status"] == "t_max"
    assert section["drops"] and section["last_drop"] == section["drops"][-1] < section["t_max"]
    assert min(section["grad_ms"], section["loss_ms"], section["sgns_wall_s"]) > 0
    md = sgns_markdown(section)
    assert "## Exact SGNS" in md and "V = 40, d = 3" in md


def test_relu_section_shapes():
    from saddlestep.bench.relu import ERROR_FLOOR, relu_markdown, run_relu_bench
    from saddlestep.presets import get_preset

    case = {"inputs": "gaussian", "n": 40, "d": 4, "width": 6, "teacher_norms": (2.0, 1.0)}
    section = run_relu_bench(quick=True, case=case, rtols=(1e-4,))
    preset_rtol = get_preset("relu").rtol
    rows = {r["rtol"]: r for r in section["rows"]}
    assert set(rows) == {1e-4, preset_rtol}  # the preset's own tolerance is always measured
    assert section["relu_speedup_vs_gd"] == rows[preset_rtol]["speedup"] > 0
    assert np.all(np.diff(section["reference"]["drop_times"]) > 0) and section["t_max"] > max(
        section["reference"]["drop_times"])
    for row in rows.values():
        assert row["gd_target"] == max(row["error"], ERROR_FLOOR)
        assert 0.5 < row["gd_error"] / row["gd_target"] < 2  # GD calibrated to the flow's accuracy
        assert row["gd_steps"] > row["steps"] > 0
        assert row["status"] == "t_max"  # reached the horizon, not a step budget
    assert rows[preset_rtol]["error"] < 1e-3
    # Sliding along ReLU kinks: the step count follows the tolerance, not the dynamics.
    assert rows[1e-4]["steps"] < rows[preset_rtol]["steps"] / 5
    md = relu_markdown(section)
    assert "## Two-layer ReLU on a finite sample" in md and "relu_speedup_vs_gd" in md
    assert "budget spent" not in md
    section["rows"][0]["status"] = "max_steps"
    assert "(budget spent)" in relu_markdown(section)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["richness", "deep-relu-escape"])
def test_deep_relu_presets_against_gd(name):
    # Minutes: the reference takes ~300,000 steps (sliding at ReLU kinks: steps ∝ 1/rtol).
    from saddlestep.bench.relu import run_preset_vs_gd

    out = run_preset_vs_gd(name)
    assert out["preset"] == name
    fine, loose = out["rows"]
    assert fine["rtol"] == out["preset_rtol"] and loose["rtol"] == 10 * out["preset_rtol"]
    assert fine["error"] < loose["error"] < 1e-3 and 0.5 < fine["gd_error"] / fine["gd_target"] < 2
    assert 5 < fine["steps"] / loose["steps"] < 20  # the step count follows the tolerance
    assert out["speedup"] == fine["speedup"] > 0
