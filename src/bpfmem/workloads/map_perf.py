"""map_perf_test's ``hash_map_perf kmalloc`` case, backend-agnostic (B.3's benchmark).

Models: samples/bpf/map_perf_test_user.c and map_perf_test.bpf.c after 89dc8d0c38e0 ("samples/bpf:
Reduce syscall overhead in map_perf_test", 2022): ``map_perf_test 4 <cpus> <entries>`` forks one
process per CPU, pinned; each calls ``getgid()`` in a loop, and the kprobe program
``stress_hmap_alloc`` does, per event, 10 x (update key=pid BPF_ANY, lookup, delete) on
``hash_map_alloc`` (``BPF_MAP_TYPE_HASH``, key u32, value long, ``BPF_F_NO_PREALLOC``).  Each process
has its own key (its pid), so every CPU allocates and frees one element ten times per event.
"""

from __future__ import annotations

from ..backend.protocol import BPF_ANY, Invocation, MapSpec, Op, Producer
from .htab_mem import HtabMemConfig, HtabMemWorkload, WorkloadError

MAP_PERF_OPS_PER_EVENT = 30
PID_BASE = 1000                 # keys stand for the processes' pids


def map_perf_test(cpus: int, max_entries: int = 8192) -> HtabMemWorkload:
    """One producer per CPU, each event 10 x (update, lookup, delete) of that CPU's own key."""
    if cpus < 1:
        raise WorkloadError("cpus", f"cpus must be >= 1, got {cpus}")
    if not 1 <= cpus <= max_entries:
        raise WorkloadError("max_entries", f"max_entries must be >= cpus ({cpus}), got {max_entries}")
    producers, drain = [], []
    for cpu in range(cpus):
        key = (PID_BASE + cpu,)
        ops = tuple(op for _ in range(10) for op in (Op("update", key, BPF_ANY), Op("lookup", key),
                                                      Op("delete", key)))
        producers.append(Producer(f"pid{PID_BASE + cpu}", (Invocation(cpu, ops, hits=1),)))
        drain.append(Invocation(cpu, (Op("delete", key),)))
    cfg = HtabMemConfig("hash_map_perf_kmalloc", cpus, value_size=8, max_entries=max_entries, batch=10, poke=0)
    spec = MapSpec("hash", 4, 8, max_entries, no_prealloc=True)
    return HtabMemWorkload(cfg, spec, tuple(producers), tuple(drain), ())
