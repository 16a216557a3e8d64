"""Every notebook in `notebooks/` executes top to bottom, and its `.py`/`.ipynb` pair agrees.

The `.py` (jupytext py:percent) is the source; the `.ipynb` beside it is its executed copy. Each
notebook runs in a fresh kernel started from this interpreter, with `MPLBACKEND=Agg`, in a
temporary working directory, so a test run writes nothing into the repository.

Regenerate the executed copies (with inline figures) after editing a notebook:

    python tests/test_notebooks.py --update [NAME ...]
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9]*.py"))
TIMEOUT_S = 240  # per cell; the notebooks' default sizes run in well under a minute each

jupytext = pytest.importorskip("jupytext") if __name__ != "__main__" else __import__("jupytext")
nbclient = pytest.importorskip("nbclient") if __name__ != "__main__" else __import__("nbclient")
nbformat = pytest.importorskip("nbformat") if __name__ != "__main__" else __import__("nbformat")
if __name__ != "__main__":
    pytest.importorskip("ipykernel")


def execute(source: pathlib.Path, *, backend: str = "Agg", workdir: str | None = None):
    """Execute the notebook `source` (a py:percent file) in a fresh kernel of this interpreter.

    **Arguments:** `source`, the `.py`; `backend`, the `MPLBACKEND` the kernel sees; `workdir`,
    the kernel's working directory (default: a temporary one, removed afterwards).

    **Returns:** `(notebook, seconds)`, the executed `nbformat` notebook and its wall time.
    """
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = backend
    tmp = tempfile.mkdtemp(prefix="saddlestep-nb-") if workdir is None else None
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=TIMEOUT_S,
            kernel_name="python3",  # jupyter_client starts it with sys.executable
            resources={"metadata": {"path": workdir or tmp}},
        )
        start = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - start
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _code(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert len(SOURCES) >= 10, f"expected at least 10 notebooks in {NOTEBOOKS}, found {len(SOURCES)}"
    assert (NOTEBOOKS / "README.md").exists()


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_pair_in_sync(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `python tests/test_notebooks.py --update {source.stem}`"
    executed = nbformat.read(paired, as_version=4)
    assert _code(executed) == _code(jupytext.read(source)), (
        f"{paired.name} is stale: run `python tests/test_notebooks.py --update {source.stem}`"
    )
    assert all(
        c.get("execution_count") is not None for c in executed.cells if c.cell_type == "code" and c.source.strip()
    ), f"{paired.name} was saved unexecuted"


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebook_executes(source):
    nb, seconds = execute(source)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    print(f"{source.stem}: {seconds:.1f} s")


def _update(names: list[str]) -> None:
    """Execute notebooks with inline figures and write their `.ipynb` pairs (whole or not at all)."""
    chosen = [s for s in SOURCES if not names or s.stem in names or s.name in names]
    for source in chosen:
        nb, seconds = execute(source, backend="module://matplotlib_inline.backend_inline", workdir=str(NOTEBOOKS))
        nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:  # timestamps only make diffs noisy
            cell.metadata.pop("execution", None)
        fd, tmp = tempfile.mkstemp(dir=NOTEBOOKS, suffix=".ipynb")
        os.close(fd)
        try:
            nbformat.write(nb, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, source.with_suffix(".ipynb"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        print(f"{source.stem}: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "--update":
        sys.exit("usage: python tests/test_notebooks.py --update [NAME ...]")
    _update(args[1:])
