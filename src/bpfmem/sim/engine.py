"""The discrete-event engine: integer-nanosecond time and a heap of callbacks.

Problem: every mechanism of the model (RCU grace periods, irq_work, workqueues,
producers running BPF programs on CPUs) needs "run this at time t" and nothing
more.  The engine provides exactly that and knows nothing of memory.

Mechanism (after SimPy's ``Environment``)::

    heap of (time_ns, prio, seq, Timer) --step()--> timer.fn(*timer.args)

``seq`` is a global counter, so two entries at the same time and priority run
in the order they were scheduled: the engine itself never makes a choice.  Any
choice (which CPU first, how long a grace period lasts) belongs to the
scheduler (``sim.sched``).  Exceptions raised by a callback propagate out of
``step()``/``run()``: failures are never dropped.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Callable

URGENT = 0
NORMAL = 1
LATE = 2

NSEC_PER_USEC = 1_000
NSEC_PER_MSEC = 1_000_000
NSEC_PER_SEC = 1_000_000_000


class Timer:
    """A scheduled callback.  ``cancel()`` makes it a no-op (lazy deletion)."""

    __slots__ = ("time", "fn", "args", "cancelled")

    def __init__(self, time: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.time = time
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(frozen=True)
class EngineStatistics:
    now_ns: int
    pending: int
    steps: int


class Engine:
    """Integer-ns clock plus an event heap; ``run(until)`` advances time."""

    def __init__(self) -> None:
        self.now: int = 0
        self._heap: list[tuple[int, int, int, Timer]] = []
        self._seq = 0
        self._steps = 0

    def at(self, time: int, fn: Callable[..., Any], *args: Any, prio: int = NORMAL) -> Timer:
        """Run ``fn(*args)`` at absolute time ``time`` (never in the past)."""
        if time < self.now:
            raise ValueError(f"cannot schedule in the past: {time} < now {self.now}")
        t = Timer(time, fn, args)
        self._seq += 1
        heapq.heappush(self._heap, (time, prio, self._seq, t))
        return t

    def after(self, delay: int, fn: Callable[..., Any], *args: Any, prio: int = NORMAL) -> Timer:
        """Run ``fn(*args)`` ``delay`` ns from now."""
        return self.at(self.now + delay, fn, *args, prio=prio)

    def peek(self) -> int | None:
        """Time of the next live entry, or None when nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][3].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def next_time(self, exclude: Callable[[Timer], bool]) -> int | None:
        """Earliest live entry for which ``exclude(timer)`` is false (a scan)."""
        best = None
        for time, _prio, _seq, t in self._heap:
            if not t.cancelled and (best is None or time < best) and not exclude(t):
                best = time
        return best

    def step(self) -> bool:
        """Run the next entry; False when the heap is empty."""
        heap = self._heap
        while heap:
            time, _prio, _seq, t = heapq.heappop(heap)
            if t.cancelled:
                continue
            self.now = time
            self._steps += 1
            t.fn(*t.args)
            return True
        return False

    def run(self, until: int | None = None) -> None:
        """Run entries up to and including time ``until`` (all, if None).

        Afterwards ``now == until`` even if nothing was scheduled then, so
        idle periods advance the clock.
        """
        heap = self._heap
        pop = heapq.heappop
        while heap:
            time, _prio, _seq, t = heap[0]
            if until is not None and time > until:
                break
            pop(heap)
            if t.cancelled:
                continue
            self.now = time
            self._steps += 1
            t.fn(*t.args)
        if until is not None and until > self.now:
            self.now = until

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(self.now, sum(1 for e in self._heap if not e[3].cancelled), self._steps)
