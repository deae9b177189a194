"""Named policies for hash-map element memory, as the bench compares them.

Each policy says how a ``BPF_F_NO_PREALLOC`` hash map gets and returns its
elements.  Kernel profiles reproduce a kernel version; proposals answer "what
if" questions.

| name        | what                                                     | kernel |
|-------------|----------------------------------------------------------|--------|
| v6.1        | bpf_mem_alloc as merged: kmalloc refill, own GP list      | 6.1    |
| v6.2        | + refill reuses objects not yet handed to RCU             | 6.2-6.3|
| v6.4        | v6.2 with fdinfo memlock = htab_map_mem_usage()           | 6.4-6.5|
| v6.6        | + _ttrace lists, tgt hint, reuse during the GP            | 6.6    |
| v6.7        | v6.6 raising the refill irq_work before restoring IRQs    | 6.7    |
| v6.8        | + per-CPU caches 1/3/1, prefill 1                         | 6.8-6.15 |
| v6.16       | + LRU target_free from the map size                       | 6.16-6.19 |
| v7.0        | v6.6 with tasks-trace RCU on SRCU-fast (no lazy timer)    | 7.0, a prediction |
| free_rcu    | v6.6 with htab freeing through bpf_mem_cache_free_rcu     | proposal (Hou Tao's v9 notes) |
| prealloc    | no BPF_F_NO_PREALLOC: pcpu_freelist + extra_elems         | all    |
| kmalloc_rcu | per-element kmalloc + call_rcu                            | < 6.1  |

The proposals of the immediate-reuse debate (Hou Tao's RFCs, 2022-2023; mechanics in
``alloc/proposals.py`` and docs/history/proposals.md), each on the 6.2-6.5 allocator it was posted
against, with that era's non-lazy tasks-trace RCU:

| name                  | what                                                              | RFC |
|-----------------------|-------------------------------------------------------------------|-----|
| no_reuse              | never reuse: per-CPU batches to slab after a tasks-trace GP        | v1  |
| reuse_after_gp        | reuse after an RCU GP (kworker per cache), slab after tasks-trace  | v2, v3 3/6 |
| free_after_gp         | never reuse: per-CPU batches to slab after an RCU GP               | v3 4/6 |
| delayed_free          | call_rcu per element, then bpf_mem_cache_free (how bpf_cpumask freed) | v3 5/6 |
| reuse_after_gp_global | reuse after an RCU GP from one list per allocator (irq_work)       | v4  |
| reuse_after_gp_pcpu   | reuse after an RCU GP per CPU, RCU callbacks unbounded             | v5  |
"""

from __future__ import annotations

from dataclasses import dataclass

from ..alloc import V6_1, V6_2, V6_6, V6_7, V6_8, MemAllocProfile
from ..alloc.share import Share
from ..alloc.proposals import FreeAfterGp, NoReuse, ReuseAfterGp, ReuseAfterGpGlobal, ReuseAfterGpPcpu


@dataclass(frozen=True)
class HtabPolicy:
    name: str
    elems: str                   # "ma", "kmalloc_rcu" or "prealloc"
    profile: type[MemAllocProfile] | None
    free_rcu: bool
    kernel: str
    description: str
    # call_rcu_tasks_trace() batches callbacks lazily (~250 ms) from 6.6 (d119357d0743); before, the
    # first callback on an empty queue wakes the grace-period kthread at once
    tasks_trace_lazy: bool = True
    # fdinfo memlock: bpf_map_memory_footprint() before 6.4, htab_map_mem_usage() from 6.4 (304849a27b34)
    memlock_footprint: bool = False
    # LRU maps take target_free = clamp(max_entries / ncpus / 2, 1, 128) nodes at a time from 6.16
    # (d4adf1c9ee77); before, always 128.  The v6.6 profile models 6.16+ here.
    lru_scaled_target: bool = True
    # prediction: call_rcu_tasks_trace() is call_srcu() on an SRCU-fast struct (rcu/models.py)
    tasks_trace_srcu_fast: bool = False
    prediction: bool = False

    def make_profile(self) -> MemAllocProfile | None:
        return self.profile() if self.profile is not None else None


POLICIES: dict[str, HtabPolicy] = {p.name: p for p in (
    HtabPolicy("v6.1", "ma", V6_1, False, "6.1", "bpf_mem_alloc 6.1: kmalloc-only refill, tasks-trace then call_rcu",
               tasks_trace_lazy=False, memlock_footprint=True, lru_scaled_target=False),
    HtabPolicy("v6.2", "ma", V6_2, False, "6.2-6.3", "bpf_mem_alloc 6.2: refill reuses objects waiting to be handed to RCU",
               tasks_trace_lazy=False, memlock_footprint=True, lru_scaled_target=False),
    HtabPolicy("v6.4", "ma", V6_2, False, "6.4-6.5", "the 6.2 allocator; fdinfo memlock is htab_map_mem_usage() (304849a27b34)",
               tasks_trace_lazy=False, lru_scaled_target=False),
    HtabPolicy("v6.6", "ma", V6_6, False, "6.6", "bpf_mem_alloc 6.6+: _ttrace lists, tgt hint, reuse during the GP",
               lru_scaled_target=False),
    HtabPolicy("v6.7", "ma", V6_7, False, "6.7", "v6.6 raising its refill irq_work before restoring IRQs "
               "(no preemption window; same memory and speed)", lru_scaled_target=False),
    HtabPolicy("v6.8", "ma", V6_8, False, "6.8-6.15", "v6.6 with per-CPU caches of 1/3/1 and a prefill of 1",
               lru_scaled_target=False),
    HtabPolicy("v6.16", "ma", V6_8, False, "6.16-6.19",
               "v6.8 with LRU maps taking target_free = clamp(entries / CPUs / 2, 1, 128) at a time"),
    HtabPolicy("v7.0", "ma", V6_8, False, "7.0 (prediction)",
               "the 6.18 allocator; tasks-trace RCU on SRCU-fast: no lazy timer, a GP of two RCU GPs",
               tasks_trace_srcu_fast=True, prediction=True),
    HtabPolicy("free_rcu", "ma", V6_8, True, "proposal", "today's allocator, htab frees with bpf_mem_cache_free_rcu"),
    HtabPolicy("prealloc", "prealloc", None, False, "all", "preallocated: pcpu_freelist + per-CPU extra_elems"),
    HtabPolicy("kmalloc_rcu", "kmalloc_rcu", None, False, "<6.1", "per-element kmalloc(GFP_NOWAIT) + call_rcu",
               tasks_trace_lazy=False, lru_scaled_target=False),
    HtabPolicy("no_reuse", "ma", NoReuse, False, "proposal (RFC v1, 2022-12)",
               "never reuse: per-CPU batches, a kworker within 1 s, tasks-trace GP, slab",
               tasks_trace_lazy=False, memlock_footprint=True, lru_scaled_target=False),
    HtabPolicy("reuse_after_gp", "ma", ReuseAfterGp, False, "proposal (RFC v2/v3, 2023-04)",
               "reuse after an RCU GP (a kworker per cache); unreused objects to slab after a tasks-trace GP",
               tasks_trace_lazy=False, lru_scaled_target=False),
    HtabPolicy("free_after_gp", "ma", FreeAfterGp, False, "proposal (RFC v3, 2023-04)",
               "never reuse: per-CPU batches, a kworker within 1 s, RCU GP, slab", tasks_trace_lazy=False,
               lru_scaled_target=False),
    HtabPolicy("delayed_free", "ma_delayed_free", V6_2, False, "proposal (RFC v3 5/6, 2023-04)",
               "call_rcu per element, then bpf_mem_cache_free into the 6.2-6.5 allocator (bpf_cpumask 6.4-6.5)",
               tasks_trace_lazy=False, lru_scaled_target=False),
    HtabPolicy("reuse_after_gp_global", "ma", ReuseAfterGpGlobal, False, "proposal (RFC v4, 2023-06)",
               "reuse after an RCU GP by any CPU from one spin-locked list per allocator", tasks_trace_lazy=False,
               lru_scaled_target=False),
    HtabPolicy("v6.18+share", "ma", Share, False, "proposal (seed 000, question 4)",
               "the 6.18 allocator sharing freed objects among CPUs through one list per allocator"),
    HtabPolicy("reuse_after_gp_pcpu", "ma", ReuseAfterGpPcpu, False, "proposal (RFC v5, 2023-06)",
               "reuse after an RCU GP by the same CPU; RCU callbacks unbounded; one watermark (32)",
               tasks_trace_lazy=False, lru_scaled_target=False),
)}
# --policy groups: "all" = the kernel profiles and the merged variants (as before the proposals existed);
# "proposals" = the RFCs of the immediate-reuse debate; "everything" = both
GROUPS: dict[str, tuple[str, ...]] = {
    "all": ("v6.1", "v6.2", "v6.6", "free_rcu", "prealloc", "kmalloc_rcu"),
    "proposals": ("no_reuse", "reuse_after_gp", "free_after_gp", "delayed_free", "reuse_after_gp_global",
                  "reuse_after_gp_pcpu"),
}
# v6.4 differs from v6.2 in fdinfo memlock only, v6.8 and v6.16 from v6.6 in per-CPU caches and LRU maps only:
# they are in "everything", not in "all"; v6.7 differs from v6.6 in a preemption window only (the explorer's
# irq_work_preempt), not in memory or speed: it is in no group
GROUPS["everything"] = GROUPS["all"] + ("v6.4", "v6.8", "v6.16") + GROUPS["proposals"]
# today's kernel beside the next release's predicted profile
GROUPS["next"] = ("v6.16", "v7.0")


def expand_policy(name: str) -> list[str]:
    """The policies a --policy value names: a group, or one policy or release."""
    return list(GROUPS[name]) if name in GROUPS else [name]


# Every release from 6.1 to 6.19 and the profile that models it (named by the first release it applies
# to).  Changes inside a range that the model does not (yet) tell apart are listed with their commits.
RELEASES: dict[str, str] = {f"v6.{n}": ("v6.1" if n == 1 else "v6.2" if n <= 3 else "v6.4" if n <= 5 else
                                         "v6.6" if n == 6 else "v6.7" if n == 7 else "v6.8" if n <= 15 else "v6.16")
                            for n in range(1, 20)}
# what "the running kernel" means by default: this machine kind runs 6.18
DEFAULT_RELEASE = "v6.18"
RELEASE_NOTES: dict[str, str] = {
    "v6.1": "bpf_mem_alloc for non-preallocated hash maps (7c8199e24fa0 series); tasks-trace RCU not lazy",
    "v6.2": "refill reuses objects still on free_by_rcu (0893d6007db5); rcu_barrier skipped when "
            "rcu_trace_implies_rcu_gp() (822ed78fab13)",
    "v6.4": "fdinfo memlock becomes htab_map_mem_usage() (304849a27b34); before: bpf_map_memory_footprint(), "
            "max_entries x round_up(key + value, 8), page-rounded",
    "v6.6": "_ttrace lists, bpf_mem_cache_free_rcu (5af6807bdb10), rcu_request_urgent_qs_task; "
            "call_rcu_tasks_trace lazy, ~250 ms (d119357d0743)",
    "v6.7": "IRQs restored after irq_work_raise() in unit_alloc/unit_free(_rcu) (566f6de3cea3, 62cf51cb0ebe): "
            "no preemption between claiming the refill irq_work and queueing it (explore irq_work_preempt)",
    "v6.8": "per-CPU caches: watermarks 1/3/1, prefill 1 (0e2ba9f96f9b, 5b95e638f134); free picks the cache by "
            "unit_size (7ac5c53e0073) [the model's size-class free uses unit_size in every profile]",
    "v6.12": "bpf_mem_alloc_check_size() (62a898b07b83) [same profile as v6.8]",
    "v6.13": "htab frees the old element after dropping the bucket lock (b9e9ed90b10c) [same profile as v6.8: "
             "the model frees after the unlock]",
    "v6.15": "hash buckets on rqspinlock (4fa8d68aa53e): no map_locked counters, lock failure -EDEADLK/-ETIMEDOUT "
             "[same profile as v6.8]",
    "v6.16": "LRU maps take target_free = clamp(max_entries / CPUs / 2, 1, 128) free nodes at a time instead of "
             "128 (d4adf1c9ee77)",
}


RELEASES["v7.0"] = "v7.0"
RELEASE_NOTES["v7.0"] = ("PREDICTION (from the mail archive, not checked on a 7.0 kernel): RCU Tasks Trace "
                         "re-implemented on SRCU-fast (c27cea4416a3 in the rcu tree; call_rcu_tasks_trace() = "
                         "call_srcu(), rcu_tasks_trace_lazy_ms removed): no ~250 ms lazy batching of freed objects")


def get_policy(name: str) -> HtabPolicy:
    """A policy by its name, or the profile that models a release (``v6.1`` .. ``v6.19``)."""
    try:
        return POLICIES[RELEASES.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; allowed: {', '.join(POLICIES)} or a release "
                         f"v6.1..v6.19, v7.0") from None
