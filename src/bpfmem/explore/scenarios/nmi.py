"""NMI re-entrancy on one CPU: an NMI program allocates and frees inside unit_alloc/unit_free(_rcu).

Models memalloc.c's ``active`` guard (6.1+) and the re-entry lists
``free_llist_extra`` (``unit_free``) and ``free_llist_extra_rcu``
(``unit_free_rcu``, 6.6+), drained by ``free_bulk`` and ``check_free_by_rcu``.
The NMI program is an RCU reader, as perf-event programs are
(``bpf_overflow_handler`` runs them under ``rcu_read_lock``).
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Run, Thread
from . import Scenario, new_ma

E = frozenset


def setup(run: Run, policy: str, planted: bool) -> None:
    env = run.env
    ma = new_ma(run, policy, planted=frozenset({"lose_extra_rcu"}) if planted else frozenset())
    env.objects["ma"] = ma
    slot = env.static("percpu_slot")

    def task(env: Env, t: Thread) -> Any:
        a = env.bpf_mem_cache_alloc(t, ma)
        if a is not None:
            env.WRITE_ONCE(t, a, "v", 1)
            env.xchg(t, slot, "p", a)                     # hand it to whoever frees it first
        b = env.bpf_mem_cache_alloc(t, ma)
        if b is not None:
            env.free(t, ma, b, policy)
        c = env.xchg(t, slot, "p", 0)
        if c:
            env.free(t, ma, c, policy)

    def nmi(env: Env, t: Thread) -> Any:
        x = env.xchg(t, slot, "p", 0)                      # free the task's object: re-enters if the task is inside
        if x:
            env.free(t, ma, x, policy)
        y = env.bpf_mem_cache_alloc(t, ma)
        if y is not None:
            env.WRITE_ONCE(t, y, "v", 3)
            env.free(t, ma, y, policy)

    run.spawn("task", 0, task)
    run.nmi("nmi", 0, nmi)


SCENARIOS = [Scenario(
    "nmi_reentrancy", "NMI programs allocate and free inside unit_alloc/unit_free/unit_free_rcu on the same CPU",
    1, setup, {"nmi_alloc_fail": True},
    {"free": E({"nmi_alloc_fail"}), "v6.18+share": E({"nmi_alloc_fail"}),
     "free_rcu": E({"nmi_alloc_fail"}),
     "call_rcu_free": E({"nmi_alloc_fail"}),
     "bug_free_rcu_no_gp": E({"nmi_alloc_fail"})},
    planted="check_free_by_rcu drops free_llist_extra_rcu (objects freed by a re-entering NMI are lost)",
    planted_policy="free_rcu", planted_expect=E({"invariant"}))]
