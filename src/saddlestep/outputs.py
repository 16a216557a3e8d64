"""Output folders that never lose a user's file.

Every command that writes (`run`, `predict`, `converge`, `sweep`, `bench`, `figures`) goes through
this module, with one rule:

- An output folder is written whole or not at all: it is filled as a hidden temporary sibling
  (`.NAME.tmp-PID-…`) and renamed into place.
- A path is only ever replaced when it is a saddlestep output: its writer leaves a marker file
  `.saddlestep` listing the files it wrote. Replacing an earlier output takes `overwrite=True`
  (`--overwrite`); even then only the files the marker lists are replaced or removed, and any other
  file in the folder stays as it is. A folder without a marker, holding anything, is refused.
- `sweep` and `figures` outputs are updated in place (a resumed sweep, a regenerated gallery)
  without `overwrite`, again touching only their own files.
- The path is checked before any computation: a path that is a file, lies under a file, or sits on
  an unwritable or read-only filesystem fails at once, in one line.
- Temporaries left by a writer that was killed (its process is gone) are removed by the next
  writer of the same path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["MARKER", "check_out", "output_folder", "atomic_write_bytes", "atomic_write_text", "is_output"]

MARKER = ".saddlestep"
_FORMAT = "saddlestep-output/1"
UPDATABLE = frozenset({"sweep", "figures"})
# Outputs of versions before the marker existed, recognised by a manifest only saddlestep writes
# (a run's summary.json naming saddlestep among its versions, a sweep's sweep.json of its
# format), and claiming only the files every such output holds: a folder of copied outputs (`cp`
# drops the hidden marker) where the user added a `top_words.txt` or a `sweep.json` of their own
# must not hand those over to `--overwrite`.
_LEGACY = {
    "run": ("summary.json", {"summary.json", "trajectory.npz", "steps.csv", "staircase.png", "prediction.json",
                             "comparison.csv"}),
    "sweep": ("sweep.json", {"sweep.json", "sweep.nc", "runs"}),
}
# Every name a whole output (`run`, `predict`, `converge`, `bench`) may hold: a file of the user's
# by one of these names, beside an earlier output, would be replaced by the next one, so
# `--overwrite` refuses it up front (and `_commit` again for any other name that collides).
WRITTEN = frozenset(_LEGACY["run"][1] | {
    "top_words.txt", "analogy.csv", "escape.json", "richness.json",
    "lower_bounds.png", "eigenvalues.png", "singular_values.png", "richness_collapse.png", "pc_coefficients.png",
    "function_power.png", "fourier_power.png", "feature_comparison.csv", "analogy.png", "convergence.png",
    "convergence.csv", "bench.json", "bench.md",
})
# A temporary folder: `.NAME.tmp-PID-XXXXXXXX` (being filled) or `.NAME.old-PID-XXXXXXXX` (an
# output being replaced), the suffix tempfile's eight characters.
_TEMP = re.compile(r"^\.(?P<base>.+)\.(?:tmp|old)-(?P<pid>\d+)-[a-z0-9_]{8}$")
# Put in a temporary folder when it is made (and taken out before it is committed): with the
# marker of an output being replaced, what shows that a leftover folder is ours to remove.
_TOKEN = ".saddlestep-temporary"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod_default(path: str, *, directory: bool) -> None:
    # mkdtemp/mkstemp create 0700/0600: outputs follow the user's umask like any other file.
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


# This process's temporaries while they are being written: an interrupt that cannot unwind the
# writer's thread (the CLI's main thread, while a worker thread runs the command) removes them.
# The writer keeps running meanwhile, so registration is locked and closes for good on removal.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()
_CLOSED = False


@contextlib.contextmanager
def _creating_temporary() -> Iterator[None]:
    """Hold the registry while a temporary is created and added to `_LIVE` (an interrupt
    between the two would miss it); refused once `remove_temporaries` has run."""
    with _LIVE_LOCK:
        if _CLOSED:
            raise KeyboardInterrupt("saddlestep is exiting: no new temporaries")
        yield


def remove_temporaries() -> list[str]:
    """Remove this process's temporaries still being written, and refuse new ones: for a process
    on its way out while another thread may still be writing.

    **Returns:** the paths removed.
    """
    global _CLOSED
    with _LIVE_LOCK:
        _CLOSED = True
        removed = sorted(_LIVE)
        _LIVE.clear()
    for path in removed:
        if os.path.isdir(path) and not os.path.islink(path):
            # Renamed first: the writer creates its files by the old path, so from here on it can
            # add nothing to the folder being removed (an rmtree racing it can miss a new file).
            doomed = f"{path}-removed"
            try:
                os.rename(path, doomed)
            except OSError:
                continue  # committed or removed by its writer meanwhile
            path = doomed
        _remove(path)
    return removed


def _remove(path: str) -> None:
    """Remove a temporary, folder or file (never following a link)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file whole or not at all (a temporary file beside it, then a rename).

    **Arguments:**

    - `path`: the file to write.
    - `data`: its contents.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    with _creating_temporary():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.tmp-{os.getpid()}-")
        _LIVE.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _chmod_default(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        _LIVE.discard(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def _read_marker(folder: str) -> dict | None:
    path = os.path.join(folder, MARKER)
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != _FORMAT or not isinstance(marker.get("files"), list):
        return None
    if not all(_plain_name(e) for e in marker["files"]):
        # A marker only ever lists names in its own folder: one that reaches elsewhere ("../x",
        # "/x", "a/b") was not written by us, and nothing it lists is ours to replace.
        return None
    return marker


def _plain_name(entry) -> bool:
    """Whether `entry` names a file directly inside a folder (no separator, not `.` or `..`)."""
    return (isinstance(entry, str) and entry not in ("", ".", "..") and os.sep not in entry
            and (os.altsep is None or os.altsep not in entry) and "\0" not in entry)


def _legacy_marker(folder: str, kind: str) -> dict | None:
    if kind not in _LEGACY:
        return None
    manifest, allowed = _LEGACY[kind]
    entries = set(os.listdir(folder))
    if manifest not in entries:
        return None
    try:
        with open(os.path.join(folder, manifest), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    versions = doc.get("versions")
    if kind == "run" and not (isinstance(versions, dict) and "saddlestep" in versions):
        return None
    if kind == "sweep" and doc.get("format") != "saddlestep.sweep/1":
        return None
    return {"format": _FORMAT, "kind": kind, "files": sorted(entries & allowed)}


def is_output(folder: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether `folder` is a saddlestep output (of `kind`, if given)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return False
    marker = _read_marker(folder)
    if marker is None and kind is not None:
        marker = _legacy_marker(folder, kind)
    return marker is not None and (kind is None or marker.get("kind") == kind)


def _foreign(folder: str, marker: dict) -> list[str]:
    ours = set(marker["files"]) | {MARKER}
    return sorted(e for e in os.listdir(folder) if e not in ours)


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_out(path: str | os.PathLike, *, kind: str, overwrite: bool = False, argument: str = "out") -> str:
    """Check an output path before anything is computed; raise `ValueError` in one line if it
    cannot or may not be written.

    **Arguments:**

    - `path`: the output folder.
    - `kind`: what will be written there (`"run"`, `"predict"`, `"converge"`, `"sweep"`, `"bench"`,
      `"figures"`).
    - `overwrite`: allow replacing an earlier saddlestep output of this kind.
    - `argument`: the name the error messages give the path.

    **Returns:** the absolute path.
    """
    # A link to a folder stands for that folder: the output goes there (renaming the link itself
    # would put a folder in its place and leave the link behind).
    out = os.path.realpath(os.fspath(path)) if os.path.islink(os.fspath(path)) else os.path.abspath(os.fspath(path))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"{argument}: {out} exists and is not a folder; choose a new {argument}")
    existing = _nearest_existing(out)
    if not os.path.isdir(existing):
        raise ValueError(f"{argument}: {existing} is a file, so {out} cannot be a folder; choose a new {argument}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{argument}: {existing} is not writable (permissions or a read-only filesystem)")
    if existing != out:
        return out
    # The folder exists. Its parent must take the temporary sibling we rename into place.
    parent = os.path.dirname(out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{argument}: {parent} is not writable (permissions or a read-only filesystem)")
    entries = os.listdir(out)
    if not entries:
        return out
    marker = _read_marker(out) or _legacy_marker(out, kind)
    if marker is None:
        raise ValueError(f"{argument}: {out} already holds files saddlestep did not write; choose a new {argument}")
    if marker.get("kind") != kind:
        raise ValueError(
            f"{argument}: {out} holds a saddlestep {marker.get('kind')} output, not a {kind} output; choose a new {argument}"
        )
    if kind not in UPDATABLE and not overwrite:
        raise ValueError(
            f"{argument}: {out} holds an earlier saddlestep {kind} output; pass overwrite=True to replace it, "
            f"or choose a new {argument}"
        )
    if kind not in UPDATABLE:
        _refuse_clash(out, sorted(set(_foreign(out, marker)) & WRITTEN), argument)
    return out


def _refuse_clash(out: str, clash: list[str], argument: str) -> None:
    if clash:
        raise ValueError(
            f"{argument}: {out} holds {', '.join(clash)}, which saddlestep did not write and would replace; "
            f"move {'them' if len(clash) > 1 else 'it'} or choose a new {argument}"
        )


def stale_temporary(path: str, base: str | None = None) -> bool:
    """Whether `path` is a temporary output folder of a saddlestep writer that has ended: named
    as `output_folder` names them (for the output `base`, if given), a folder (not a link), its
    writer's process gone, and holding our token or an output's marker. A user's file or folder
    that only looks like one (`.lin.old-backup`, `.lin.tmp-1-mine`) is never removed."""
    m = _TEMP.match(os.path.basename(path))
    if m is None or (base is not None and m.group("base") != base) or _alive(int(m.group("pid"))):
        return False
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    return os.path.isfile(os.path.join(path, _TOKEN)) or _read_marker(path) is not None


def clean_stale(out: str) -> list[str]:
    """Remove the temporaries of earlier writers of `out` whose process has ended
    (`stale_temporary`).

    **Returns:** the paths removed.
    """
    parent, base = os.path.split(os.path.abspath(out))
    removed = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in entries:
        path = os.path.join(parent, entry)
        if stale_temporary(path, base):
            _remove(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_marker(folder: str, kind: str, files: list[str]) -> None:
    marker = {"format": _FORMAT, "writer": "saddlestep", "kind": kind, "files": sorted(set(files) - {MARKER})}
    atomic_write_text(os.path.join(folder, MARKER), json.dumps(marker, indent=1) + "\n")


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, *, kind: str, overwrite: bool = False) -> Iterator[str]:
    """Fill a temporary folder, then put it in place of `path` by the module's rule.

    **Arguments:** as `check_out`, which runs again here (the folder may have changed meanwhile).

    **Yields:** the temporary folder to write into. If the block raises, it is removed and `path`
    is left as it was.
    """
    out = check_out(path, kind=kind, overwrite=overwrite)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    clean_stale(out)
    with _creating_temporary():
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-{os.getpid()}-")
        _LIVE.add(tmp)
    token = os.path.join(tmp, _TOKEN)
    try:
        _chmod_default(tmp, directory=True)
        with open(token, "w"):
            pass
        yield tmp
        os.unlink(token)
        _write_marker(tmp, kind, os.listdir(tmp))
        _commit(tmp, out, kind, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _LIVE.discard(tmp)


def _commit(tmp: str, out: str, kind: str, overwrite: bool) -> None:
    check_out(out, kind=kind, overwrite=overwrite)
    if not os.path.isdir(out) or not os.listdir(out):
        if os.path.isdir(out) and _is_cwd(out):
            # Renamed over, the current folder (`--out .`) would leave this process, and the
            # user's shell, in a deleted one: fill it in place instead, the marker last.
            for entry in os.listdir(tmp):
                if entry != MARKER:
                    os.replace(os.path.join(tmp, entry), os.path.join(out, entry))
            os.replace(os.path.join(tmp, MARKER), os.path.join(out, MARKER))
            os.rmdir(tmp)
            return
        os.rename(tmp, out)  # rename(2) replaces an empty folder
        return
    marker = _read_marker(out) or _legacy_marker(out, kind)
    if not _foreign(out, marker):
        # Only our own files: swap the folders, so there is no moment without a whole output.
        old = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.old-{os.getpid()}-")
        os.rmdir(old)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    # The user keeps files of their own beside ours: replace ours one by one, leave theirs alone.
    new_files = [e for e in os.listdir(tmp) if e != MARKER]
    _refuse_clash(out, sorted(e for e in new_files if e not in marker["files"] and os.path.lexists(os.path.join(out, e))),
                  "out")
    for entry in set(marker["files"]) - set(new_files):
        target = os.path.join(out, entry)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.lexists(target):
            os.unlink(target)
    for entry in new_files:
        target = os.path.join(out, entry)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(tmp, entry), target)
    os.replace(os.path.join(tmp, MARKER), os.path.join(out, MARKER))
    os.rmdir(tmp)


def converge_checkpoint(out: str | os.PathLike) -> str:
    """The hidden sibling `.NAME.converge-partial` of a converge output `out`, where each finished
    flow is kept until the output is written (a killed `converge` resumes from it); made if
    missing, with our token, so that only a folder we made is ever removed.

    **Returns:** its path.
    """
    out = os.path.abspath(os.fspath(out))
    path = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.converge-partial")
    if os.path.lexists(path) and not _holds_token(path):
        raise ValueError(f"out: {path} exists and saddlestep did not make it; move it, or choose another --out")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, _TOKEN), "a"):
        pass
    return path


def remove_checkpoint(path: str | None) -> None:
    """Remove a `converge_checkpoint` folder once its output is written (ours only: it holds our token)."""
    if path is not None and _holds_token(path):
        shutil.rmtree(path, ignore_errors=True)


def _holds_token(path: str) -> bool:
    """A real folder (not a link) holding our `_TOKEN`: one saddlestep made."""
    return os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(os.path.join(path, _TOKEN))


def _is_cwd(path: str) -> bool:
    try:
        return os.path.samefile(path, os.getcwd())
    except OSError:
        return False


def prepare_updatable(path: str | os.PathLike, *, kind: str) -> str:
    """Create (or reopen) an output folder that is updated in place (`sweep`, `figures`).

    **Returns:** the absolute path; the folder exists and carries the marker.
    """
    if kind not in UPDATABLE:
        raise ValueError(f"{kind} outputs are written whole by output_folder, not updated in place")
    out = check_out(path, kind=kind)
    os.makedirs(out, exist_ok=True)
    marker = _read_marker(out)
    if marker is None:
        legacy = _legacy_marker(out, kind)
        _write_marker(out, kind, legacy["files"] if legacy else [])
    return out


def record_files(folder: str, kind: str, names: list[str]) -> None:
    """Add `names` to the files an updatable output's marker says saddlestep wrote."""
    marker = _read_marker(folder)
    files = list(marker["files"]) if marker else []
    _write_marker(folder, kind, files + [n for n in names if n not in files])


def owned(folder: str, name: str) -> bool:
    """Whether `name` inside an output `folder` is absent or was written by saddlestep."""
    if not os.path.lexists(os.path.join(folder, name)):
        return True
    marker = _read_marker(folder)
    return marker is not None and name in marker["files"]


def errno_message(err: OSError) -> str:
    """One line for an `OSError`: what failed, on which file."""
    what = err.strerror or errno.errorcode.get(err.errno or 0, str(err))
    where = err.filename if err.filename is not None else ""
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    return f"{where}: {what}" if where else str(what)
