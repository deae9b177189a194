"""bpf_mem_alloc: watermarks, refill/trim, parking, NMI re-entrancy, the tgt hint, versions."""

from __future__ import annotations

import pytest

from bpfmem.alloc import (V6_1, V6_2, V6_6, V6_8, BpfMemAlloc, ModelInvariantError, bpf_mem_alloc, bpf_mem_alloc_destroy,
                          bpf_mem_alloc_init, bpf_mem_cache_alloc, bpf_mem_cache_free, bpf_mem_cache_free_rcu,
                          bpf_mem_free, unit_alloc, unit_free)
from bpfmem.alloc.memalloc import BpfMemCache
from bpfmem.mm import kmalloc_charge
from bpfmem.rcu import GpModel
from bpfmem.sim import Context, Cpu

from ..conftest import MS, World, make_world

TT = GpModel(gp_min_ns=25 * MS, gp_max_ns=25 * MS, lazy_delay_ns=250 * MS, lazy_lim=32, gp_sleep_ns=4 * MS)
RCU = GpModel(gp_min_ns=10 * MS, gp_max_ns=10 * MS)


def fixed_world(ncpus: int = 2) -> World:
    return make_world(ncpus, rcu_model=RCU, tasks_trace_model=TT)


def new_ma(w: World, size: int, profile: object = None, percpu: bool = False) -> BpfMemAlloc:
    ma = BpfMemAlloc(w.m, w.mm, w.rcu, profile or V6_6())  # type: ignore[arg-type]
    assert bpf_mem_alloc_init(ma, size, percpu, w.memcg) == 0
    return ma


@pytest.mark.parametrize("elem,low,high,batch", [
    (8, 32, 96, 48), (248, 32, 96, 48), (504, 16, 48, 24), (1016, 8, 24, 12), (2040, 4, 12, 6),
    (4088, 2, 6, 3), (8184, 1, 3, 1), (292, 27, 81, 39), (1080, 7, 22, 9),
])
def test_watermarks_and_batch_per_unit_size(elem: int, low: int, high: int, batch: int) -> None:
    """init_refill_work (docs/kernel-map.md, watermarks): unit = size + 8."""
    w = make_world(1)
    c = new_ma(w, elem).cache[0]  # type: ignore[index]
    assert (c.unit_size, c.low_watermark, c.high_watermark, c.batch) == (elem + 8, low, high, batch)


def test_percpu_caches_use_1_3_1_since_6_8() -> None:
    w = make_world(1)
    c = new_ma(w, 64, V6_8(), percpu=True).cache[0]  # type: ignore[index]
    assert (c.low_watermark, c.high_watermark, c.batch, c.free_cnt) == (1, 3, 1, 1)
    assert c.percpu_size == 16 and c.unit_size == 64


def test_percpu_caches_before_6_8_use_the_unit_size_watermarks_and_prefill_4() -> None:
    """0e2ba9f96f9b and 5b95e638f134 (6.8) gave per-CPU caches 1/3/1 and a prefill of 1; the pre-6.6
    profiles keep what came before: the unit-size watermarks and 4 objects for units <= 256."""
    w = make_world(1)
    c = new_ma(w, 64, V6_2(), percpu=True).cache[0]  # type: ignore[index]
    assert (c.low_watermark, c.high_watermark, c.batch, c.free_cnt) == (32, 96, 48, 4)


def test_prefill_four_small_objects_per_possible_cpu_one_large() -> None:
    w = make_world(2)
    ma = new_ma(w, 64)
    assert [c.free_cnt for c in ma.cache] == [4, 4]  # type: ignore[union-attr]
    assert w.memcg.usage == 8 * kmalloc_charge(72)
    w2 = make_world(2)
    ma2 = new_ma(w2, 1000)
    assert [c.free_cnt for c in ma2.cache] == [1, 1]  # type: ignore[union-attr]


def test_alloc_below_low_watermark_refills_a_batch_in_irq_work() -> None:
    w = make_world(1)
    ma = new_ma(w, 64)
    cpu = w.m.cpus[0]
    c = ma.cache[0]  # type: ignore[index]
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(4)]
    assert all(objs)
    # the first alloc left 3 < 32: the irq_work ran at local_irq_restore and added 48
    assert c.free_cnt == 4 + 48 - 4 and c.refill_work.runs == 1
    assert all(o.hdr is c for o in objs)  # 6.6: the header holds the owning cache


def test_free_above_high_watermark_trims_to_the_middle() -> None:
    w = make_world(1)
    ma = new_ma(w, 64)
    cpu = w.m.cpus[0]
    c = ma.cache[0]  # type: ignore[index]
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(200)]
    c_before = c.free_cnt
    for o in objs[:97 - c_before]:
        bpf_mem_cache_free(ma, cpu, o)
    assert c.free_cnt == 64 and len(c.waiting_for_gp_ttrace) == 33  # 97 -> 64: 33 to slab via tasks-trace
    assert c.call_rcu_ttrace_in_progress


def test_alloc_fails_when_the_local_list_is_empty_refill_is_asynchronous() -> None:
    w = make_world(1)
    ma = new_ma(w, 64)
    cpu = w.m.cpus[0]
    cpu.local_irq_save()               # a program running with IRQs off: the refill cannot run
    got = [bpf_mem_cache_alloc(ma, cpu) for _ in range(5)]
    assert got[4] is None and all(got[:4])
    cpu.local_irq_restore()
    assert ma.cache[0].free_cnt == 48  # type: ignore[index]


def burst_world(profile: object = None) -> tuple[World, BpfMemAlloc, BpfMemCache, Cpu]:
    """docs/measurements.md §3b: value 1024 (unit 1088): low 7, high 22, batch 9; delete 400 on CPU 0."""
    w = fixed_world(2)
    ma = new_ma(w, 1080, profile)
    cpu = w.m.cpus[0]
    c = ma.cache[0]  # type: ignore[index]
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(450)]
    assert all(objs)
    w.run_ms(2000)
    for o in objs[:400]:
        bpf_mem_cache_free(ma, cpu, o)
    for o in objs[400:]:
        ma.outstanding -= 1  # keep 50 alive without freeing them (they stay live)
    return w, ma, c, cpu


def test_a_burst_of_frees_parks_all_but_one_trimmed_batch() -> None:
    """One batch is freed after lazy delay + GP; the rest stays charged (docs/measurements.md §1 item 4, §3b)."""
    w, ma, c, cpu = burst_world()
    charge = kmalloc_charge(1088)
    after_burst = w.memcg.usage
    first_batch = len(c.waiting_for_gp_ttrace)
    assert first_batch == 9          # 23 > high 22 -> trim down to (22 + 7) / 2 = 14
    parked = len(c.free_by_rcu_ttrace)
    assert parked > 300
    w.run_ms(274)
    assert w.memcg.usage == after_burst
    w.run_ms(2)                       # 250 ms lazy + 25 ms GP
    assert w.memcg.usage == after_burst - first_batch * charge
    w.run_ms(1200)                    # nothing else is freed however long we wait
    assert w.memcg.usage == after_burst - first_batch * charge
    assert len(c.free_by_rcu_ttrace) == parked
    # the poke: a later free burst on that CPU submits the whole pile
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(50)]
    for o in objs:
        bpf_mem_cache_free(ma, cpu, o)
    # its first trim hands the whole pile to the tasks-trace GP; its later trims park again
    assert len(c.waiting_for_gp_ttrace) >= parked - 50
    before_drop = w.memcg.usage
    w.run_ms(276)
    assert w.memcg.usage < before_drop - (parked - 50) * charge


def test_destroy_frees_everything_at_once_even_with_callbacks_in_flight() -> None:
    w, ma, c, cpu = burst_world()
    ma.outstanding = 0
    assert c.call_rcu_ttrace_in_progress
    bpf_mem_alloc_destroy(ma)
    # every list is freed now; only the 50 objects still held outside the allocator stay charged
    assert w.memcg.usage == 50 * kmalloc_charge(1088)
    assert all(not lst for lst in c.lists().values())
    w.run_ms(1000)                    # the deferred barriers run and the late callback frees nothing twice
    assert ma.cache is None


def test_destroy_reports_leaked_objects() -> None:
    w = make_world(1)
    ma = new_ma(w, 64)
    bpf_mem_cache_alloc(ma, w.m.cpus[0])
    with pytest.raises(ModelInvariantError, match="leak"):
        bpf_mem_alloc_destroy(ma)


def test_nmi_inside_unit_alloc_fails_its_alloc_and_its_free_goes_to_extra() -> None:
    """The `active` guard: a nested section on the same cache never spins (docs/kernel-map.md, unit_alloc)."""
    w = make_world(1)
    ma = new_ma(w, 64)
    cpu = w.m.cpus[0]
    c = ma.cache[0]  # type: ignore[index]
    spare = bpf_mem_cache_alloc(ma, cpu)
    seen: dict[str, object] = {}

    def nmi(cpu_: Cpu, label: str) -> None:
        if label != "unit_alloc:active" or seen:
            return
        cpu_.point_hook = None
        cpu_.enter(Context.NMI)
        seen["alloc"] = unit_alloc(c)
        unit_free(c, spare)  # type: ignore[arg-type]
        cpu_.exit(Context.NMI)

    cpu.point_hook = nmi
    got = unit_alloc(c)
    assert got is not None and seen["alloc"] is None
    assert c.free_llist_extra == [spare]
    assert c.active == 0


def test_free_bulk_drains_free_llist_extra_towards_slab() -> None:
    w = make_world(1)
    ma = new_ma(w, 64)
    c = ma.cache[0]  # type: ignore[index]
    cpu = w.m.cpus[0]
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(120)]
    c.free_llist_extra.append(objs.pop())
    ma.outstanding -= 1
    for o in objs:
        bpf_mem_cache_free(ma, cpu, o)
    assert c.free_llist_extra == []


@pytest.mark.parametrize("profile,target_cpu", [(V6_6, 0), (V6_2, 1), (V6_1, 1)])
def test_cross_cpu_frees_return_to_the_allocating_cpu_only_with_the_hint(profile: type, target_cpu: int) -> None:
    """822fb26bdb55: free_bulk trims into c->tgt, the owner of the last freed object."""
    w = make_world(2)
    ma = new_ma(w, 64, profile())
    a, b = w.m.cpus
    objs = [bpf_mem_cache_alloc(ma, a) for _ in range(150)]
    for o in objs:
        bpf_mem_cache_free(ma, b, o)
    caches = ma.cache
    assert caches is not None
    trimmed = [len(caches[i].free_by_rcu_ttrace) + len(caches[i].waiting_for_gp_ttrace) for i in (0, 1)]
    assert trimmed[target_cpu] > 0 and trimmed[1 - target_cpu] == 0


def test_refill_reuse_sources_per_version() -> None:
    """6.1 always kmallocs; 6.2 reuses not-yet-submitted objects; 6.6 also reuses those inside the GP."""
    kmallocs = {}
    for prof in (V6_1, V6_2, V6_6):
        w = make_world(1)
        ma = new_ma(w, 64, prof())
        cpu = w.m.cpus[0]
        c = ma.cache[0]  # type: ignore[index]
        objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(300)]
        for o in objs:
            bpf_mem_cache_free(ma, cpu, o)
        k0 = c.kmallocs
        objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(300)]
        kmallocs[prof.name] = c.kmallocs - k0
    assert kmallocs["v6.1"] > 200
    assert 0 < kmallocs["v6.2"] < kmallocs["v6.1"]
    assert kmallocs["v6.6"] < kmallocs["v6.2"] and kmallocs["v6.6"] <= 48


def test_v6_1_waits_tasks_trace_then_rcu_later_versions_only_tasks_trace() -> None:
    freed_at = {}
    for prof in (V6_1, V6_6):
        w = fixed_world(1)
        ma = new_ma(w, 64, prof())
        cpu = w.m.cpus[0]
        objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(150)]
        base = w.memcg.usage
        for o in objs:
            bpf_mem_cache_free(ma, cpu, o)
        t = 0
        while w.memcg.usage == base and t < 1000:
            w.run_ms(1)
            t += 1
        freed_at[prof.name] = t
    assert freed_at["v6.6"] == 275
    assert freed_at["v6.1"] == 275 + 10


def test_free_rcu_objects_are_reusable_only_after_an_rcu_gp() -> None:
    w = fixed_world(1)
    ma = new_ma(w, 64)
    cpu = w.m.cpus[0]
    c = ma.cache[0]  # type: ignore[index]
    o = bpf_mem_cache_alloc(ma, cpu)
    bpf_mem_cache_free_rcu(ma, cpu, o)
    assert o not in c.free_llist and c.waiting_for_gp == [o] and c.call_rcu_in_progress
    w.run_ms(9)
    assert c.waiting_for_gp == [o]
    w.run_ms(2)
    assert o in c.waiting_for_gp_ttrace or o in c.free_by_rcu_ttrace
    with pytest.raises(ValueError):
        bpf_mem_cache_free_rcu(new_ma(make_world(1), 64, V6_2()), w.m.cpus[0], o)


def test_size_class_allocator_picks_the_class_and_frees_by_owner() -> None:
    w = make_world(1)
    ma = BpfMemAlloc(w.m, w.mm, w.rcu, V6_6())
    assert bpf_mem_alloc_init(ma, 0, False, None) == 0
    cpu = w.m.cpus[0]
    o = bpf_mem_alloc(ma, cpu, 100)
    assert o is not None and o.hdr.unit_size == 128
    bpf_mem_free(ma, cpu, o)
    assert bpf_mem_alloc(ma, cpu, 4089) is None and bpf_mem_alloc(ma, cpu, 0) is None
    assert bpf_mem_alloc_init(BpfMemAlloc(w.m, w.mm, w.rcu), 0, True, None) == -22


def test_instruments_see_allocations_frees_and_refills_when_installed() -> None:
    w = make_world(1)
    log: list[tuple[str, object]] = []

    class Recorder:
        def obj_alloc(self, cpu: Cpu, c: BpfMemCache, obj: object) -> None:
            log.append(("alloc", obj))

        def obj_free(self, cpu: Cpu, c: BpfMemCache, obj: object, kind: str) -> None:
            log.append((kind, obj))

        def irq_work_run(self, cpu: Cpu, work: object) -> None:
            log.append(("refill", cpu))

        def gp_start(self, flavour: str, seq: int) -> None:
            log.append(("gp", flavour))

    ma = new_ma(w, 64)
    cpu = w.m.cpus[0]
    w.m.instruments.add(Recorder())
    o = bpf_mem_cache_alloc(ma, cpu)
    bpf_mem_cache_free(ma, cpu, o)
    bpf_mem_cache_free_rcu(ma, cpu, bpf_mem_cache_alloc(ma, cpu))
    kinds = [k for k, _ in log]
    assert kinds[:3] == ["refill", "alloc", "free"]   # the refill ran at the irq restore inside unit_alloc and "free_rcu" in kinds and ("gp", "rcu") in log
    n = len(log)
    w.m.instruments.remove(w.m.instruments._installed[0])
    assert not w.m.instruments.active
    bpf_mem_cache_free(ma, cpu, bpf_mem_cache_alloc(ma, cpu))
    assert len(log) == n


def test_check_free_by_rcu_asks_for_an_urgent_quiescent_state_while_a_gp_is_in_flight() -> None:
    """6.6 (5af6807bdb10): with its RCU callback in flight, check_free_by_rcu calls
    rcu_request_urgent_qs_task(current): the CPU's running task reports a quiescent state at its next
    cond_resched() (the model's chunk boundary)."""
    w = fixed_world(1)
    ma = new_ma(w, 56)
    cpu = w.m.cpus[0]
    objs = [bpf_mem_cache_alloc(ma, cpu) for _ in range(40)]
    bpf_mem_cache_free_rcu(ma, cpu, objs[0])          # no callback in flight: call_rcu_hurry, no request
    c = ma.cache[0]  # type: ignore[index]
    assert c.call_rcu_in_progress and not w.rcu.rcu.urgent_qs
    for o in objs[1:]:
        bpf_mem_cache_free_rcu(ma, cpu, o)
    from bpfmem.alloc import check_free_by_rcu
    check_free_by_rcu(c)                               # the refill's call while the GP is in flight
    assert w.rcu.rcu.urgent_qs == {0}
