"""``bench obj``: Hou Tao's (unmerged) ``bench bpf_ma`` on the model: the global allocators' users per CPU.

Each producer, on its own CPU, allocates ``objects`` objects of ``size`` bytes with ``bpf_obj_new()``
(``bpf_mem_alloc`` of ``bpf_global_ma``; ``--kind percpu``: ``bpf_percpu_obj_new()`` on
``bpf_global_percpu_ma``; ``--kind cpumask``: ``bpf_cpumask_create()`` on ``bpf_cpumask_ma``), holds them,
then frees them all, round after round.  Two memories: what slab and percpu hold above the setup
(``memory_bytes``, whoever pays), and what is charged to a memcg above the setup (``charged_bytes``).  The
published figure is the second: the ``slab``/``percpu`` fields of the root cgroup's memory.stat, which add
up what memcgs are charged; an allocation with a NULL objcg is charged to nobody
(``__get_obj_cgroup_from_memcg`` stops below the root) and is in no memory.stat.  ``bpf_global_ma`` has a
NULL objcg from boot, so its objects never show there — the published 0.01-0.06 MiB is not them;
``bpf_global_percpu_ma`` on 6.7 is charged to the program's loader, so its growth does show (the published
188-2,330 MiB), and from 6.8 it is not charged (Hou Tao's 0.00 MiB after Yonghong Song's series).  Speed is
not modelled (a program's ``bpf_obj_new`` is not in the cost profile).
"""

from __future__ import annotations

from typing import Any

from .proposals import parse_policy
from .questions import CPUMASK_SIZE, KINDS, MS, PERCPU_MAX_SIZE, global_world, obj_drop, obj_new

# published (lore 20231221141501.3588586-3-houtao@huaweicloud.com, 8-CPU VM, bpf-next of Dec 2023): memory MiB
# by producers; the percpu variant before Yonghong Song's 6.8 series (0e2ba9f96f9b, 5b95e638f134)
PUBLISHED_MIB = {"obj": {1: 0.01, 4: 0.03, 8: 0.06}, "percpu": {1: 188.02, 4: 808.90, 8: 2330.24}}


def run_obj(producers: int, objects: int = 64, size: int = 128, rounds: int = 2000, cpus: int = 8,
            policy: str = "v6.18", round_ns: int = MS // 10, warmup: int = 0, kind: str = "obj") -> dict[str, Any]:
    """``warmup`` + ``rounds`` rounds, one every ``round_ns`` per producer (all producers in parallel); kmallocs
    are counted over the last ``rounds``, memory is what slab (and percpu) holds at the end above boot.
    ``kind``: obj, percpu or cpumask (``questions.KINDS``); a cpumask's size is ``sizeof(struct bpf_cpumask)``."""
    if not 1 <= producers <= cpus:
        raise ValueError(f"--producers must be 1..{cpus} (the machine's CPUs), got {producers}")
    if not 1 <= size <= 4088 or objects < 1 or rounds < 1:
        raise ValueError("--size must be 1..4088, --objects and --rounds >= 1")
    if kind == "percpu" and size > PERCPU_MAX_SIZE:
        raise ValueError(f"--size must be 1..{PERCPU_MAX_SIZE} for percpu objects (BPF_GLOBAL_PERCPU_MA_MAX_SIZE, "
                         f"5c1a37653260), got {size}")
    if kind == "cpumask":
        size = CPUMASK_SIZE
    base, proposals = parse_policy(policy)
    m, mm, ma = global_world(cpus, base, kind)
    for p in proposals:
        p.attach(ma)
    boot = mm.slab.live_bytes
    payer = ma.objcg
    charged0 = payer.usage if payer is not None else 0
    peak = 0
    failed = 0
    k0 = mm.slab.kmalloc_calls
    for r in range(warmup + rounds):
        if r == warmup:
            k0 = mm.slab.kmalloc_calls
        for p in range(producers):
            cpu = m.cpus[p]
            objs = [obj_new(kind, ma, cpu, size) for _ in range(objects)]
            failed += objs.count(None)                  # NULL: nothing to drop
            peak = max(peak, mm.slab.live_bytes - boot)
            for o in objs:
                obj_drop(kind, base, ma, cpu, o)
        m.engine.run(until=(r + 1) * round_ns)
    end = mm.slab.live_bytes - boot
    return {"policy": policy, "kind": kind, "what": KINDS[kind], "boot_bytes": boot, "producers": producers, "objects": objects, "size": size, "rounds": rounds,
            "warmup": warmup, "round_us": round_ns / 1000, "cpus": cpus,
            "modelled": True, "memory_bytes": end, "peak_bytes": peak, "failed_allocations": failed,
            "charged_bytes": (payer.usage - charged0) if payer is not None else 0,
            "charged_to": ("the program loader's memcg (6.7: bpf_mem_alloc_init takes the objcg of current, "
                           "1fda5bb66ad8)" if payer is not None else "nobody (objcg NULL: root)"),
            "kmallocs_per_round": round((mm.slab.kmalloc_calls - k0) / rounds / producers, 3),
            "published_mib": (PUBLISHED_MIB.get(kind, {}).get(producers)
                              if kind == "obj" or base.release == "v6.7" else None), "speed": "not modelled"}
