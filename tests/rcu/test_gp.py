"""Grace periods: tasks-trace laziness as measured on 6.18, tree RCU, readers, barriers."""

from __future__ import annotations

from bpfmem.rcu import GpModel, Rcu, call_rcu, call_rcu_tasks_trace, rcu_barrier, rcu_barrier_tasks_trace
from bpfmem.sim import Machine

MS = 1_000_000
FIXED_TT = GpModel(gp_min_ns=25 * MS, gp_max_ns=25 * MS, lazy_delay_ns=250 * MS, lazy_lim=32, gp_sleep_ns=4 * MS)
FIXED_RCU = GpModel(gp_min_ns=10 * MS, gp_max_ns=10 * MS)


def world() -> tuple[Machine, Rcu]:
    m = Machine(2)
    return m, Rcu(m, FIXED_RCU, FIXED_TT)


def test_few_tasks_trace_callbacks_wait_the_lazy_delay_plus_a_gp() -> None:
    """docs/measurements.md §3b: one map's batch is freed ~250 ms lazy + 20-35 ms GP after the delete."""
    m, rcu = world()
    done: list[int] = []
    call_rcu_tasks_trace(rcu, lambda: done.append(m.now))
    m.engine.run(until=1000 * MS)
    assert done == [275 * MS]


def test_more_than_lazy_lim_callbacks_start_a_gp_at_once() -> None:
    """docs/measurements.md §3b: 40 maps freeing at once -> first drop after ~25 ms, not 250 ms."""
    m, rcu = world()
    done: list[int] = []
    for _ in range(40):
        call_rcu_tasks_trace(rcu, lambda: done.append(m.now))
    m.engine.run(until=1000 * MS)
    assert len(done) == 40
    assert min(done) == 25 * MS
    # the 33rd callback woke the kthread: the first 33 were in that GP, the rest the next one
    assert done.count(25 * MS) == 33
    assert max(done) == 25 * MS + 4 * MS + 25 * MS


def test_callbacks_queued_during_a_gp_wait_for_the_next() -> None:
    m, rcu = world()
    done: list[tuple[str, int]] = []
    call_rcu(rcu, lambda: done.append(("a", m.now)))
    m.engine.run(until=5 * MS)
    call_rcu(rcu, lambda: done.append(("b", m.now)))
    m.engine.run(until=100 * MS)
    assert done == [("a", 10 * MS), ("b", 20 * MS)]
    assert rcu.rcu.gp_seq == 2


def test_lazy_timer_rearms_while_callbacks_remain() -> None:
    """A callback queued while the re-armed timer is pending rides on it (early frees of docs/measurements.md §1)."""
    m, rcu = world()
    done: list[int] = []
    call_rcu_tasks_trace(rcu, lambda: done.append(m.now))
    m.engine.run(until=260 * MS)          # timer fired at 250, re-armed for 500, GP running
    call_rcu_tasks_trace(rcu, lambda: done.append(m.now))
    m.engine.run(until=2000 * MS)
    assert done[0] == 275 * MS
    assert done[1] == 500 * MS + 25 * MS  # the re-armed timer, not 260 + 250


def test_a_reader_holds_the_grace_period() -> None:
    m, rcu = world()
    done: list[int] = []
    tok = rcu.rcu.read_lock()
    call_rcu(rcu, lambda: done.append(m.now))
    m.engine.run(until=50 * MS)
    assert done == []
    rcu.rcu.read_unlock(tok)
    assert done == [50 * MS]
    call_rcu(rcu, lambda: done.append(m.now))
    late = rcu.rcu.read_lock()           # a reader that starts after the GP began does not block it
    m.engine.run(until=200 * MS)
    assert done[-1] == 60 * MS
    rcu.rcu.read_unlock(late)


def test_barrier_entrains_behind_what_is_queued_without_hurrying_it() -> None:
    """rcu_barrier_tasks_generic (6.18) entrains on the lists that hold callbacks: no wake, no urgent GP,
    so a lazy callback still waits for its timer and the barrier with it."""
    m, rcu = world()
    order: list[tuple[str, int]] = []
    call_rcu_tasks_trace(rcu, lambda: order.append(("cb", m.now)))
    rcu_barrier_tasks_trace(rcu, lambda: order.append(("barrier", m.now)))
    m.engine.run(until=100 * MS)
    assert order == []
    m.engine.run(until=1000 * MS)
    assert [k for k, _ in order] == ["cb", "barrier"] and order[0][1] == order[1][1] > 250 * MS


def test_barrier_with_nothing_queued_returns_at_once() -> None:
    m, rcu = world()
    done: list[int] = []
    rcu_barrier_tasks_trace(rcu, lambda: done.append(m.now))
    rcu_barrier(rcu, lambda: done.append(m.now))
    assert done == [0, 0]
    assert rcu.tasks_trace.gps == 0 and rcu.rcu.gps == 0


def test_gp_length_comes_from_the_seeded_scheduler() -> None:
    def ends(seed: int) -> list[int]:
        from bpfmem.sim import RandomScheduler
        m = Machine(1, RandomScheduler(seed))
        rcu = Rcu(m)
        out: list[int] = []
        for i in range(5):
            m.engine.at(i * 1000 * MS, lambda: call_rcu_tasks_trace(rcu, lambda: out.append(m.now)))
        m.engine.run()
        return out
    assert ends(1) == ends(1)
    assert ends(1) != ends(2)
    assert all(270 * MS <= t % (1000 * MS) <= 285 * MS for t in ends(3))


def test_tasks_trace_gp_waits_for_rcu_readers_present_at_its_implied_synchronize_rcu() -> None:
    """rcu_tasks_trace_postscan() calls synchronize_rcu(): a normal-RCU reader (a BPF program, a batch
    syscall on a non-preemptible kernel) running when the GP reaches that point delays its end."""
    m, rcu = world()
    done: list[int] = []
    call_rcu_tasks_trace(rcu, lambda: done.append(m.now))
    m.engine.run(until=260 * MS)             # GP started at 250 ms, will reach its end at 275 ms
    tok = rcu.rcu.read_lock()                # entered after the GP started, before its synchronize_rcu
    m.engine.run(until=300 * MS)
    assert done == []
    rcu.rcu.read_unlock(tok)
    assert done == [300 * MS]


def test_without_the_implication_rcu_readers_do_not_hold_tasks_trace() -> None:
    m = Machine(1)
    rcu = Rcu(m, FIXED_RCU, FIXED_TT, trace_implies_rcu_gp=False)
    done: list[int] = []
    call_rcu_tasks_trace(rcu, lambda: done.append(m.now))
    tok = rcu.rcu.read_lock()
    m.engine.run(until=400 * MS)
    assert done == [275 * MS]
    rcu.rcu.read_unlock(tok)
