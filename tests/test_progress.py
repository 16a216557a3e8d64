"""Progress: plain lines off a terminal, few of them, and only when a caller asks."""

import subprocess
import sys

import jax

import saddlestep as ss
from saddlestep import progress


def _lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_plain_progress_starts_ends_and_does_not_flood(capsys, monkeypatch):
    bar = progress.Progress("sweep", 100, "cell", enabled=True, bar=False)
    for _ in range(100):
        bar.update(1, runs="x")
    bar.close()
    lines = _lines(capsys)
    assert lines[0] == "saddlestep: sweep: started, 100 cells"
    assert lines[-1].startswith("saddlestep: sweep: 100/100 cells in ")
    assert len(lines) == 2  # 100 quick updates within PLAIN_EVERY_S: no line each

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    bar = progress.Progress("AGF", None, "activation", enabled=True, bar=False)
    bar.update(1, t=1.5, loss=0.25)
    bar.close("1 steps")
    lines = _lines(capsys)
    assert "AGF: 1 activation; t 1.5, loss 0.25" in lines[1] and lines[2].endswith("; 1 steps")


def test_inner_phases_report_only_inside_a_reporting_block(capsys):
    progress.Progress("AGF").close()
    assert _lines(capsys) == []
    with progress.reporting():
        progress.Progress("AGF", bar=False).close()
        assert len(_lines(capsys)) == 2  # a phase that said it started says it ended
        quick = progress.Progress("AGF", bar=False, delay=60.0)
        quick.update(1)
        quick.close()
        assert _lines(capsys) == []  # a delayed phase over in a blink says nothing


def test_a_delayed_phase_that_ends_at_once_prints_nothing(capsys):
    with progress.phase("building", delay=5.0):
        pass
    assert _lines(capsys) == []


def test_a_short_phase_is_one_line_and_a_long_one_two(capsys, monkeypatch):
    with progress.phase("writing"):
        pass
    assert _lines(capsys) == ["saddlestep: writing…"]
    monkeypatch.setattr(progress, "PHASE_QUIET_S", 0.0)
    with progress.phase("writing"):
        pass
    assert _lines(capsys)[1].startswith("saddlestep: writing: done in ")


def test_agf_reports_its_activations_when_asked(capsys, monkeypatch):
    task = ss.relu_teacher(jax.random.PRNGKey(0), 3, (2.0, -1.0), n=64, inputs="orthogonal")
    model = ss.TwoLayer(3, 4, 1, "relu", key=jax.random.PRNGKey(1), init_scale=1e-4)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr(progress, "INNER_DELAY_S", 0.0)
    with progress.reporting():
        pred = ss.agf.predict(model, task)
    lines = _lines(capsys)
    assert lines[0].startswith("saddlestep: AGF: started") and lines[-1].endswith(f"; {pred.num_steps} steps")


def test_a_run_off_a_terminal_says_what_it_is_doing_in_a_few_lines(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "saddlestep", "run", "linear", "--set", "d=4", "--set", "width=4",
         "--set", "singular_values=3,1", "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert any("integrating the flow" in line for line in err)
    assert any("writing" in line for line in err)
    assert len(err) <= 12


def test_a_flow_that_crawls_through_the_start_of_its_horizon_still_reports(capsys, monkeypatch):
    # A staircase can spend minutes within the first percent of t_max; lines come by wall time
    # too, not only per fifth of the horizon.
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 4, [3.0, 1.0])
    model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(1), init_scale=1e-12)
    traj = ss.simulate(model, task, t_max=1e6, progress=True, converge_tol=1e-6, rtol=1e-12)
    assert traj.t_final < 1e-2 * 1e6 and traj.stats["steps"] > 1000  # within the first percent of t_max
    lines = [line for line in _lines(capsys) if "flow:" in line]
    assert lines and all("of t_max after" in line and "solver steps" in line for line in lines)


def test_an_implicit_flow_reports_between_its_costly_steps(capsys, monkeypatch):
    # An implicit step can take seconds (10⁴ parameters): its segment asks the host at every
    # step, where the explicit one asks every 256, so a slow run is never silent for long.
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    task = ss.teacher_spectrum(jax.random.PRNGKey(0), 4, 4, [3.0, 1.0])
    model = ss.TwoLayer(4, 4, 4, "linear", key=jax.random.PRNGKey(1), init_scale=1e-3)
    traj = ss.simulate(model, task, t_max=30.0, method="implicit", progress=True, converge_tol=1e-6)
    steps = int(traj.stats["steps"])
    assert 20 < steps < 256
    lines = [line for line in _lines(capsys) if "flow:" in line and "of t_max after" in line]
    assert len(lines) >= steps // 2  # one per step (each says the step count), not one per 256
