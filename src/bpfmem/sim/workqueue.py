"""Workqueues: process-context work run later by a kworker.

Models: kernel/workqueue.c ``queue_work`` on ``system_unbound_wq`` /
``system_dfl_wq`` as seen from bpf: the work runs in task context after a
short scheduling delay (a profile value).
"""

from __future__ import annotations

from typing import Callable

from .engine import Engine


class Workqueue:
    """A workqueue whose items run ``delay_ns`` after being queued, in order."""

    def __init__(self, engine: Engine, name: str, delay_ns: int = 50_000) -> None:
        self.engine = engine
        self.name = name
        self.delay_ns = delay_ns
        self.queued = 0

    def queue_work(self, fn: Callable[[], None]) -> None:
        self.queued += 1
        self.engine.after(self.delay_ns, fn)
