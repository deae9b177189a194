"""Two tasks on one CPU allocate from the same cache and preempt each other.

Models the window that 566f6de3cea3 / 62cf51cb0ebe closed in 6.7: 6.1-6.6 restore IRQs in
``unit_alloc()`` *before* ``irq_work_raise()``, and ``irq_work_queue()`` first claims the work (marks
it pending) and only then queues it.  A task preempted between the two leaves the refill pending but
not queued; the other task's raises are no-ops and, once it has taken the last free objects, its
``bpf_mem_alloc()`` returns NULL although slab has memory (Hou Tao's qp-trie stress test, where every
operation came from the bpf syscall).  From 6.7 the work is claimed and queued with IRQs still off,
so no task on that CPU can run in between.  The tasks are syscall programs (no RCU read section) that
each take three objects and free them.
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Run, Thread
from . import Scenario, new_ma

E = frozenset
TAKE = 3            # with the explorer's watermarks (low 2) and a prefill of 4, the third raises the refill


def setup(run: Run, policy: str, planted: bool) -> None:
    env = run.env
    ma = new_ma(run, "free_v6.6" if planted else policy)
    env.objects["ma"] = ma

    def task(env: Env, t: Thread) -> Any:
        held = [env.bpf_mem_cache_alloc(t, ma) for _ in range(TAKE)]
        for ref in held:
            if ref is not None:
                env.free(t, ma, ref, policy)

    run.spawn("a", 0, task, rcu=False)
    run.spawn("b", 0, task, rcu=False)


SCENARIOS = [Scenario(
    "irq_work_preempt", "two tasks on one CPU allocate; one is preempted inside irq_work_raise() (6.1-6.6)",
    1, setup, {"alloc_fail": False},
    {"free": E(), "free_v6.6": E({"alloc_fail"})},
    planted="today's allocator with the 6.1-6.6 order: IRQs restored before irq_work_raise()",
    planted_policy="free", planted_expect=E({"alloc_fail"}),
    notes={"free_v6.6": "the bug 566f6de3cea3 fixed in 6.7 (no stable backport)"})]
