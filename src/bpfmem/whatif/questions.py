"""The seed's open questions about ``bpf_global_ma``, each as a workload run under the kernel and a proposal.

- ``quiet`` (question 1): half the CPUs allocate a burst through ``bpf_obj_new`` (``bpf_mem_alloc`` of
  the global size-class allocator), free it with ``bpf_obj_drop`` and go quiet for a minute.  The seed:
  the objects "will not be freed if there is no free operations on this CPU afterwards".
- ``hotplug`` (question 3): one CPU allocates and frees a burst, then goes offline; later it comes back.
  The kernel has no hotplug handling: what is stranded, and for how long?

``bpf_global_ma`` is initialised at boot (``late_initcall``, kernel/bpf/core.c) from the root cgroup:
its objcg is NULL, so nothing is charged and no memcg limit applies — the bytes here are slab bytes.
Every number is modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..alloc import (BpfMemAlloc, bpf_mem_alloc, bpf_mem_alloc_init, bpf_mem_cache_alloc, bpf_mem_cache_free,
                     bpf_mem_cache_free_rcu, bpf_mem_free, bpf_mem_free_rcu)
from ..alloc.memalloc import MemObj
from ..alloc.share import Share
from ..backend.model import tasks_trace_for
from ..backend.profile import load_profile
from ..mm import Mm
from ..rcu import Rcu, call_rcu
from ..sim import Cpu, Machine, RandomScheduler
from .proposals import Base, parse_policy

MS = 1_000_000
QUESTIONS = ("quiet", "hotplug", "share", "pressure")
REPORT_AT_S = (0.1, 1.0, 10.0, 60.0)
KSWAPD_AT = 0.9             # background reclaim runs above this fraction of the budget


@dataclass(frozen=True)
class WhatIfConfig:
    question: str
    policy: str = "v6.18"
    cpus: int = 8
    objects: int = 4096            # per bursting CPU
    size: int = 64                 # bytes asked of bpf_obj_new (the size class adds the 8-byte header)
    quiet_s: float = 60.0
    sample_ms: float = 100.0

    def __post_init__(self) -> None:
        if self.question not in QUESTIONS:
            raise ValueError(f"QUESTION must be one of {', '.join(QUESTIONS)} or all, got {self.question!r}")
        if self.cpus < 2:
            raise ValueError(f"--cpus must be >= 2, got {self.cpus}")
        if not 1 <= self.size <= 4088:
            raise ValueError(f"--size must be 1..4088 (bpf_mem_alloc_check_size), got {self.size}")
        if self.objects < 1 or not self.quiet_s > 0:
            raise ValueError("--objects must be >= 1 and --quiet > 0")
        parse_policy(self.policy)


# the users of the global allocators (``--kind``): the allocator each takes from, and from which release
KINDS = {"obj": "bpf_obj_new/bpf_obj_drop on bpf_global_ma (6.2+, 958cf2e273f0)",
         "percpu": "bpf_percpu_obj_new/bpf_percpu_obj_drop on bpf_global_percpu_ma (6.7+, 36d8bdf75a93)",
         "cpumask": "bpf_cpumask_create/bpf_cpumask_release on bpf_cpumask_ma (6.3+, 516f4d3397c9)"}
KIND_FROM = {"obj": (6, 2), "percpu": (6, 7), "cpumask": (6, 3)}
CPUMASK_SIZE = 40             # sizeof(struct bpf_cpumask) with this machine kind's NR_CPUS (vmlinux BTF)
PERCPU_MAX_SIZE = 512         # BPF_GLOBAL_PERCPU_MA_MAX_SIZE (5c1a37653260, 6.8)


def global_world(cpus: int, base: Base, kind: str = "obj") -> tuple[Machine, Mm, BpfMemAlloc]:
    """A machine of ``cpus`` counted-object CPUs with the shipped grace-period profile (as ``base``'s release
    runs its tasks-trace RCU), and the allocator ``kind`` takes from, set up as the kernel does.

    ``bpf_global_ma`` (``bpf_mem_alloc_init(&bpf_global_ma, 0, false)`` at boot, 958cf2e273f0) and
    ``bpf_cpumask_ma`` (fixed size, at boot) take the boot task's objcg: NULL (root), charged to nobody.
    ``bpf_global_percpu_ma`` (size classes of percpu objects, 41a5db8d8161): 6.7-rc1 set it up at boot; 6.7
    itself at the verification of the first program that calls ``bpf_percpu_obj_new`` (1fda5bb66ad8), every
    class on every CPU prefilled, with ``bpf_mem_alloc_init``'s objcg = the loading process's memcg
    (``get_obj_cgroup_from_current``): so the loader pays, the prefill and every refill after it; from 6.8
    one class at a time (c39aa3b289e9) with objcg NULL on purpose ("Charge memory allocated with
    bpf_global_percpu_ma to root memcg", 9fc8e802048a/c39aa3b289e9) — the model prefills every class at once,
    which only moves the level it measures from.  The loader's memcg is ``ma.objcg`` (None: nobody pays)."""
    from .proposals import release_key
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if release_key(base.release) < KIND_FROM[kind]:
        need = KIND_FROM[kind]
        raise ValueError(f"--kind {kind}: {KINDS[kind]}; {base.release} predates it (from v{need[0]}.{need[1]})")
    prof = load_profile(None)
    m = Machine(cpus, RandomScheduler(0))
    m.identity = False
    mm = Mm(m)
    rcu = Rcu(m, prof.rcu, tasks_trace_for(base.htab, prof.rcu, prof.tasks_trace))
    ma = BpfMemAlloc(m, mm, rcu, base.make_profile())
    loader = mm.root_memcg.child("loader") if kind == "percpu" and release_key(base.release) < (6, 8) else None
    if bpf_mem_alloc_init(ma, CPUMASK_SIZE if kind == "cpumask" else 0, kind == "percpu", loader):
        raise ValueError(f"--kind {kind}: bpf_mem_alloc_init refused it under {base.release}")
    return m, mm, ma


def obj_new(kind: str, ma: BpfMemAlloc, cpu: Cpu, size: int) -> MemObj | None:
    """``bpf_obj_new``/``bpf_percpu_obj_new`` (``bpf_mem_alloc``) or ``bpf_cpumask_create``
    (``bpf_mem_cache_alloc``)."""
    return bpf_mem_cache_alloc(ma, cpu) if kind == "cpumask" else bpf_mem_alloc(ma, cpu, size)


def obj_drop(kind: str, base: Base, ma: BpfMemAlloc, cpu: Cpu, obj: MemObj | None) -> None:
    """Free as the release's kfunc does: ``bpf_obj_drop`` (``bpf_obj_drop``), ``bpf_percpu_obj_drop``
    (``bpf_mem_free_rcu``, 36d8bdf75a93), ``bpf_cpumask_release`` of the last reference (``bpf_mem_cache_free``
    6.3; ``call_rcu`` then ``bpf_mem_cache_free`` 6.4-6.5, 77473d1a962f; ``bpf_mem_cache_free_rcu`` 6.6+,
    8e07bb9ebcd9)."""
    from .proposals import release_key
    if obj is None:
        return
    if kind == "obj":
        bpf_obj_drop(base, ma, cpu, obj)
    elif kind == "percpu":
        bpf_mem_free_rcu(ma, cpu, obj)
    else:
        key = release_key(base.release)
        if key >= (6, 6):
            bpf_mem_cache_free_rcu(ma, cpu, obj)
        elif key >= (6, 4):
            call_rcu(ma.rcu, bpf_mem_cache_free, ma, cpu, obj)
        else:
            bpf_mem_cache_free(ma, cpu, obj)


def bpf_obj_drop(base: Base, ma: BpfMemAlloc, cpu: Cpu, obj: MemObj | None) -> None:
    """``bpf_obj_drop()`` of an object without fields (``__bpf_obj_drop_impl``): ``bpf_mem_free`` 6.2-6.7,
    ``bpf_mem_free_rcu`` from 6.8 (649924b76ab1: reusable only after an RCU grace period)."""
    if base.drop_rcu:
        bpf_mem_free_rcu(ma, cpu, obj)
    else:
        bpf_mem_free(ma, cpu, obj)


def run_pressure(policy: str, cpus: int = 8, budget_mib: float = 0.75, batch: int = 2000, size: int = 64,
                 duration_s: float = 2.0) -> dict[str, Any]:
    """Question 2: the global allocator under a memory budget it cannot be charged for.  CPUs work in pairs:
    every 5 ms one pair's first CPU takes ``batch`` objects and the previous pair's second CPU frees the
    previous batch (frees on a CPU that never allocates: trimmed, parked for a tasks-trace grace period).  Slab allows ``budget_mib`` for these objects (re-read every millisecond);
    an allocation past it fails, and reclaim calls the registered shrinkers first."""
    from ..mm import kmalloc_size_class
    base, proposals = parse_policy(policy)
    m, mm, ma = global_world(cpus, base)
    budget = int(budget_mib * (1 << 20))
    owner = next((p for p in proposals if p.name == "memcg_owner"), None)
    for p in proposals:
        if p is owner:
            owner.attach(ma, limit=budget)              # the owner's memory.max: the budget becomes a memcg limit
        else:
            p.attach(ma)
    shrinkers = [p for p in proposals if p.name == "shrinker"]
    slab = mm.slab
    ksize = kmalloc_size_class(size + 8)
    eng = m.engine
    failures = 0
    attempts = 0
    kswapd_passes = 0
    peak = 0
    held: list[Any] = []
    held_cpu = 0
    round_ns = 5 * MS

    def allow() -> None:
        if owner is None:                               # with an owner, its memcg limit does the limiting
            slab.fail_after = max((budget - slab.live_bytes) // ksize, 0)

    t = 0
    r = 0
    end = int(duration_s * 1e9)
    pairs = cpus // 2
    while t < end:
        c = 2 * (r % pairs)                             # this pair's adder; its partner frees
        cpu = m.cpus[c]
        if held:                                        # the previous batch is freed by its adder's partner
            free_cpu = m.cpus[held_cpu + 1]
            for o in held:
                bpf_obj_drop(base, ma, free_cpu, o)
        held = []
        for _ in range(batch):
            allow()
            attempts += 1
            o = bpf_mem_alloc(ma, cpu, size)
            if o is None:
                failures += 1
            else:
                held.append(o)
        held_cpu = c
        peak = max(peak, slab.live_bytes)
        for step in range(5):                           # time passes; the budget follows the frees
            eng.run(until=t + (step + 1) * MS)
            if shrinkers and slab.live_bytes > KSWAPD_AT * budget:
                kswapd_passes += 1                      # background reclaim (GFP_NOWAIT refills never reclaim)
                for sh in shrinkers:
                    sh.scan_objects()
            allow()
            peak = max(peak, slab.live_bytes)
        t += round_ns
        r += 1
    slab.fail_after = None
    return {"config": {"question": "pressure", "policy": policy, "cpus": cpus, "budget_bytes": budget,
                       "batch": batch, "size": size, "duration_s": duration_s},
            "modelled": True,
            "charged_to": ("the program owner's cgroup (memory.max = the budget)" if owner is not None else
                           "nobody (root): the budget stands for memory pressure, not a memcg"),
            "peak_bytes": peak, "allocations": attempts, "failures": failures,
            "failure_rate": round(failures / attempts, 4) if attempts else None, "kswapd_passes": kswapd_passes,
            "proposals": {p.name: {"mechanism": p.mechanism, **p.cost()} for p in proposals}}


def run_share(cpus: int, policy: str, duration_s: float = 1.0) -> dict[str, Any]:
    """Question 4: htab-mem's add_del_on_diff_cpu (adds on one CPU of a pair, deletes on the other) on the
    6.18 allocator, with or without ``+share``; the lock's cost is charged to the CPU that takes it."""
    from ..backend.model import ModelBackend
    from ..bench import run_htab_mem
    from ..workloads import HtabMemConfig, htab_mem
    base, proposals = parse_policy(policy)
    if proposals:
        raise ValueError(f"--policy {policy!r}: the share question runs a release with or without +share; "
                         f"{', '.join('+' + p.name for p in proposals)} act on bpf_global_ma, not on a map's allocator")
    if cpus % 2:
        raise ValueError(f"--cpus must be even for add_del_on_diff_cpu, got {cpus}")
    htab = replace(base.htab, name=policy, profile=Share) if base.share else base.htab
    prof = load_profile(None)
    be = ModelBackend(cpus, htab, costs=prof.costs, rcu_model=prof.rcu, tasks_trace_model=prof.tasks_trace,
                      breakdown=False)
    made: list[Any] = []
    create = be.map_create

    def map_create(spec: Any) -> Any:
        made.append(create(spec))
        return made[-1]
    be.map_create = map_create  # type: ignore[method-assign]
    r = run_htab_mem(be, htab_mem(HtabMemConfig("add_del_on_diff_cpu", cpus)), policy,
                     duration_ns=int(duration_s * 1e9), idle_ns=int(0.5e9))
    cost: dict[str, Any] = {}
    sf = getattr(getattr(made[0].htab.elems, "ma", None), "shared", None) if made else None
    if sf is not None and hasattr(sf, "locks"):
        cost = {"lock_acquisitions": sf.locks, "objects_shared": sf.shared, "objects_taken": sf.taken,
                "locks_per_1k_ops": round(1000 * sf.locks / r.ops, 2) if r.ops else None,
                "added_ns_per_op": round(sf.locks * prof.costs.lock_ns / r.ops, 2) if r.ops else None}
    return {"config": {"question": "share", "policy": policy, "cpus": cpus, "duration_s": duration_s},
            "modelled": True, "peak_bytes": r.peak_bytes, "steady_bytes": r.steady_bytes,
            "per_prod_op_k": round(r.per_prod_op, 3), "ops": r.ops, "cost": cost}


def run_whatif(cfg: WhatIfConfig) -> dict[str, Any]:
    """One question under one policy (``v6.18`` or ``v6.18+proposal...``)."""
    base, proposals = parse_policy(cfg.policy)
    m, mm, ma = global_world(cfg.cpus, base)
    for p in proposals:
        p.attach(ma)
    eng = m.engine
    boot = mm.slab.live_bytes                  # the boot-time prefill of every class on every CPU
    series: list[tuple[float, int]] = []
    stranded: list[tuple[float, int]] = []
    sample_ns = int(cfg.sample_ms * MS)
    off_cpu = cfg.cpus - 1

    def on_cpu_bytes(cpu_id: int) -> int:
        from ..mm import kmalloc_charge
        return sum(sum(map(len, c.lists().values())) * kmalloc_charge(c.unit_size)
                   for c in ma.all_caches() if c.cpu.id == cpu_id)

    def sample() -> None:
        t = round(eng.now / 1e9, 6)            # simulated s, as every bench's series
        series.append((t, mm.slab.live_bytes - boot))
        if cfg.question == "hotplug":
            stranded.append((t, on_cpu_bytes(off_cpu)))
        eng.after(sample_ns, sample)

    burst = list(range(cfg.cpus // 2)) if cfg.question == "quiet" else [off_cpu]
    held: dict[int, list[Any]] = {}
    for c in burst:                            # bpf_obj_new x objects, stashed in a map
        cpu = m.cpus[c]
        held[c] = [bpf_mem_alloc(ma, cpu, cfg.size) for _ in range(cfg.objects)]
        if any(o is None for o in held[c]):
            raise RuntimeError("bpf_mem_alloc failed in the burst")
    peak = mm.slab.live_bytes - boot
    eng.run(until=10 * MS)
    for c in burst:                            # bpf_obj_drop of every one, on the same CPU
        cpu = m.cpus[c]
        for o in held[c]:
            bpf_obj_drop(base, ma, cpu, o)
    sample()
    events: list[str] = []
    if cfg.question == "hotplug":
        eng.run(until=100 * MS)
        m.cpu_down(off_cpu)
        events.append(f"cpu{off_cpu} offline at 100 ms")
        up_at = int(cfg.quiet_s / 2 * 1e9)
        eng.run(until=up_at)
        before_up = on_cpu_bytes(off_cpu)
        m.cpu_up(off_cpu)
        events.append(f"cpu{off_cpu} online at {up_at / 1e9:g} s")
    end = int(cfg.quiet_s * 1e9) + 10 * MS
    eng.run(until=end)
    at = {f"{s:g}s": _at(series, s) for s in REPORT_AT_S if s <= cfg.quiet_s}
    out: dict[str, Any] = {
        "config": asdict(cfg), "modelled": True, "charged_to": "nobody (bpf_global_ma's objcg is NULL: root)",
        "peak_bytes": peak, "freed_bytes": peak, "parked_at": at, "after_quiet_bytes": series[-1][1],
        "returned_after_s": _returned(series), "events": events,
        "proposals": {p.name: {"mechanism": p.mechanism, **p.cost()} for p in proposals},
        "series": series,
    }
    if cfg.question == "hotplug":
        out["stranded_on_offline_cpu_bytes"] = before_up
        out["stranded_series"] = stranded
    return out


def _at(series: list[tuple[float, int]], t_s: float) -> int:
    best = series[0][1]
    for t, b in series:
        if t > t_s:
            break
        best = b
    return best


def _returned(series: list[tuple[float, int]]) -> float | None:
    """Seconds after the frees when the burst's bytes were back at the boot level (None: never)."""
    for t, b in series:
        if b <= 0:
            return round(t - series[0][0], 3)
    return None
