"""The explorer's memory model: litmus tests that a missing barrier is seen and a present one is kept.

Each test explores every schedule within a bound (DFS over preemptions and over which write each
plain load reads) and asks whether an outcome is reachable.
"""

from __future__ import annotations

from typing import Any, Callable

from bpfmem.explore.runtime import Env, Run, Thread
from bpfmem.explore.strategies import DfsScheduler, next_prefix


def outcomes(setup: Callable[[Run], None], bound: int = 4, limit: int = 20_000) -> set[Any]:
    """Every result tuple of the reader over every schedule within ``bound`` deviations."""
    seen: set[Any] = set()
    prefix: list[int] = []
    for _ in range(limit):
        s = DfsScheduler(prefix)
        run = Run(2, s, {})
        setup(run)
        res = run.execute()
        seen.add(res.results["reader"])
        nxt = next_prefix(s.trace, bound, 0)
        if nxt is None:
            return seen
        prefix = nxt
    raise AssertionError("DFS did not finish")


def message_passing(writer_barrier: str, reader_barrier: str) -> Callable[[Run], None]:
    """MP: the writer stores data then flag; the reader loads flag then data."""
    def setup(run: Run) -> None:
        env = run.env
        x = env.static("x")

        def writer(env: Env, t: Thread) -> None:
            env.WRITE_ONCE(t, x, "data", 1)
            if writer_barrier == "wmb":
                env.smp_wmb(t)
            if writer_barrier == "release":
                env.smp_store_release(t, x, "flag", 1)
            else:
                env.WRITE_ONCE(t, x, "flag", 1)

        def reader(env: Env, t: Thread) -> tuple[int, int]:
            if reader_barrier == "acquire":
                f = env.smp_load_acquire(t, x, "flag")
            else:
                f = env.READ_ONCE(t, x, "flag")
            if reader_barrier == "rmb":
                env.smp_rmb(t)
            return f, env.READ_ONCE(t, x, "data")

        run.spawn("reader", 0, reader)
        run.spawn("writer", 1, writer)
    return setup


def test_message_passing_needs_a_barrier_on_both_sides() -> None:
    stale = (1, 0)                                   # flag seen, data not: the reordering a barrier forbids
    assert stale in outcomes(message_passing("none", "none"))
    assert stale in outcomes(message_passing("wmb", "none"))        # the reader's loads may still reorder
    assert stale in outcomes(message_passing("none", "rmb"))        # the writer's stores may still reorder
    for w, r in (("wmb", "rmb"), ("release", "acquire"), ("wmb", "acquire"), ("release", "rmb")):
        got = outcomes(message_passing(w, r))
        assert stale not in got, (w, r, got)
        assert {(0, 0), (1, 1)} <= got, (w, r, got)  # and the run is not trivially sequential


def test_coherence_a_cpu_never_reads_older_after_newer() -> None:
    def setup(run: Run) -> None:
        x = run.env.static("x")

        def writer(env: Env, t: Thread) -> None:
            for v in (1, 2, 3):
                env.WRITE_ONCE(t, x, "v", v)

        def reader(env: Env, t: Thread) -> tuple[int, int]:
            return env.READ_ONCE(t, x, "v"), env.READ_ONCE(t, x, "v")

        run.spawn("reader", 0, reader)
        run.spawn("writer", 1, writer)
    got = outcomes(setup, bound=4)
    assert all(a <= b for a, b in got), got
    assert any(a < b for a, b in got)


def test_atomic_rmw_reads_the_newest_write() -> None:
    """Two refcount_inc on one counter never lose an increment, whatever the schedule."""
    def setup(run: Run) -> None:
        x = run.env.static("x")

        def inc(env: Env, t: Thread) -> int:
            env.refcount_inc(t, x, "n")
            return 0

        def reader(env: Env, t: Thread) -> int:
            env.refcount_inc(t, x, "n")
            return 0

        run.spawn("reader", 0, reader)
        run.spawn("other", 1, inc)
        run.env.objects["x"] = x
    for prefix_bound in (0, 2, 4):
        prefix: list[int] = []
        while True:
            s = DfsScheduler(prefix)
            run = Run(2, s, {})
            setup(run)
            run.execute()
            x = run.env.objects["x"]
            assert run.memory.latest((x.obj.id, "n")) == 2
            nxt = next_prefix(s.trace, prefix_bound, 0)
            if nxt is None:
                break
            prefix = nxt


def test_a_reused_object_keeps_its_old_contents_until_stored_over() -> None:
    """bpf_mem_alloc does not clear a reused object: a load before the new owner's stores sees old data."""
    from bpfmem.explore.scenarios import new_ma
    run = Run(1, DfsScheduler([]), {})
    ma = new_ma(run, "free")
    boot = Thread("boot", 0, lambda e, t: None)
    env = run.env
    a = env.bpf_mem_cache_alloc(boot, ma)
    assert a is not None
    env.WRITE_ONCE(boot, a, "key", 42)
    env.bpf_mem_cache_free(boot, ma, a)
    b = env.bpf_mem_cache_alloc(boot, ma)
    assert b is not None and b.obj is a.obj and b.gen == a.gen + 1
    assert env.READ_ONCE(boot, b, "key") == 42
    env.WRITE_ONCE(boot, b, "key", 7)
    assert env.READ_ONCE(boot, b, "key") == 7
