"""Local storage churn on the model: where the memory of a task/cgroup/socket/inode storage map sits over time.

Problem: local storage frees on two paths with different costs (08a7ce384e33): an owner that ends
hands its elements back for immediate reuse (6.4-6.18 task and cgroup storage: into the map's
``bpf_mem_alloc``, where a trim parks them like hash-map elements), a delete waits for a tasks-trace
grace period.  Which path a workload takes, and on which CPU, decides the memory.

Use cases, each producer on its own CPU keeping ``owners`` live owners with one element each:

- ``create_destroy``: create an owner with its element, end the oldest (the destroy path);
- ``delete_recreate``: owners live on; delete an element and create it again (the delete path);
- ``cross_cpu_exit``: owners are created on one CPU and end on the next (a task forked on one CPU
  exits on another), like htab-mem's add_del_on_diff_cpu.

Producers run ``rate`` operations per simulated second in 1 ms steps.  The speed is an input, not a
model output: local storage costs are not calibrated.  Every byte is modelled.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..maps.local_storage import KINDS, BpfLocalStorageMap, Owner, bpf_local_storage_destroy, profile_for_release
from ..mm import Mm
from ..rcu import Rcu
from ..sim import Machine, RandomScheduler
from .profile import load_profile

USE_CASES = ("create_destroy", "delete_recreate", "cross_cpu_exit")
MS = 1_000_000
STEP_NS = MS


@dataclass(frozen=True)
class LocalStorageConfig:
    kind: str = "task"
    use_case: str = "create_destroy"
    cpus: int = 8
    release: str = "v6.18"
    value_size: int = 64
    owners: int = 256                  # live owners per producer
    rate: float = 20_000.0             # operations per simulated second per producer
    duration_s: float = 1.0
    idle_s: float = 0.5
    sample_ms: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--storage-type must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.use_case not in USE_CASES:
            raise ValueError(f"--use-case must be one of {', '.join(USE_CASES)}, got {self.use_case!r}")
        if self.use_case == "cross_cpu_exit" and self.cpus < 2:
            raise ValueError("--cpus must be >= 2 for cross_cpu_exit (owners end on another CPU)")
        for name, lo in (("cpus", 1), ("value_size", 1), ("owners", 1)):
            if getattr(self, name) < lo:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {lo}, got {getattr(self, name)}")
        if not self.rate > 0 or not self.duration_s > 0 or self.idle_s < 0 or not self.sample_ms > 0:
            raise ValueError("--rate, --duration and --sample-interval must be > 0, --idle >= 0")
        profile_for_release(self.release)


def run_local_storage(cfg: LocalStorageConfig, progress: Callable[[str], None] | None = None,
                      count_mode: bool = True) -> dict[str, Any]:
    """One run: create the map, churn for ``duration_s``, idle ``idle_s``, close; samples every ``sample_ms``.
    ``count_mode``: where the map allows it (``counted_ok``), owners are numbers, not objects (same result)."""
    say = progress or (lambda _m: None)
    prof = load_profile(None)
    m = Machine(cfg.cpus, RandomScheduler(cfg.seed))
    m.identity = False
    mm = Mm(m)
    rcu = Rcu(m, prof.rcu, prof.tasks_trace)
    cg = mm.root_memcg.child("lstorage")
    lsp = profile_for_release(cfg.release)
    t_wall = time.perf_counter()
    base = cg.usage
    smap = BpfLocalStorageMap(m, mm, rcu, cfg.kind, cfg.value_size, cg, lsp)
    create_bytes = cg.usage - base
    k0 = mm.slab.kmalloc_calls
    cpus = m.cpus
    n = cfg.cpus
    counts = {"creates": 0, "destroys": 0, "deletes": 0, "failed": 0}
    seq = [0]
    live: list[deque[Owner]] = [deque() for _ in range(n)]
    handoff: list[deque[Owner]] = [deque() for _ in range(n)]

    def new_owner(cpu_id: int) -> Owner:
        seq[0] += 1
        o = Owner(cfg.kind, f"o{seq[0]}")
        if smap.update(cpus[cpu_id], o, 1) == 0:
            counts["creates"] += 1
        else:
            counts["failed"] += 1
        return o

    counted = count_mode and smap.counted_ok()
    counted_ma = count_mode and smap.counted_ok_ma()
    handoff_n = [0] * n                               # count mode, cross_cpu_exit: owners waiting to end on c
    live_n = [cfg.owners] * n
    if counted:                                       # identical owners as numbers: the same charges and frees
        for c in range(n):
            smap.counted_create(cfg.owners)
            counts["creates"] += cfg.owners
    elif counted_ma:
        for c in range(n):
            smap.counted_create_ma(cpus[c], cfg.owners)
            counts["creates"] += cfg.owners
    else:
        for c in range(n):                            # the live set, before the clock starts
            for _ in range(cfg.owners):
                live[c].append(new_owner(c))

    def counted_ma_ops(c: int, k: int) -> None:
        cpu = cpus[c]
        counts["creates"] += k
        if cfg.use_case == "delete_recreate":
            smap.counted_delete_ma(k, c)
            smap.counted_create_ma(cpu, k)
            counts["deletes"] += k
        elif cfg.use_case == "create_destroy":
            smap.counted_replace_ma(cpu, k, c)
            counts["destroys"] += k
        else:                                       # created here for the next CPU; ends those of the previous
            nxt, prev = (c + 1) % n, (c - 1) % n
            h = min(k, handoff_n[c])
            if h:
                smap.counted_replace_ma(cpu, h, prev)
                handoff_n[c] -= h
            rest = k - h
            own = min(rest, live_n[c])
            if own:
                smap.counted_replace_ma(cpu, own, c)
                live_n[c] -= own
            if rest - own:
                smap.counted_create_ma(cpu, rest - own)
            handoff_n[nxt] += k
            counts["destroys"] += h + own

    def counted_ops(c: int, k: int) -> None:
        if cfg.use_case == "delete_recreate":
            smap.counted_end(k, reuse_now=False)
            smap.counted_create(k)
            counts["deletes"] += k
        else:
            smap.counted_create(k)
            smap.counted_end(k, reuse_now=True)
            counts["destroys"] += k
        counts["creates"] += k

    def op(c: int) -> None:
        cpu = cpus[c]
        if cfg.use_case == "create_destroy":
            live[c].append(new_owner(c))
            bpf_local_storage_destroy(cpu, live[c].popleft())
            counts["destroys"] += 1
        elif cfg.use_case == "delete_recreate":
            o = live[c].popleft()
            smap.delete(cpu, o)
            counts["deletes"] += 1
            if smap.update(cpu, o, 1) == 0:
                counts["creates"] += 1
            else:
                counts["failed"] += 1
            live[c].append(o)
        else:                                           # made here, ends on the next CPU
            handoff[(c + 1) % n].append(new_owner(c))
            if handoff[c]:
                bpf_local_storage_destroy(cpu, handoff[c].popleft())
                counts["destroys"] += 1
            elif live[c]:
                bpf_local_storage_destroy(cpu, live[c].popleft())
                counts["destroys"] += 1

    per_step = cfg.rate * STEP_NS / 1e9
    credit = [0.0] * n
    end_run = int(cfg.duration_s * 1e9)
    end_all = end_run + int(cfg.idle_s * 1e9)
    sample_ns = int(cfg.sample_ms * MS)
    series: list[tuple[float, int]] = []       # (simulated s, bytes), as bench htab-mem's
    run_vals: list[int] = []
    parts: dict[str, list[int]] = {}
    samples = 0

    def sample(now: int) -> None:
        nonlocal samples
        series.append((round(now / 1e9, 6), cg.usage - base))
        if now < end_run:
            run_vals.append(cg.usage - base)
        bd = smap.breakdown()
        for k in set(parts) | set(bd):
            parts.setdefault(k, [0] * samples).append(bd.get(k, 0))
        samples += 1

    eng = m.engine
    now = 0
    next_sample = 0
    say("run")
    while now < end_all:
        if now >= next_sample:
            sample(now)
            next_sample += sample_ns
        if now < end_run:
            for c in range(n):
                credit[c] += per_step
                k = int(credit[c])
                credit[c] -= k
                if counted or counted_ma:
                    if k:
                        (counted_ops if counted else counted_ma_ops)(c, k)
                    continue
                for _ in range(k):
                    op(c)
        now += STEP_NS
        eng.run(until=now)
    sample(now)
    at_end = cg.usage - base
    say("close")
    smap.map_free(cpus[0])
    eng.run(until=now + 2000 * MS)
    after_close = cg.usage - base
    wall = time.perf_counter() - t_wall
    steady = run_vals[len(run_vals) // 2:] or run_vals
    kmallocs = mm.slab.kmalloc_calls - k0
    return {
        "config": asdict(cfg), "profile": lsp.name, "kernel": lsp.kernel, "allocator": lsp.allocator(cfg.kind),
        "modelled": True, "speed": "an input (--rate), not modelled",
        "create_bytes": create_bytes, "peak_bytes": max(b for _, b in series),
        "steady_bytes": round(sum(steady) / len(steady)), "after_idle_bytes": at_end,
        "after_close_bytes": after_close, **counts,
        "kmallocs": kmallocs, "kmallocs_per_create": round(kmallocs / counts["creates"], 3) if counts["creates"] else None,
        "series": series, "breakdown_series": parts, "wall_s": round(wall, 3), "count_mode": counted or counted_ma,
        "realtime_factor": round((cfg.duration_s + cfg.idle_s) / wall, 2) if wall else None,
    }


def run_create_model(kind: str, batch_size: int, producers: int, release: str = "v6.18", rounds: int = 200,
                     value_size: int = 64) -> dict[str, Any]:
    """The selftests' ``local-storage-create`` on the model: each producer creates ``batch_size`` owners (their
    storage made by a program, ``F_CREATE``), then ends them all, ``rounds`` times.  Returns the kmallocs
    the storage itself costs per create (the owner's own allocations are not modelled: a caller adds them,
    measured)."""
    if kind not in ("task", "socket", "cgroup", "inode"):
        raise ValueError(f"--storage-type must be one of task, socket, cgroup, inode, got {kind!r}")
    if batch_size < 1 or producers < 1 or rounds < 1:
        raise ValueError("--batch-size, --producers and rounds must be >= 1")
    lsp = profile_for_release(release)
    prof = load_profile(None)
    m = Machine(producers, RandomScheduler(0))
    m.identity = False
    mm = Mm(m)
    rcu = Rcu(m, prof.rcu, prof.tasks_trace)
    cg = mm.root_memcg.child("lstorage")
    smap = BpfLocalStorageMap(m, mm, rcu, kind, value_size, cg, lsp)
    k0 = mm.slab.kmalloc_calls
    creates = failed = 0
    seq = 0
    for _ in range(rounds):
        for c in range(producers):
            cpu = m.cpus[c]
            batch = []
            for _ in range(batch_size):
                seq += 1
                o = Owner(kind, str(seq))
                if smap.update(cpu, o, 1) == 0:
                    creates += 1
                else:
                    failed += 1
                batch.append(o)
            for o in batch:
                bpf_local_storage_destroy(cpu, o)
        m.engine.run(until=m.engine.now + MS)        # a batch takes about a millisecond on the kernel
    kmallocs = mm.slab.kmalloc_calls - k0
    return {"kind": kind, "batch_size": batch_size, "producers": producers, "profile": lsp.name,
            "allocator": lsp.allocator(kind), "creates": creates, "failed": failed, "storage_kmallocs": kmallocs,
            "storage_kmallocs_per_create": round(kmallocs / creates, 3) if creates else None, "modelled": True}
