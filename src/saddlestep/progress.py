"""Progress of long phases (building, compiling, solving, AGF, writing, sweep cells), one rule for all.

On a terminal a phase is a tqdm bar (or one status line that is rewritten); elsewhere — CI logs,
notebooks, `nohup` — it is a few plain lines on stderr: the phase's start, at most one line per
`PLAIN_EVERY_S` seconds while it runs, and its end with the time it took. Nothing is printed when
progress is off (`enabled=False`), so library calls stay quiet unless asked.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Iterator

PLAIN_EVERY_S = 15.0  # the most a plain (non-terminal) log hears from one phase while it runs
INNER_DELAY_S = 2.0  # inner phases (AGF) stay silent unless they run longer than this

# Whether inner phases (AGF inside a preset's predictor) report: set by the caller that owns
# the output (the command line, `run_preset`), so library calls stay quiet by default.
_REPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("saddlestep_reporting", default=False)


@contextlib.contextmanager
def reporting(enabled: bool = True) -> Iterator[None]:
    """Within this block, phases that default to `enabled=None` report (see `reporting_now`)."""
    token = _REPORTING.set(bool(enabled))
    try:
        yield
    finally:
        _REPORTING.reset(token)


def reporting_now() -> bool:
    """Whether the innermost `reporting` block asked for progress."""
    return _REPORTING.get()


def on_terminal() -> bool:
    """Whether stderr is an interactive terminal (bars) rather than a log (plain lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def say(line: str) -> None:
    """One plain line on stderr (flushed, so logs show it at once)."""
    print(f"saddlestep: {line}", file=sys.stderr, flush=True)


class Progress:
    """Progress through a phase with a known total (`total` units) or an open end (`total=None`).

    **Arguments:**

    - `desc`: what the phase does, e.g. `"sweep"` or `"AGF"`.
    - `total`: how many units the phase has (None: unknown; then `update` reports a count).
    - `unit`: the name of a unit (`"cell"`, `"step"`).
    - `enabled`: show anything at all (default None: inside a `reporting()` block only).
    - `bar`: a tqdm bar (default: on a terminal); else plain lines.
    - `delay`: show nothing until the phase has run this long (a phase over in a blink, or one
      that fails at once, stays silent).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "it", *, enabled: bool | None = None,
                 bar: bool | None = None, done: int = 0, delay: float = 0.0):
        enabled = reporting_now() if enabled is None else enabled
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled
        self.n, self._done_before, self.delay = done, done, delay
        self.start = time.perf_counter()
        self._last_plain = self.start
        self._bar = None
        self._postfix = ""
        self._started = False
        if enabled and (on_terminal() if bar is None else bar):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=desc, unit=unit, file=sys.stderr, leave=False,
                             delay=delay)
        elif enabled and delay <= 0:
            self._say_started()

    def _say_started(self) -> None:
        self._started = True
        of = f", {self.total} {self.unit}s" if self.total is not None else ""
        say(f"{self.desc}: started{of}" + (f" ({self._done_before} done before)" if self._done_before else ""))

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by `n` units; `postfix` (e.g. `t=12.3`) describes where the phase is."""
        self.n += n
        if not self.enabled:
            return
        self._postfix = ", ".join(f"{k} {_short(v)}" for k, v in postfix.items())
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix_str(self._postfix)
            return
        now = time.perf_counter()
        if not self._started:
            if now - self.start < self.delay:
                return
            self._say_started()
            self._last_plain = now
        if now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            say(f"{desc_count(self)}{'; ' + self._postfix if self._postfix else ''} ({now - self.start:.0f} s)")

    def close(self, summary: str = "") -> None:
        """End the phase: one closing line with the time it took (and `summary`)."""
        if not self.enabled:
            return
        took = time.perf_counter() - self.start
        self.enabled = False
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self._started and took < max(self.delay, PHASE_QUIET_S):
            return  # over in a blink: nothing to say
        say(f"{desc_count(self)} in {took:.1f} s" + (f"; {summary}" if summary else ""))


def desc_count(p: Progress) -> str:
    if p.total is not None:
        return f"{p.desc}: {p.n}/{p.total} {p.unit}s"
    return f"{p.desc}: {p.n} {p.unit}{'s' if p.n != 1 else ''}"


PHASE_QUIET_S = 1.0  # a phase shorter than this gets no closing line


@contextlib.contextmanager
def phase(desc: str, *, enabled: bool = True, delay: float = 0.0) -> Iterator[None]:
    """A phase without units (compiling, writing): one line at its start, and one at its end
    with the time it took when that was noticeable (≥ `PHASE_QUIET_S`).

    With `delay`, the start line waits that many seconds and is not printed at all if the phase
    is over by then — so a phase that fails at once (bad input) leaves only its error line.
    """
    if not enabled:
        yield
        return
    start = time.perf_counter()
    timer = None
    if delay > 0:
        timer = threading.Timer(delay, say, args=(f"{desc}…",))
        timer.daemon = True
        timer.start()
    else:
        say(f"{desc}…")
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
    took = time.perf_counter() - start
    if took >= max(PHASE_QUIET_S, delay):
        say(f"{desc}: done in {took:.1f} s")


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
