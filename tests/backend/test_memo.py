"""Invocations applied from records give exactly the numbers of invocations run (backend/memo.py).

Random workloads — producers on random CPUs with random keys (shared or not), updates with every
flag, deletes and lookups, batches of random sizes up to several chunks, every element store and
version, percpu values, a memcg limit that bites, a map that fills — are run with records and
without: memory samples (charge, memlock, breakdown), peak, failcnt, counts and errors must be
identical.  A record that moves one object too many is caught, and the records of the bench matrix
agree with runs in the same situation (``verify``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfmem.backend import memo as M
from bpfmem.backend.model import ModelBackend
from bpfmem.backend.protocol import Invocation, MapSpec, Op, Producer
from bpfmem.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST
from bpfmem.sim import NSEC_PER_MSEC

POLICIES = ["v6.1", "v6.2", "v6.6", "free_rcu", "kmalloc_rcu"]

op_st = st.tuples(st.sampled_from(["update", "update", "delete", "lookup"]),
                  st.lists(st.integers(0, 700), min_size=1, max_size=1500, unique=True),
                  st.sampled_from([BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST]))
inv_st = st.tuples(st.integers(0, 3), st.lists(op_st, min_size=1, max_size=3))
producer_st = st.lists(inv_st, min_size=1, max_size=4)


def build(raw: list[list[tuple[int, list[tuple[str, list[int], int]]]]]) -> tuple[Producer, ...]:
    out = []
    for n, steps in enumerate(raw):
        invs = tuple(Invocation(cpu, tuple(Op(kind, tuple(keys), flags if kind == "update" else BPF_ANY)
                                           for kind, keys, flags in ops))
                     for cpu, ops in steps)
        out.append(Producer(f"p{n}", invs))
    return tuple(out)


def run(policy: str, percpu: bool, value: int, entries: int, limit_kib: int | None,
        producers: tuple[Producer, ...], memo: bool, verify: bool = False) -> list[Any]:
    be = ModelBackend(4, policy, seed=3, memo=memo, sample_interval_ns=2 * NSEC_PER_MSEC)
    m = be.map_create(MapSpec("percpu_hash" if percpu else "hash", 4, value, entries))
    if m.memo is not None:
        m.memo.verify = verify
    if limit_kib is not None:
        m.memcg.limit = m.memcg.usage + limit_kib * 1024
    counts = be.run(m, producers, 12 * NSEC_PER_MSEC)
    be.idle(m, 30 * NSEC_PER_MSEC)
    again = be.execute(m, producers[0].steps, "again")
    return [m.samples, m.memcg.peak, m.memcg.failcnt, counts.ops, counts.hits, counts.invocations,
            sorted(counts.errors.items()), again.ops, sorted(again.errors.items()), m.htab.count,
            be.mm.slab.statistics()]


WORKLOADS = dict(policy=st.sampled_from(POLICIES), percpu=st.booleans(), value=st.sampled_from([8, 1000, 4000]),
                 entries=st.sampled_from([300, 8192]), limit=st.one_of(st.none(), st.integers(64, 4000)),
                 raw=st.lists(producer_st, min_size=1, max_size=3))


def same_numbers(policy: str, percpu: bool, value: int, entries: int, limit: int | None, raw: Any) -> None:
    if percpu and policy == "kmalloc_rcu":
        percpu = False
    producers = build(raw)
    assert run(policy, percpu, value, entries, limit, producers, True) == \
        run(policy, percpu, value, entries, limit, producers, False)


@given(**WORKLOADS)
@settings(max_examples=8, deadline=None, database=None)        # 150 examples with the slow tests
def test_records_give_the_same_numbers(policy: str, percpu: bool, value: int, entries: int, limit: int | None,
                                       raw: Any) -> None:
    same_numbers(policy, percpu, value, entries, limit, raw)


@pytest.mark.slow
@given(**WORKLOADS)
@settings(max_examples=150, deadline=None, database=None)
def test_records_give_the_same_numbers_long(policy: str, percpu: bool, value: int, entries: int,
                                            limit: int | None, raw: Any) -> None:
    same_numbers(policy, percpu, value, entries, limit, raw)


def _overwrite() -> tuple[Producer, ...]:
    return tuple(Producer(f"p{c}", (Invocation(c, (Op("update", tuple(range(c * 64, c * 64 + 64))),)),))
                 for c in range(4))


def test_records_are_used() -> None:
    """The comparison above is not vacuous: on a steady workload most invocations come from records."""
    be = ModelBackend(4, "free_rcu", seed=3)
    m = be.map_create(MapSpec("hash", 4, 8, 8192))
    be.run(m, _overwrite(), 50 * NSEC_PER_MSEC)
    assert m.memo is not None and m.memo.hits > 4 * m.memo.misses > 0


def test_a_broken_record_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """One object too many parked by an applied record changes the numbers."""
    good = run("free_rcu", False, 8, 8192, None, _overwrite(), False)
    assert run("free_rcu", False, 8, 8192, None, _overwrite(), True) == good
    orig = M.InvocationMemo.apply

    def broken(self: M.InvocationMemo, rec: M.Record) -> None:
        orig(self, rec)
        for c, *_ in rec.caches[:1]:
            c.free_by_rcu.append(M.ANON)
    monkeypatch.setattr(M.InvocationMemo, "apply", broken)
    assert run("free_rcu", False, 8, 8192, None, _overwrite(), True) != good


@pytest.mark.parametrize("policy", POLICIES + ["v6.6-percpu"])
def test_records_agree_with_runs(policy: str) -> None:
    """With ``verify`` every invocation runs, and a record met again must equal the new run's effect."""
    percpu = policy.endswith("-percpu")
    pol = policy.removesuffix("-percpu")
    producers = _overwrite() + (Producer("ad", (Invocation(0, (Op("update", tuple(range(1000, 1100))),)),
                                                Invocation(1, (Op("delete", tuple(range(1000, 1100))),)))),)
    a = run(pol, percpu, 8, 8192, None, producers, True, verify=True)
    assert a == run(pol, percpu, 8, 8192, None, producers, False)


def test_a_short_lived_invocation_never_meets_a_dead_ones_record() -> None:
    """Records are keyed by the invocation's id(); execute() makes invocations that die at once, and a
    new one may be born at the same address.  Each must get its own answer (here: every key refused)."""
    from bpfmem.backend.model import ModelBackend
    from bpfmem.backend.protocol import Invocation, MapSpec, Op
    be = ModelBackend(1, "v6.6")
    m = be.map_create(MapSpec("hash", 4, 8, 4096, no_prealloc=True))
    for i in range(60):
        n = 2 + (i * 7) % 13
        keys = tuple(range(100 * i, 100 * i + n))
        got = be.execute(m, (Invocation(0, (Op("update", keys, 4 | (i % 2)),)),)).errors   # BPF_F_LOCK: EINVAL
        assert got == {"EINVAL": n}, (i, n, got)
