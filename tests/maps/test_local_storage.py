"""Local storage on the model: which allocator each release uses, the delete and destroy paths, who pays."""

from __future__ import annotations

import pytest

from bpfmem.maps.base import BPF_NOEXIST, E2BIG, EINVAL, ENOMEM, BpfError
from bpfmem.maps.local_storage import (KINDS, OPTMEM_MAX, OPTMEM_MAX_BEFORE_6_8, PROFILES, BpfLocalStorageMap, Owner,
                                       bpf_local_storage_destroy, profile_for_release)
from bpfmem.mm import GFP_KERNEL, Mm, kmalloc_charge
from bpfmem.rcu import GpModel, Rcu
from bpfmem.sim import Machine, RandomScheduler

MS = 1_000_000
RCU = GpModel(gp_min_ns=10 * MS, gp_max_ns=10 * MS)
TT = GpModel(gp_min_ns=30 * MS, gp_max_ns=30 * MS)


class World:
    def __init__(self, ncpus: int = 2, limit: int | None = None, identity: bool = True) -> None:
        self.m = Machine(ncpus, RandomScheduler(0))
        self.m.identity = identity
        self.mm = Mm(self.m)
        self.rcu = Rcu(self.m, rcu_model=RCU, tasks_trace_model=TT)
        self.cg = self.mm.root_memcg.child("map") if limit is None else self.mm.root_memcg.child("map", limit)
        self.cpu = self.m.cpus[0]

    def smap(self, kind: str, release: str, value: int = 64) -> BpfLocalStorageMap:
        return BpfLocalStorageMap(self.m, self.mm, self.rcu, kind, value, self.cg, profile_for_release(release))

    def wait(self, ms: int) -> None:
        self.m.engine.run(until=self.m.engine.now + ms * MS)


@pytest.mark.parametrize("release,task,sk", [
    ("v6.1", "kzalloc", "kzalloc"), ("v6.3", "kzalloc", "kzalloc"), ("v6.4", "bpf_ma", "kzalloc"),
    ("v6.18", "bpf_ma", "kzalloc"), ("v6.19", "kmalloc_nolock", "kzalloc"), ("v7.0", "kmalloc_nolock", "kzalloc"),
])
def test_each_release_allocates_from_what_it_did(release: str, task: str, sk: str) -> None:
    p = profile_for_release(release)
    assert (p.allocator("task"), p.allocator("cgroup"), p.allocator("socket"), p.allocator("inode")) == \
        (task, task, sk, sk)


def test_sizes_by_release() -> None:
    assert [profile_for_release(r).storage_size for r in ("v6.1", "v6.4", "v6.18", "v6.19", "v7.0")] == \
        [168, 176, 176, 176, 184]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("release", ["v6.2", "v6.18", "v6.19"])
@pytest.mark.parametrize("value", [8, 64, 512, 2000])
def test_an_owner_pays_one_element_and_one_storage(kind: str, release: str, value: int) -> None:
    """Live charge per owner: the element (72 + value, +8 bpf_mem_alloc header on bpf_ma) and the owner's
    struct bpf_local_storage; bpf_ma caches add at most a high watermark of spares per cache."""
    w = World()
    s = w.smap(kind, release, value)
    hdr = 8 if s.alloc == "bpf_ma" else 0
    per = kmalloc_charge(72 + value + hdr) + kmalloc_charge(s.profile.storage_size + hdr)
    before = w.cg.usage
    n = 500
    for i in range(n):
        assert s.update(w.cpu, Owner(kind, str(i))) == 0
    spare = w.cg.usage - before - n * per
    if s.alloc == "bpf_ma":
        assert 0 <= spare <= 2 * 96 * max(kmalloc_charge(72 + value + 8), kmalloc_charge(s.profile.storage_size + 8))
    else:
        assert spare == 0


def test_delete_waits_for_a_tasks_trace_gp_and_destroy_reuses_at_once_on_bpf_ma() -> None:
    w = World()
    s = w.smap("task", "v6.18")
    owners = [Owner("task", str(i)) for i in range(200)]
    for o in owners:
        s.update(w.cpu, o)
    live = w.cg.usage
    for o in owners[:100]:
        assert s.delete(w.cpu, o) == 0
    assert w.cg.usage == live and s.pending_rcu == 200          # 100 selems + 100 storages wait
    w.wait(5)
    assert w.cg.usage == live                                   # an RCU GP is not enough
    w.wait(200)
    assert s.pending_rcu == 0 and w.cg.usage < live             # raw-freed to slab, no reuse
    kmallocs = w.mm.slab.kmalloc_calls
    for o in owners[100:]:
        bpf_local_storage_destroy(w.cpu, o)                     # reuse_now: into the caches at once
    assert s.pending_rcu == 0
    for i in range(40):
        assert s.update(w.cpu, Owner("task", f"new{i}")) == 0
    assert w.mm.slab.kmalloc_calls == kmallocs                  # the destroyed owners' objects were reused


@pytest.mark.parametrize("release,trace_then_rcu", [("v6.1", True), ("v6.2", False)])
def test_kzalloc_delete_before_and_after_d39d1445d377(release: str, trace_then_rcu: bool) -> None:
    """6.1 chains kfree_rcu after the tasks-trace GP; 6.2 frees right after it."""
    w = World()
    s = w.smap("socket", release)
    o = Owner("socket", "s")
    s.update(w.cpu, o)
    live = w.cg.usage
    s.delete(w.cpu, o)
    w.wait(31)                      # the tasks-trace GP (30 ms) is over
    assert (w.cg.usage == live) is trace_then_rcu
    w.wait(20)
    assert w.cg.usage < live


def test_kzalloc_destroy_waits_for_an_rcu_gp_only() -> None:
    w = World()
    s = w.smap("inode", "v6.18")
    o = Owner("inode", "i")
    s.update(w.cpu, o)
    live = w.cg.usage
    bpf_local_storage_destroy(w.cpu, o)
    assert w.cg.usage == live
    w.wait(11)
    assert w.cg.usage < live


@pytest.mark.parametrize("release,optmem", [("v6.7", OPTMEM_MAX_BEFORE_6_8), ("v6.8", OPTMEM_MAX)])
def test_a_socket_holds_storage_up_to_optmem_max(release: str, optmem: int) -> None:
    """bpf_sk_storage_charge: elem_size per element and the storage, while sk_omem_alloc + size < optmem_max."""
    w = World()
    o = Owner("socket", "s")
    maps = []
    while True:
        s = w.smap("socket", release, 1000)
        maps.append(s)
        err = s.update(w.cpu, o)
        if err:
            assert err == -ENOMEM
            break
    fitted = len(maps) - 1
    assert 176 + fitted * 1072 < optmem <= 176 + (fitted + 1) * 1072
    assert o.omem == 176 + fitted * 1072


@pytest.mark.parametrize("identity", [True, False])
def test_at_a_memcg_limit_kzalloc_is_forced_past_it_and_bpf_ma_fails(identity: bool) -> None:
    """Syscall updates pass GFP_ATOMIC: a kzalloc'd element is charged past memory.max (__GFP_HIGH); a
    bpf_mem_alloc element fails with ENOMEM once the GFP_NOWAIT refill is refused (objects with identities
    or counted: the same)."""
    w = World(limit=64 * 1024, identity=identity)
    sk = w.smap("socket", "v6.18")
    for i in range(400):
        assert sk.update(w.cpu, Owner("socket", str(i))) == 0
    assert w.cg.usage > w.cg.limit and w.cg.failcnt > 0
    w2 = World(limit=64 * 1024, identity=identity)
    t = w2.smap("task", "v6.18")
    results = [t.update(w2.cpu, Owner("task", str(i))) for i in range(400)]
    assert -ENOMEM in results and w2.cg.usage <= w2.cg.limit
    first = results.index(-ENOMEM)
    assert all(r == 0 for r in results[:first])


def test_a_sleepable_program_allocates_past_an_empty_cache() -> None:
    """bpf_mem_cache_alloc_flags(GFP_KERNEL): an empty free list does not fail a sleepable program's create."""
    w = World()
    s = w.smap("task", "v6.18")
    for c in s.selem_ma.all_caches():  # type: ignore[union-attr]
        c.free_llist.clear() if not s.selem_ma.anon else None  # type: ignore[union-attr]
    assert s.update(w.cpu, Owner("task", "t"), BPF_NOEXIST, GFP_KERNEL) == 0
    assert s.update(w.cpu, Owner("task", "u"), 0, GFP_KERNEL) == -EINVAL   # F_CREATE only


@pytest.mark.parametrize("kw,errno", [
    ({"flags": 0}, EINVAL), ({"max_entries": 16}, EINVAL), ({"btf": False}, EINVAL), ({"key_size": 8}, EINVAL),
])
def test_creation_refuses_what_the_kernel_refuses(kw: dict, errno: int) -> None:
    w = World()
    with pytest.raises(BpfError) as ei:
        BpfLocalStorageMap(w.m, w.mm, w.rcu, "task", 64, w.cg, PROFILES["v6.8"], **kw)
    assert ei.value.errno == errno


def test_value_size_limit_and_bad_input() -> None:
    w = World()
    with pytest.raises(BpfError) as ei:
        BpfLocalStorageMap(w.m, w.mm, w.rcu, "task", 65408, w.cg, PROFILES["v6.8"])
    assert ei.value.errno == E2BIG
    with pytest.raises(ValueError, match="storage kind must be one of"):
        BpfLocalStorageMap(w.m, w.mm, w.rcu, "thread", 8, w.cg, PROFILES["v6.8"])
    with pytest.raises(ValueError, match="allowed: v6.1..v6.19, v7.0"):
        profile_for_release("v5.10")


def test_map_free_returns_everything() -> None:
    w = World()
    base = w.cg.usage
    s = w.smap("task", "v6.18")
    owners = [Owner("task", str(i)) for i in range(300)]
    for o in owners:
        s.update(w.cpu, o)
    s.map_free(w.cpu)
    w.wait(500)
    assert w.cg.usage == base and all(o.storage is None for o in owners)
