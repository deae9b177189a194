"""How much memory a model run will need, known before it starts.

Problem: the model keeps what a run needs to be exact — every key a producer touches, every
preallocated element, every memory sample of the series it reports — and some option values
ask for more of that than the machine has (a 2^30-entry preallocated map, an hour sampled every
10 us).  Found out by running, that is an out-of-memory kill of the user's machine after minutes.
So the run is priced up front from a few per-item costs, measured on CPython 3.11 (RSS growth
of real runs, rounded up), and refused when the price passes what the machine has available.

Parked objects are not priced: they are counted, not made (count mode, docs/design.md), so a
blow-up of 10^8 parked objects costs a few bytes each in the run and nothing up front.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BASE_BYTES = 100 << 20          # the interpreter, bpfmem and its imports
PER_KEY_BYTES = 220             # a key in the workload's programs, its table slot, records and element
PER_PREALLOC_ELEM_BYTES = 180   # a preallocated element (prealloc_init makes them all at map creation)
PER_SAMPLE_BYTES = 3000         # one memory sample with its per-list breakdown, and its JSON
USABLE_FRACTION = 0.9           # of MemAvailable: leave the rest to everything else


@dataclass(frozen=True)
class RunSize:
    """One (use case, policy) run as the model will hold it."""

    keys: int                   # distinct keys the producers use
    prealloc_elems: int         # elements made at map creation (0 unless preallocated)
    samples: int                # memory samples kept (the whole series is reported)


@dataclass(frozen=True)
class Footprint:
    """The price of a command's runs, per part; ``total`` is what is compared with the machine."""

    keys: int
    prealloc: int
    samples: int

    @property
    def total(self) -> int:
        return BASE_BYTES + self.keys + self.prealloc + self.samples

    def largest(self) -> str:
        """Which part dominates: ``keys``, ``prealloc`` or ``samples``."""
        return max(("keys", "prealloc", "samples"), key=lambda k: getattr(self, k))


def price(runs: list[RunSize]) -> Footprint:
    """Runs happen one after another: the largest run's map is live, every run's series is kept."""
    if not runs:
        return Footprint(0, 0, 0)
    return Footprint(keys=max(r.keys for r in runs) * PER_KEY_BYTES,
                     prealloc=max(r.prealloc_elems for r in runs) * PER_PREALLOC_ELEM_BYTES,
                     samples=sum(r.samples for r in runs) * PER_SAMPLE_BYTES)


def samples_per_run(simulated_ns: int, interval_ns: int) -> int:
    """A sample at map creation, then one every ``interval_ns``, and one per phase boundary."""
    return simulated_ns // max(1, interval_ns) + 8


def available_bytes() -> int:
    """What this machine can give the run: MemAvailable (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1 << 62              # unknown: do not refuse


def budget_bytes() -> int:
    return int(available_bytes() * USABLE_FRACTION)


def gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"
