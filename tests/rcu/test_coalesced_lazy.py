"""call_coalesced on a lazy flavour (tasks trace): exactly what one call() per callback does."""

from __future__ import annotations

import pytest

from bpfmem.rcu import GpModel, Rcu
from bpfmem.sim import Machine, RandomScheduler

MS = 1_000_000
LAZY = GpModel(gp_min_ns=20 * MS, gp_max_ns=30 * MS, lazy_delay_ns=250 * MS, lazy_lim=32, gp_sleep_ns=4 * MS)


def _run(coalesced: bool, bursts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(time ns, callback index) of every callback, for bursts of (at ms, how many) calls."""
    m = Machine(2, RandomScheduler(3))
    rcu = Rcu(m, GpModel(gp_min_ns=5 * MS, gp_max_ns=5 * MS), LAZY)
    tt = rcu.tasks_trace
    ran: list[tuple[int, int]] = []
    order = iter(range(10**9))
    pending: list[int] = []
    state: dict[str, object] = {"batch": None}

    def run_n(n: int) -> None:
        for _ in range(n):
            ran.append((m.engine.now, pending.pop(0)))

    def burst(k: int) -> None:
        for _ in range(k):
            i = next(order)
            pending.append(i)
            if coalesced:
                state["batch"] = tt.call_coalesced(state["batch"], run_n)  # type: ignore[arg-type]
            else:
                tt.call(lambda: run_n(1))
    for at, k in bursts:
        m.engine.at(at * MS, burst, k)
    m.engine.run(until=3000 * MS)
    return ran


@pytest.mark.parametrize("bursts", [[(0, 5)], [(0, 40)], [(0, 31), (10, 1), (300, 2)], [(0, 10), (5, 30), (40, 100)],
                                    [(i * 7, 9) for i in range(60)]])
def test_coalesced_lazy_calls_run_when_single_calls_would(bursts: list[tuple[int, int]]) -> None:
    assert _run(True, bursts) == _run(False, bursts)
