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

    def __init__(self, stream: Any, unit: str = "") -> None:
        self.stream = stream
        self.unit = unit
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

    def update(self, task: int, description: str | None = None, advance: float = 0.0,
               completed: float | None = None, **_kw: Any) -> None:
        t = self.tasks[task]
        if completed is not None:
            t["done"] = completed
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
            took = now - self.t0
            pct = eta = amount = ""
            if t["total"]:
                pct = f", {100 * t['done'] / t['total']:.0f}%"
                if self.unit:
                    amount = f", {t['done']:.2f}/{t['total']:.2f} {self.unit}"
                if 0 < t["done"] < t["total"]:
                    eta = f", about {took * (t['total'] - t['done']) / t['done']:.0f} s left"
            self.stream.write(f"bpfmem: {t['description']} ({took:.0f} s{amount}{pct}{eta})\n")
        self.stream.flush()


def progress(quiet: bool = False, as_json: bool = False, unit: str = "") -> Any:
    """A progress display for a long command: a bar on a terminal (not under --json), plain lines
    otherwise, nothing with --quiet.  ``unit`` names what the task's total counts (e.g. simulated
    seconds), shown beside the bar with the time left."""
    if quiet:
        return Progress(console=Console(stderr=True), disable=True)
    if sys.stderr.isatty() and not as_json:
        amount = (TextColumn("{task.completed:.2f}/{task.total:.2f} " + unit.replace("[", "\\[")) if unit
                  else TextColumn("{task.completed:.0f}/{task.total:.0f}"))
        return Progress(TextColumn("{task.description}"), BarColumn(), amount,
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                        transient=True)
    if as_json:
        return Progress(console=Console(stderr=True), disable=True)
    return _Lines(sys.stderr, unit)
