"""Output folders: nothing a user wrote is ever replaced, hidden or deleted (saddlestep.outputs)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from saddlestep.cli import main
from saddlestep.outputs import check_out, clean_stale, MARKER, output_folder


def _fill(folder, name="x.txt", text="ours"):
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def test_a_new_folder_is_written_whole_with_its_marker(tmp_path):
    out = tmp_path / "a" / "b"
    with output_folder(out, kind="run") as tmp:
        _fill(tmp)
        assert not out.exists()
    assert sorted(os.listdir(out)) == sorted([MARKER, "x.txt"])
    assert json.loads((out / MARKER).read_text())["files"] == ["x.txt"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b"]  # no temporaries left


def test_a_failing_writer_leaves_the_old_output_untouched(tmp_path):
    out = tmp_path / "run"
    with output_folder(out, kind="run") as tmp:
        _fill(tmp, text="old")
    with pytest.raises(RuntimeError), output_folder(out, kind="run", overwrite=True) as tmp:
        _fill(tmp, text="new")
        raise RuntimeError
    assert (out / "x.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_user_files_are_never_replaced(tmp_path):
    user = tmp_path / "project"
    user.mkdir()
    (user / "mydata.npz").write_bytes(b"precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="did not write"):
            check_out(user, kind="run", overwrite=overwrite)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ValueError, match="not a folder"):
        check_out(notes, kind="run", overwrite=True)
    with pytest.raises(ValueError, match="is a file"):
        check_out(notes / "run", kind="run")
    assert (user / "mydata.npz").read_bytes() == b"precious" and notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "project"]


def test_overwrite_replaces_only_our_files_beside_the_users(tmp_path):
    out = tmp_path / "run"
    with output_folder(out, kind="run") as tmp:
        _fill(tmp, "a.txt", "old")
        _fill(tmp, "gone.txt", "old")
    with pytest.raises(ValueError, match="overwrite=True"):
        check_out(out, kind="run")
    (out / "analysis.py").write_text("print('mine')")
    with output_folder(out, kind="run", overwrite=True) as tmp:
        _fill(tmp, "a.txt", "new")
    assert sorted(os.listdir(out)) == sorted([MARKER, "a.txt", "analysis.py"])
    assert (out / "a.txt").read_text() == "new" and (out / "analysis.py").read_text() == "print('mine')"


def test_overwrite_refuses_a_users_file_by_a_name_the_new_output_writes(tmp_path):
    # The earlier output did not write prediction.json (a preset without a predictor); the user
    # put one of theirs there. Neither the up-front check nor the commit may replace it.
    out = tmp_path / "run"
    with output_folder(out, kind="run") as tmp:
        _fill(tmp, "summary.json", "old")
    (out / "prediction.json").write_text("mine")
    with pytest.raises(ValueError, match="prediction.json, which saddlestep did not write"):
        check_out(out, kind="run", overwrite=True)
    (out / "notes.csv").write_text("mine too")  # a name no output has: only the commit sees it
    (out / "prediction.json").rename(out / "kept.json")
    with pytest.raises(ValueError, match="notes.csv, which saddlestep did not write"):
        with output_folder(out, kind="run", overwrite=True) as tmp:
            _fill(tmp, "summary.json", "new")
            _fill(tmp, "notes.csv", "ours")
    assert (out / "notes.csv").read_text() == "mine too" and (out / "summary.json").read_text() == "old"
    assert (out / "kept.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporaries left


def test_an_out_that_is_a_link_writes_into_the_folder_it_names(tmp_path):
    real = tmp_path / "real"
    with output_folder(real, kind="run") as tmp:
        _fill(tmp, "summary.json", "old")
    (tmp_path / "link").symlink_to(real)
    with output_folder(tmp_path / "link", kind="run", overwrite=True) as tmp:
        _fill(tmp, "summary.json", "new")
    assert (tmp_path / "link").is_symlink() and (real / "summary.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # nothing hidden left


@pytest.mark.parametrize("entry", ["../victim.txt", "VICTIM", "sub/../../victim.txt", "..", "."])
def test_a_marker_that_names_a_file_outside_its_folder_is_not_ours(tmp_path, entry):
    # A marker edited by hand (or corrupted) listing a path outside its folder: nothing it lists
    # is replaced or removed, and the folder is refused like any folder of someone else's files.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    with output_folder(out, kind="run") as tmp:
        _fill(tmp, "a.txt", "old")
    (out / "notes.txt").write_text("mine")  # the user's file beside ours: files are replaced one by one
    marker = json.loads((out / MARKER).read_text())
    marker["files"].append(str(victim) if entry == "VICTIM" else entry)
    (out / MARKER).write_text(json.dumps(marker))
    with pytest.raises(ValueError, match="did not write"):
        check_out(out, kind="run", overwrite=True)
    with pytest.raises(ValueError, match="did not write"), output_folder(out, kind="run", overwrite=True) as tmp:
        _fill(tmp, "b.txt", "new")
    assert victim.read_text() == "precious" and (out / "a.txt").read_text() == "old"
    assert (out / "notes.txt").read_text() == "mine"


def test_another_kind_of_output_is_not_replaced(tmp_path):
    out = tmp_path / "o"
    with output_folder(out, kind="converge") as tmp:
        _fill(tmp)
    with pytest.raises(ValueError, match="converge output"):
        check_out(out, kind="run", overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_an_unwritable_parent_fails_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            check_out(ro / "run", kind="run")
    finally:
        ro.chmod(0o700)


def test_output_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with output_folder(tmp_path / "run", kind="run") as tmp:
            _fill(tmp)
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "run" / MARKER).stat().st_mode & 0o777 == 0o644


def test_temporaries_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def temporary(name, token=True):
        (tmp_path / name).mkdir()
        if token:
            (tmp_path / name / ".saddlestep-temporary").touch()
        return tmp_path / name

    stale = temporary(f".run.tmp-{dead.pid}-abcd_123")
    live = temporary(f".run.tmp-{os.getppid()}-defg_456")  # a writer still running
    other = temporary(f".other.tmp-{dead.pid}-abcd_123")
    # A replaced output being removed: no token, but its marker.
    old = temporary(f".run.old-{dead.pid}-hijk_789", token=False)
    (old / MARKER).write_text(json.dumps({"format": "saddlestep-output/1", "kind": "run", "files": []}))
    # The user's own, named alike: never ours to remove (no token or marker, a file, another suffix).
    backup = temporary(".run.old-backup", token=False)
    (backup / "results.txt").write_text("precious")
    mine = temporary(f".run.tmp-{dead.pid}-mine_123", token=False)
    (tmp_path / f".run.tmp-{dead.pid}-abcd_999").write_text("a file of the user's")
    os.utime(backup, (time.time() - 7200, time.time() - 7200))
    assert sorted(clean_stale(str(tmp_path / "run"))) == sorted([str(stale), str(old)])
    assert not stale.exists() and not old.exists()
    assert live.exists() and other.exists() and backup.exists() and mine.exists()
    assert (tmp_path / f".run.tmp-{dead.pid}-abcd_999").exists()


def test_copied_outputs_hand_over_only_what_saddlestep_writes_in_every_run(tmp_path, capsys):
    """`cp run/* dest/` drops the hidden marker; a summary.json naming saddlestep then vouches for
    a run's own files only, not for a `top_words.txt` of the user's; a `sweep.json` of the user's
    (not a sweep manifest) makes no sweep folder."""
    dest = tmp_path / "analysis"
    dest.mkdir()
    (dest / "summary.json").write_text(json.dumps({"versions": {"saddlestep": "0"}}))
    (dest / "top_words.txt").write_text("my own word list")
    (dest / "escape.json").write_text("my notes")
    with pytest.raises(ValueError, match="top_words.txt, which saddlestep did not write"):
        check_out(dest, kind="run", overwrite=True)
    assert (dest / "top_words.txt").read_text() == "my own word list"
    proj = tmp_path / "myproj"
    proj.mkdir()
    (proj / "sweep.json").write_text(json.dumps({"my": "sweep config"}))
    with pytest.raises(ValueError, match="already holds files saddlestep did not write"):
        check_out(proj, kind="sweep")
    assert main(["sweep", "linear", "--grid", "seed=0:1", "--out", str(proj), "--overwrite"]) == 2
    assert json.loads((proj / "sweep.json").read_text()) == {"my": "sweep config"}
    assert sorted(os.listdir(proj)) == ["sweep.json"]


def test_out_dot_fills_the_current_folder_in_place(tmp_path, monkeypatch, capsys):
    """`--out .` in an empty folder: renamed over, the current folder would be a deleted one (the
    command then failed on getcwd after writing, and the user's shell sat in a deleted folder)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = os.stat(".").st_ino
    assert main(["predict", "linear", "--out", "."]) == 0
    assert os.stat(os.getcwd()).st_ino == inode
    assert sorted(os.listdir(".")) == sorted([MARKER, "prediction.json"])
    assert "wrote " in capsys.readouterr().out


def test_cli_refuses_an_out_holding_user_files_before_simulating(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata.txt").write_text("keep me")
    start = time.perf_counter()
    assert main(["run", "linear", "--out", "."]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "did not write" in err[0] and err[0].endswith("choose a new --out")
    assert sorted(os.listdir(tmp_path)) == ["mydata.txt"]
    assert time.perf_counter() - start < 60  # refused before any simulation, not after


def test_cli_rerun_needs_overwrite_and_keeps_added_files(tmp_path, capsys):
    out = tmp_path / "runs" / "diag"
    argv = ["run", "diagonal", "--set", "n=8", "--set", "d=6", "--set", "beta_star=2,1", "--out", str(out)]
    assert main(argv) == 0
    (out / "analysis.py").write_text("mine")
    capsys.readouterr()
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert (out / "analysis.py").read_text() == "mine"
    assert {"summary.json", "trajectory.npz", "steps.csv", "staircase.png"} <= set(os.listdir(out))
    # A run into the parent of an earlier run refuses: it would otherwise delete runs/diag.
    assert main(["run", "linear", "--out", str(tmp_path / "runs")]) == 2
    assert (out / "summary.json").exists()


def test_sigterm_leaves_no_temporary_behind(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saddlestep.cli", "run", "linear", "--init-scale", "1e-12", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode in (0, 128 + signal.SIGTERM, -signal.SIGTERM)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert not out.exists() or (out / "summary.json").exists()


def test_sigterm_ends_a_run_inside_a_compiled_solve(tmp_path):
    # The implicit path of a modular flow holds its thread inside XLA for minutes (a signal used to
    # wait a minute or more for it); the signal must still end the run at once, leaving nothing.
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saddlestep.cli", "run", "modular", "--set", "p=11", "--set", "width=8",
         "--init-scale", "1e-3", "--set", "t_max=1e9", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    try:
        for line in proc.stdout:
            if "solver steps" in line:  # the solve's own progress: compiled and running
                break
        time.sleep(3.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
    assert "interrupted" in proc.stdout.read()
    assert list(tmp_path.iterdir()) == []


def test_debug_flag_shows_the_traceback(tmp_path):
    env = {**os.environ, "SADDLESTEP_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "saddlestep.cli", "run", "linear", "--set", "width=0", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "saddlestep.cli", "run", "linear", "--set", "width=0", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "SADDLESTEP_DEBUG"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_removing_temporaries_wins_against_a_thread_still_writing(tmp_path, monkeypatch):
    # The CLI's main thread removes what the command's thread is still writing into: nothing may
    # survive, however the two interleave, and no new temporary may start afterwards.
    from saddlestep import outputs

    monkeypatch.setattr(outputs, "_LIVE", set())
    monkeypatch.setattr(outputs, "_CLOSED", False)
    writing = outputs.output_folder(tmp_path / "run", kind="run")
    folder = writing.__enter__()
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            with contextlib.suppress(OSError):
                with open(os.path.join(folder, f"part{i}.csv"), "w") as f:
                    f.write("x\n")
            with contextlib.suppress(OSError, KeyboardInterrupt):
                outputs.atomic_write_text(os.path.join(folder, f"part{i}.json"), "{}\n")
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.2)
    assert folder in outputs.remove_temporaries()
    time.sleep(0.1)
    stop.set()
    writer.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        outputs.atomic_write_text(tmp_path / "late.json", "{}\n")
    assert not (tmp_path / "late.json").exists()
