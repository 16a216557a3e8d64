"""The code is lint-clean (ruff) and its listed modules type-check (mypy), both configured in
pyproject.toml: part of the test command, so CI runs them."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).with_name("ruff"))
    proc = subprocess.run([ruff, "check", "src", "tests", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean_on_the_listed_modules():
    mypy = shutil.which("mypy") or str(pathlib.Path(sys.executable).with_name("mypy"))
    proc = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
