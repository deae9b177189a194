"""``bench obj``: Hou Tao's (unmerged) ``bench bpf_ma`` on the model: bpf_obj_new/bpf_obj_drop per CPU.

Each producer, on its own CPU, allocates ``objects`` objects of ``size`` bytes with ``bpf_obj_new()``
(``bpf_mem_alloc`` of ``bpf_global_ma``), stashes them, then frees them all with ``bpf_obj_drop()``, round
after round; memory is what slab holds above the setup (the published ``slab`` field of the root
cgroup's memory.stat: the global allocator is charged to nobody).  Speed is not modelled (a program's
``bpf_obj_new`` is not in the cost profile); the percpu variant (``bpf_global_percpu_ma``) is not modelled.
"""

from __future__ import annotations

from typing import Any

from ..alloc import bpf_mem_alloc
from .proposals import parse_policy
from .questions import MS, bpf_obj_drop, global_world

# published (lore 20231221141501.3588586-3-houtao@huaweicloud.com, 8-CPU VM): memory MiB by producers
PUBLISHED_MIB = {1: 0.01, 4: 0.03, 8: 0.06}


def run_obj(producers: int, objects: int = 64, size: int = 128, rounds: int = 2000, cpus: int = 8,
            policy: str = "v6.18", round_ns: int = MS // 10, warmup: int = 0) -> dict[str, Any]:
    """``warmup`` + ``rounds`` rounds, one every ``round_ns`` per producer (all producers in parallel); kmallocs
    are counted over the last ``rounds``, memory is what slab holds at the end above boot."""
    if not 1 <= producers <= cpus:
        raise ValueError(f"--producers must be 1..{cpus} (the machine's CPUs), got {producers}")
    if not 1 <= size <= 4088 or objects < 1 or rounds < 1:
        raise ValueError("--size must be 1..4088, --objects and --rounds >= 1")
    base, proposals = parse_policy(policy)
    m, mm, ma = global_world(cpus, base)
    for p in proposals:
        p.attach(ma)
    boot = mm.slab.live_bytes
    peak = 0
    failed = 0
    k0 = mm.slab.kmalloc_calls
    for r in range(warmup + rounds):
        if r == warmup:
            k0 = mm.slab.kmalloc_calls
        for p in range(producers):
            cpu = m.cpus[p]
            objs = [bpf_mem_alloc(ma, cpu, size) for _ in range(objects)]
            failed += objs.count(None)                  # bpf_obj_new returned NULL: nothing to drop
            peak = max(peak, mm.slab.live_bytes - boot)
            for o in objs:
                if o is not None:
                    bpf_obj_drop(base, ma, cpu, o)
        m.engine.run(until=(r + 1) * round_ns)
    end = mm.slab.live_bytes - boot
    return {"policy": policy, "producers": producers, "objects": objects, "size": size, "rounds": rounds,
            "warmup": warmup, "round_us": round_ns / 1000, "cpus": cpus,
            "modelled": True, "memory_bytes": end, "peak_bytes": peak, "failed_allocations": failed,
            "kmallocs_per_round": round((mm.slab.kmalloc_calls - k0) / rounds / producers, 3),
            "published_mib": PUBLISHED_MIB.get(producers), "speed": "not modelled"}
