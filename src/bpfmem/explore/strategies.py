"""Schedulers that explore: PCT, bounded DFS, and a replay that checks it is asked the same questions.

All of them answer ``choose(label, n)`` (the ``sim.sched.Scheduler``
protocol).  Labels say what is chosen: ``next:a,b,time`` (which program runs
next, option 0 being the one that ran last, so a *deviation* is a
preemption), ``rf:cpu0:obj#3.ver`` (which write a plain load reads, option 0
the newest), ``nmi@cpu0:unit_alloc:active`` (0: no NMI here).
"""

from __future__ import annotations

import random
import zlib


class PctScheduler:
    """Probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010).

    ``n`` threads (the programs and the ``time`` pseudo-thread) get random
    distinct priorities above ``depth``; ``depth - 1`` change points are drawn
    uniformly from ``[1, k]`` (``k``: the number of scheduling steps of the
    scenario, measured); at the ``i``-th change point the highest-priority
    enabled thread drops to priority ``i``.  The highest-priority enabled
    thread always runs.  A bug of depth ``d <= depth`` is then found with
    probability at least ``1 / (n * k^(d-1))`` per schedule.  Other choices
    (which write a load reads, NMI arrival) are seeded coin flips.
    """

    def __init__(self, seed: int, depth: int, k: int) -> None:
        if depth < 1 or k < 1:
            raise ValueError(f"PCT needs depth >= 1 and k >= 1, got {depth}, {k}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.depth = depth
        self.k = k
        self.prio: dict[str, float] = {}
        points = self.rng.sample(range(1, k + 1), min(depth - 1, k))
        self.change = {step: float(i + 1) for i, step in enumerate(points)}
        self.step = 0

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        if not label.startswith("next:"):
            return self.rng.randrange(n)
        names = label[5:].split("@", 1)[0].split(",")
        self.step += 1
        prio = self.prio
        for nm in names:
            if nm not in prio:
                prio[nm] = self.depth + self.rng.random()      # i.i.d. uniform: a random permutation above depth
        best = max(range(n), key=lambda i: prio[names[i]])
        low = self.change.get(self.step)
        if low is not None:
            prio[names[best]] = low
            best = max(range(n), key=lambda i: prio[names[i]])
        return best


class DfsScheduler:
    """Replays a prefix, then takes option 0; records (choice, options) of every choice."""

    def __init__(self, prefix: list[int]) -> None:
        self.seed = 0
        self.prefix = prefix
        self.trace: list[tuple[int, int]] = []

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        i = len(self.trace)
        c = self.prefix[i] if i < len(self.prefix) else 0
        if c >= n:
            raise ReplayDivergence(f"DFS prefix asks for option {c} of {n} at {label!r}")
        self.trace.append((c, n))
        return c


def next_prefix(trace: list[tuple[int, int]], bound: int, floor: int) -> list[int] | None:
    """The next DFS prefix after a run with ``trace``: the deepest choice at or after position ``floor``
    that can take its next option without exceeding ``bound`` deviations (non-zero choices)."""
    dev = [0]
    for c, _n in trace:
        dev.append(dev[-1] + (c != 0))
    for pos in range(len(trace) - 1, floor - 1, -1):
        c, n = trace[pos]
        if c + 1 < n and dev[pos] + 1 <= bound:
            return [cc for cc, _ in trace[:pos]] + [c + 1]
    return None


class ReplayDivergence(ValueError):
    """A replay was asked a different question than the recorded run (another bpfmem, another scenario)."""


def labels_digest(labels: list[str]) -> int:
    return zlib.crc32("\n".join(labels).encode())


class CheckedReplayScheduler:
    """Returns recorded choices and fails loudly where the run asks something else than it recorded."""

    def __init__(self, choices: list[int], options: list[int] | None) -> None:
        self.seed = 0
        self.choices = choices
        self.options = options
        self.i = 0

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        i = self.i
        if i >= len(self.choices):
            raise ReplayDivergence(f"the replay string holds {len(self.choices)} choices; the run asks for "
                                   f"choice {i + 1} ({label})")
        if self.options is not None and self.options[i] != n:
            raise ReplayDivergence(f"choice {i} ({label}): recorded with {self.options[i]} options, "
                                   f"this run has {n}")
        v = self.choices[i]
        if not 0 <= v < n:
            raise ReplayDivergence(f"choice {i} ({label}): recorded option {v} is not in [0, {n})")
        self.i += 1
        return v

    def finish(self, labels: list[str], digest: int | None) -> None:
        """After the run: every recorded choice was used, and the questions were the recorded ones."""
        if self.i != len(self.choices):
            raise ReplayDivergence(f"the run ended after {self.i} of the {len(self.choices)} recorded choices")
        if digest is not None and labels_digest(labels) != digest:
            raise ReplayDivergence("the run asked different questions than the recorded one (labels differ)")


class RandomWalkScheduler:
    """Random exploration that can reach long uninterrupted runs.

    A uniform choice at every step almost never lets one program run twenty
    steps in a row, which is what a writer's copy-publish-free-reuse sequence
    needs.  So each schedule first draws how eagerly it preempts (probability
    1/2 ... 1/32 per step), how often a plain load reads an older write, and how
    often an NMI arrives at a labelled point; every choice is then a seeded coin
    flip with those odds.  Option 0 of ``next:`` is the program that ran last; time, when offered, is
    the last option and is taken with its own odds.
    """

    SWITCH = (1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32)
    TIME = (1 / 2, 1 / 8, 1 / 32)
    STALE = (0.0, 1 / 8, 1 / 2)
    NMI = (1 / 2, 1 / 8, 1 / 32)

    def __init__(self, seed: int) -> None:
        self.seed = seed
        rng = self.rng = random.Random(seed)
        self.p_switch = rng.choice(self.SWITCH)
        self.p_time = rng.choice(self.TIME)
        self.p_stale = rng.choice(self.STALE)
        self.p_nmi = rng.choice(self.NMI)

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        rng = self.rng
        c = label[0]
        if c == "n" and label.startswith("next:"):
            if label.endswith(",time") or ",time@" in label:       # time is the last option when offered
                if rng.random() < self.p_time:
                    return n - 1
                n -= 1
                if n == 1:
                    return 0
            return 0 if rng.random() >= self.p_switch else rng.randrange(1, n)
        if c == "r" and label.startswith("rf:"):
            return 0 if rng.random() >= self.p_stale else rng.randrange(1, n)
        if c == "n" and label.startswith("nmi@"):
            return int(rng.random() < self.p_nmi)
        return rng.randrange(n)
