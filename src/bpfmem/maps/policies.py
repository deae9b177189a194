"""Named policies for hash-map element memory, as the bench compares them.

Each policy says how a ``BPF_F_NO_PREALLOC`` hash map gets and returns its
elements.  Kernel profiles reproduce a kernel version; proposals answer "what
if" questions.

| name        | what                                                     | kernel |
|-------------|----------------------------------------------------------|--------|
| v6.1        | bpf_mem_alloc as merged: kmalloc refill, own GP list      | 6.1    |
| v6.2        | + refill reuses objects not yet handed to RCU             | 6.2-6.5|
| v6.6        | + _ttrace lists, tgt hint, reuse during the GP            | 6.6-6.18 |
| free_rcu    | v6.6 with htab freeing through bpf_mem_cache_free_rcu     | proposal (Hou Tao's v9 notes) |
| prealloc    | no BPF_F_NO_PREALLOC: pcpu_freelist + extra_elems         | all    |
| kmalloc_rcu | per-element kmalloc + call_rcu                            | < 6.1  |
"""

from __future__ import annotations

from dataclasses import dataclass

from ..alloc import V6_1, V6_2, V6_6, MemAllocProfile


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

    def make_profile(self) -> MemAllocProfile | None:
        return self.profile() if self.profile is not None else None


POLICIES: dict[str, HtabPolicy] = {p.name: p for p in (
    HtabPolicy("v6.1", "ma", V6_1, False, "6.1", "bpf_mem_alloc 6.1: kmalloc-only refill, tasks-trace then call_rcu",
               tasks_trace_lazy=False),
    HtabPolicy("v6.2", "ma", V6_2, False, "6.2-6.5", "bpf_mem_alloc 6.2: refill reuses objects waiting to be handed to RCU",
               tasks_trace_lazy=False),
    HtabPolicy("v6.6", "ma", V6_6, False, "6.6-6.18", "bpf_mem_alloc 6.6+: _ttrace lists, tgt hint, reuse during the GP"),
    HtabPolicy("free_rcu", "ma", V6_6, True, "proposal", "v6.6 allocator, htab frees with bpf_mem_cache_free_rcu"),
    HtabPolicy("prealloc", "prealloc", None, False, "all", "preallocated: pcpu_freelist + per-CPU extra_elems"),
    HtabPolicy("kmalloc_rcu", "kmalloc_rcu", None, False, "<6.1", "per-element kmalloc(GFP_NOWAIT) + call_rcu",
               tasks_trace_lazy=False),
)}


def get_policy(name: str) -> HtabPolicy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; allowed: {', '.join(POLICIES)}") from None
