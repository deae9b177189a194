"""Objects counted or made one by one, batches key by key or by runs: the same numbers.

With ``Machine.identity`` False the allocator keeps interchangeable objects as counts, and batches run
by runs of quiet keys (``maps/batch.py``) unless ``Machine.batching`` is False; nothing else may
change.  Random workloads — updates, deletes and lookups of random keys on random CPUs, single and
batched, from task, hard-IRQ and NMI context, under memcg limits, with time passing in between so
grace periods end and irq_work runs — give identical return codes, memcg charge, peak, failcnt,
breakdown and slab counters after every step, for every element store.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfmem.alloc import V6_1, V6_2, V6_6
from bpfmem.maps import BPF_ANY, BPF_EXIST, BPF_F_NO_PREALLOC, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_NOEXIST
from bpfmem.maps import BpfHtab, MapAttr
from bpfmem.mm import Mm
from bpfmem.rcu import Rcu
from bpfmem.sim import Context, Machine, RandomScheduler

STORES = [("ma", V6_1, False), ("ma", V6_2, False), ("ma", V6_6, False), ("ma", V6_6, True),
          ("kmalloc_rcu", V6_6, False)]
OPS = st.lists(st.tuples(st.sampled_from(["update", "delete", "lookup", "update_batch", "delete_batch", "time",
                                          "irq_update", "nmi_batch", "limit"]),
                         st.integers(0, 3),                                   # CPU
                         st.lists(st.integers(0, 300), min_size=1, max_size=80),  # keys
                         st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST]),
                         st.integers(1, 400)),                                # ms of time / a limit in KiB
               min_size=1, max_size=40)


def world(identity: bool, store: tuple[str, Any, bool], percpu: bool, value: int,
          batching: bool = True) -> tuple[Machine, BpfHtab]:
    m = Machine(4, RandomScheduler(7))
    m.identity = identity
    m.batching = batching
    mm = Mm(m)
    rcu = Rcu(m)
    memcg = mm.root_memcg.child("map")
    elems, profile, free_rcu = store
    h = BpfHtab(m, mm, rcu, MapAttr(BPF_MAP_TYPE_PERCPU_HASH if percpu else BPF_MAP_TYPE_HASH, 4, value, 256,
                                    BPF_F_NO_PREALLOC), memcg, profile=profile(), elems=elems, free_rcu=free_rcu)
    return m, h


def trace(identity: bool, store: tuple[str, Any, bool], percpu: bool, value: int,
          ops: list[tuple[str, int, list[int], int, int]], batching: bool = True) -> list[Any]:
    m, h = world(identity, store, percpu, value, batching)
    mm, memcg = h.mm, h.memcg
    out: list[Any] = []
    for kind, cpu_id, keys, flags, n in ops:
        cpu = m.cpus[cpu_id]
        if kind == "update":
            r: Any = h.update(cpu, keys[0], flags)
        elif kind == "delete":
            r = h.delete(cpu, keys[0])
        elif kind == "lookup":
            r = h.lookup(cpu, keys[0]) is not None
        elif kind == "update_batch":
            errs: dict[int, int] = {}
            r = (h.update_batch(cpu, keys, flags, errs), sorted(errs.items()))
        elif kind == "delete_batch":
            errs = {}
            r = (h.delete_batch(cpu, keys, errs), sorted(errs.items()))
        elif kind == "irq_update":                  # a program in hard-IRQ context
            cpu.enter(Context.HARDIRQ)
            try:
                r = h.update(cpu, keys[0], flags)
            finally:
                cpu.exit(Context.HARDIRQ)
        elif kind == "nmi_batch":                   # a batch from NMI context, interrupting a task
            cpu.enter(Context.NMI)
            try:
                errs = {}
                r = (h.update_batch(cpu, keys, flags, errs), sorted(errs.items()))
            finally:
                cpu.exit(Context.NMI)
        elif kind == "limit":                       # a memcg limit somewhere above the current usage
            memcg.limit = memcg.usage + n * 1024
            r = memcg.limit
        else:
            m.engine.run(until=m.engine.now + n * 1_000_000)
            r = m.engine.now
        s = mm.slab
        out.append((kind, r, memcg.usage, memcg.peak, memcg.failcnt, h.count, sorted(h.breakdown().items()),
                    s.live_objects, s.live_bytes, s.kmalloc_calls, s.kfree_calls, s.failures))
    m.engine.run(until=m.engine.now + 2_000_000_000)
    out.append(("end", memcg.usage, sorted(h.breakdown().items())))
    return out


@given(store=st.sampled_from(STORES), percpu=st.booleans(), value=st.sampled_from([8, 1000, 4000]), ops=OPS)
@settings(max_examples=150, deadline=None, database=None)
def test_counted_objects_give_the_same_numbers(store: tuple[str, Any, bool], percpu: bool, value: int,
                                               ops: list[tuple[str, int, list[int], int, int]]) -> None:
    if percpu and store[0] != "ma":
        percpu = False
    assert trace(False, store, percpu, value, ops) == trace(True, store, percpu, value, ops)


@given(store=st.sampled_from(STORES), percpu=st.booleans(), value=st.sampled_from([8, 1000, 4000]), ops=OPS)
@settings(max_examples=150, deadline=None, database=None)
def test_batches_by_runs_give_the_same_numbers(store: tuple[str, Any, bool], percpu: bool, value: int,
                                               ops: list[tuple[str, int, list[int], int, int]]) -> None:
    """Counted objects both ways: runs of quiet keys against key by key."""
    if percpu and store[0] != "ma":
        percpu = False
    assert trace(False, store, percpu, value, ops) == trace(False, store, percpu, value, ops, batching=False)


def test_a_broken_run_is_caught() -> None:
    """One object too many moved by a run of quiet allocations changes the numbers."""
    import bpfmem.alloc.memalloc as M
    import bpfmem.maps.htab as H
    ops = [("update_batch", 0, list(range(60)), BPF_ANY, 1), ("update_batch", 0, list(range(60)), BPF_ANY, 1),
           ("time", 0, [0], BPF_ANY, 400)]
    store = STORES[2]
    good = trace(False, store, False, 8, ops, batching=False)
    assert trace(False, store, False, 8, ops) == good
    orig = M.unit_replace_run

    def broken(c: Any, olds: Any, rcu: bool) -> None:
        orig(c, olds, rcu)
        c.free_llist.pop()                      # one object too many taken by the run
        c.free_cnt -= 1
    H.unit_replace_run = broken
    try:
        assert trace(False, store, False, 8, ops) != good
    finally:
        H.unit_replace_run = orig


def test_a_broken_count_is_caught() -> None:
    """One object too many moved by a counted trim changes the numbers: the comparison can fail."""
    import bpfmem.alloc.memalloc as M
    ops = [("update_batch", 0, list(range(150)), BPF_ANY, 1), ("delete_batch", 0, list(range(150)), BPF_ANY, 1),
           ("time", 0, [0], BPF_ANY, 400)]
    store = STORES[2]
    good = trace(True, store, False, 8, ops)
    assert trace(False, store, False, 8, ops) == good
    orig = M.free_bulk

    def broken(c: Any) -> None:
        orig(c)
        if c.anon and c.free_llist:             # one object too many moved towards slab
            c.free_llist.pop()
            c.free_cnt -= 1
            c.free_by_rcu_ttrace.append(M.ANON)
    M.free_bulk = broken
    try:
        assert trace(False, store, False, 8, ops) != good
    finally:
        M.free_bulk = orig
