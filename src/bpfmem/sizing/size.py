"""Sizing a hash map before deploying it: what memcg will charge, what fdinfo will claim, what limit is safe.

Problem: ``memlock`` in fdinfo is not what the memory cgroup charges (non-preallocated maps: 1.4-2x
less), the allocator keeps spare elements per CPU and parks freed ones for a grace period, and a memcg
limit fails updates with ENOMEM (or OOM-kills a process whose own cgroup holds the map).  ``size_model``
answers from the model, with the release's profile: the charge when full, fdinfo ``memlock``, the
spares, a bound on parked bytes at a delete rate, the smallest limit that never refuses an update, and,
for a given limit, how many elements fit.  ``size_kernel`` creates the same map in a limited child
cgroup of the running kernel and counts.

Models: ``htab_map_update_elem`` until ``-ENOMEM`` under ``try_charge_memcg`` (GFP_NOWAIT refills fail
at the limit, no reclaim), kernel/bpf/hashtab.c and memalloc.c of the release.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..backend.model import ModelBackend
from ..backend.protocol import LRU_MAP_TYPES, MAP_TYPES, MapSpec
from ..maps.base import ENOMEM
from ..maps.policies import get_policy
from ..mm import kmalloc_charge

MIN_READD = 1000        # elements deleted and re-added at the limit


@dataclass(frozen=True)
class SizeQuery:
    map_type: str
    key_size: int
    value_size: int
    max_entries: int
    cpus: int
    release: str
    no_prealloc: bool = True
    delete_rate: float = 0.0           # cross-CPU deletes per second (frees that wait for a grace period)
    memcg_limit: int | None = None     # bytes, for a cgroup holding only the map

    def __post_init__(self) -> None:
        if self.map_type not in MAP_TYPES:
            raise ValueError(f"--map-type must be one of {', '.join(MAP_TYPES)}, got {self.map_type!r}")
        for name in ("key_size", "value_size", "max_entries", "cpus"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.delete_rate < 0:
            raise ValueError(f"--delete-rate must be >= 0, got {self.delete_rate}")
        get_policy(self.release)        # ValueError naming the allowed releases

    def spec(self) -> MapSpec:
        return MapSpec(self.map_type, self.key_size, self.value_size, self.max_entries,
                       self.no_prealloc and self.map_type not in LRU_MAP_TYPES)


def _backend(q: SizeQuery, limit: int | None = None) -> ModelBackend:
    from ..backend.profile import load_profile
    prof = load_profile(None)
    be = ModelBackend(q.cpus, q.release, rcu_model=prof.rcu, tasks_trace_model=prof.tasks_trace, breakdown=False,
                      memo=False)
    if limit is not None:
        be.memcg.limit = limit
    return be


def _fill(be: ModelBackend, q: SizeQuery, until: int) -> tuple[Any, int, int]:
    """Create the map and add keys 0.. from CPU 0 (as one process's syscalls) until an update fails or
    ``until`` are in: (map, elements added, errno of the refusal or 0)."""
    m = be.map_create(q.spec())
    cpu = be.machine.cpus[0]
    htab = m.htab
    n = 0
    err = 0
    while n < until:
        r = htab.update(cpu, n)
        if r:
            err = -r
            break
        n += 1
    return m, n, err


def size_model(q: SizeQuery) -> dict[str, Any]:
    """The model's answers for ``q`` (every number modelled)."""
    be = _backend(q)
    base = be.memcg.usage
    m = be.map_create(q.spec())
    create = be.memcg.usage - base
    htab = m.htab
    cpu = be.machine.cpus[0]
    for k in range(q.max_entries):
        r = htab.update(cpu, k)
        if r:
            raise RuntimeError(f"filling the model map failed at element {k}: errno {-r}")
    full = be.memcg.usage - base
    per_elem = (full - create) / q.max_entries
    policy = get_policy(q.release)
    # spares: every CPU's free list may hold up to its high watermark once deletes have run there
    if htab.prealloc or htab.lru:
        unit_charge, high = 0, 0
    else:
        c = htab.elems.ma.all_caches()[0]
        unit_charge, high = kmalloc_charge(c.unit_size), c.high_watermark
    spares = q.cpus * high * unit_charge
    tt = be.rcu.tasks_trace.model
    rcu = be.rcu.rcu.model
    wait_ns = tt.lazy_delay_ns + tt.gp_max_ns + rcu.gp_max_ns
    parked = int(q.delete_rate * wait_ns / 1e9 * unit_charge) if unit_charge else 0
    out: dict[str, Any] = {
        "query": asdict(q), "policy": policy.name, "kernel": policy.kernel, "modelled": True,
        "create_bytes": create, "full_bytes": full, "per_element_bytes": round(per_elem, 2),
        "memlock_bytes": htab.mem_usage(), "spare_bytes_max": spares,
        "parked_bytes_max": parked, "parked_wait_ms": wait_ns / 1e6,
        "min_limit_bytes": full + spares + parked,
    }
    if q.memcg_limit is not None:
        out["at_limit"] = fit_model(q)
    return out


def fit_model(q: SizeQuery) -> dict[str, Any]:
    """How many elements a cgroup limited to ``q.memcg_limit`` (map creation included) takes before the
    first ENOMEM, and whether deleted elements can be re-added at once."""
    assert q.memcg_limit is not None
    be = _backend(q, q.memcg_limit)
    m, n, err = _fill(be, q, q.max_entries)
    out: dict[str, Any] = {"limit_bytes": q.memcg_limit, "elements": n,
                           "stopped_by": "ENOMEM" if err == ENOMEM else "full" if n == q.max_entries else
                           f"errno {err}", "usage_bytes": be.memcg.usage, "failcnt": be.memcg.failcnt}
    if err == ENOMEM and n:
        k = min(MIN_READD, n)
        htab, cpu = m.htab, be.machine.cpus[0]
        for key in range(n - k, n):
            htab.delete(cpu, key)
        out["readded"] = sum(1 for key in range(n - k, n) if htab.update(cpu, key) == 0)
        out["deleted"] = k
    return out


def check_limit(q: SizeQuery) -> str | None:
    """Why ``q.memcg_limit`` cannot be asked (None: it can): a limit below the map's creation charge."""
    if q.memcg_limit is None:
        return None
    be = _backend(q)
    base = be.memcg.usage
    be.map_create(q.spec())
    create = be.memcg.usage - base
    if q.memcg_limit < create:
        return (f"--memcg-limit {q.memcg_limit} is below the map's creation charge ({create} bytes on the model): "
                f"BPF_MAP_CREATE itself would fail")
    return None


def size_kernel(q: SizeQuery, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The running kernel: create the map in a child cgroup limited to ``q.memcg_limit`` (this process
    never joins it), add keys from CPU 0 until ENOMEM, delete and re-add; then remove everything."""
    from ..kernel import syscall as S
    from ..kernel import uapi as U
    from ..kernel.backend import KERNEL_MAP_TYPES
    from ..kernel.cgroup import ChildMemcg, create_in, memcg_layout
    assert q.memcg_limit is not None
    say = progress or (lambda _m: None)
    layout = memcg_layout()
    if layout is None:
        raise OSError(95, "no writable memory cgroup: the kernel check needs one")
    mtype = KERNEL_MAP_TYPES[q.map_type]
    flags = U.BPF_F_NO_PREALLOC if q.spec().no_prealloc else 0
    old = os.sched_getaffinity(0)
    cg = ChildMemcg(layout, "size")
    try:
        cg.set_limit(q.memcg_limit)
        say("create")
        fd = create_in(cg, lambda: S.map_create(mtype, q.key_size, q.value_size, q.max_entries, flags,
                                                name="bpfmem_size").release())
        bmap = S.BpfMap(fd, mtype, q.key_size, q.value_size, q.max_entries, flags)
        try:
            os.sched_setaffinity(0, {0})
            value = bytes(q.value_size)
            n, stopped = 0, "full"
            say("fill")
            while n < q.max_entries:
                try:
                    S.map_update_elem(bmap, n.to_bytes(q.key_size, "little"), value)
                except OSError as e:
                    stopped = "ENOMEM" if e.errno == ENOMEM else f"errno {e.errno}"
                    break
                n += 1
            out: dict[str, Any] = {"limit_bytes": q.memcg_limit, "elements": n, "stopped_by": stopped,
                                   "usage_bytes": cg.usage(), "failcnt": cg.failcnt()}
            if stopped == "ENOMEM" and n:
                k = min(MIN_READD, n)
                for key in range(n - k, n):
                    S.map_delete_elem(bmap, key.to_bytes(q.key_size, "little"))
                ok = 0
                for key in range(n - k, n):
                    try:
                        S.map_update_elem(bmap, key.to_bytes(q.key_size, "little"), value)
                        ok += 1
                    except OSError:
                        pass
                out["readded"], out["deleted"] = ok, k
            return out
        finally:
            bmap.close()
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end and cg.usage() > 64 * 1024:
                time.sleep(0.002)
    finally:
        os.sched_setaffinity(0, old)
        cg.remove()
