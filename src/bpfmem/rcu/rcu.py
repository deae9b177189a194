"""RCU as the BPF memory code uses it: ``rcu`` and ``rcu_tasks_trace``.

Models: include/linux/rcupdate.h and kernel/rcu/{tree.c,tasks.h}, v6.18.

Normal BPF programs are RCU readers; sleepable ones are RCU Tasks Trace
readers (``rcu_read_lock_trace``).  Memory a program might still see must wait
for the flavours of every reader that could hold it.  Since v6.2
``rcu_trace_implies_rcu_gp()`` returns true: a tasks-trace GP contains a
normal RCU GP, so callers skip the extra ``call_rcu``.  v6.1 code did not ask
and always chained ``call_rcu``; the flag is a setting here so both can be
modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..sim import Machine
from .gp import RcuFlavour, RcuStatistics
from .models import RCU_DEFAULT, TASKS_TRACE_DEFAULT, GpModel


@dataclass(frozen=True)
class RcuStateStatistics:
    rcu: RcuStatistics
    tasks_trace: RcuStatistics


class Rcu:
    """Both flavours of one machine."""

    def __init__(self, machine: Machine, rcu_model: GpModel = RCU_DEFAULT,
                 tasks_trace_model: GpModel = TASKS_TRACE_DEFAULT, *, trace_implies_rcu_gp: bool = True) -> None:
        seq = [0]
        self.rcu = RcuFlavour(machine, "rcu", rcu_model, seq)
        self.tasks_trace = RcuFlavour(machine, "rcu_tasks_trace", tasks_trace_model, seq)
        self.trace_implies_rcu_gp = trace_implies_rcu_gp
        if trace_implies_rcu_gp:   # the tasks-trace GP contains a synchronize_rcu()
            self.tasks_trace.wait_also_for(self.rcu)

    def statistics(self) -> RcuStateStatistics:
        return RcuStateStatistics(self.rcu.statistics(), self.tasks_trace.statistics())


def call_rcu(rcu: Rcu, fn: Callable[..., Any], *args: Any) -> None:
    """``call_rcu()`` (kernel/rcu/tree.c): ``fn`` after a normal RCU GP."""
    rcu.rcu.call(fn, *args)


def call_rcu_hurry(rcu: Rcu, fn: Callable[..., Any], *args: Any) -> None:
    """``call_rcu_hurry()`` (6.2+): never lazy."""
    rcu.rcu.call(fn, *args, hurry=True)


def call_rcu_tasks_trace(rcu: Rcu, fn: Callable[..., Any], *args: Any) -> None:
    """``call_rcu_tasks_trace()`` (kernel/rcu/tasks.h): after a tasks-trace GP, lazily."""
    rcu.tasks_trace.call(fn, *args)


def rcu_barrier(rcu: Rcu, fn: Callable[..., Any], *args: Any) -> None:
    """``rcu_barrier()``: ``fn`` once every queued RCU callback has run."""
    rcu.rcu.barrier(fn, *args)


def rcu_barrier_tasks_trace(rcu: Rcu, fn: Callable[..., Any], *args: Any) -> None:
    """``rcu_barrier_tasks_trace()``."""
    rcu.tasks_trace.barrier(fn, *args)


def rcu_request_urgent_qs_task(rcu: Rcu, cpu: int) -> None:
    """``rcu_request_urgent_qs_task(current)`` (kernel/rcu/tree.c): the task running on ``cpu`` reports a
    quiescent state at its next ``cond_resched()`` (a batch syscall calls it between keys)."""
    rcu.rcu.urgent_qs.add(cpu)


def rcu_trace_implies_rcu_gp(rcu: Rcu) -> bool:
    """``rcu_trace_implies_rcu_gp()`` (include/linux/rcupdate.h, 6.2+): true."""
    return rcu.trace_implies_rcu_gp
