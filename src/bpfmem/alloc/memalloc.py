"""bpf_mem_alloc: the any-context BPF memory allocator.

Models: kernel/bpf/memalloc.c @ v6.18 (identical in substance since 6.6); the
6.1 and 6.2 shapes are version profiles (``policy.py``).

Problem: a BPF program may run in any context, NMI included, where kmalloc can
deadlock.  So each CPU keeps a stock of ready objects, touched only with IRQs
off and guarded against NMI re-entry by ``active``; an irq_work refills the
stock from slab below ``low_watermark`` and trims it above ``high_watermark``.
Freed objects are reusable at once; objects trimmed to slab first wait for an
RCU Tasks Trace grace period (sleepable programs may still read them).

One object's life (6.6+; L = free_llist of the freeing CPU)::

    kmalloc --alloc_bulk--> L --unit_alloc--> in use --unit_free--> L   (reuse now)
                            ^                                       |
                            |            free_bulk (cnt > high) to  v
                            +--alloc_bulk-- tgt->free_by_rcu_ttrace
                            +--alloc_bulk-- tgt->waiting_for_gp_ttrace  (1 GP in flight)
                                                  |  __free_rcu after tasks-trace GP
                                                  v
                                                kfree
    in use --unit_free_rcu--> free_by_rcu -> waiting_for_gp --RCU GP--> tgt->free_by_rcu_ttrace

Only one tasks-trace callback per cache is in flight; objects trimmed while it
is pending stay *parked* on ``free_by_rcu_ttrace`` until the next trim on that
cache (measured on the 6.18 kernel: docs/measurements.md §1, §3b).

Representation: llists are Python lists whose *end* is the list head (so
``__llist_add`` is ``append`` and ``__llist_del_first`` is ``pop``);
``llist_del_all`` + re-add loops reverse order as in the kernel.  Objects are
``mm.MemObj``; ``obj.hdr`` is the header word (the owning cache while in use).

Deviations: PREEMPT_RT irq
paths are not modelled; percpu objects carry their percpu area as
``obj.payload``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sized

from ..mm import (GFP_KERNEL, GFP_NOWAIT, __GFP_ACCOUNT, __GFP_NOWARN, __GFP_ZERO, MemCgroup, MemObj, Mm,
                  kmalloc_charge, kmalloc_size_class, pcpu_obj_full_size)
from ..rcu import (Rcu, call_rcu, call_rcu_hurry, call_rcu_tasks_trace, rcu_barrier, rcu_barrier_tasks_trace,
                   rcu_request_urgent_qs_task)
from ..sim import Cpu, IrqWork, Machine, irq_work_claim, irq_work_queue, irq_work_queue_claimed, irq_work_sync
from .policy import MemAllocProfile, V6_6
from .sizes import LLIST_NODE_SZ, NUM_CACHES, bpf_mem_cache_idx, sizes

NUMA_NO_NODE = -1


class _Anon:
    """One of a list's interchangeable objects, counted rather than made (``Machine.identity`` False)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "obj(anon)"


ANON = _Anon()


class ModelInvariantError(AssertionError):
    """A kernel WARN_ON in the modelled code fired: the model reached a state the kernel forbids."""


class BpfMemCache:
    """``struct bpf_mem_cache``: one CPU's stock for one unit size."""

    __slots__ = (
        # read and written by unit_alloc/unit_free with IRQs off and active held
        "free_llist", "active", "free_llist_extra", "refill_work", "objcg", "unit_size", "free_cnt",
        "low_watermark", "high_watermark", "batch", "percpu_size", "draining", "tgt",
        # bpf_mem_cache_free_rcu path
        "free_by_rcu", "waiting_for_gp", "call_rcu_in_progress", "free_llist_extra_rcu",
        # slab-bound path (free_by_rcu / waiting_for_gp in 6.1/6.2)
        "free_by_rcu_ttrace", "waiting_for_gp_ttrace", "call_rcu_ttrace_in_progress",
        # a proposal's own per-cache state (alloc/proposals.py), None for every kernel profile
        "prop",
        # model bookkeeping
        "cpu", "ma", "kmallocs", "kfrees", "anon",
    )

    def __init__(self, ma: BpfMemAlloc, cpu: Cpu, unit_size: int, percpu_size: int, objcg: MemCgroup | None) -> None:
        self.free_llist: list[MemObj] = []
        self.active = 0
        self.free_llist_extra: list[MemObj] = []
        # init_irq_work(&c->refill_work, bpf_mem_refill); container_of() is the closure
        self.refill_work = IrqWork(lambda work, cpu, c=self: bpf_mem_refill(c))
        self.objcg = objcg
        self.unit_size = unit_size
        self.free_cnt = 0
        self.low_watermark = 0
        self.high_watermark = 0
        self.batch = 0
        self.percpu_size = percpu_size
        self.draining = False
        self.tgt: BpfMemCache = self
        self.free_by_rcu: list[MemObj] = []
        self.waiting_for_gp: list[MemObj] = []
        self.call_rcu_in_progress = False
        self.free_llist_extra_rcu: list[MemObj] = []
        self.free_by_rcu_ttrace: list[MemObj] = []
        self.waiting_for_gp_ttrace: list[MemObj] = []
        self.call_rcu_ttrace_in_progress = False
        self.cpu = cpu
        self.ma = ma
        self.kmallocs = 0
        self.kfrees = 0
        self.anon = ma.anon
        self.prop: Any = None

    @property
    def hdr(self) -> BpfMemCache:
        """Without identities an allocated object is represented by the cache it came from, and its
        header (the owning cache, 6.6+) is that cache."""
        return self

    def __repr__(self) -> str:
        return f"<bpf_mem_cache cpu{self.cpu.id} unit {self.unit_size}>"

    def lists(self) -> dict[str, Sized]:
        out: dict[str, Sized] = {
            "free_llist": self.free_llist, "free_llist_extra": self.free_llist_extra,
            "free_by_rcu": self.free_by_rcu, "waiting_for_gp": self.waiting_for_gp,
            "free_llist_extra_rcu": self.free_llist_extra_rcu,
            "free_by_rcu_ttrace": self.free_by_rcu_ttrace, "waiting_for_gp_ttrace": self.waiting_for_gp_ttrace,
        }
        if self.prop is not None:
            out.update(self.prop.lists())
        return out


@dataclass(frozen=True)
class BpfMemCacheStatistics:
    cpu: int
    unit_size: int
    free_cnt: int
    low_watermark: int
    high_watermark: int
    batch: int
    lists: dict[str, int]
    call_rcu_in_progress: bool
    call_rcu_ttrace_in_progress: bool
    kmallocs: int
    kfrees: int


class BpfMemAlloc:
    """``struct bpf_mem_alloc``: per-CPU caches (fixed size) or 11 size classes per CPU."""

    def __init__(self, machine: Machine, mm: Mm, rcu: Rcu, profile: MemAllocProfile | None = None) -> None:
        self.m = machine
        self.mm = mm
        self.rcu = rcu
        self.profile: MemAllocProfile = profile if profile is not None else V6_6()
        self.cache: list[BpfMemCache] | None = None
        self.caches: list[list[BpfMemCache]] | None = None
        self.objcg: MemCgroup | None = None
        self.percpu = False
        self.outstanding = 0
        self.destroyed = False
        self.anon = not machine.identity
        self.shared: Any = None          # a proposal's per-allocator state (RFC v4's shared cache)

    def all_caches(self) -> list[BpfMemCache]:
        if self.cache is not None:
            return list(self.cache)
        if self.caches is not None:
            return [c for per_cpu in self.caches for c in per_cpu]
        return []

    def statistics(self) -> list[BpfMemCacheStatistics]:
        return [
            BpfMemCacheStatistics(c.cpu.id, c.unit_size, c.free_cnt, c.low_watermark, c.high_watermark, c.batch,
                                  {k: len(v) for k, v in c.lists().items()}, c.call_rcu_in_progress,
                                  c.call_rcu_ttrace_in_progress, c.kmallocs, c.kfrees)
            for c in self.all_caches()
        ]


# ---------------------------------------------------------------------------
# slab side
# ---------------------------------------------------------------------------

def __alloc(c: BpfMemCache, node: int, gfp: int) -> MemObj | None:
    """``__alloc()``: one object from slab (and its percpu area in percpu mode),
    charged to the active memcg that ``alloc_bulk`` set."""
    mm = c.ma.mm
    cpu = c.cpu
    memcg = mm.memcg_ctx.current(cpu.id, cpu.in_interrupt())
    gfp |= __GFP_NOWARN | __GFP_ACCOUNT | __GFP_ZERO
    if c.percpu_size:
        obj = mm.slab.kmalloc_node(c.percpu_size, gfp, memcg, node)
        if obj is None:
            return None
        pptr = mm.percpu.alloc(c.unit_size, gfp, memcg)
        if pptr is None:
            mm.slab.kfree(obj)
            return None
        obj.payload = pptr
    else:
        obj = mm.slab.kmalloc_node(c.unit_size, gfp, memcg, node)
        if obj is None:
            return None
    c.kmallocs += 1
    return obj


def _charged(c: BpfMemCache) -> MemCgroup | None:
    """The memcg a refill of ``c`` charges: the allocator's objcg (``get_memcg``), never the root."""
    mm = c.ma.mm
    return None if c.objcg is None or c.objcg is mm.root_memcg else c.objcg


def _alloc_anon(c: BpfMemCache, n: int, gfp: int) -> int:
    """``__alloc()`` called up to ``n`` times without identities: how many objects the refill got."""
    mm = c.ma.mm
    cpu = c.cpu
    memcg = mm.memcg_ctx.current(cpu.id, cpu.in_interrupt())
    gfp |= __GFP_NOWARN | __GFP_ACCOUNT | __GFP_ZERO
    slab = mm.slab
    if not c.percpu_size:
        k = slab.kmalloc_anon(c.unit_size, gfp, memcg, n)
    else:
        ncpus = c.ma.m.num_possible_cpus()
        full = pcpu_obj_full_size(c.unit_size, ncpus)
        k = 0
        while k < n:
            if slab.kmalloc_anon(c.percpu_size, gfp, memcg, 1) != 1:
                break
            if slab.alloc_raw_anon(c.unit_size * ncpus, full, gfp, memcg, 1) != 1:
                charged = memcg if memcg is not None else None
                slab.kfree_anon(kmalloc_size_class(c.percpu_size), kmalloc_charge(c.percpu_size), charged, 1)
                break
            k += 1
    c.kmallocs += k
    return k


def _free_anon(c: BpfMemCache, n: int) -> None:
    """``free_one()`` on ``n`` counted objects of ``c``."""
    if n <= 0:
        return
    slab = c.ma.mm.slab
    memcg = _charged(c)
    if c.percpu_size:
        ncpus = c.ma.m.num_possible_cpus()
        slab.kfree_anon(c.unit_size * ncpus, pcpu_obj_full_size(c.unit_size, ncpus), memcg, n)
        slab.kfree_anon(kmalloc_size_class(c.percpu_size), kmalloc_charge(c.percpu_size), memcg, n)
    else:
        slab.kfree_anon(kmalloc_size_class(c.unit_size), kmalloc_charge(c.unit_size), memcg, n)
    c.kfrees += n


def free_one(c: BpfMemCache, obj: MemObj) -> None:
    """``free_one()``: percpu area then the object go back to slab."""
    mm = c.ma.mm
    if obj.payload is not None:
        mm.percpu.free(obj.payload)
        obj.payload = None
    mm.slab.kfree(obj)
    c.kfrees += 1


def free_lists(c: BpfMemCache, owner: Any, names: tuple[str, ...]) -> int:
    """Detach each named list of ``owner`` (the cache, or a proposal's state) and free it: the count."""
    n = 0
    for name in names:
        objs = getattr(owner, name)
        setattr(owner, name, [])
        n += free_all(c, objs)
    return n


def free_all(c: BpfMemCache, objs: list[MemObj]) -> int:
    """``free_all()``: free a detached list; returns the count."""
    if c.anon:
        _free_anon(c, len(objs))
        return len(objs)
    for obj in objs:
        free_one(c, obj)
    return len(objs)


# ---------------------------------------------------------------------------
# refill / trim (irq_work)
# ---------------------------------------------------------------------------

def inc_active(c: BpfMemCache) -> None:
    """``inc_active()``: refill paths run with IRQs off; nobody else may hold active."""
    c.cpu.local_irq_save()
    c.active += 1
    if c.active != 1:
        raise ModelInvariantError(f"{c}: active {c.active} in refill path (WARN_ON_ONCE in inc_active)")


def dec_active(c: BpfMemCache) -> None:
    c.active -= 1
    c.cpu.local_irq_restore()


def add_obj_to_free_list(c: BpfMemCache, obj: MemObj) -> None:
    """``add_obj_to_free_list()``."""
    inc_active(c)
    hook = c.cpu.point_hook
    if hook is not None:
        hook(c.cpu, "alloc_bulk:add_obj_active")
    c.free_llist.append(obj)
    c.free_cnt += 1
    dec_active(c)


def alloc_bulk(c: BpfMemCache, cnt: int, node: int, atomic: bool) -> None:
    """``alloc_bulk()``: reuse slab-bound objects (per profile), then kmalloc."""
    if c.anon and (c.cpu.irq_off or not c.cpu.irq_work_list):
        _alloc_bulk_anon(c, cnt, atomic)   # no irq_work can run at an add_obj_to_free_list: one step
        return
    i = 0
    for lst in c.ma.profile.reuse_sources(c):
        while i < cnt and lst:
            add_obj_to_free_list(c, lst.pop())
            i += 1
        if i >= cnt:
            return
    gfp = GFP_NOWAIT if atomic else GFP_KERNEL
    mm, cpu = c.ma.mm, c.cpu
    # memcg = get_memcg(c): the allocator's objcg (the map creator's cgroup) or root
    old_memcg = mm.memcg_ctx.set_active_memcg(cpu.id, cpu.in_interrupt(), c.objcg or mm.root_memcg)
    try:
        while i < cnt:
            obj = __alloc(c, node, gfp)
            if obj is None:
                break
            add_obj_to_free_list(c, obj)
            i += 1
    finally:
        mm.memcg_ctx.set_active_memcg(cpu.id, cpu.in_interrupt(), old_memcg)


def _alloc_bulk_anon(c: BpfMemCache, cnt: int, atomic: bool) -> None:
    """``alloc_bulk()`` on counted objects: the same sources in the same order, in whole steps."""
    i = 0
    fl = c.free_llist
    for lst in c.ma.profile.reuse_sources(c):
        m = min(cnt - i, len(lst))
        if m:
            del lst[len(lst) - m:]
            fl.extend([ANON] * m)
            c.free_cnt += m
            i += m
        if i >= cnt:
            return
    gfp = GFP_NOWAIT if atomic else GFP_KERNEL
    mm, cpu = c.ma.mm, c.cpu
    old_memcg = mm.memcg_ctx.set_active_memcg(cpu.id, cpu.in_interrupt(), c.objcg or mm.root_memcg)
    try:
        k = _alloc_anon(c, cnt - i, gfp)
        if k:
            fl.extend([ANON] * k)
            c.free_cnt += k
    finally:
        mm.memcg_ctx.set_active_memcg(cpu.id, cpu.in_interrupt(), old_memcg)


def enque_to_free(c: BpfMemCache, obj: MemObj) -> None:
    """``enque_to_free()``: llist_add onto ``c->free_by_rcu_ttrace``."""
    if not c.anon:
        obj.hdr = None
    c.free_by_rcu_ttrace.append(obj)


def __free_rcu(c: BpfMemCache) -> None:
    """``__free_rcu()``: after the GP, what is still waiting goes to slab."""
    objs, c.waiting_for_gp_ttrace = c.waiting_for_gp_ttrace, []
    free_all(c, objs)
    c.call_rcu_ttrace_in_progress = False


def __free_rcu_tasks_trace(c: BpfMemCache) -> None:
    """``__free_rcu_tasks_trace()``: free now if the tasks-trace GP implied an RCU GP (6.2+)."""
    rcu = c.ma.rcu
    if c.ma.profile.ttrace_needs_call_rcu(rcu.trace_implies_rcu_gp):
        call_rcu(rcu, __free_rcu, c)
    else:
        __free_rcu(c)


def do_call_rcu_ttrace(c: BpfMemCache) -> None:
    """``do_call_rcu_ttrace()``: one tasks-trace callback in flight per cache."""
    if c.call_rcu_ttrace_in_progress:
        if c.draining:
            objs, c.free_by_rcu_ttrace = c.free_by_rcu_ttrace, []
            free_all(c, objs)
        return
    c.call_rcu_ttrace_in_progress = True
    if c.waiting_for_gp_ttrace:
        raise ModelInvariantError(f"{c}: waiting_for_gp_ttrace not empty (WARN_ON_ONCE in do_call_rcu_ttrace)")
    objs, c.free_by_rcu_ttrace = c.free_by_rcu_ttrace, []
    if not c.anon:
        objs.reverse()  # llist_for_each + llist_add reverses the order
    c.waiting_for_gp_ttrace = objs
    if c.draining:
        __free_rcu(c)
        return
    if "ttrace_as_rcu" in c.ma.profile.planted:      # planted bug for the explorer (never a kernel profile)
        call_rcu(c.ma.rcu, __free_rcu_tasks_trace, c)
        return
    call_rcu_tasks_trace(c.ma.rcu, __free_rcu_tasks_trace, c)


def free_bulk(c: BpfMemCache) -> None:
    """``free_bulk()``: trim free_llist to (high + low) / 2 towards slab."""
    tgt = c.ma.profile.free_bulk_target(c)
    if tgt.unit_size != c.unit_size or tgt.percpu_size != c.percpu_size:
        raise ModelInvariantError(f"{c}: tgt {tgt} has another unit size (WARN_ON_ONCE in free_bulk)")
    limit = (c.high_watermark + c.low_watermark) // 2
    if c.anon:
        f = c.free_cnt                      # pops until free_cnt <= limit, at least one if any
        m = f - limit if f > limit else min(f, 1)
        if m:
            del c.free_llist[len(c.free_llist) - m:]
            c.free_cnt -= m
            tgt.free_by_rcu_ttrace.extend([ANON] * m)
        extra, c.free_llist_extra = c.free_llist_extra, []
        tgt.free_by_rcu_ttrace.extend(extra)
        do_call_rcu_ttrace(tgt)
        return
    while True:
        inc_active(c)
        if c.free_llist:
            obj: MemObj | None = c.free_llist.pop()
            c.free_cnt -= 1
            cnt = c.free_cnt
        else:
            obj = None
            cnt = 0
        dec_active(c)
        hook = c.cpu.point_hook
        if hook is not None:
            hook(c.cpu, "free_bulk:after_pop")
        if obj is not None:
            enque_to_free(tgt, obj)
        if not cnt > limit:
            break
    extra, c.free_llist_extra = c.free_llist_extra, []
    for obj in reversed(extra):
        enque_to_free(tgt, obj)
    do_call_rcu_ttrace(tgt)


def __free_by_rcu(c: BpfMemCache) -> None:
    """``__free_by_rcu()`` (6.6+): after an RCU GP, send free_rcu objects to tgt's slab-bound list."""
    tgt = c.tgt
    objs, c.waiting_for_gp = c.waiting_for_gp, []
    if objs:
        tgt.free_by_rcu_ttrace.extend(objs)  # llist_add_batch keeps the batch's order
        do_call_rcu_ttrace(tgt)
    c.call_rcu_in_progress = False


def check_free_by_rcu(c: BpfMemCache) -> None:
    """``check_free_by_rcu()`` (6.6+): start an RCU GP for free_rcu objects if none is in flight."""
    if c.free_llist_extra_rcu:
        inc_active(c)
        extra, c.free_llist_extra_rcu = c.free_llist_extra_rcu, []
        if "lose_extra_rcu" in c.ma.profile.planted:
            extra = []              # planted bug for the explorer (never a kernel profile)
        for obj in reversed(extra):
            c.free_by_rcu.append(obj)
        dec_active(c)
    if not c.free_by_rcu:
        return
    if c.call_rcu_in_progress:
        # 6.6 (5af6807bdb10): "Ask RCU to expedite the grace period": the program or syscall running here
        # reports a quiescent state at its next cond_resched()
        rcu_request_urgent_qs_task(c.ma.rcu, c.cpu.id)
        return
    c.call_rcu_in_progress = True
    if c.waiting_for_gp:
        raise ModelInvariantError(f"{c}: waiting_for_gp not empty (WARN_ON_ONCE in check_free_by_rcu)")
    inc_active(c)
    hook = c.cpu.point_hook
    if hook is not None:
        hook(c.cpu, "check_free_by_rcu:active")
    c.waiting_for_gp, c.free_by_rcu = c.free_by_rcu, []
    dec_active(c)
    if c.draining:
        objs, c.waiting_for_gp = c.waiting_for_gp, []
        free_all(c, objs)
        c.call_rcu_in_progress = False
    else:
        call_rcu_hurry(c.ma.rcu, __free_by_rcu, c)


def bpf_mem_refill(c: BpfMemCache) -> None:
    """``bpf_mem_refill()``: the refill_work irq_work handler."""
    ins = c.ma.m.instruments
    if ins.active:
        ins.emit("irq_work_run", c.cpu, c.refill_work)
    if c.prop is not None:
        c.ma.profile.refill(c)          # a proposal's irq_work (alloc/proposals.py)
        return
    cnt = c.free_cnt
    if cnt < c.low_watermark:
        alloc_bulk(c, c.batch, NUMA_NO_NODE, True)
    elif cnt > c.high_watermark:
        free_bulk(c)
    if c.ma.profile.has_free_rcu:
        check_free_by_rcu(c)


def irq_work_raise(c: BpfMemCache) -> None:
    """``irq_work_raise()``: queue the refill on the cache's CPU."""
    work = c.refill_work
    if work.pending:
        return
    ins = c.ma.m.instruments
    if ins.active:
        ins.emit("irq_work_raise", c.cpu, work)
    irq_work_queue(c.cpu, work)


def irq_work_raise_irqs_on(c: BpfMemCache) -> None:
    """``irq_work_raise()`` as 6.1-6.6 called it, after ``local_irq_restore()``: ``irq_work_queue()`` claims
    the work, then queues it; a task preempted between the two leaves the work pending but not queued, and
    every other task's raise on this CPU is a no-op until it runs again (fixed in 6.7 by raising with IRQs
    still off: 566f6de3cea3, 62cf51cb0ebe)."""
    work = c.refill_work
    if not irq_work_claim(work):
        return
    ins = c.ma.m.instruments
    if ins.active:
        ins.emit("irq_work_raise", c.cpu, work)
    hook = c.cpu.point_hook
    if hook is not None:
        hook(c.cpu, "irq_work_raise:claimed")
    irq_work_queue_claimed(c.cpu, work)


# ---------------------------------------------------------------------------
# fast paths
# ---------------------------------------------------------------------------

def _irq_restore(cpu: Cpu) -> None:
    """``local_irq_restore()`` of the fast paths: a refill raised with IRQs off runs now (self-IPI)."""
    cpu.irq_off -= 1
    if not cpu.irq_off and cpu.irq_work_list and cpu.self_ipi:
        cpu.deliver_irq_work()


def unit_alloc(c: BpfMemCache) -> MemObj | None:
    """``unit_alloc()``: pop the local free_llist; NULL if empty or re-entered."""
    cpu = c.cpu
    hook = cpu.point_hook
    cpu.irq_off += 1
    if hook is not None:
        hook(cpu, "unit_alloc:irqs_off")
    obj = None
    cnt = 0
    c.active += 1
    if c.active == 1:
        if hook is not None:
            hook(cpu, "unit_alloc:active")
        fl = c.free_llist
        if fl:
            obj = fl.pop()
            c.free_cnt -= 1
            cnt = c.free_cnt
            if c.anon:
                obj = c             # the object is any of the list's: represented by its cache
            else:
                obj.hdr = c
    c.active -= 1
    if cnt < c.low_watermark and not c.refill_work.pending:
        if c.ma.profile.raise_after_irq_restore:     # 6.1-6.6
            _irq_restore(cpu)
            irq_work_raise_irqs_on(c)
            return obj
        irq_work_raise(c)
    cpu.irq_off -= 1
    if not cpu.irq_off and cpu.irq_work_list and cpu.self_ipi:
        cpu.deliver_irq_work()
    return obj


def unit_free(c: BpfMemCache, obj: MemObj) -> None:
    """``unit_free()``: push onto the local free_llist (cannot fail)."""
    if c.prop is not None:
        c.ma.profile.unit_free(c, obj)  # a proposal's free path (alloc/proposals.py)
        return
    unit_free_llist(c, obj)


def unit_free_llist(c: BpfMemCache, obj: Any) -> None:
    """The kernel's ``unit_free()`` body, also for proposals that keep its fast path (alloc/share.py)."""
    cpu = c.cpu
    hook = cpu.point_hook
    if c.ma.profile.uses_hint:
        c.tgt = obj.hdr
    cpu.irq_off += 1
    if hook is not None:
        hook(cpu, "unit_free:irqs_off")
    cnt = 0
    c.active += 1
    if c.active == 1:
        if hook is not None:
            hook(cpu, "unit_free:active")
        c.free_llist.append(obj)
        c.free_cnt += 1
        cnt = c.free_cnt
    else:
        c.free_llist_extra.append(obj)
    c.active -= 1
    if cnt > c.high_watermark and not c.refill_work.pending:
        if c.ma.profile.raise_after_irq_restore:     # 6.1-6.6
            _irq_restore(cpu)
            irq_work_raise_irqs_on(c)
            return
        irq_work_raise(c)
    cpu.irq_off -= 1
    if not cpu.irq_off and cpu.irq_work_list and cpu.self_ipi:
        cpu.deliver_irq_work()


def unit_free_rcu(c: BpfMemCache, obj: MemObj) -> None:
    """``unit_free_rcu()`` (6.6+): reusable only after an RCU GP."""
    cpu = c.cpu
    hook = cpu.point_hook
    c.tgt = obj.hdr
    cpu.local_irq_save()
    c.active += 1
    if c.active == 1:
        if hook is not None:
            hook(cpu, "unit_free_rcu:active")
        c.free_by_rcu.append(obj)
    else:
        c.free_llist_extra_rcu.append(obj)
    c.active -= 1
    if not c.call_rcu_in_progress:
        if c.ma.profile.raise_after_irq_restore:     # 6.6
            cpu.local_irq_restore()
            irq_work_raise_irqs_on(c)
            return
        irq_work_raise(c)
    cpu.local_irq_restore()


# ---------------------------------------------------------------------------
# runs: many fast-path calls that raise nothing, in one step (count mode)
# ---------------------------------------------------------------------------
#
# Between two points where bpf_mem_alloc observably acts (an irq_work raised by a
# watermark crossing or by unit_free_rcu with no RCU callback in flight), a
# sequence of unit_alloc/unit_free/unit_free_rcu calls on one cache only moves
# counts: ``quiet_*`` say how many calls in a row stay between those points, and
# ``*_run`` apply them at once.  The invariant that makes it exact: the calls of a
# run raise nothing (so no irq_work runs inside it and nothing else reads the
# cache until it ends), and each call's effect is a pure function of free_cnt,
# the list lengths and the two flags the quiet count checked.  Only with counted
# objects (``c.anon``), IRQ work not pending delivery and ``active`` == 0.

QUIET_FOREVER = 1 << 62


def quiet_allocs(c: BpfMemCache) -> int:
    """How many ``unit_alloc()`` calls in a row succeed and raise nothing: until free_cnt would drop
    below low_watermark (or, with the refill already pending, until the list is empty)."""
    if c.active:
        return 0
    n = len(c.free_llist)
    if c.refill_work.pending:
        return n
    return min(n, c.free_cnt - c.low_watermark) if c.free_cnt > c.low_watermark else 0


def quiet_frees(c: BpfMemCache) -> int:
    """How many ``unit_free()`` calls in a row raise nothing: until free_cnt would pass high_watermark."""
    if c.active:
        return 0
    if c.prop is not None:
        return c.ma.profile.quiet_frees(c)      # a proposal's own free path
    if c.refill_work.pending:
        return QUIET_FOREVER
    return c.high_watermark - c.free_cnt if c.free_cnt < c.high_watermark else 0


def quiet_free_rcus(c: BpfMemCache) -> int:
    """How many ``unit_free_rcu()`` calls in a row raise nothing: all while an RCU callback is in
    flight (or the refill is pending), none otherwise."""
    if c.active:
        return 0
    return QUIET_FOREVER if c.call_rcu_in_progress or c.refill_work.pending else 0


def quiet_replaces(c: BpfMemCache, rcu: bool) -> int:
    """How many ``unit_alloc()`` + ``unit_free[_rcu]()`` pairs in a row on ``c`` raise nothing."""
    if rcu:
        return min(quiet_allocs(c), quiet_free_rcus(c))
    if c.prop is not None:                      # a proposal's frees never reach free_llist
        return min(quiet_allocs(c), c.ma.profile.quiet_frees(c))
    if c.active or not c.free_llist:
        return 0
    if c.refill_work.pending or c.low_watermark < c.free_cnt <= c.high_watermark:
        return QUIET_FOREVER          # each pair pops one and pushes one: free_cnt never moves
    return 0


def unit_alloc_run(c: BpfMemCache, n: int) -> None:
    """``unit_alloc()`` ``n`` times, each returning an object (``n`` <= ``quiet_allocs(c)``)."""
    fl = c.free_llist
    del fl[len(fl) - n:]
    c.free_cnt -= n


def unit_free_run(c: BpfMemCache, objs: list[BpfMemCache]) -> None:
    """``unit_free()`` of each of ``objs`` in turn (``len(objs)`` <= ``quiet_frees(c)``)."""
    if c.prop is not None:
        c.ma.profile.unit_free_run(c, objs)
        return
    if c.ma.profile.uses_hint:
        c.tgt = objs[-1].hdr
    c.free_llist.extend(objs)
    c.free_cnt += len(objs)


def unit_free_rcu_run(c: BpfMemCache, objs: list[BpfMemCache]) -> None:
    """``unit_free_rcu()`` of each of ``objs`` in turn (``len(objs)`` <= ``quiet_free_rcus(c)``)."""
    c.tgt = objs[-1].hdr
    c.free_by_rcu.extend(objs)


def unit_replace_run(c: BpfMemCache, olds: list[BpfMemCache], rcu: bool) -> None:
    """``unit_alloc()`` then ``unit_free[_rcu]()`` of the next of ``olds``, for each of ``olds``."""
    if rcu:
        unit_alloc_run(c, len(olds))
        unit_free_rcu_run(c, olds)
        return
    if c.prop is not None:
        unit_alloc_run(c, len(olds))
        c.ma.profile.unit_free_run(c, olds)
        return
    if c.ma.profile.uses_hint:
        c.tgt = olds[-1].hdr
    c.free_llist[-1] = olds[-1]       # each pair pops the head and pushes the freed one


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------

def _this_cache(ma: BpfMemAlloc, cpu: Cpu) -> BpfMemCache:
    if ma.cache is None:
        raise ValueError("fixed-size API on a size-class bpf_mem_alloc")
    return ma.cache[cpu.id]


def bpf_mem_cache_alloc(ma: BpfMemAlloc, cpu: Cpu) -> MemObj | None:
    """``bpf_mem_cache_alloc()``: fixed-size allocation on ``cpu``."""
    c = ma.cache[cpu.id]  # type: ignore[index]
    obj = unit_alloc(c)
    if obj is not None:
        ma.outstanding += 1
        ins = ma.m.instruments
        if ins.active:
            ins.emit("obj_alloc", cpu, c, obj)
    return obj


def bpf_mem_cache_alloc_flags(ma: BpfMemAlloc, cpu: Cpu, gfp: int) -> MemObj | None:
    """``bpf_mem_cache_alloc_flags()`` (6.4, e65a5c6edbc6): ``unit_alloc``; when the free list is empty and the
    caller may sleep (``gfp == GFP_KERNEL``: sleepable programs), one object straight from slab, charged to
    the allocator's memcg (``set_active_memcg(get_memcg(c))``), which may reclaim."""
    c = ma.cache[cpu.id]  # type: ignore[index]
    obj: Any = unit_alloc(c)
    if obj is None and gfp == GFP_KERNEL:
        ctx = ma.mm.memcg_ctx
        old = ctx.set_active_memcg(cpu.id, cpu.in_interrupt(), _charged(c))
        try:
            if ma.anon:
                obj = c if _alloc_anon(c, 1, GFP_KERNEL) == 1 else None
            else:
                obj = __alloc(c, NUMA_NO_NODE, GFP_KERNEL)
                if obj is not None:
                    obj.hdr = c
        finally:
            ctx.set_active_memcg(cpu.id, cpu.in_interrupt(), old)
    if obj is not None:
        ma.outstanding += 1
        ins = ma.m.instruments
        if ins.active and not ma.anon:
            ins.emit("obj_alloc", cpu, c, obj)
    return obj


def bpf_mem_cache_raw_free(ma: BpfMemAlloc, obj: Any) -> None:
    """``bpf_mem_cache_raw_free()`` (6.4, e65a5c6edbc6): ``kfree`` the object, bypassing every cache (for
    objects whose grace period the caller already waited for).  Without identities ``obj`` is its cache."""
    ma.outstanding -= 1
    if ma.anon:
        _free_anon(obj, 1)
        return
    c = obj.hdr
    _emit_free(ma, c.cpu, c, obj, "raw_free")
    free_one(c, obj)


def _emit_free(ma: BpfMemAlloc, cpu: Cpu, c: BpfMemCache, obj: MemObj, kind: str) -> None:
    ins = ma.m.instruments
    if ins.active:
        ins.emit("obj_free", cpu, c, obj, kind)


def bpf_mem_cache_free(ma: BpfMemAlloc, cpu: Cpu, obj: MemObj | None) -> None:
    """``bpf_mem_cache_free()``: free into ``cpu``'s cache, reusable at once."""
    if obj is None:
        return
    ma.outstanding -= 1
    c = ma.cache[cpu.id]  # type: ignore[index]
    _emit_free(ma, cpu, c, obj, ma.profile.free_kind)
    unit_free(c, obj)


def bpf_mem_cache_free_rcu(ma: BpfMemAlloc, cpu: Cpu, obj: MemObj | None) -> None:
    """``bpf_mem_cache_free_rcu()`` (6.6+): reusable after an RCU GP."""
    if obj is None:
        return
    if not ma.profile.has_free_rcu:
        raise ValueError(f"bpf_mem_cache_free_rcu does not exist in profile {ma.profile.name}")
    ma.outstanding -= 1
    c = _this_cache(ma, cpu)
    _emit_free(ma, cpu, c, obj, "free_rcu")
    if ma.profile.free_rcu_waits_for_gp:
        unit_free_rcu(c, obj)
    else:
        unit_free(c, obj)           # a planted bug (explorer policy), never a kernel profile


def bpf_mem_alloc(ma: BpfMemAlloc, cpu: Cpu, size: int) -> MemObj | None:
    """``bpf_mem_alloc()``: size-class allocation (size == 0 mode)."""
    if ma.caches is None:
        raise ValueError("bpf_mem_alloc on a fixed-size allocator")
    if size == 0:
        return None
    # a percpu object's header lives in its 16-byte slab part: the percpu area is ``size`` (41a5db8d8161)
    idx = bpf_mem_cache_idx(size if ma.percpu else size + LLIST_NODE_SZ)
    if idx < 0:
        return None
    c = ma.caches[cpu.id][idx]
    obj = unit_alloc(c)
    if obj is not None:
        ma.outstanding += 1
        ins = ma.m.instruments
        if ins.active:
            ins.emit("obj_alloc", cpu, c, obj)
    return obj


def bpf_mem_free(ma: BpfMemAlloc, cpu: Cpu, obj: MemObj | None) -> None:
    """``bpf_mem_free()`` (≈6.8+): the owner's unit_size picks the class."""
    if obj is None:
        return
    if ma.caches is None:
        raise ValueError("bpf_mem_free on a fixed-size allocator")
    owner = obj.hdr
    idx = bpf_mem_cache_idx(owner.unit_size)
    ma.outstanding -= 1
    c = ma.caches[cpu.id][idx]
    _emit_free(ma, cpu, c, obj, "free")
    unit_free(c, obj)


def bpf_mem_free_rcu(ma: BpfMemAlloc, cpu: Cpu, obj: MemObj | None) -> None:
    """``bpf_mem_free_rcu()`` (6.6+, 5af6807bdb10): the size-class free that makes the object reusable only
    after an RCU GP; the owner's unit_size picks the class, ``unit_free_rcu`` on this CPU's cache of it.
    ``bpf_obj_drop()`` frees through it from 6.8 (649924b76ab1)."""
    if obj is None:
        return
    if ma.caches is None:
        raise ValueError("bpf_mem_free_rcu on a fixed-size allocator")
    if not ma.profile.has_free_rcu:
        raise ValueError(f"bpf_mem_free_rcu does not exist in profile {ma.profile.name}")
    idx = bpf_mem_cache_idx(obj.hdr.unit_size)
    ma.outstanding -= 1
    c = ma.caches[cpu.id][idx]
    _emit_free(ma, cpu, c, obj, "free_rcu")
    unit_free_rcu(c, obj)


def prefill_mem_cache(c: BpfMemCache, cpu: Cpu) -> None:
    """``prefill_mem_cache()``: 4 objects for units <= 256, else 1; from 6.8 (5b95e638f134, with the 1/3
    per-CPU watermarks of 0e2ba9f96f9b) per-CPU caches prefill 1 whatever their size."""
    small_percpu = c.ma.profile.percpu_small_caches
    cnt = 4 if (c.unit_size <= 256 and not (c.percpu_size and small_percpu)) else 1
    alloc_bulk(c, cnt, cpu.node, False)


def _init_cache(ma: BpfMemAlloc, cpu: Cpu, unit_size: int, percpu_size: int) -> BpfMemCache:
    c = BpfMemCache(ma, cpu, unit_size, percpu_size, ma.objcg)
    ma.profile.watermarks.init_refill_work(c)
    ma.profile.init_cache(c)
    prefill_mem_cache(c, cpu)
    return c


def bpf_mem_alloc_init(ma: BpfMemAlloc, size: int, percpu: bool, objcg: MemCgroup | None) -> int:
    """``bpf_mem_alloc_init()``: fixed size (``size`` > 0) or the 11 classes.

    ``objcg`` is the creating task's memcg (``get_obj_cgroup_from_current``),
    or None for the root cgroup / ``cgroup.memory=nobpf``.
    """
    if percpu and size == 0 and not ma.profile.percpu_size_classes:
        return -22                      # percpu size classes arrive in 6.7 (41a5db8d8161)
    ma.objcg = objcg
    ma.percpu = percpu
    percpu_size = LLIST_NODE_SZ + 8 if percpu else 0
    if size:
        unit_size = size if percpu else size + LLIST_NODE_SZ
        ma.cache = [_init_cache(ma, cpu, unit_size, percpu_size) for cpu in ma.m.cpus]
        return 0
    ma.caches = [[_init_cache(ma, cpu, sizes[i], percpu_size) for i in range(NUM_CACHES)] for cpu in ma.m.cpus]
    return 0


def drain_mem_cache(c: BpfMemCache) -> int:
    """``drain_mem_cache()``: free every list of the cache now."""
    n = free_lists(c, c, ("free_by_rcu_ttrace", "waiting_for_gp_ttrace", "free_llist", "free_llist_extra",
                          "free_by_rcu", "free_llist_extra_rcu", "waiting_for_gp"))
    c.free_cnt = 0
    if c.prop is not None:
        n += c.ma.profile.drain(c)
    return n


def check_mem_cache(c: BpfMemCache) -> None:
    """``check_mem_cache()``: after draining, every list must be empty."""
    for name, lst in c.lists().items():
        if lst:
            raise ModelInvariantError(f"{c}: {name} not empty at destroy ({len(lst)} objects)")


def bpf_mem_alloc_destroy(ma: BpfMemAlloc) -> None:
    """``bpf_mem_alloc_destroy()``: drain now; barriers in a work item if callbacks are in flight.

    Leak check (``check_leaked_objs``): objects handed out and never freed are
    reported as ``ModelInvariantError``.
    """
    caches = ma.all_caches()
    if not caches:
        return
    rcu_in_progress = 0
    for c in caches:
        c.draining = True
        irq_work_sync(c.cpu, c.refill_work)
        drain_mem_cache(c)
        rcu_in_progress += c.call_rcu_ttrace_in_progress + c.call_rcu_in_progress
        if c.prop is not None:
            rcu_in_progress += c.ma.profile.callbacks_in_flight(c)
    ma.destroyed = True
    if ma.outstanding:
        raise ModelInvariantError(f"bpf_mem_alloc_destroy: {ma.outstanding} objects still allocated (leak)")
    if not rcu_in_progress:
        free_mem_alloc_no_barrier(ma)
        return
    ma.m.system_dfl_wq.queue_work(lambda: free_mem_alloc(ma))


def free_mem_alloc_no_barrier(ma: BpfMemAlloc) -> None:
    for c in ma.all_caches():
        check_mem_cache(c)
    ma.cache = None
    ma.caches = None


def free_mem_alloc(ma: BpfMemAlloc) -> None:
    """``free_mem_alloc()``: rcu_barrier, rcu_barrier_tasks_trace (+ rcu_barrier), then free."""
    rcu = ma.rcu

    def after_ttrace() -> None:
        if rcu.trace_implies_rcu_gp:
            free_mem_alloc_no_barrier(ma)
        else:
            rcu_barrier(rcu, free_mem_alloc_no_barrier, ma)

    rcu_barrier(rcu, lambda: rcu_barrier_tasks_trace(rcu, after_ttrace))
