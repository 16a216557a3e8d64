"""The command line: the run folder contract, the linear preset's staircase, and bad input."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from saddlestep.cli import main

S = np.array([10.0, 5.0, 2.5, 1.25, 0.625])


def test_linear_preset_draws_five_steps_at_the_reduced_rank_plateaus(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "linear", "--init-scale", "1e-12", "--out", str(out)]) == 0
    assert {"summary.json", "trajectory.npz", "steps.csv", "staircase.png"} <= set(os.listdir(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "linear" and summary["init_scale"] == 1e-12 and summary["seed"] == 0
    assert summary["solver"]["status"] == "converged"
    assert {"d", "width", "singular_values", "t_max", "rtol"} <= set(summary["parameters"])
    assert "jax" in summary["versions"] and summary["wall_time_s"] > 0
    steps = summary["steps"]
    assert len(steps) == 5
    plateaus = [0.5 * np.sum(S[k + 1 :] ** 2) for k in range(4)]
    np.testing.assert_allclose([s["loss_after"] for s in steps[:4]], plateaus, rtol=1e-6)
    assert steps[-1]["loss_after"] < 1e-6
    assert [s["feature"] for s in steps] == [f"mode {k}" for k in range(1, 6)]
    for s in steps:
        assert s["rescaled_time"] == pytest.approx(s["time"] / math.log(1e12))
    table = pd.read_csv(out / "steps.csv")
    assert list(table.columns) == ["step", "time", "rescaled_time", "loss_before", "loss_after", "feature"]
    assert "5 steps" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_list_names_every_preset_and_what_it_predicts(capsys):
    from saddlestep.presets import all_presets

    assert main(["list"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    rows = {line.split()[0]: line for line in lines}
    assert set(all_presets()) <= set(rows)
    assert "[predicts: AGF" in rows["relu"] and "[no predictor]" in rows["deep-linear"]
    assert "lower bound" in rows["deep-relu-escape"]
    assert "[--set d, width, singular_values, teacher_seed, solver, rtol, t_max, max_steps]" in rows["linear"]


def test_list_preset_shows_every_set_parameter_with_its_default(capsys):
    from saddlestep.presets import get_preset

    assert main(["list", "relu"]) == 0
    out = capsys.readouterr().out
    for key in get_preset("relu").defaults:
        assert f"    {key} " in out
    assert "= 3,-1.5" in out
    assert "prediction: AGF" in out and "--data: an .npz" in out
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if " = " in line}
    assert "(set by --data" in lines["teacher_seed"] and "(set by --data" not in lines["width"]


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["run", "linear", "--seed", "x"],
                                  ["run", "nope"], ["run", "relu", "--set", "widht=3"],
                                  ["predict", "linear", "--init-scale", "2"]])
def test_listing_help_and_argument_errors_do_not_load_jax(argv):
    # What makes `saddlestep list` and a typo answer at once: JAX (≈1–10 s to import) is not loaded.
    code = ("import sys\nfrom saddlestep.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "sys.exit(3 if 'jax' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def bad_cases(tmp):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    truncated = tmp / "trunc.npz"
    _npz(truncated, X=X, Y=X)
    truncated.write_bytes(truncated.read_bytes()[:60])
    foreign = tmp / "foreign.npz"
    foreign.write_text("this is not an npz file")
    empty = tmp / "empty.txt"
    empty.write_text("")
    tiny = tmp / "tiny.txt"
    tiny.write_text("the cat sat on the mat")
    npy = tmp / "one.npy"
    np.save(npy, X)
    notnpz = tmp / "notnpz.npz"
    import zipfile

    with zipfile.ZipFile(notnpz, "w") as z:
        z.writestr("readme.txt", "hello")
    csv = tmp / "data.csv"
    csv.write_text("x1,x2,y\n1,2,3\n4,5,6\n")
    binary = tmp / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    utf16 = tmp / "utf16.txt"
    utf16.write_text("le garçon mange une pomme " * 50, encoding="utf-16")
    latin1 = tmp / "latin1.txt"
    latin1.write_bytes(("le garçon mange une pomme " * 50).encode("latin-1"))
    pickled = tmp / "pickled.npz"
    np.savez(pickled, template=np.array([{"a": 1}], dtype=object))
    return {
        "a .npy where an .npz with keys is needed": (["run", "linear", "--data", str(npy)],
                                                     "numpy.savez(path, Sxx=…, Syx=…) or numpy.savez(path, X=…, Y=…)"),
        "a zip whose members are not .npy": (["run", "diagonal", "--data", str(notnpz)], "not .npy"),
        "a CSV as --data": (["run", "linear", "--data", str(csv)], "CSV"),
        "3-D X": (["run", "relu", "--data", _npz(tmp / "X3.npz", X=np.ones((10, 3, 1)), Y=np.ones((10, 1)))],
                  "--data: key X: expected a 2-dimensional array"),
        "empty X": (["run", "linear", "--data", _npz(tmp / "X0.npz", X=np.ones((0, 3)), Y=np.ones((0, 1)))],
                    "--data: key X: expected a non-empty array"),
        "a negative singular value": (["run", "linear", "--set", "singular_values=1,-2"], "--set singular_values:"),
        "pickled objects in an npz": (["run", "modular", "--data", str(pickled)], "Python objects"),
        "binary file named .txt": (["run", "word2vec", "--data", str(binary)], "binary"),
        "UTF-16 corpus": (["run", "word2vec", "--data", str(utf16)], "UTF-16"),
        "latin-1 corpus": (["run", "word2vec", "--data", str(latin1)], "not UTF-8"),
        "seed past 2^63": (["run", "linear", "--seed", str(2**63)], "--seed"),
        "seed past 2^32": (["run", "linear", "--seed", str(2**32)], "--seed"),
        "init scale 1.5": (["run", "linear", "--init-scale", "1.5"], "--init-scale"),
        "init scale 1": (["run", "diagonal", "--init-scale", "1"], "--init-scale"),
        "converge init scale 2": (["converge", "linear", "--init-scales", "1e-3,2"], "--init-scales"),
        "rtol 10": (["run", "linear", "--set", "rtol=10"], "--set rtol"),
        "rtol zero": (["run", "relu", "--set", "rtol=0"], "--set rtol"),
        "width beyond memory": (["run", "linear", "--set", "width=1000000000"], "GiB"),
        "vocabulary beyond memory": (["run", "qwem", "--set", "vocab_size=10000000"], "GiB"),
        "grid of a million runs": (["sweep", "linear", "--grid", "seed=0:1000000"], "runs"),
        "predict without a predictor": (["predict", "deep-linear"], "no predictor"),
        "predict where the predictor does not cover the settings": (
            ["predict", "barlow-twins-synthetic", "--set", "loss=original"], "does not cover --set loss=original"),
        "converge with one init scale": (["converge", "linear", "--init-scales", "1e-4"], "--init-scales:"),
        "converge with words": (["converge", "linear", "--init-scales", "a,b"], "--init-scales"),
        "sweep unknown grid key": (["sweep", "linear", "--grid", "colour=1,2"], "colour"),
        "sweep bad range": (["sweep", "linear", "--grid", "seed=a:b"], "seed"),
        "sweep zero init scale": (["sweep", "linear", "--grid", "init_scale=0,1e-3"], "--grid init_scale:"),
        "sweep init scale above 1": (["sweep", "qwem", "--grid", "init_scale=1e-5,3"], "--grid init_scale:"),
        "a frequency twice": (["run", "modular", "--set", "frequencies=3,3", "--set", "magnitudes=1,2"],
                              "--set frequencies:"),
        "P not a probability matrix": (["run", "qwem", "--data", _npz(tmp / "P.npz", P=-np.ones((4, 4)))], "P"),
        "a vocabulary below the default d": (["run", "qwem", "--data", _npz(tmp / "P2.npz", P=np.full((2, 2), 0.25))],
                                             "pass d=2 or less"),
        "a template so large the flow overflows": (["run", "modular", "--set", "width=4", "--data",
                                                    _npz(tmp / "huge_t.npz", template=np.arange(7.0) * 1e100)],
                                                   "rescale it"),
        "a template so large its bounds are rounding": (["run", "modular", "--set", "width=4", "--data",
                                                         _npz(tmp / "huger_t.npz", template=np.arange(7.0) * 1e110)],
                                                        "rescale it"),
        "moments of mismatched shapes": (["run", "deep-linear", "--data", _npz(tmp / "mom.npz", Sxx=np.eye(3),
                                                                               Syx=np.ones((2, 4)))], "--data: Syx"),
        "samples whose moments overflow": (["run", "linear", "--data", _npz(tmp / "huge.npz", X=X * 1e200, Y=X * 1e200)],
                                           "second moments of X overflow"),
        "empty corpus": (["run", "word2vec", "--data", str(empty)], "tokens"),
        "tiny corpus": (["run", "word2vec", "--data", str(tiny)], "tokens"),
        "embedding dimension zero": (["run", "qwem", "--set", "d=0"], "--set d:"),
        "data for a preset without data": (["run", "barlow-twins", "--data", str(tiny)], "--data: preset"),
        "NaN in a template": (["run", "modular", "--data", _npz(tmp / "tmpl.npz", template=np.array([1.0, np.nan, 2.0]))], "NaN"),
        "zero init scale": (["run", "linear", "--init-scale", "0"], "--init-scale"),
        "negative init scale": (["run", "linear", "--init-scale", "-1e-3"], "--init-scale"),
        "nan init scale": (["run", "linear", "--init-scale", "nan"], "--init-scale"),
        "inf init scale": (["run", "linear", "--init-scale", "inf"], "--init-scale"),
        "unknown preset": (["run", "nonesuch"], "nonesuch"),
        "unknown --set key": (["run", "linear", "--set", "colour=blue"], "colour"),
        "unknown solver": (["run", "modular", "--set", "solver=stiff"], "--set solver"),
        "--set without =": (["run", "linear", "--set", "width"], "--set"),
        "width zero": (["run", "linear", "--set", "width=0"], "--set width:"),
        "width not a number": (["run", "linear", "--set", "width=wide"], "width"),
        "t_max zero": (["run", "linear", "--set", "t_max=0"], "--set t_max:"),
        "t_max negative": (["run", "diagonal", "--set", "t_max=-5"], "t_max"),
        "max_steps zero": (["run", "linear", "--set", "max_steps=0"], "--set max_steps:"),
        "max_steps fractional": (["run", "relu", "--set", "max_steps=2.5"], "--set max_steps:"),
        "max_steps a word": (["run", "linear", "--set", "max_steps=many"], "--set max_steps:"),
        "mismatched X, Y": (["run", "linear", "--data", _npz(tmp / "mm.npz", X=X, Y=X[:7])], "rows"),
        "NaN in data": (["run", "diagonal", "--data", _npz(tmp / "nan.npz", X=np.where(X > 1, np.nan, X), y=X[:, 0])], "NaN"),
        "non-PSD covariance": (
            ["run", "linear", "--data", _npz(tmp / "psd.npz", Sxx=np.diag([1.0, -2.0, 1.0]), Syx=np.ones((2, 3)))], "Sxx"),
        "missing data file": (["run", "linear", "--data", str(tmp / "absent.npz")], "--data: no such file"),
        "truncated data file": (["run", "linear", "--data", str(truncated)], "trunc.npz"),
        "foreign data file": (["run", "relu", "--data", str(foreign)], "foreign.npz"),
        "wrong keys": (["run", "diagonal", "--data", _npz(tmp / "keys.npz", A=X)], "lacks key"),
        "moments and samples both": (
            ["run", "linear", "--data", _npz(tmp / "both.npz", X=X, Y=X, Sxx=np.eye(3), Syx=np.eye(3))], "holds both"),
        "a library check named as the override": (["run", "barlow-twins", "--set", "noise=-1"], "--set noise:"),
        "negatives with data": (["run", "qwem", "--data", _npz(tmp / "Pok.npz", P=np.full((4, 4), 1 / 16)), "--set",
                                 "negatives=-1"], "--set negatives:"),
        "y shorter than X": (["run", "diagonal", "--data", _npz(tmp / "short.npz", X=X, y=X[:7, 0])],
                             "--data: y has 7 entries, expected one per row of X (10, 3)"),
        "bad seed": (["run", "linear", "--seed", "-3"], "--seed"),
        "a size the data sets": (["run", "relu", "--data", _npz(tmp / "r.npz", X=X, Y=X[:, :1]), "--set", "n=10"],
                                 "--set n: the --data file sets it"),
        "samples that overflow a ReLU loss": (["run", "relu", "--data", _npz(tmp / "hr.npz", X=X * 1e160, Y=X[:, :1] * 1e160)],
                                              "--data: X and Y overflow float64 in the loss"),
        "X all zeros for a ReLU net": (["run", "relu", "--data", _npz(tmp / "zr.npz", X=0 * X, Y=X[:, :1])],
                                       "--data: X is zero"),
        "deep ReLU samples that overflow, named as the file": (
            ["run", "deep-relu-escape", "--data", _npz(tmp / "hd.npz", X=X * 1e160, Y=X[:, :1] * 1e160)],
            "--data: X and Y overflow float64 in the loss"),
        "a Barlow Twins spectrum with nothing shared": (
            ["run", "barlow-twins-synthetic", "--set", "spectrum=-0.5,-0.2"],
            "--set spectrum: expected at least one positive eigenvalue"),
        "a grid over what the data sets": (
            ["sweep", "linear", "--data", _npz(tmp / "l.npz", X=X, Y=X[:, :2]), "--grid", "d=3,4"], "--grid d:"),
    }


def _is_progress(line: str) -> bool:
    return line.startswith("saddlestep: ") and not line.startswith("saddlestep: error:") and (
        line.endswith("…") or " done in " in line)


def test_bad_input_exits_2_with_one_line_and_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = bad_cases(tmp_path)
    assert len(cases) >= 25
    for name, (argv, needle) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "_")
        code = main(argv + ["--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, name
        # One error line; a phase that ran long enough to announce itself (a slow machine's
        # JAX import while building) may precede it with its progress line, nothing else.
        lines = [line for line in err.strip().splitlines() if not _is_progress(line)]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, (name, err)
        assert not out.exists(), name
    assert not (tmp_path / "runs").exists()
    assert not [p for p in (tmp_path / "out").iterdir()] if (tmp_path / "out").exists() else True


def test_library_errors_are_told_in_flags():
    from saddlestep.cli import in_flags

    assert in_flags("overrides p: expected an integer ≥ 3, got 2") == "--set p: expected an integer ≥ 3, got 2"
    assert in_flags("init_scale: expected 0 < α < 1") == "--init-scale: expected 0 < α < 1"
    assert in_flags("grid seed: repeated value") == "--grid seed: repeated value"
    assert in_flags("out: x holds a run; pass overwrite=True to replace it") == "--out: x holds a run; pass --overwrite to replace it"
    # Only a leading argument is translated: the library's own names stay.
    assert in_flags("model: expected a saddlestep model") == "model: expected a saddlestep model"
    assert in_flags("no colon here, data") == "no colon here, data"


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_list_names_first_what_the_default_predictor_predicts():
    # `--set predictor=` switches between AGF and closed forms; the listing leads with the default.
    from saddlestep.presets import all_presets, get_preset

    for preset in map(get_preset, all_presets()):
        default = preset.defaults.get("predictor")
        if default is None:
            continue
        head = preset.predictor.split("(")[0]
        assert ("AGF" in head) == (default == "agf"), (preset.name, preset.predictor)
        assert f"predictor={'lower-bound' if default == 'agf' else 'agf'}" in preset.predictor


def test_converge_names_the_clock_its_slopes_were_taken_against():
    """κ = 3 presets take their slopes against 1/α, not ln(1/α): the printed title said ln(1/α)."""
    import math

    import pandas as pd

    from saddlestep.cli import _clock_name

    alpha = 0.01
    frame = lambda clock: pd.DataFrame({"init_scale": [alpha], "clock": [clock]})
    assert _clock_name(frame(math.log(1 / alpha))) == "ln(1/α)"
    assert _clock_name(frame(1 / alpha)) == "(1/α)"
    assert _clock_name(frame(alpha**-2)) == "(α^-2)"


def test_compilation_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    from saddlestep.cli import compilation_cache_dir

    for name in ("SADDLESTEP_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compilation_cache_dir() == str(tmp_path / ".cache" / "saddlestep" / "jax")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation_cache_dir() == str(tmp_path / "xdg" / "saddlestep" / "jax")
    monkeypatch.setenv("SADDLESTEP_CACHE_DIR", str(tmp_path / "mine"))
    assert compilation_cache_dir() == str(tmp_path / "mine" / "jax")  # a folder of its own there
    for off in ("off", "", "0", "none"):
        monkeypatch.setenv("SADDLESTEP_CACHE_DIR", off)
        assert compilation_cache_dir() is None
    monkeypatch.setenv("SADDLESTEP_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compilation_cache_dir() is None  # JAX's own setting: JAX uses it


def test_a_second_run_reuses_the_compiled_programs_and_gives_the_same_result(tmp_path):
    """The command line keeps compiled programs in its cache folder; a second process reads them
    back instead of compiling (XLA's own count of cache hits), and writes the same steps."""
    cache = tmp_path / "cache"
    env = {**os.environ, "SADDLESTEP_CACHE_DIR": str(cache), "JAX_PLATFORMS": "cpu"}
    code = ("import sys, jax\nfrom jax._src import monitoring\nfrom saddlestep.cli import main\nhits = []\n"
            "monitoring.register_event_listener(lambda e, **kw: hits.append(e) if e.endswith('cache_hits') else None)\n"
            "sys.argv = ['saddlestep'] + sys.argv[1:]\nstatus = main()\nprint('HITS', len(hits))\nsys.exit(status)")
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        argv = ["run", "linear", "--set", "t_max=30", "--out", str(out)]
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append((out / "steps.csv").read_text())
        hits = int(proc.stdout.rsplit("HITS", 1)[1].split()[0])
        if k == 0:
            assert hits == 0 and any(cache.iterdir())
        else:
            assert hits > 10, proc.stdout
    assert outs[0] == outs[1]


def _tiny_diagonal(path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 4))
    return _npz(path, X=X, y=X @ np.array([2.0, 0.0, -1.0, 0.0]))


@pytest.mark.parametrize(
    "argv, needle",
    [
        # Every grid value is checked before any cell runs (the valid t_max=50 cell used to be written).
        (["sweep", "diagonal", "--grid", "t_max=50,-1"], "--grid t_max: expected a positive number"),
        (["sweep", "diagonal", "--grid", "rtol=1e-6,5"], "--grid rtol: expected a tolerance in (0, 1)"),
        (["sweep", "diagonal", "--grid", "variant=uv,bad"], "--grid variant: expected 'uv' or 'squares'"),
        (["sweep", "diagonal", "--grid", "seed=0,4294967296"], "--grid seed: expected an integer in [0, 4294967295]"),
        # A single value beside its own grid axis would be ignored, yet recorded in sweep.json.
        (["sweep", "diagonal", "--seed", "3", "--grid", "seed=0:2"], "--seed: also a grid axis; give it in one place"),
        (["sweep", "diagonal", "--seed", "0", "--grid", "seed=0:2"], "--seed: also a grid axis"),
        (["sweep", "diagonal", "--init-scale", "1e-5", "--grid", "init_scale=1e-3,1e-4"],
         "--init-scale: also a grid axis; give it in one place"),
        (["converge", "diagonal", "--init-scales", "1e-3,1e-4", "--init-scale", "1e-5"],
         "--init-scale: converge takes its scales from --init-scales"),
        (["converge", "richness", "--init-scales", "0.5,0.25"],
         "converge: preset 'richness' has no prediction to converge to"),
    ],
)
def test_sweep_and_converge_refuse_bad_input_before_writing(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    data = [] if argv[1] == "richness" else ["--data", _tiny_diagonal(tmp_path / "d.npz")]
    code = main(argv + data + ["--out", str(out)])
    err = capsys.readouterr().err
    # Besides progress, a sweep announces its grid before building it (where a variant is checked).
    lines = [line for line in err.strip().splitlines()
             if not (_is_progress(line) or line.startswith(f"saddlestep: sweep {argv[1]}: "))]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not out.exists()


def test_sweep_without_the_single_values_uses_the_defaults(tmp_path, capsys):
    # --seed's default is not a value the user gave: a seed grid alone runs, and resumes.
    out = tmp_path / "s"
    argv = ["sweep", "diagonal", "--data", _tiny_diagonal(tmp_path / "d.npz"), "--grid", "seed=0:2", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "sweep.json").read_text())["seed"] == 0
    assert main(argv) == 0


def test_sweep_overwrite_replaces_an_earlier_sweep_and_keeps_user_files(tmp_path, capsys):
    out = tmp_path / "s"
    data = _tiny_diagonal(tmp_path / "d.npz")
    first = ["sweep", "diagonal", "--data", data, "--grid", "seed=0:2", "--grid", "init_scale=1e-4,1e-6"]
    assert main(first + ["--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "runs" / "mine").mkdir()
    (out / "runs" / "mine" / "x.txt").write_text("mine too")
    second = ["sweep", "diagonal", "--data", data, "--set", "variant=squares", "--grid", "seed=0:1",
              "--grid", "init_scale=1e-4,1e-5"]
    capsys.readouterr()
    assert main(second + ["--out", str(out)]) == 2  # other settings: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(second + ["--out", str(out), "--overwrite"]) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["parameters"]["variant"] == "squares" and manifest["grid"]["init_scale"] == [1e-4, 1e-5]
    assert sorted(os.listdir(out / "runs")) == ["mine", "seed=0__init_scale=0.0001", "seed=0__init_scale=1e-05"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "runs" / "mine" / "x.txt").read_text() == "mine too"
    for name in ("seed=0__init_scale=0.0001", "seed=0__init_scale=1e-05"):
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["parameters"]["variant"] == "squares"
    import xarray as xr

    with xr.open_dataset(out / "sweep.nc", engine="scipy") as ds:
        assert list(ds.init_scale.values) == [1e-4, 1e-5] and list(ds.seed.values) == [0]


def test_the_default_run_folder_names_the_init_scale(tmp_path, monkeypatch):
    # `--help` promises runs/PRESET-aALPHA-sSEED; without --init-scale it said "adefault".
    from saddlestep.cli import main
    from saddlestep.presets import get_preset

    monkeypatch.chdir(tmp_path)
    assert main(["run", "diagonal", "--set", "n=20", "--set", "d=12", "--seed", "2"]) == 0
    alpha = get_preset("diagonal").init_scale
    assert (tmp_path / "runs" / f"diagonal-a{alpha:g}-s2" / "summary.json").exists()


def test_a_warning_names_the_flag_of_the_command_that_ran():
    from saddlestep.cli import warning_line

    msg = "init_scale: α = 1e-14 is below the float64 floor 1e-12"
    assert warning_line("run", msg) == "saddlestep: warning: --init-scale: α = 1e-14 is below the float64 floor 1e-12\n"
    assert warning_line("converge", msg).startswith("saddlestep: warning: --init-scales: α = 1e-14")
    assert warning_line("sweep", msg).startswith("saddlestep: warning: --grid init_scale: α = 1e-14")
    assert warning_line("converge", "overrides p: odd") == "saddlestep: warning: --set p: odd\n"
