"""pcpu_freelist: the per-CPU free lists behind preallocated hash maps.

Models: kernel/bpf/percpu_freelist.c, v6.18 (rqspinlock-protected heads since
≈6.15).  ``pcpu_freelist_populate`` spreads the preallocated elements evenly
over the CPUs; ``__pcpu_freelist_pop`` takes from the local CPU first, then
walks the other CPUs in order; ``__pcpu_freelist_push`` pushes onto the local
CPU's list.  All reuse is immediate: there is no grace period anywhere.

Deviation: lock failures of rqspinlock (deadlock detection) are not modelled;
the NMI ``extralist`` of older kernels is not modelled.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class PcpuFreelist(Generic[T]):
    """``struct pcpu_freelist``: one LIFO list per possible CPU."""

    def __init__(self, ncpus: int) -> None:
        self.freelist: list[list[T]] = [[] for _ in range(ncpus)]

    def populate(self, elems: list[T]) -> None:
        """``pcpu_freelist_populate()``: even split, the first CPUs get the remainder."""
        n = len(self.freelist)
        per, rem = divmod(len(elems), n)
        i = 0
        for cpu in range(n):
            cnt = per + (1 if cpu < rem else 0)
            self.freelist[cpu].extend(elems[i:i + cnt])
            i += cnt

    def push(self, cpu: int, node: T) -> None:
        """``__pcpu_freelist_push()``."""
        self.freelist[cpu].append(node)

    def pop(self, cpu: int) -> T | None:
        """``__pcpu_freelist_pop()``: local list, then the next CPUs in order."""
        n = len(self.freelist)
        for i in range(n):
            lst = self.freelist[(cpu + i) % n]
            if lst:
                return lst.pop()
        return None

    def __len__(self) -> int:
        return sum(len(lst) for lst in self.freelist)
