"""``+share``: freed objects shared among CPUs, cheaply (seed 000's fourth question).

Problem: when one CPU allocates and another frees (``add_del_on_diff_cpu``), the freeing CPU's cache
passes its high watermark and trims to the tasks-trace grace period (one batch in flight, the rest
parked), while the allocating CPU refills from slab: the memory of both sides, plus the parked.
The seed: "it seems we may need to share freed object among multiple CPUs and do it cheaply".

Mechanism (a proposal; no kernel has it), written as a patch to 6.8-6.18 would be: one shared list
per allocator (a spin-locked llist; per node on NUMA).  ``free_bulk`` of a cache past its high
watermark moves its surplus onto the shared list, up to ``cap`` objects (one high watermark per CPU);
what does not fit takes the kernel's path to slab.  ``alloc_bulk`` below the low watermark takes from
the shared list before anything else.  The objects are reusable at once, as on ``free_llist``: the
same immediate-reuse semantics the kernel already has, so no new grace period is involved.  Each
batch moved takes the lock once (``locks``: the added cost, reported).
"""

from __future__ import annotations

from typing import Any

from .memalloc import (NUMA_NO_NODE, QUIET_FOREVER, BpfMemCache, alloc_bulk, check_free_by_rcu, do_call_rcu_ttrace,
                       free_all, unit_free_llist)
from .policy import V6_8


class SharedFree:
    """The shared list of one allocator, and what moving objects through it cost."""

    __slots__ = ("objs", "cap", "locks", "shared", "taken")

    def __init__(self, cap: int) -> None:
        self.objs: list[Any] = []
        self.cap = cap
        self.locks = 0          # spin-lock acquisitions (one per batch pushed or pulled)
        self.shared = 0         # objects pushed
        self.taken = 0          # objects pulled by refills


class ShareCtx:
    """A cache's view: the shared list, reported by the allocator's first cache only."""

    __slots__ = ("sf", "owner")

    def __init__(self, sf: SharedFree, owner: bool) -> None:
        self.sf = sf
        self.owner = owner

    def lists(self) -> dict[str, Any]:
        return {"shared": self.sf.objs} if self.owner else {}


class Share(V6_8):
    """6.8-6.18 with a shared list of freed objects between CPUs."""

    name = "v6.18+share"
    kernel = "proposal (seed 000: share freed objects among CPUs)"
    proposal = True
    free_kind = "free"                      # reusable at once, as bpf_mem_cache_free promises

    def init_cache(self, c: BpfMemCache) -> None:
        ma = c.ma
        first = ma.shared is None
        if first:
            ma.shared = SharedFree(cap=ma.m.num_possible_cpus() * max(c.high_watermark, 1))
        c.prop = ShareCtx(ma.shared, first)

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        sf: SharedFree = c.prop.sf
        if sf.objs:
            sf.locks += 1
        return (sf.objs, c.free_by_rcu_ttrace, c.waiting_for_gp_ttrace)

    def unit_free(self, c: BpfMemCache, obj: Any) -> None:
        """``unit_free()`` as the kernel's (this proposal changes the irq_work, not the fast path)."""
        unit_free_llist(c, obj)

    def refill(self, c: BpfMemCache) -> None:
        """``bpf_mem_refill()``: refill (shared list first), or share the surplus."""
        sf: SharedFree = c.prop.sf
        if c.free_cnt < c.low_watermark:
            before = len(sf.objs)
            alloc_bulk(c, c.batch, NUMA_NO_NODE, True)
            sf.taken += before - len(sf.objs)
        elif c.free_cnt > c.high_watermark:
            self._share_bulk(c, sf)
        check_free_by_rcu(c)

    def _share_bulk(self, c: BpfMemCache, sf: SharedFree) -> None:
        limit = (c.high_watermark + c.low_watermark) // 2
        m = c.free_cnt - limit
        fl = c.free_llist
        batch = fl[len(fl) - m:]
        del fl[len(fl) - m:]
        c.free_cnt -= m
        batch += c.free_llist_extra
        c.free_llist_extra = []
        room = max(sf.cap - len(sf.objs), 0)
        if room:
            sf.locks += 1
            sf.objs.extend(batch[:room])
            sf.shared += min(room, len(batch))
        rest = batch[room:]
        if rest:                                        # the kernel's way: to slab after a tasks-trace GP
            tgt = self.free_bulk_target(c)
            tgt.free_by_rcu_ttrace.extend(rest)
            do_call_rcu_ttrace(tgt)

    def quiet_frees(self, c: BpfMemCache) -> int:
        if c.active:
            return 0
        if c.refill_work.pending:
            return QUIET_FOREVER
        return max(c.high_watermark - c.free_cnt, 0)

    def unit_free_run(self, c: BpfMemCache, objs: list[Any]) -> None:
        if self.uses_hint:
            c.tgt = objs[-1].hdr
        c.free_llist.extend(objs)
        c.free_cnt += len(objs)

    def drain(self, c: BpfMemCache) -> int:
        ctx: ShareCtx = c.prop
        if not ctx.owner:
            return 0
        objs, ctx.sf.objs = ctx.sf.objs, []
        return free_all(c, objs)

    def callbacks_in_flight(self, c: BpfMemCache) -> int:
        return 0

    def cost(self, ma: Any) -> dict[str, int]:
        sf: SharedFree | None = ma.shared
        if sf is None:
            return {}
        return {"lock_acquisitions": sf.locks, "objects_shared": sf.shared, "objects_taken": sf.taken}
