"""LRU hash maps in the model: preallocated, never full, eviction by the bpf_lru lists (6.18)."""

from __future__ import annotations

from bpfmem.maps import BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH, BpfHtab, MapAttr
from bpfmem.maps.base import BPF_EXIST, BPF_F_NO_COMMON_LRU, BPF_NOEXIST, EEXIST, ENOENT
from bpfmem.maps.bpf_lru import LOCAL_FREE_TARGET
from bpfmem.mm import Mm
from bpfmem.rcu import RCU_DEFAULT, TASKS_TRACE_DEFAULT, Rcu
from bpfmem.sim import Machine


def lru_map(n: int, ncpus: int = 2, percpu: bool = False, flags: int = 0, **kw: object) -> BpfHtab:
    m = Machine(ncpus)
    mm = Mm(m)
    mtype = BPF_MAP_TYPE_LRU_PERCPU_HASH if percpu else BPF_MAP_TYPE_LRU_HASH
    return BpfHtab(m, mm, Rcu(m, RCU_DEFAULT, TASKS_TRACE_DEFAULT), MapAttr(mtype, 4, 8, n, flags),
                   mm.root_memcg.child("t"), **kw)  # type: ignore[arg-type]


def test_a_full_lru_map_evicts_instead_of_failing_and_its_charge_never_moves() -> None:
    h = lru_map(64)
    cpu = h.m.cpus[0]
    charge = h.memcg.usage
    for k in range(1000):
        assert h.update(cpu, k) == 0
    assert len(h.table) <= 64 and h.count == len(h.table)
    assert h.elems.evicted == 1000 - len(h.table)   # type: ignore[union-attr]
    assert 999 in h.table                             # the newest key survives
    assert h.memcg.usage == charge


def test_unreferenced_keys_go_before_looked_up_ones() -> None:
    # test_lru_sanity1's idea: keys a program looked up have their ref bit set and survive the next shrink
    h = lru_map(2 * 2 * 4 + 2)             # target_free = 4 on 2 CPUs; room for 2 more
    cpu = h.m.cpus[0]
    for k in range(16):
        assert h.update(cpu, k, BPF_NOEXIST) == 0
    for k in range(2):
        assert h.lookup(cpu, k) is not None
    for k in range(100, 116):
        assert h.update(cpu, k, BPF_NOEXIST) == 0
    assert {0, 1} <= set(h.table)
    assert not set(range(2, 8)) & set(h.table)


def test_a_syscall_lookup_does_not_protect_a_key() -> None:
    h = lru_map(18)
    cpu = h.m.cpus[0]
    for k in range(16):
        h.update(cpu, k, BPF_NOEXIST)
    h.lookup(cpu, 0, sys=True)
    for k in range(100, 116):
        h.update(cpu, k, BPF_NOEXIST)
    assert 0 not in h.table


def test_target_free_is_scaled_from_6_16_and_fixed_before() -> None:
    assert lru_map(1000, ncpus=2).elems.lru.target_free == 128        # type: ignore[union-attr]
    assert lru_map(100, ncpus=2).elems.lru.target_free == 25          # type: ignore[union-attr]
    assert lru_map(100, ncpus=8).elems.lru.target_free == 6           # type: ignore[union-attr]
    old = lru_map(100, ncpus=2, lru_scaled_target=False)
    assert old.elems.lru.target_free == LOCAL_FREE_TARGET             # type: ignore[union-attr]


def test_an_update_can_evict_the_key_it_updates() -> None:
    # the pop happens before the bucket lock: when the map is full, BPF_EXIST can lose its own key
    h = lru_map(4, ncpus=1)
    cpu = h.m.cpus[0]
    for k in range(4):
        assert h.update(cpu, k, BPF_NOEXIST) == 0
    rcs = [h.update(cpu, k, BPF_EXIST) for k in range(4)]
    assert -ENOENT in rcs, rcs
    assert h.update(cpu, 100, BPF_NOEXIST) == 0 and h.update(cpu, 100, BPF_NOEXIST) == -EEXIST


def test_a_failed_update_still_evicts() -> None:
    h = lru_map(4, ncpus=1)
    cpu = h.m.cpus[0]
    for k in range(4):
        h.update(cpu, k, BPF_NOEXIST)
    # target_free = 2: the refill flushes 0..3 to the inactive list (0 at its tail) and shrinks two
    assert h.update(cpu, 3, BPF_NOEXIST) == -EEXIST
    assert set(h.table) == {2, 3}


def test_percpu_lru_updates_an_existing_key_in_place_and_rounds_max_entries() -> None:
    h = lru_map(10, ncpus=4, percpu=True, flags=BPF_F_NO_COMMON_LRU)
    assert h.max_entries == 12                       # rounded up to a multiple of the CPUs
    cpu = h.m.cpus[1]
    assert h.update(cpu, 7) == 0
    elem = h.table[7]
    assert h.update(cpu, 7, BPF_EXIST) == 0 and h.table[7] is elem     # in place, nothing popped
    assert h.update(cpu, 7) == 0 and h.table[7] is elem                 # BPF_ANY: popped, then pushed back


def test_per_cpu_lru_lists_evict_only_their_own_cpu_keys() -> None:
    h = lru_map(8, ncpus=2, flags=BPF_F_NO_COMMON_LRU)    # 4 nodes per CPU
    c0, c1 = h.m.cpus
    for k in range(4):
        h.update(c1, 1000 + k, BPF_NOEXIST)
    for k in range(50):
        h.update(c0, k, BPF_NOEXIST)
    assert {1000, 1001, 1002, 1003} <= set(h.table)


def test_lru_memory_is_preallocated_and_uncharged_parts_are_listed() -> None:
    h = lru_map(1000, ncpus=2)
    bd = h.breakdown()
    assert sum(bd.values()) == h.memcg.usage
    assert bd["lru_lists"] == 1000 * h.elem_size
    un = h.uncharged()
    assert un["lru_lists"] > 0 and "extra_elems" not in un
