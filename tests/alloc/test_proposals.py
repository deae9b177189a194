"""The RFC proposals against immediate reuse (alloc/proposals.py): where a freed object goes, when it may be
reused, when it goes back to slab, and that nothing is lost (a destroy with callbacks in flight included)."""

from __future__ import annotations

from typing import Any

import pytest

from bpfmem.alloc import BpfMemAlloc, bpf_mem_alloc_destroy, bpf_mem_alloc_init, bpf_mem_cache_alloc, bpf_mem_cache_free
from bpfmem.alloc.proposals import (HZ_NS, PROPOSALS, FreeAfterGp, NoReuse, ReuseAfterGp, ReuseAfterGpGlobal,
                                    ReuseAfterGpPcpu)
from bpfmem.rcu import GpModel

from ..conftest import MS, World, make_world

RCU = GpModel(gp_min_ns=10 * MS, gp_max_ns=10 * MS)
TT = GpModel(gp_min_ns=25 * MS, gp_max_ns=25 * MS, lazy_delay_ns=0, lazy_lim=32, gp_sleep_ns=4 * MS)


def world(ncpus: int = 2) -> World:
    return make_world(ncpus, rcu_model=RCU, tasks_trace_model=TT)


def new_ma(w: World, cls: type, size: int = 56) -> BpfMemAlloc:
    ma = BpfMemAlloc(w.m, w.mm, w.rcu, cls())
    assert bpf_mem_alloc_init(ma, size, False, w.memcg) == 0
    return ma


def churn(w: World, ma: BpfMemAlloc, cpu: int, n: int) -> list[Any]:
    """Allocate ``n`` objects on ``cpu`` and free them all there; the objects, in order."""
    c = w.m.cpus[cpu]
    objs = [bpf_mem_cache_alloc(ma, c) for _ in range(n)]
    assert all(o is not None for o in objs)
    for o in objs:
        bpf_mem_cache_free(ma, c, o)
    return objs


def conserved(ma: BpfMemAlloc) -> None:
    caches = ma.all_caches()
    on_lists = sum(len(lst) for c in caches for lst in c.lists().values())
    assert on_lists + ma.outstanding == sum(c.kmallocs - c.kfrees for c in caches)


@pytest.mark.parametrize("name", list(PROPOSALS))
def test_no_immediate_reuse(name: str) -> None:
    """The point of every proposal: a freed object is not handed out again before a grace period."""
    w = world()
    ma = new_ma(w, PROPOSALS[name])
    cpu = w.m.cpus[0]
    freed = churn(w, ma, 0, 200)
    again = [bpf_mem_cache_alloc(ma, cpu) for _ in range(200)]
    assert not {id(o) for o in freed} & {id(o) for o in again}
    conserved(ma)


@pytest.mark.parametrize("cls", [ReuseAfterGp, ReuseAfterGpGlobal, ReuseAfterGpPcpu])
def test_reuse_after_one_rcu_gp(cls: type) -> None:
    """After an RCU GP (and before the tasks-trace one) freed objects come back without kmalloc."""
    w = world()
    ma = new_ma(w, cls)
    freed = {id(o) for o in churn(w, ma, 0, 200)}
    w.run_ms(12)                                   # the kworker / irq_work, then one RCU GP (10 ms)
    k0 = sum(c.kmallocs for c in ma.all_caches())
    again = [bpf_mem_cache_alloc(ma, w.m.cpus[0]) for _ in range(150)]
    assert {id(o) for o in again} & freed
    assert sum(c.kmallocs for c in ma.all_caches()) - k0 < 150
    conserved(ma)


@pytest.mark.parametrize("cls", [ReuseAfterGpGlobal, ReuseAfterGpPcpu])
def test_unreused_objects_go_to_slab_after_a_tasks_trace_gp(cls: type) -> None:
    w = world()
    ma = new_ma(w, cls)
    churn(w, ma, 0, 400)
    frees0 = sum(c.kfrees for c in ma.all_caches())
    w.run_ms(2000)
    assert sum(c.kfrees for c in ma.all_caches()) > frees0
    conserved(ma)


def test_v2_frees_reusable_objects_only_at_the_next_free_threshold() -> None:
    """RFC v2 starts the tasks-trace free of ``reuse_ready`` from its kworker, which only a free past the
    high watermark queues: after a burst of frees, what was not reused stays until the next burst."""
    w = world()
    ma = new_ma(w, ReuseAfterGp)
    churn(w, ma, 0, 400)
    w.run_ms(2000)
    assert sum(c.kfrees for c in ma.all_caches()) == 0
    parked = len(ma.cache[0].prop.reuse_ready)  # type: ignore[index]
    assert parked > 200
    churn(w, ma, 0, 100)                           # the next burst: the kworker moves reuse_ready to wait_for_free
    w.run_ms(100)
    assert sum(c.kfrees for c in ma.all_caches()) > 0
    conserved(ma)


def test_v4_reuses_across_cpus_v5_does_not() -> None:
    """RFC v4's reusable list is the allocator's (any CPU takes from it); RFC v5's is per CPU."""
    for cls, across in ((ReuseAfterGpGlobal, True), (ReuseAfterGpPcpu, False)):
        w = world()
        ma = new_ma(w, cls)
        freed = {id(o) for o in churn(w, ma, 1, 200)}
        w.run_ms(12)
        got = [bpf_mem_cache_alloc(ma, w.m.cpus[0]) for _ in range(150)]
        assert bool({id(o) for o in got} & freed) is across, cls.name


@pytest.mark.parametrize("cls,flavour", [(NoReuse, "tasks_trace"), (FreeAfterGp, "rcu")])
def test_never_reused_batches_freed_after_their_gp(cls: type, flavour: str) -> None:
    """RFC v1/v3: the CPU's batch waits up to HZ unless 256 objects wait; then one GP of its flavour."""
    w = world()
    ma = new_ma(w, cls)
    churn(w, ma, 0, 10)                            # 10 < 256: the worker runs a second later
    frees0 = sum(c.kfrees for c in ma.all_caches())
    w.run_ms(HZ_NS / MS - 1)
    assert sum(c.kfrees for c in ma.all_caches()) == frees0
    gp = (RCU if flavour == "rcu" else TT).gp_max_ns / MS
    w.run_ms(gp + 5)
    assert sum(c.kfrees for c in ma.all_caches()) == frees0 + 10
    w2 = world()
    ma2 = new_ma(w2, cls)
    churn(w2, ma2, 0, 300)                          # >= 256: the worker is pulled in
    w2.run_ms(gp + 10)
    assert sum(c.kfrees for c in ma2.all_caches()) >= 256
    conserved(ma2)


@pytest.mark.parametrize("name", list(PROPOSALS))
def test_destroy_with_everything_in_flight_frees_everything(name: str) -> None:
    w = world()
    ma = new_ma(w, PROPOSALS[name])
    churn(w, ma, 0, 300)
    churn(w, ma, 1, 300)
    w.run_ms(3)                                    # some callbacks queued, none done
    bpf_mem_alloc_destroy(ma)
    w.run_ms(3000)
    assert ma.cache is None                        # free_mem_alloc ran after the barriers, lists were empty
    assert w.memcg.usage == 0


def test_v5_watermark_and_batch() -> None:
    w = world(1)
    c = new_ma(w, ReuseAfterGpPcpu, 56).cache[0]  # type: ignore[index]
    assert (c.high_watermark, c.batch, c.low_watermark) == (32, 32, 33)
    c2 = new_ma(w, ReuseAfterGpPcpu, 1000).cache[0]  # type: ignore[index]
    assert (c2.high_watermark, c2.batch) == (32 * 256 // 1008, 32 * 256 // 1008)


def test_v5_rcu_callbacks_are_unbounded_v4_has_one_per_cache() -> None:
    """RFC v5 starts an RCU callback per irq_work run; RFC v4 one per cache at a time."""
    w = world(1)
    ma5 = new_ma(w, ReuseAfterGpPcpu)
    churn(w, ma5, 0, 400)
    assert len(ma5.cache[0].prop.in_flight.items) > 1  # type: ignore[index]
    w4 = world(1)
    ma4 = new_ma(w4, ReuseAfterGpGlobal)
    churn(w4, ma4, 0, 400)
    assert ma4.cache[0].prop.call_rcu_in_progress  # type: ignore[index]
    assert w4.rcu.rcu.calls == 1
