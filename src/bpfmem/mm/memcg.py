"""Memory cgroups as BPF memory is charged to them.

Models: mm/memcontrol.c (``try_charge_memcg``, ``set_active_memcg``) and the
BPF helpers of kernel/bpf/syscall.c (``bpf_map_get_memcg``), v6.18.

Problem: since v5.11 BPF memory is charged to the memory cgroup of the task
that created the map (``map->objcg``), also when a program allocates from an
interrupt on some other task's time.  The kernel does this by switching the
*active* memcg around the allocation; the model passes the memcg explicitly.

A charge walks from the cgroup to the root and fails if any level would pass
its limit.  Allocations that may reclaim would try reclaim first; BPF memory
is not reclaimable, so in the model they fail the same way (the caller turns
that into ENOMEM; the OOM killer a task of the cgroup would meet is decided by
the caller, ``maps.memcg_rules``).  GFP_NOWAIT charges (the allocator's
irq_work refill) fail at the limit without reclaim; GFP_ATOMIC charges
(``__GFP_HIGH``) are forced past it (``force_charge``).  Every refusal
increments ``failcnt`` on the level that refused.

Views: ``files("v1")`` gives ``memory.kmem.usage_in_bytes``,
``memory.kmem.max_usage_in_bytes``, ``memory.usage_in_bytes``,
``memory.limit_in_bytes``, ``memory.failcnt``; ``files("v2")`` gives
``memory.current``, ``memory.peak``, ``memory.max``, ``memory.events`` max.

Deviation: the kernel charges in whole pages through a per-CPU byte stock (the
v1 files move in 4 KiB steps, ``memory.usage_in_bytes`` in 256 KiB batches);
the model keeps exact bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_COUNTER_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class MemcgStatistics:
    name: str
    usage: int
    peak: int
    limit: int
    failcnt: int


class MemCgroup:
    """One memory cgroup: hierarchical usage, peak, limit and failure count."""

    __slots__ = ("name", "parent", "children", "usage", "peak", "limit", "failcnt", "instruments")

    def __init__(self, name: str = "/", parent: MemCgroup | None = None, limit: int = PAGE_COUNTER_MAX) -> None:
        self.name = name
        self.parent = parent
        self.children: list[MemCgroup] = []
        self.usage = 0
        self.peak = 0
        self.limit = limit
        self.failcnt = 0
        self.instruments = parent.instruments if parent is not None else None
        if parent is not None:
            parent.children.append(self)

    def child(self, name: str, limit: int = PAGE_COUNTER_MAX) -> MemCgroup:
        path = name if self.parent is None and name.startswith("/") else f"{self.name.rstrip('/')}/{name}"
        return MemCgroup(path, self, limit)

    def try_charge(self, nbytes: int) -> bool:
        """Charge ``nbytes`` here and in every ancestor, or nothing at all."""
        c: MemCgroup | None = self
        while c is not None:
            if c.usage + nbytes > c.limit:
                c.failcnt += 1
                return False
            c = c.parent
        self.force_charge(nbytes)
        return True

    def force_charge(self, nbytes: int) -> None:
        """``page_counter_charge()`` after a refused ``try_charge``: the ``force:`` label of
        ``try_charge_memcg`` for ``__GFP_HIGH`` (GFP_ATOMIC) charges, which may pass the limit."""
        c: MemCgroup | None = self
        while c is not None:
            u = c.usage + nbytes
            c.usage = u
            if u > c.peak:
                c.peak = u
            c = c.parent
        ins = self.instruments
        if ins is not None and ins.active:
            ins.emit("memcg_charge", self, nbytes)

    def uncharge(self, nbytes: int) -> None:
        c: MemCgroup | None = self
        while c is not None:
            c.usage -= nbytes
            if c.usage < 0:
                raise AssertionError(f"memcg {c.name}: usage below zero after uncharge of {nbytes}")
            c = c.parent
        ins = self.instruments
        if ins is not None and ins.active:
            ins.emit("memcg_uncharge", self, nbytes)

    def reset_peak(self) -> None:
        """Writing to ``memory.peak`` (v2) / ``memory.max_usage_in_bytes`` (v1)."""
        self.peak = self.usage

    def files(self, version: str = "v2") -> dict[str, int | str]:
        if version == "v1":
            return {
                "memory.kmem.usage_in_bytes": self.usage,
                "memory.kmem.max_usage_in_bytes": self.peak,
                "memory.usage_in_bytes": self.usage,
                "memory.max_usage_in_bytes": self.peak,
                "memory.limit_in_bytes": self.limit,
                "memory.failcnt": self.failcnt,
            }
        if version == "v2":
            return {
                "memory.current": self.usage,
                "memory.peak": self.peak,
                "memory.max": "max" if self.limit == PAGE_COUNTER_MAX else self.limit,
                "memory.events.max": self.failcnt,
            }
        raise ValueError(f"memcg files: version must be 'v1' or 'v2', got {version!r}")

    def statistics(self) -> MemcgStatistics:
        return MemcgStatistics(self.name, self.usage, self.peak, self.limit, self.failcnt)


class ActiveMemcg:
    """Which memcg an accounted allocation on a CPU charges: ``set_active_memcg()``.

    Models: include/linux/sched/mm.h ``set_active_memcg`` and mm/memcontrol.c
    ``current_obj_cgroup``/``get_mem_cgroup_from_current``, v6.18.  In task
    context a charge goes to ``current->active_memcg`` if set, else to the
    running task's cgroup.  In interrupt context there is no meaningful task:
    only the per-CPU ``int_active_memcg`` is used, and without it nothing is
    charged.  That is how BPF charges the map creator from an irq_work or NMI.
    The root cgroup is never charged.
    """

    def __init__(self, ncpus: int, root: MemCgroup) -> None:
        self.root = root
        self.task_memcg: list[MemCgroup | None] = [None] * ncpus
        self.active_memcg: list[MemCgroup | None] = [None] * ncpus
        self.int_active_memcg: list[MemCgroup | None] = [None] * ncpus

    def set_active_memcg(self, cpu: int, in_interrupt: bool, memcg: MemCgroup | None) -> MemCgroup | None:
        """Set the active memcg of this context; returns the previous one (to restore)."""
        table = self.int_active_memcg if in_interrupt else self.active_memcg
        old = table[cpu]
        table[cpu] = memcg
        return old

    def current(self, cpu: int, in_interrupt: bool) -> MemCgroup | None:
        """The memcg an ``__GFP_ACCOUNT`` allocation made now on ``cpu`` charges (None: nobody)."""
        if in_interrupt:
            memcg = self.int_active_memcg[cpu]
        else:
            memcg = self.active_memcg[cpu] or self.task_memcg[cpu]
        return None if memcg is self.root else memcg
