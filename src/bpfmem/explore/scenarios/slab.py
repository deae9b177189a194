"""The trip to slab: a reader holds a pointer while the allocator trims the object back to kmalloc.

Models ``free_bulk()`` -> ``free_by_rcu_ttrace`` -> ``call_rcu_tasks_trace`` ->
``__free_rcu`` -> ``kfree`` (memalloc.c, 6.6+; ``rcu_trace_implies_rcu_gp()``
so the tasks-trace GP also waits for RCU readers).  A writer publishes an object,
unpublishes it and frees more than ``high_watermark`` objects so the trim runs;
the reader loads the pointer and reads through it.  An RCU reader (a normal
program) and a sleepable program (an RCU Tasks Trace reader) are protected; a
reader outside both is not.
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Ref, Run, Thread
from . import Scenario, new_ma

E = frozenset
NOBJ = 7


def setup(run: Run, policy: str, reader_kind: str, planted: bool) -> None:
    env = run.env
    ma = new_ma(run, policy, planted=frozenset({"ttrace_as_rcu"}) if planted and reader_kind == "trace"
                else frozenset())
    env.objects["ma"] = ma
    slot = env.static("slot")
    boot = Thread("boot", 1, lambda e, t: None)
    objs: list[Ref] = []
    for i in range(NOBJ):
        r = env.bpf_mem_cache_alloc(boot, ma)
        assert r is not None
        env.WRITE_ONCE(boot, r, "value", i)
        objs.append(r)
    env.rcu_assign_pointer(boot, slot, "p", objs[-1])

    def reader(env: Env, t: Thread) -> Any:
        p = env.rcu_dereference(t, slot, "p")
        if not p:
            return None
        if planted and reader_kind == "rcu":
            env.rcu_read_unlock(t)                      # planted: the pointer outlives the read section
        return env.READ_ONCE(t, p, "value")

    def writer(env: Env, t: Thread) -> Any:
        env.rcu_assign_pointer(t, slot, "p", 0)
        # boot left free_cnt at 3 (prefill 4, refills of 3 below low 2); the 4th free crosses high 6 and
        # free_bulk trims the most recently freed first: the published object is in the first batch to slab
        for r in objs[:3] + objs[-1:]:
            env.free(t, ma, r, policy)

    rcu = reader_kind == "rcu"
    run.spawn("reader", 0, reader, rcu=rcu, trace=reader_kind == "trace")
    run.spawn("writer", 1, writer)


_POLICIES = ("free", "free_rcu", "call_rcu_free")
SCENARIOS = [
    Scenario("slab_trim_rcu", "an RCU reader holds an object while free_bulk trims it back to slab", 2,
             lambda r, p, x: setup(r, p, "rcu", x), {"freed_read": True},
             {p: E() for p in _POLICIES},
             planted="the reader keeps using the pointer after rcu_read_unlock()", planted_policy="free",
             planted_expect=E({"uaf"})),
    Scenario("slab_trim_sleepable", "a sleepable program (RCU Tasks Trace reader) holds an object while it is "
             "trimmed to slab", 2, lambda r, p, x: setup(r, p, "trace", x), {"freed_read": True},
             {p: E() for p in _POLICIES},
             planted="trimmed objects wait for a normal RCU GP instead of an RCU Tasks Trace GP",
             planted_policy="free", planted_expect=E({"uaf"})),
]
