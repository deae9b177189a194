"""Progress on stderr: a bar on a terminal, plain lines in a pipe or a log, nothing with --quiet.

Problem: a ten-minute run that prints nothing until it ends looks hung when its output goes to a
file or CI log, and a bar's control codes make such a log unreadable.  So a terminal gets a live
bar; anything else gets a plain line at most every few seconds, naming the phase (and a last line
when any was printed: a short command prints none); ``--quiet`` silences both.  Standard output (tables, ``--json``) is never touched.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LINE_EVERY_S = 3.0


class _Lines:
    """The ``rich.progress.Progress`` calls the commands use, as throttled plain lines."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tasks: dict[int, dict[str, Any]] = {}
        self.t0 = time.monotonic()
        self.last = self.t0
        self.printed = False

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None and self.printed:
            self._line(force=True, final=True)

    def add_task(self, description: str, total: float = 100.0, **_kw: Any) -> int:
        i = len(self.tasks)
        self.tasks[i] = {"name": description, "description": description, "total": total, "done": 0.0}
        self.last = self.t0          # the first line after LINE_EVERY_S: a short command prints none
        return i

    def update(self, task: int, description: str | None = None, advance: float = 0.0, **_kw: Any) -> None:
        t = self.tasks[task]
        if description is not None and description != t["description"]:
            t["description"] = description
            t["done"] += advance
            self._line()
        else:
            self.advance(task, advance)

    def advance(self, task: int, advance: float = 1.0) -> None:
        self.tasks[task]["done"] += advance
        self._line()

    def _line(self, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < LINE_EVERY_S:
            return
        self.last = now
        self.printed = True
        for t in self.tasks.values():
            if final:
                self.stream.write(f"bpfmem: {t['name']}: done in {now - self.t0:.1f} s\n")
                continue
            pct = f", {100 * t['done'] / t['total']:.0f}%" if t["total"] else ""
            self.stream.write(f"bpfmem: {t['description']} ({now - self.t0:.0f} s{pct})\n")
        self.stream.flush()


def progress(quiet: bool = False, as_json: bool = False) -> Any:
    """A progress display for a long command: a bar on a terminal (not under --json), plain lines
    otherwise, nothing with --quiet."""
    if quiet:
        return Progress(console=Console(stderr=True), disable=True)
    if sys.stderr.isatty() and not as_json:
        return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    return _Lines(sys.stderr)
