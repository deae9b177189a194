"""Who pays: the map creator's cgroup, even when the allocation happens in an interrupt."""

from __future__ import annotations

from bpfmem.alloc import V6_6, BpfMemAlloc, bpf_mem_alloc_init, bpf_mem_cache_alloc
from bpfmem.mm import GFP_NOWAIT, __GFP_ACCOUNT
from bpfmem.sim import Context

from ..conftest import make_world


def test_accounted_kmalloc_in_interrupt_without_active_memcg_charges_nobody() -> None:
    w = make_world(1)
    ctx = w.mm.memcg_ctx
    other = w.mm.root_memcg.child("other-task")
    ctx.task_memcg[0] = other
    assert ctx.current(0, in_interrupt=False) is other
    assert ctx.current(0, in_interrupt=True) is None
    old = ctx.set_active_memcg(0, True, w.memcg)
    assert ctx.current(0, in_interrupt=True) is w.memcg
    ctx.set_active_memcg(0, True, old)
    assert ctx.current(0, in_interrupt=True) is None


def test_refill_from_an_irq_on_another_tasks_time_charges_the_map_creator() -> None:
    """alloc_bulk runs in hard-IRQ context (irq_work) and uses set_active_memcg(objcg)."""
    w = make_world(1)
    other = w.mm.root_memcg.child("interrupted-task")
    w.mm.memcg_ctx.task_memcg[0] = other
    ma = BpfMemAlloc(w.m, w.mm, w.rcu, V6_6())
    bpf_mem_alloc_init(ma, 64, False, w.memcg)
    cpu = w.m.cpus[0]
    prefill = w.memcg.usage
    cpu.enter(Context.SOFTIRQ)        # a BPF program on a softirq, interrupting "other"'s task
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(10)]
    cpu.exit(Context.SOFTIRQ)
    assert all(objs)
    assert w.memcg.usage == prefill + 48 * 104   # the refill batch went to the creator's cgroup
    assert other.usage == 0
    # and the task's own accounted allocation in task context goes to the task's cgroup
    mine = w.mm.slab.kmalloc_node(64, GFP_NOWAIT | __GFP_ACCOUNT, w.mm.memcg_ctx.current(0, False))
    assert mine is not None and other.usage == 72
    assert w.mm.memcg_ctx.active_memcg[0] is None and w.mm.memcg_ctx.int_active_memcg[0] is None
