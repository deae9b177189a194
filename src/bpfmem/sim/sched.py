"""The scheduler: the one oracle through which every choice of a run goes.

Problem: a model run must be reproducible bit for bit, and a failing run must
become a replayable artifact.  So nothing in the model may call ``random`` or
read a clock; every nondeterministic decision (a grace period's length, which
CPU an interrupt hits, a workload key) is asked of a ``Scheduler``.

Mechanism (after shuttle's ``Scheduler`` trait)::

    choose(label, n) -> int in [0, n)      # a recorded step
    Schedule(seed, steps)                  # what a run chose, in order

``RandomScheduler`` draws from one seeded ``random.Random``; ``ReplayScheduler``
returns the recorded steps again.  ``RecordingScheduler`` wraps any scheduler
and records (cross-cutting features wrap; they are not flags).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


class ScheduleExhausted(Exception):
    """A replay asked for more choices than the recorded schedule holds."""


@dataclass
class Schedule:
    """A run's identity: the seed plus every choice it made, in order."""

    seed: int
    steps: list[int] = field(default_factory=list)


class Scheduler(Protocol):
    """Decides every choice of a run."""

    seed: int

    def choose(self, label: str, n: int) -> int:
        """Return an integer in ``[0, n)`` for the choice named ``label``."""
        ...


class RandomScheduler:
    """Seeded pseudo-random choices: one seed, one result."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        return self._rng.randrange(n)


class FirstScheduler:
    """Always chooses 0: the run with no randomness at all."""

    seed = 0

    def choose(self, label: str, n: int) -> int:
        return 0


class ReplayScheduler:
    """Returns the steps of a recorded ``Schedule`` in order."""

    def __init__(self, schedule: Schedule) -> None:
        self.seed = schedule.seed
        self._steps = schedule.steps
        self._i = 0

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        if self._i >= len(self._steps):
            raise ScheduleExhausted(f"replay ran out of steps at choice {self._i} ({label})")
        v = self._steps[self._i]
        self._i += 1
        if not 0 <= v < n:
            raise ScheduleExhausted(f"recorded step {v} out of range [0, {n}) at {label}")
        return v


class RecordingScheduler:
    """Wraps a scheduler and records every non-trivial choice: its value, its number of
    options and its label (a replay can then check it is asked the same questions)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.seed = inner.seed
        self.schedule = Schedule(inner.seed)
        self.options: list[int] = []
        self.labels: list[str] = []

    def choose(self, label: str, n: int) -> int:
        v = self.inner.choose(label, n)
        if n > 1:
            self.schedule.steps.append(v)
            self.options.append(n)
            self.labels.append(label)
        return v


def uniform_ns(sched: Scheduler, label: str, lo: int, hi: int, quantum: int = 1) -> int:
    """A duration in ``[lo, hi]`` in steps of ``quantum`` ns, chosen by ``sched``."""
    if hi < lo:
        raise ValueError(f"{label}: empty range [{lo}, {hi}]")
    n = (hi - lo) // quantum + 1
    return lo + sched.choose(label, n) * quantum
