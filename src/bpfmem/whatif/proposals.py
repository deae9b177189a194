"""Answers the seed proposes for ``bpf_global_ma``, as strategies attached to an allocator.

Problem (seed 000): the global allocator behind ``bpf_obj_new`` is never destroyed, so objects freed on
a CPU that then goes quiet stay on its per-CPU lists — "will not be freed if there is no free
operations on this CPU afterwards" — and a CPU that goes offline keeps its caches (the kernel has no
hotplug handling: caches exist for every possible CPU).  Each proposal here is written the way a
kernel patch would do it, with the mechanism it would use and the work it adds counted:

- ``Drain`` (``+drain``): a deferrable timer per CPU every quarter ``period``; a cache that saw no
  allocation, free or refill for a whole period gives what it holds (down to its boot prefill) to a
  tasks-trace callback of its own; the timer stops when every cache is empty and the cache's refill
  irq_work re-arms it.
- ``Hotplug`` (``+hotplug``): a ``cpuhp_setup_state`` pair: going down, every cache of the CPU gives all it
  holds to a tasks-trace callback of its own; coming up, ``prefill_mem_cache``.
- ``Shrinker`` (``+shrinker``): ``register_shrinker``; a scan gives back like a drain, on every cache.
- ``MemcgOwner`` (``+memcg_owner``): one allocator per owner cgroup, charged to it.

What they give back reaches slab after one tasks-trace grace period (``free_all`` in the callback), so an
object a program may still read is never freed before the grace period the kernel already relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..alloc import BpfMemAlloc, BpfMemCache, MemAllocProfile
from ..alloc.memalloc import free_all, prefill_mem_cache
from ..alloc.share import Share
from ..maps.policies import POLICIES, RELEASES, HtabPolicy, get_policy
from ..rcu import call_rcu_tasks_trace
from ..sim import Cpu

NS_PER_MS = 1_000_000


def _prefill_count(c: BpfMemCache) -> int:
    """What ``prefill_mem_cache`` leaves on a cache: 4 objects for units <= 256 B, else 1."""
    return 4 if c.unit_size <= 256 and not c.percpu_size else 1


def _detach(c: BpfMemCache, keep: int) -> list[Any]:
    """Take from ``c`` everything it holds for reuse or on the way to slab but not yet in a grace period: its
    free list down to ``keep`` objects, ``free_llist_extra``, the ``bpf_mem_free_rcu``'d objects (``free_by_rcu``,
    ``free_llist_extra_rcu``) and ``free_by_rcu_ttrace``.  What a callback already waits for stays."""
    fl = c.free_llist
    m = max(len(fl) - keep, 0)
    objs = fl[len(fl) - m:]
    del fl[len(fl) - m:]
    c.free_cnt -= m
    objs += c.free_llist_extra + c.free_by_rcu + c.free_llist_extra_rcu + c.free_by_rcu_ttrace
    c.free_llist_extra, c.free_by_rcu, c.free_llist_extra_rcu, c.free_by_rcu_ttrace = [], [], [], []
    return objs


def _free_after_gp(c: BpfMemCache, objs: list[Any]) -> bool:
    """Free ``objs`` to slab after one tasks-trace grace period, with a callback of their own (the cache's
    callback allows one batch in flight).  A tasks-trace GP implies an RCU GP (``rcu_trace_implies_rcu_gp()``),
    so ``bpf_mem_free_rcu``'d objects need no RCU GP of their own — ``free_mem_alloc()`` relies on the same."""
    if not objs:
        return False
    call_rcu_tasks_trace(c.ma.rcu, free_all, c, objs)
    return True


def _give_back(c: BpfMemCache, keep: int | None = None) -> tuple[int, int]:
    """Free what ``c`` holds, down to ``keep`` objects on its free list (default: the boot prefill — an empty
    list would make the next ``bpf_mem_alloc`` on this CPU return NULL, the refill being an irq_work after
    it), after a tasks-trace grace period; (objects, callbacks)."""
    objs = _detach(c, _prefill_count(c) if keep is None else keep)
    return len(objs), int(_free_after_gp(c, objs))


def _rcu_pending(c: BpfMemCache) -> int:
    """Objects freed with ``bpf_mem_free_rcu`` whose RCU grace period has not been asked for."""
    return len(c.free_by_rcu) + len(c.free_llist_extra_rcu)


def _state(c: BpfMemCache) -> tuple[int, ...]:
    """What programs move (allocations, frees, refills), not what grace periods move."""
    return (c.free_cnt, c.kmallocs, len(c.free_llist_extra), _rcu_pending(c))


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
        self.arms = 0              # times the timer was (re-)armed
        self.callbacks = 0         # tasks-trace callbacks of its own

    def attach(self, ma: BpfMemAlloc) -> None:
        """The timer fires every quarter period; a cache whose state did not move for a whole period (four
        expiries) is idle and drained, so it is back in slab within 1.25 periods plus a grace period.  A
        deferrable timer should not keep an idle system busy: it stops after ``idle_stop`` expiries with
        nothing left anywhere, and the cache's refill irq_work (``bpf_mem_refill``: it runs whenever a
        watermark is crossed or a ``bpf_mem_free_rcu`` needs a grace period) re-arms it."""
        last: dict[int, tuple[int, ...]] = {id(c): _state(c) for c in ma.all_caches()}
        quiet: dict[int, int] = {}
        eng = ma.m.engine
        step = max(self.period_ns // 4, 1)
        armed = [False]
        idle = [0]

        def keep_of(c: BpfMemCache) -> int:
            return _prefill_count(c) if self.keep is None else self.keep

        def tick() -> None:
            for c in ma.all_caches():
                if not c.cpu.online:
                    continue
                self.timers += 1
                st = _state(c)
                k = id(c)
                quiet[k] = quiet.get(k, 0) + 1 if last.get(k) == st else 0
                if quiet[k] >= 4 and (len(c.free_llist) > keep_of(c) or c.free_llist_extra or _rcu_pending(c) or
                                      c.free_by_rcu_ttrace):
                    self.drains += 1                  # idle for a period: drain
                    n, cb = _give_back(c, keep_of(c))
                    self.moved += n
                    self.callbacks += cb
                last[k] = _state(c)
            busy = any(len(c.free_llist) > keep_of(c) or c.free_llist_extra or _rcu_pending(c) or c.waiting_for_gp
                       or c.free_by_rcu_ttrace or c.waiting_for_gp_ttrace for c in ma.all_caches())
            idle[0] = 0 if busy else idle[0] + 1
            if idle[0] < self.idle_stop:
                eng.after(step, tick)
            else:
                armed[0] = False

        def arm() -> None:
            if not armed[0]:
                armed[0] = True
                idle[0] = 0
                self.arms += 1
                eng.after(step, tick)

        for c in ma.all_caches():                     # the refill irq_work arms the timer (mod_timer if idle)
            run = c.refill_work.func

            def refill_and_arm(work: Any, cpu: Cpu, run: Any = run) -> None:
                run(work, cpu)
                arm()
            c.refill_work.func = refill_and_arm
        arm()

    def cost(self) -> dict[str, Any]:
        return {"timer_expiries": self.timers, "timer_arms": self.arms, "drains": self.drains,
                "objects_drained": self.moved, "tasks_trace_callbacks": self.callbacks}


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
                objs = _detach(c, 0)
                self.moved += len(objs)
                self.callbacks += _free_after_gp(c, objs)

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
        self.callbacks = 0
        self.ma: BpfMemAlloc | None = None

    def attach(self, ma: BpfMemAlloc) -> None:
        self.ma = ma

    def count_objects(self) -> int:
        assert self.ma is not None
        return sum(len(c.free_llist) + len(c.free_llist_extra) + len(c.free_by_rcu_ttrace) + _rcu_pending(c)
                   for c in self.ma.all_caches())

    def scan_objects(self) -> int:
        """Called by reclaim (here: when an allocation hits the budget)."""
        assert self.ma is not None
        self.scans += 1
        n = 0
        for c in self.ma.all_caches():
            moved, cb = _give_back(c)
            n += moved
            self.callbacks += cb
        self.scanned += n
        return n

    def cost(self) -> dict[str, Any]:
        return {"scans": self.scans, "objects_scanned": self.scanned, "tasks_trace_callbacks": self.callbacks}


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


PROPOSALS = {"drain": Drain, "hotplug": Hotplug, "shrinker": Shrinker, "memcg_owner": MemcgOwner, "share": None}
# what each proposal is written against: the release whose allocator it patches
NEEDS: dict[str, tuple[tuple[int, int], str]] = {
    "drain": ((6, 6), "the 6.6+ allocator's free_by_rcu_ttrace path (5af6807bdb10)"),
    "hotplug": ((6, 6), "the 6.6+ allocator's free_by_rcu_ttrace path (5af6807bdb10)"),
    "shrinker": ((6, 6), "the 6.6+ allocator's free_by_rcu_ttrace path (5af6807bdb10)"),
    "share": ((6, 8), "the 6.8+ allocator's watermarks (0e2ba9f96f9b), as alloc/share.py patches it"),
    "memcg_owner": ((6, 2), "bpf_mem_alloc_init's objcg"),
}
GLOBAL_MA_FROM = (6, 2)            # bpf_global_ma arrives with bpf_obj_new (958cf2e273f0)
DROP_RCU_FROM = (6, 8)             # bpf_obj_drop frees with bpf_mem_free_rcu (649924b76ab1)


def release_key(release: str) -> tuple[int, int]:
    major, _, minor = release[1:].partition(".")
    return int(major), int(minor)


@dataclass(frozen=True)
class Base:
    """The kernel release a what-if runs on: its allocator profile, its tasks-trace RCU, how ``bpf_obj_drop``
    frees (``bpf_mem_free`` 6.2-6.7; ``bpf_mem_free_rcu`` from 6.8, 649924b76ab1: the object is reusable
    only after an RCU grace period)."""

    release: str
    htab: HtabPolicy                  # the release's profile (allocator class, RCU flavour)
    share: bool = False

    @property
    def drop_rcu(self) -> bool:
        return release_key(self.release) >= DROP_RCU_FROM

    def make_profile(self) -> MemAllocProfile:
        if self.share:
            return Share()
        prof = self.htab.make_profile()
        assert prof is not None
        return prof


def parse_policy(text: str) -> tuple[Base, list[Any]]:
    """``v6.18+drain+hotplug`` -> (the base release, proposal objects); ``ValueError`` naming the bad part: an
    unknown or repeated proposal, a base that is not a kernel release with ``bpf_global_ma``, or a proposal
    onto a release older than the allocator it patches (the combination contradicts itself)."""
    base, *extra = text.split("+")
    if base not in RELEASES:
        why = (f"{base!r} is a policy, not a kernel release: proposals compose onto a release"
               if base in POLICIES else f"unknown release {base!r}")
        raise ValueError(f"--policy {text!r}: {why}; allowed: v6.2..v6.19 or v7.0, then +proposals")
    key = release_key(base)
    if key < GLOBAL_MA_FROM:
        raise ValueError(f"--policy {text!r}: {base} has no bpf_global_ma (bpf_obj_new arrives in 6.2, "
                         "958cf2e273f0)")
    seen: set[str] = set()
    out = []
    for name in extra:
        if name not in PROPOSALS:
            raise ValueError(f"unknown proposal +{name} in {text!r}; allowed: "
                             + ", ".join(f"+{p}" for p in PROPOSALS))
        if name in seen:
            raise ValueError(f"+{name} given twice in {text!r}")
        need, what = NEEDS[name]
        if key < need:
            raise ValueError(f"--policy {text!r} contradicts itself: +{name} patches {what}, which {base} "
                             f"does not have (from v{need[0]}.{need[1]})")
        seen.add(name)
        cls = PROPOSALS[name]
        if cls is not None:
            out.append(cls())
    return Base(base, get_policy(base), share="share" in seen), out
