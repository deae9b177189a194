"""Shipped exploration scenarios, the policies they run under, and their planted bugs.

Policies (how the data structure frees its memory):

| policy | free path | kernel |
|---|---|---|
| ``free`` | ``bpf_mem_cache_free``: reusable at once | htab in every version; bpf_cpumask 6.3 |
| ``free_rcu`` | ``bpf_mem_cache_free_rcu``: reusable after an RCU GP | bpf_cpumask 6.6+ (8e07bb9ebcd9) |
| ``call_rcu_free`` | ``call_rcu``, then ``bpf_mem_cache_free`` in the callback | bpf_cpumask 6.4-6.5 (77473d1a962f) |
| ``bug_free_rcu_no_gp`` | ``bpf_mem_cache_free_rcu`` that forgets the GP | a planted allocator bug |
| ``free_v6.6`` | ``bpf_mem_cache_free`` on the allocator that restores IRQs before ``irq_work_raise()`` | 6.1-6.6 |
| ``v6.18+share`` | ``bpf_mem_cache_free`` on ``+share`` (whatif): trimmed surpluses go to one list all CPUs refill from | proposal |
| ``ttrace_raw_free`` | local storage delete: tasks-trace GP, then ``bpf_mem_cache_raw_free`` (no reuse) | 6.4-6.18 |
| ``no_reuse``, ``reuse_after_gp``, ``free_after_gp``, ``reuse_after_gp_global``, ``reuse_after_gp_pcpu`` | ``bpf_mem_cache_free`` on that proposal's allocator (``alloc/proposals.py``) | RFC v1-v5, never merged |

(RFC v3's ``delayed_free`` is ``call_rcu_free``: a ``call_rcu`` per object, then ``bpf_mem_cache_free``.)

Each scenario states the verdict it expects per policy (``expect``): the set
of violation kinds that must be found within the budget (empty: no violation
the kernel would call a bug may be found), and has a *planted* variant
(``--planted``): a bug that shows only under some interleavings or
reorderings, never in the sequential schedule, so finding it tests the
explorer itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ...alloc import V6_6, V6_7, BpfMemAlloc, MemAllocProfile, bpf_mem_alloc_init
from ...alloc.proposals import PROPOSALS
from ..runtime import Run

POLICIES = ("free", "free_rcu", "call_rcu_free", "bug_free_rcu_no_gp", "free_v6.6", "ttrace_raw_free", "v6.18+share",
            *PROPOSALS, "free+drain", "free+hotplug", "free+shrinker", "free+memcg_owner")
POLICY_HELP = {
    "free": "bpf_mem_cache_free: reusable at once (htab; bpf_cpumask 6.3)",
    "free_rcu": "bpf_mem_cache_free_rcu: reusable after an RCU grace period (bpf_cpumask 6.6+)",
    "call_rcu_free": "call_rcu, then bpf_mem_cache_free in the callback (bpf_cpumask 6.4-6.5; RFC v3's "
                     "delayed_free)",
    "bug_free_rcu_no_gp": "planted allocator bug: bpf_mem_cache_free_rcu that reuses at once",
    "free_v6.6": "bpf_mem_cache_free on the 6.1-6.6 allocator: irq_work raised after IRQs are restored",
    "ttrace_raw_free": "local storage delete (6.4-6.18): a tasks-trace GP, then bpf_mem_cache_raw_free to slab",
    "v6.18+share": "bpf_mem_cache_free on the +share proposal: trimmed objects shared between CPUs, reusable at once",
    "no_reuse": "RFC v1: bpf_mem_cache_free never reuses; slab after a tasks-trace GP",
    "reuse_after_gp": "RFC v2/v3: reusable after an RCU GP (a kworker per cache)",
    "free_after_gp": "RFC v3: bpf_mem_cache_free never reuses; slab after an RCU GP",
    "reuse_after_gp_global": "RFC v4: reusable after an RCU GP, by any CPU (one list per allocator)",
    "reuse_after_gp_pcpu": "RFC v5: reusable after an RCU GP, by the same CPU",
    "free+drain": "bpf_mem_cache_free with whatif's +drain (idle caches drained every 0.2 ms)",
    "free+hotplug": "bpf_mem_cache_free with whatif's +hotplug (a CPU offline and back every 0.2 ms)",
    "free+shrinker": "bpf_mem_cache_free with whatif's +shrinker (a reclaim scan every 0.2 ms)",
    "free+memcg_owner": "bpf_mem_cache_free with whatif's +memcg_owner (charged to an owner cgroup)",
}
FREES_WITH_FREE_RCU = ("free_rcu", "bug_free_rcu_no_gp")


class FreeRcuNoGp(V6_7):
    """Planted bug: bpf_mem_cache_free_rcu hands the object back for immediate reuse."""

    name = "bug:free_rcu_no_gp"
    free_rcu_waits_for_gp = False


class ExploreWatermarks:
    """Small caches (low 2, high 6, batch 3: what a 4 KiB unit gets): refills, trims and the trip to slab
    happen within a handful of operations, so short schedules reach every path (and run fast)."""

    def init_refill_work(self, c: Any) -> None:
        c.low_watermark, c.high_watermark, c.batch = 2, 6, 3


def profile_for(policy: str, planted: frozenset[str] = frozenset()) -> MemAllocProfile:
    """The allocator a scenario runs on under ``policy``: small caches; a proposal's own allocator, its
    per-CPU batches flushed from 4 objects (RFC v1/v3 wait for 256 or a second)."""
    if policy == "v6.18+share":
        from ...alloc.share import Share
        p = Share(watermarks=ExploreWatermarks())
        if planted:
            p.planted = planted
        return p
    if policy in PROPOSALS:
        prop = PROPOSALS[policy](watermarks=ExploreWatermarks())
        if hasattr(prop, "threshold"):
            prop.threshold = 4                  # type: ignore[attr-defined]
        if planted:
            prop.planted = planted
        return prop
    # today's order (6.7+: irq_work raised before IRQs come back); ``free_v6.6``: the 6.1-6.6 order
    cls = FreeRcuNoGp if policy == "bug_free_rcu_no_gp" else V6_6 if policy == "free_v6.6" else V6_7
    p = cls(watermarks=ExploreWatermarks())
    if planted:
        p.planted = planted
    return p


def new_ma(run: Run, policy: str, size: int = 56, planted: frozenset[str] = frozenset()) -> BpfMemAlloc:
    ma = BpfMemAlloc(run.m, run.mm, run.rcu, profile_for(policy, planted))
    bpf_mem_alloc_init(ma, size, False, run.memcg)
    attach_whatif(ma, policy)
    return ma


DRAIN_PERIOD_MS = 0.2       # explorer: a drain period short enough to fire inside a schedule
WHATIF_EVERY_NS = 200_000   # explorer: a CPU cycled offline and online, or a shrinker scan, every 0.2 ms ...
WHATIF_TIMES = 10           # ... ten times (then the run can end)
DRAINS: list[Any] = []      # the proposals attached so far (a test checks that they acted inside the schedules)
# whatif's proposals on today's allocator, each promising ``free``'s verdict: what it gives back reaches slab only
# after the tasks-trace grace period, so no kind appears that plain ``free`` does not show
WHATIF_POLICIES = ("free+drain", "free+hotplug", "free+shrinker", "free+memcg_owner")
WHATIF_SCENARIOS = ("htab_reuse", "qp_trie", "cpumask_aba", "nmi_reentrancy")


def attach_whatif(ma: BpfMemAlloc, policy: str) -> None:
    """``free+<proposal>``: today's allocator with a bpfmem whatif proposal attached: ``+drain`` with a 0.2 ms
    period; ``+hotplug`` with CPUs taken offline and back (``cpu_down``/``cpu_up``: its cpuhp callbacks) every
    0.2 ms in turn; ``+shrinker`` scanned every 0.2 ms (reclaim); ``+memcg_owner`` charging an owner cgroup."""
    if not policy.startswith("free+"):
        return
    from ...whatif.proposals import Drain, Hotplug, MemcgOwner, Shrinker
    m = ma.m
    name = policy.removeprefix("free+")
    if name == "drain":
        d = Drain(DRAIN_PERIOD_MS, keep=1)     # the explorer's small caches: leave one object
        d.attach(ma)
        DRAINS.append(d)
        return
    if name == "memcg_owner":
        MemcgOwner().attach(ma)
        return
    p: Any = Hotplug() if name == "hotplug" else Shrinker()
    p.attach(ma)
    DRAINS.append(p)
    if isinstance(p, Hotplug) and len(m.cpus) < 2:
        return                                 # the last online CPU cannot go down: nothing to exercise
    left = [WHATIF_TIMES]

    def act() -> None:
        if isinstance(p, Hotplug):
            k = (WHATIF_TIMES - left[0]) % len(m.cpus)
            m.cpu_down(k)                      # the teardown callback gives the CPU's objects back
            m.cpu_up(k)                        # the startup callback prefills
        else:
            p.scan_objects()
        left[0] -= 1
        if left[0]:
            m.engine.after(WHATIF_EVERY_NS, act)
    m.engine.after(WHATIF_EVERY_NS, act)


def check_conservation(run: Run) -> None:
    """After the run, every object taken from slab is on some list of some cache or still allocated;
    free_cnt matches free_llist and no cache is left active."""
    for name, ma in run.env.objects.items():
        if not isinstance(ma, BpfMemAlloc) or ma.cache is None:
            continue
        caches = ma.all_caches()
        on_lists = sum(len(lst) for c in caches for lst in c.lists().values())
        from_slab = sum(c.kmallocs - c.kfrees for c in caches)
        if on_lists + ma.outstanding != from_slab:
            run.checker.flag("invariant", f"{name}: {from_slab - on_lists - ma.outstanding} object(s) lost: "
                                          f"{from_slab} from slab, {on_lists} on lists, {ma.outstanding} in use")
        for c in caches:
            if c.free_cnt != len(c.free_llist) or c.active != 0:
                run.checker.flag("invariant", f"{c}: free_cnt {c.free_cnt}, free_llist {len(c.free_llist)}, "
                                              f"active {c.active}")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    ncpus: int
    setup: Callable[[Run, str, bool], None]        # (run, policy, planted)
    accepted: dict[str, bool]                      # violation kind -> accepted by the kernel here
    expect: dict[str, frozenset[str]]              # policy -> kinds that must be found (empty: no bug)
    planted: str                                   # what the planted variant breaks
    planted_policy: str                            # the policy it is explored under
    planted_expect: frozenset[str]
    final: Callable[[Run], None] | None = check_conservation
    default_schedules: int = 2000
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self.expect)


def _registry() -> dict[str, Scenario]:
    from dataclasses import replace
    from . import churn, cpumask, htab, local_storage, nmi, preempt, qp_trie, slab
    out: dict[str, Scenario] = {}
    for mod in (htab, qp_trie, cpumask, nmi, slab, churn, preempt, local_storage):
        for s in mod.SCENARIOS:
            if s.name in WHATIF_SCENARIOS:     # the proposals promise free's verdict
                s = replace(s, expect={**s.expect, **{p: s.expect["free"] for p in WHATIF_POLICIES}})
            out[s.name] = s
    return out


SCENARIOS: dict[str, Scenario] = _registry()

__all__ = ["POLICIES", "POLICY_HELP", "FREES_WITH_FREE_RCU", "SCENARIOS", "Scenario", "ExploreWatermarks", "FreeRcuNoGp",
           "profile_for", "new_ma", "check_conservation"]
