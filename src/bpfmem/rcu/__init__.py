"""RCU flavours, grace-period models and the call/barrier API."""

from .gp import RcuFlavour, RcuStatistics
from .models import RCU_DEFAULT, TASKS_TRACE_DEFAULT, GpModel, srcu_fast_tasks_trace
from .rcu import (Rcu, call_rcu, call_rcu_hurry, call_rcu_tasks_trace, rcu_barrier, rcu_barrier_tasks_trace,
                  rcu_request_urgent_qs_task, rcu_trace_implies_rcu_gp)

__all__ = ["RcuFlavour", "RcuStatistics", "GpModel", "RCU_DEFAULT", "TASKS_TRACE_DEFAULT", "srcu_fast_tasks_trace", "Rcu", "call_rcu",
           "call_rcu_hurry", "call_rcu_tasks_trace", "rcu_barrier", "rcu_barrier_tasks_trace",
           "rcu_request_urgent_qs_task", "rcu_trace_implies_rcu_gp"]
