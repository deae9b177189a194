"""The IRQ order of the fast paths (566f6de3cea3, 62cf51cb0ebe: 6.7) and the size class of a free
before 7ac5c53e0073 (ksize()): what differs between versions, and what provably does not."""

from __future__ import annotations

import pytest

from bpfmem.alloc import (V6_1, V6_2, V6_6, V6_7, V6_8, BpfMemAlloc, MemAllocProfile, bpf_mem_alloc_init,
                          bpf_mem_cache_idx, sizes, unit_alloc, unit_free)
from bpfmem.mm import kmalloc_size_class
from bpfmem.sim import Cpu

from ..conftest import make_world
from ..bench.test_htab_mem import run

OLD_ORDER = (V6_1, V6_2, V6_6)
NEW_ORDER = (V6_7, V6_8)


def _points(profile: MemAllocProfile) -> list[tuple[str, int, bool]]:
    """(label, IRQs-off depth, refill work pending) at every point of 40 allocations then 140 frees on one CPU."""
    w = make_world(1)
    ma = BpfMemAlloc(w.m, w.mm, w.rcu, profile)
    assert bpf_mem_alloc_init(ma, 56, False, w.memcg) == 0
    c = ma.cache[0]  # type: ignore[index]
    seen: list[tuple[str, int, bool]] = []

    def hook(cpu: Cpu, label: str) -> None:
        seen.append((label, cpu.irq_off, c.refill_work.pending))
    w.m.cpus[0].point_hook = hook
    objs = [unit_alloc(c) for _ in range(40)]
    assert all(o is not None for o in objs)
    for o in objs:
        unit_free(c, o)  # type: ignore[arg-type]
    for o in [unit_alloc(c) for _ in range(100)]:
        unit_free(c, o)  # type: ignore[arg-type]
    return seen


@pytest.mark.parametrize("profile", OLD_ORDER + NEW_ORDER, ids=lambda p: p.name)
def test_only_6_1_to_6_6_leave_a_preemption_window_inside_irq_work_raise(profile: type[MemAllocProfile]) -> None:
    """6.1-6.6: the refill work is claimed (pending) with IRQs on and not yet queued: a point where another task
    can run.  6.7+: claimed and queued with IRQs off, so no such point exists."""
    claimed = [p for p in _points(profile()) if p[0] == "irq_work_raise:claimed"]
    if profile in OLD_ORDER:
        assert claimed and all(depth == 0 and pending for _, depth, pending in claimed)
    else:
        assert claimed == []


def test_the_order_changes_no_memory_or_speed_number() -> None:
    """Without a preempting task the refill runs at the same instant in both orders: v6.6 and v6.7 runs are
    identical, sample for sample."""
    a, b = run("add_del_on_diff_cpu", "v6.6", cpus=2, duration=0.3, idle=0.2), \
        run("add_del_on_diff_cpu", "v6.7", cpus=2, duration=0.3, idle=0.2)
    assert a.ops == b.ops > 0 and a.series == b.series and a.peak_bytes == b.peak_bytes


@pytest.mark.parametrize("unit", sizes)
def test_ksize_picks_the_same_class_as_unit_size(unit: int) -> None:
    """Before 7ac5c53e0073, bpf_mem_free() chose the class from ksize() of the object: every class is a kmalloc
    size, so ksize() == unit_size and both rules free into the same cache (the model frees by unit_size)."""
    assert kmalloc_size_class(unit) == unit
    assert bpf_mem_cache_idx(kmalloc_size_class(unit)) == bpf_mem_cache_idx(unit)
