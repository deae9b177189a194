"""Answers the seed proposes for ``bpf_global_ma``, as strategies attached to an allocator.

Problem (seed 000): the global allocator behind ``bpf_obj_new`` is never destroyed, so objects freed on
a CPU that then goes quiet stay on its per-CPU lists — "will not be freed if there is no free
operations on this CPU afterwards" — and a CPU that goes offline keeps its caches (the kernel has no
hotplug handling: caches exist for every possible CPU).  Each proposal here is written the way a
kernel patch would do it, with the mechanism it would use and the work it adds counted:

- ``Drain`` (``+drain``): a deferrable timer per CPU every quarter ``period``; a cache that saw no
  allocation, free or refill for a whole period gives its free list to its slab-bound list and starts
  the tasks-trace callback (``do_call_rcu_ttrace``), again while a batch is left; the timer stops when
  every cache is empty (deviation: it is not re-armed by later activity).
- ``Hotplug`` (``+hotplug``): a ``cpuhp_setup_state`` pair: going down, every cache of the CPU detaches
  its free lists and slab-bound list and frees them after one tasks-trace grace period (a callback of
  its own: the cache allows one in flight); coming up, ``prefill_mem_cache``.

Both reuse memalloc's own path to slab (a tasks-trace grace period, then ``free_all``), so an object a
program may still read is never freed before the grace period the kernel already relies on.
"""

from __future__ import annotations

from typing import Any

from ..alloc import BpfMemAlloc, BpfMemCache
from ..alloc.memalloc import do_call_rcu_ttrace, free_all, prefill_mem_cache
from ..rcu import call_rcu_tasks_trace
from ..sim import Cpu

NS_PER_MS = 1_000_000


def _prefill_count(c: BpfMemCache) -> int:
    """What ``prefill_mem_cache`` leaves on a cache: 4 objects for units <= 256 B, else 1."""
    return 4 if c.unit_size <= 256 and not c.percpu_size else 1


def _give_back(c: BpfMemCache, keep: int | None = None) -> int:
    """Move ``c``'s free lists onto its slab-bound list, down to ``keep`` objects (default: the boot
    prefill — an empty list would make the next ``bpf_mem_alloc`` on this CPU return NULL, the refill being
    an irq_work after it), and start (or leave running) its tasks-trace callback; the count moved."""
    if keep is None:
        keep = _prefill_count(c)
    fl = c.free_llist
    m = max(len(fl) - keep, 0)
    n = m + len(c.free_llist_extra)
    if n:
        c.free_by_rcu_ttrace.extend(fl[len(fl) - m:])
        del fl[len(fl) - m:]
        c.free_by_rcu_ttrace.extend(c.free_llist_extra)
        c.free_llist_extra = []
        c.free_cnt -= m
    if c.free_by_rcu_ttrace and not c.call_rcu_ttrace_in_progress:
        do_call_rcu_ttrace(c)
    return n


def _state(c: BpfMemCache) -> tuple[int, ...]:
    """What programs move (allocations, frees, refills), not what grace periods move."""
    return (c.free_cnt, c.kmallocs, len(c.free_llist_extra))


class Drain:
    """``+drain``: a deferrable per-CPU timer that returns an idle cache's objects to slab."""

    name = "drain"
    mechanism = "a deferrable timer (timer_list, TIMER_DEFERRABLE) per CPU; the cache's irq_work drains"

    def __init__(self, period_ms: float = 1000.0, keep: int | None = None, idle_stop: int = 8) -> None:
        if not period_ms > 0:
            raise ValueError(f"+drain period must be > 0 ms, got {period_ms}")
        self.period_ns = int(period_ms * NS_PER_MS)
        self.keep = keep                # objects left per cache (None: the boot prefill)
        self.idle_stop = idle_stop      # expiries with nothing to do before the timer stops
        self.timers = 0            # timer expiries (the work this adds)
        self.drains = 0            # caches drained
        self.moved = 0             # objects sent towards slab by a drain

    def attach(self, ma: BpfMemAlloc) -> None:
        """The timer fires every quarter period; a cache whose state did not move for a whole period (four
        expiries) is idle and drained, so it is back in slab within 1.25 periods plus a grace period."""
        last: dict[int, tuple[int, ...]] = {id(c): _state(c) for c in ma.all_caches()}
        quiet: dict[int, int] = {}
        eng = ma.m.engine
        step = max(self.period_ns // 4, 1)

        def tick() -> None:
            for c in ma.all_caches():
                if not c.cpu.online:
                    continue
                self.timers += 1
                st = _state(c)
                k = id(c)
                quiet[k] = quiet.get(k, 0) + 1 if last.get(k) == st else 0
                keep = _prefill_count(c) if self.keep is None else self.keep
                if quiet[k] >= 4 and (len(c.free_llist) > keep or c.free_llist_extra or
                                      (c.free_by_rcu_ttrace and not c.call_rcu_ttrace_in_progress)):
                    self.drains += 1                  # idle for a period: drain (again while a batch is left)
                    self.moved += _give_back(c, keep)
                last[k] = _state(c)
            # a deferrable timer does not keep an idle system busy: it stops after ``idle_stop`` expiries
            # with nothing left anywhere (deviation: later activity does not re-arm it)
            busy = any(len(c.free_llist) > (_prefill_count(c) if self.keep is None else self.keep)
                       or c.free_llist_extra or c.free_by_rcu_ttrace or c.waiting_for_gp_ttrace
                       for c in ma.all_caches())
            idle[0] = 0 if busy else idle[0] + 1
            if idle[0] < self.idle_stop:
                eng.after(step, tick)
        idle = [0]
        eng.after(step, tick)

    def cost(self) -> dict[str, Any]:
        return {"timer_expiries": self.timers, "drains": self.drains, "objects_drained": self.moved}


class Hotplug:
    """``+hotplug``: give an offlined CPU's objects back; prefill a CPU coming online."""

    name = "hotplug"
    mechanism = "cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, prefill, drain) per allocator"

    def __init__(self) -> None:
        self.moved = 0
        self.prefilled = 0
        self.callbacks = 0

    def attach(self, ma: BpfMemAlloc) -> None:
        def caches_of(cpu: Cpu) -> list[BpfMemCache]:
            return [c for c in ma.all_caches() if c.cpu is cpu]

        rcu = ma.rcu

        def down(cpu: Cpu) -> None:
            """Detach the CPU's free lists and slab-bound list and free them after one tasks-trace GP with a
            callback of their own (the cache's one-in-flight callback takes its batch along by itself)."""
            for c in caches_of(cpu):
                objs = c.free_llist + c.free_llist_extra + c.free_by_rcu_ttrace
                c.free_llist, c.free_llist_extra, c.free_by_rcu_ttrace = [], [], []
                c.free_cnt = 0
                if objs:
                    self.moved += len(objs)
                    self.callbacks += 1
                    call_rcu_tasks_trace(rcu, free_all, c, objs)

        def up(cpu: Cpu) -> None:
            for c in caches_of(cpu):
                before = c.free_cnt
                prefill_mem_cache(c, cpu)
                self.prefilled += c.free_cnt - before
        ma.m.cpuhp_setup_state(up, down)

    def cost(self) -> dict[str, Any]:
        return {"objects_returned_at_offline": self.moved, "tasks_trace_callbacks": self.callbacks,
                "objects_prefilled_at_online": self.prefilled}


class Shrinker:
    """``+shrinker``: under memory pressure, reclaim asks the allocator to give back what it holds.

    Mechanism: ``register_shrinker`` with ``count_objects`` (objects on the per-CPU free lists and
    slab-bound lists) and ``scan_objects`` (every cache gives its free lists to the slab-bound path and
    starts its tasks-trace callback, as ``+drain`` does).  A freed object may still be read by a program
    until a grace period passes, so a shrinker cannot free it at once: what it scans comes back after
    the grace period, and the allocation that triggered reclaim still fails."""

    name = "shrinker"
    mechanism = "register_shrinker(count_objects, scan_objects) on the allocator; scans route through the GP"

    def __init__(self) -> None:
        self.scans = 0
        self.scanned = 0
        self.ma: BpfMemAlloc | None = None

    def attach(self, ma: BpfMemAlloc) -> None:
        self.ma = ma

    def count_objects(self) -> int:
        assert self.ma is not None
        return sum(len(c.free_llist) + len(c.free_llist_extra) + len(c.free_by_rcu_ttrace)
                   for c in self.ma.all_caches())

    def scan_objects(self) -> int:
        """Called by reclaim (here: when an allocation hits the budget)."""
        assert self.ma is not None
        self.scans += 1
        n = 0
        for c in self.ma.all_caches():
            n += _give_back(c)
        self.scanned += n
        return n

    def cost(self) -> dict[str, Any]:
        return {"scans": self.scans, "objects_scanned": self.scanned}


class MemcgOwner:
    """``+memcg_owner``: charge the global allocator's objects to the cgroup of the program's owner.

    Mechanism: an allocator per owner cgroup (``bpf_mem_alloc_init`` with the owner's objcg, made on the
    first ``bpf_obj_new`` of a program loaded from that cgroup), as maps already have one per map: its
    refills charge the owner (``set_active_memcg(get_memcg(c))``), so the owner's memory.max applies.
    Here one owner; ``limit`` is its memory.max."""

    name = "memcg_owner"
    mechanism = "one bpf_mem_alloc per owner cgroup (the program's objcg): refills charge the owner"

    def __init__(self) -> None:
        self.cg: Any = None

    def attach(self, ma: BpfMemAlloc, limit: int | None = None) -> None:
        from ..mm import PAGE_COUNTER_MAX
        root = ma.mm.root_memcg
        self.cg = root.child("prog_owner", limit if limit is not None else PAGE_COUNTER_MAX)
        ma.objcg = self.cg
        for c in ma.all_caches():
            c.objcg = self.cg

    def cost(self) -> dict[str, Any]:
        if self.cg is None:
            return {}
        return {"owner_usage_bytes": self.cg.usage, "owner_failcnt": self.cg.failcnt}


PROPOSALS = {"drain": Drain, "hotplug": Hotplug, "shrinker": Shrinker, "memcg_owner": MemcgOwner}


def parse_policy(text: str) -> tuple[str, list[Any]]:
    """``v6.18+drain+hotplug`` -> (base release, proposal objects); ``ValueError`` naming a bad part."""
    base, *extra = text.split("+")
    seen = set()
    out = []
    for name in extra:
        if name not in PROPOSALS:
            raise ValueError(f"unknown proposal +{name} in {text!r}; allowed: "
                             + ", ".join(f"+{p}" for p in PROPOSALS))
        if name in seen:
            raise ValueError(f"+{name} given twice in {text!r}")
        seen.add(name)
        out.append(PROPOSALS[name]())
    return base, out
