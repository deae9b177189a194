"""The engine: time order, FIFO at equal times, cancellation, failures propagate."""

from __future__ import annotations

import pytest

from bpfmem.sim import Engine, FirstScheduler, RandomScheduler, RecordingScheduler, ReplayScheduler, Schedule
from bpfmem.sim.sched import ScheduleExhausted, uniform_ns


def test_events_run_in_time_then_fifo_order() -> None:
    e = Engine()
    log: list[tuple[int, str]] = []
    e.at(20, lambda: log.append((e.now, "b")))
    e.at(10, lambda: log.append((e.now, "a")))
    e.at(20, lambda: log.append((e.now, "c")))
    e.run()
    assert log == [(10, "a"), (20, "b"), (20, "c")]


def test_run_until_advances_idle_time_and_stops() -> None:
    e = Engine()
    hit = []
    e.at(100, lambda: hit.append(1))
    e.run(until=50)
    assert e.now == 50 and hit == []
    e.run(until=100)
    assert hit == [1] and e.now == 100


def test_cancelled_timer_never_runs_and_past_is_refused() -> None:
    e = Engine()
    t = e.after(5, lambda: pytest.fail("cancelled timer ran"))
    t.cancel()
    e.run()
    e.at(10, lambda: None)
    e.run()
    with pytest.raises(ValueError):
        e.at(3, lambda: None)


def test_exceptions_in_callbacks_propagate() -> None:
    e = Engine()

    def boom() -> None:
        raise RuntimeError("boom")
    e.after(1, boom)
    with pytest.raises(RuntimeError):
        e.run()


def test_next_time_skips_excluded_entries() -> None:
    e = Engine()

    def a() -> None: ...

    def b() -> None: ...
    e.at(5, a)
    e.at(9, b)
    assert e.next_time(lambda t: t.fn is a) == 9
    assert e.next_time(lambda t: False) == 5


def test_seeded_scheduler_is_deterministic_and_replayable() -> None:
    r1 = RecordingScheduler(RandomScheduler(7))
    vals = [r1.choose("x", 1000) for _ in range(50)]
    r2 = RandomScheduler(7)
    assert vals == [r2.choose("x", 1000) for _ in range(50)]
    assert vals != [RandomScheduler(8).choose("x", 1000) for _ in range(50)]
    rep = ReplayScheduler(Schedule(7, list(r1.schedule.steps)))
    assert [rep.choose("x", 1000) for _ in range(50)] == vals
    with pytest.raises(ScheduleExhausted):
        rep.choose("x", 1000)
    assert FirstScheduler().choose("x", 9) == 0
    assert uniform_ns(FirstScheduler(), "d", 20, 35) == 20
