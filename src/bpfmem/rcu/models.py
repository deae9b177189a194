"""Grace-period models: how long an RCU flavour takes, as profile data.

Problem: the memory a deferred-free allocator holds is free rate times grace-
period latency, so the latency must be data that can be measured and fitted,
not a constant buried in code.

``GpModel`` describes one flavour:

- ``gp_min_ns``/``gp_max_ns``: a grace period lasts a duration chosen by the
  scheduler, uniform in that range;
- ``urgent_qs_ns``: how long a reader section may hold a GP before the
  kernel's ``cond_resched()`` reports a quiescent state (``jiffies_till_sched_qs``);
- ``lazy_delay_ns``/``lazy_lim``/``gp_sleep_ns``: RCU Tasks laziness
  (kernel/rcu/tasks.h, ``rcu_tasks_trace_lazy_ms``, ``rcu_task_lazy_lim``,
  ``gp_sleep``); the state machine is in ``gp.py``.  ``lazy_delay_ns == 0``
  means a grace period starts as soon as a callback is queued on an idle
  flavour (tree RCU).

Defaults are the ones measured on the 6.18 reference machine (HZ=250): lazy
tasks-trace delay HZ/4 = 250 ms, tasks-trace GP 20-35 ms, lazy limit 32.  The
normal RCU grace period was not measured directly; 4-20 ms is an assumption
consistent with the 45-82 ms local-storage frees (a tasks-trace GP + RCU GP).
"""

from __future__ import annotations

from dataclasses import dataclass

MS = 1_000_000


@dataclass(frozen=True)
class GpModel:
    gp_min_ns: int
    gp_max_ns: int
    lazy_delay_ns: int = 0
    lazy_lim: int = 32
    gp_sleep_ns: int = 0
    urgent_qs_ns: int = 0
    quantum_ns: int = 100_000

    def __post_init__(self) -> None:
        if not 0 <= self.gp_min_ns <= self.gp_max_ns:
            raise ValueError(f"GpModel: need 0 <= gp_min_ns <= gp_max_ns, got {self.gp_min_ns}, {self.gp_max_ns}")
        if self.lazy_delay_ns < 0 or self.lazy_lim < 0 or self.gp_sleep_ns < 0:
            raise ValueError("GpModel: lazy_delay_ns, lazy_lim and gp_sleep_ns must be >= 0")
        if self.quantum_ns <= 0:
            raise ValueError("GpModel: quantum_ns must be > 0")


# urgent_qs: after jiffies_till_sched_qs (3 jiffies at HZ=250) a long kernel loop's cond_resched() reports
# a quiescent state, so a reader section longer than that no longer holds the GP (non-preemptible kernel)
RCU_DEFAULT = GpModel(gp_min_ns=4 * MS, gp_max_ns=20 * MS, urgent_qs_ns=12 * MS)
TASKS_TRACE_DEFAULT = GpModel(gp_min_ns=20 * MS, gp_max_ns=35 * MS, lazy_delay_ns=250 * MS, lazy_lim=32,
                              gp_sleep_ns=4 * MS)


def srcu_fast_tasks_trace(rcu: GpModel, jiffy_ns: int = 4 * MS) -> GpModel:
    """RCU Tasks Trace re-implemented on SRCU-fast (Paul McKenney's series, "rcu: Re-implement RCU Tasks
    Trace in terms of SRCU-fast", c27cea4416a3 in the rcu dev tree, 7.0 merge window) — a *prediction*.

    ``call_rcu_tasks_trace()`` becomes ``call_srcu(&rcu_tasks_trace_srcu_struct)``: no lazy timer (the
    series removes ``rcu_tasks_trace_lazy_ms``) and no tasks-trace kthread sleep.  An SRCU grace period
    scans both reader indexes; SRCU-fast readers have no ``smp_mb()``, so each scan's
    ``srcu_readers_active_idx_check()`` waits a normal RCU grace period instead — two RCU GPs per
    grace period, plus ``SRCU_INTERVAL`` (one jiffy) between the phases of a non-expedited GP.  Running
    BPF programs keep holding it, as the RCU readers they are.  Not measured on any kernel."""
    return GpModel(gp_min_ns=2 * rcu.gp_min_ns + jiffy_ns, gp_max_ns=2 * rcu.gp_max_ns + 2 * jiffy_ns,
                   lazy_delay_ns=0, lazy_lim=rcu.lazy_lim, gp_sleep_ns=0, urgent_qs_ns=0, quantum_ns=rcu.quantum_ns)
