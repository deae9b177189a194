"""Hash maps: element charge, fdinfo memlock, create charge, update/delete semantics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfmem.alloc import V6_2, V6_6
from bpfmem.maps import (BPF_ANY, BPF_EXIST, BPF_F_NO_PREALLOC, BPF_NOEXIST, E2BIG, EEXIST, EINVAL, ENOENT, ENOMEM,
                         BpfError, BpfHtab, MapAttr)
from bpfmem.sim import Instruments

from ..conftest import World, make_world

HASH, PERCPU_HASH = 1, 5


def htab(w: World, value: int = 8, entries: int = 100_000, flags: int = BPF_F_NO_PREALLOC, **kw: object) -> BpfHtab:
    return BpfHtab(w.m, w.mm, w.rcu, MapAttr(HASH, 4, value, entries, flags), w.memcg, **kw)  # type: ignore[arg-type]


# docs/measurements.md §3: value size -> measured kmem per element (predicted = kmalloc class + 8)
CHARGE = {8: 104, 16: 104, 64: 136, 96: 200, 200: 520, 512: 1032, 1024: 2056, 2000: 4104, 4000: 4104,
          4040: 8200, 8000: 8200}


@pytest.mark.parametrize("value,charge", sorted(CHARGE.items()))
def test_per_element_charge_matches_the_kernel(value: int, charge: int) -> None:
    """Slope over 4000 elements inserted after a warm-up is exactly class + 8 per element."""
    w = make_world(2)
    h = htab(w, value)
    cpu = w.m.cpus[0]
    for k in range(1000):
        assert h.update(cpu, k) == 0
    u0 = w.memcg.usage
    c = h.elems.ma.cache[0]  # type: ignore[attr-defined]
    f0 = c.free_cnt
    for k in range(1000, 5000):
        assert h.update(cpu, k) == 0
    spare = (c.free_cnt - f0) * charge
    assert (w.memcg.usage - u0 - spare) / 4000 == charge


@pytest.mark.parametrize("sizeof_htab,entries,no_prealloc,fill,memlock", [
    (832, 1000, True, 0, 17280), (832, 1000, True, 1000, 89280), (832, 1000, False, 0, 81424),
    (832, 1000, False, 1000, 81424),
    (896, 1000, True, 0, 17344), (896, 1000, False, 0, 81488),
])
def test_fdinfo_memlock_formula(sizeof_htab: int, entries: int, no_prealloc: bool, fill: int, memlock: int) -> None:
    """fdinfo memlock with 2 possible CPUs, as measured: bpftool on the first 6.18 build (struct bpf_htab 832 B):
    17280 B, 89280 B after 1000 elements, 81424 B prealloc; the current build (896 B): 17344 B, 81488 B."""
    w = make_world(2)
    flags = BPF_F_NO_PREALLOC if no_prealloc else 0
    h = BpfHtab(w.m, w.mm, w.rcu, MapAttr(1, 4, 8, entries, flags), w.memcg, sizeof_bpf_htab=sizeof_htab)
    for k in range(fill):
        assert h.update(w.m.cpus[0], k) == 0
    assert h.mem_usage() == memlock


@pytest.mark.parametrize("entries,kib", [(1000, 84), (10_000, 888), (100_000, 8304)])
def test_prealloc_create_charge(entries: int, kib: int) -> None:
    """Preallocated 8-byte maps: kmem at create 84 / 888 / 8304 KiB (page-granular, ±4 KiB)."""
    w = make_world(2)
    htab(w, 8, entries, 0)
    assert abs(w.memcg.usage / 1024 - kib) <= 4


@pytest.mark.parametrize("entries,kib", [(1000, 20), (100_000, 2052)])
def test_no_prealloc_create_charge_is_buckets_plus_prefill(entries: int, kib: int) -> None:
    w = make_world(2)
    htab(w, 8, entries)
    assert abs(w.memcg.usage / 1024 - kib) <= 4


def test_breakdown_sums_to_the_memcg_charge_in_every_mode() -> None:
    for flags, kw in ((BPF_F_NO_PREALLOC, {}), (0, {}), (BPF_F_NO_PREALLOC, {"elems": "kmalloc_rcu"}),
                      (BPF_F_NO_PREALLOC, {"free_rcu": True})):
        w = make_world(2)
        h = htab(w, 24, 5000, flags, **kw)
        for k in range(3000):
            h.update(w.m.cpus[k % 2], k)
        for k in range(0, 3000, 3):
            h.delete(w.m.cpus[(k + 1) % 2], k)
        w.run_ms(30)
        assert sum(h.breakdown().values()) == w.memcg.usage, (flags, kw)


def test_percpu_hash_breakdown_and_memlock() -> None:
    w = make_world(2)
    h = BpfHtab(w.m, w.mm, w.rcu, MapAttr(PERCPU_HASH, 4, 16, 1000, BPF_F_NO_PREALLOC), w.memcg)
    for k in range(100):
        assert h.update(w.m.cpus[0], k) == 0
    assert h.elem_size == 48 + 8 + 8
    assert sum(h.breakdown().values()) == w.memcg.usage
    assert h.mem_usage() == 896 + 16 * 1024 + 64 + (64 + 8) * 100 + 16 * 100 + 16 * 2 * 100


def test_update_flags_and_errors() -> None:
    w = make_world(1)
    cpu = w.m.cpus[0]
    h = htab(w, 8, 2)
    assert h.update(cpu, 1, BPF_EXIST) == -ENOENT
    assert h.update(cpu, 1, BPF_NOEXIST) == 0
    assert h.update(cpu, 1, BPF_NOEXIST) == -EEXIST
    assert h.update(cpu, 1, BPF_EXIST) == 0
    assert h.update(cpu, 2) == 0
    assert h.update(cpu, 3) == -E2BIG          # is_map_full: a new key is refused
    assert h.update(cpu, 2, BPF_ANY) == 0      # replacing an existing key may allocate even when full
    assert h.update(cpu, 2, 8) == -EINVAL
    assert h.delete(cpu, 9) == -ENOENT
    assert h.delete(cpu, 1) == 0 and h.count == 1
    assert h.lookup(cpu, 2) is not None and h.lookup(cpu, 1) is None


def test_enomem_when_the_memcg_limit_stops_the_refill() -> None:
    """docs/measurements.md §4 'out' mode: updates fail with ENOMEM at the limit, deleted elements are reusable."""
    w = make_world(1)
    w.memcg.limit = 400_000           # buckets 256 KiB + room for about 65 elements of 2056 B
    h = htab(w, 1024, 10_000)
    cpu = w.m.cpus[0]
    results = [h.update(cpu, k) for k in range(200)]
    ok = results.count(0)
    assert -ENOMEM in results and 40 < ok < 100
    assert w.memcg.failcnt > 0
    for k in range(10):
        h.delete(cpu, k)
    assert all(h.update(cpu, 1000 + k) == 0 for k in range(10))


def test_create_errors() -> None:
    w = make_world(1)
    with pytest.raises(BpfError) as e:
        BpfHtab(w.m, w.mm, w.rcu, MapAttr(HASH, 4, 8, 0, BPF_F_NO_PREALLOC), w.memcg)
    assert e.value.errno == EINVAL
    with pytest.raises(BpfError) as e:
        BpfHtab(w.m, w.mm, w.rcu, MapAttr(HASH, 4, 8, (1 << 31) + 1, BPF_F_NO_PREALLOC), w.memcg)
    assert e.value.errno == E2BIG
    w.memcg.limit = 10_000
    with pytest.raises(BpfError) as e:
        htab(w, 8, 1 << 20)                     # 16 MiB of buckets under a small limit
    assert e.value.errno == ENOMEM and w.memcg.usage == 0


def test_prealloc_update_reuses_the_per_cpu_spare_without_the_freelist() -> None:
    w = make_world(2)
    h = htab(w, 8, 10, 0)
    cpu = w.m.cpus[0]
    assert h.update(cpu, 1) == 0
    first = h.lookup(cpu, 1)
    spare = h.elems.extra_elems[0]  # type: ignore[attr-defined]
    free_before = len(h.elems.freelist)  # type: ignore[attr-defined]
    assert h.update(cpu, 1) == 0
    assert h.lookup(cpu, 1) is spare and h.elems.extra_elems[0] is first  # type: ignore[attr-defined]
    assert len(h.elems.freelist) == free_before  # type: ignore[attr-defined]
    for k in range(2, 11):
        assert h.update(cpu, k) == 0
    assert h.update(cpu, 11) == -E2BIG


def test_kmalloc_rcu_frees_after_an_rcu_grace_period() -> None:
    w = make_world(1)
    h = htab(w, 8, 100, elems="kmalloc_rcu")
    cpu = w.m.cpus[0]
    h.update(cpu, 1)
    assert w.memcg.usage - h.breakdown()["htab"] - h.breakdown()["buckets"] == 72   # elem 64 -> kmalloc-64 + 8
    h.delete(cpu, 1)
    assert h.breakdown()["call_rcu"] == 64
    w.run_ms(25)
    assert h.breakdown()["call_rcu"] == 0 and w.memcg.usage == h.breakdown()["htab"] + h.breakdown()["buckets"]


def test_close_frees_everything() -> None:
    for flags in (BPF_F_NO_PREALLOC, 0):
        w = make_world(2)
        h = htab(w, 64, 1000, flags)
        for k in range(500):
            h.update(w.m.cpus[k % 2], k)
        h.close()
        w.run_ms(1000)
        assert w.memcg.usage == 0


ops = st.lists(st.tuples(st.sampled_from(["u", "d"]), st.integers(0, 40), st.integers(0, 1),
                         st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST])), max_size=300)


@settings(max_examples=60, deadline=None)
@given(ops, st.sampled_from([V6_6, V6_2]))
def test_batch_fast_path_equals_the_reference_path(seq: list[tuple[str, int, int, int]], prof: type) -> None:
    """update_batch/delete_batch inline the allocator calls; with an instrument installed they take the
    per-element reference path.  Both must leave identical maps, caches and charges."""
    states = []
    for slow in (False, True):
        w = make_world(2)
        if slow:
            w.m.instruments.add(type("Noop", (), {"kfree": lambda self, o: None})())
        h = htab(w, 8, 30, profile=prof())
        errors: dict[int, int] = {}
        for kind, key, cpu, flags in seq:
            if kind == "u":
                h.update_batch(w.m.cpus[cpu], (key, key + 1), flags, errors)
            else:
                h.delete_batch(w.m.cpus[cpu], (key,), errors)
        ma = h.elems.ma  # type: ignore[attr-defined]
        states.append((sorted((k, v.id) for k, v in h.table.items()), h.count, w.memcg.usage, errors,
                       [(c.free_cnt, [o.id for o in c.free_llist], [o.id for o in c.free_by_rcu_ttrace],
                         [o.id for o in c.waiting_for_gp_ttrace], c.tgt.cpu.id) for c in ma.cache]))
    assert states[0] == states[1]


def test_instruments_are_off_until_installed() -> None:
    ins = Instruments()
    assert not ins.active
    with pytest.raises(TypeError):
        ins.add(object())
