"""The percpu allocator as charged to memcg.

Models: mm/percpu.c ``__alloc_percpu_gfp``/``free_percpu`` and
mm/percpu-internal.h ``pcpu_obj_full_size``, v6.18.

A percpu area of ``size`` bytes exists once per possible CPU.  With memcg
accounting, the chunk also keeps one ``obj_cgroup`` pointer per
``PCPU_MIN_ALLOC_SIZE`` (4 B) unit, so the charge is
``size * num_possible_cpus() + size / 4 * 8``.
"""

from __future__ import annotations

from ..sim import Machine
from .memcg import MemCgroup
from .slab import MemObj, Slab

PCPU_MIN_ALLOC_SIZE = 4
PCPU_MIN_UNIT_SIZE = 32 << 10


def pcpu_obj_full_size(size: int, ncpus: int) -> int:
    """``pcpu_obj_full_size()``: bytes charged for a percpu area of ``size``."""
    size = -(-size // PCPU_MIN_ALLOC_SIZE) * PCPU_MIN_ALLOC_SIZE
    return size * ncpus + size // PCPU_MIN_ALLOC_SIZE * 8


class Percpu:
    """``__alloc_percpu_gfp`` / ``free_percpu`` on top of the machine's slab ledger."""

    def __init__(self, machine: Machine, slab: Slab) -> None:
        self.m = machine
        self.slab = slab

    def alloc(self, size: int, gfp: int, memcg: MemCgroup | None) -> MemObj | None:
        ncpus = self.m.num_possible_cpus()
        full = pcpu_obj_full_size(size, ncpus)
        return self.slab.alloc_raw(size * ncpus, full, gfp, memcg, "percpu")

    def free(self, obj: MemObj) -> None:
        self.slab.kfree(obj)
