"""The proposals' promise, checked: a program holds a hash-map element while the map churns.

The immediate-reuse debate in one scenario: a reader looks up key 1 and reads the element's key and
value; meanwhile a writer on the other CPU (user space, through ``bpf(2)``: grace periods may end
between its calls) adds and deletes other keys, deletes key 1 with the free that crosses every
proposal's threshold (high watermark, RFC v1/v3 batch), and churns on, so the freed element goes
the whole way its allocator sends it: reused at once (``free``), after an RCU grace period
(``reuse_after_gp*``), or never, back to slab after an RCU (``free_after_gp``) or tasks-trace
(``no_reuse``) grace period.

The reader is a normal program (an RCU reader: every proposal protects it, so no violation may be
found) or a sleepable one (an RCU Tasks Trace reader, outside any RCU read section): reuse after an
RCU GP does not wait for it (it may read a reused element: accepted for hash-map values, as with
immediate reuse), and ``free_after_gp`` returns the element to slab under it, a use after free: the
RFC v3 patch says sleepable programs must then take ``bpf_rcu_read_lock()``; without it, a bug.
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Run, Thread
from . import FREES_WITH_FREE_RCU, Scenario, profile_for

E = frozenset
# add + delete pairs before the delete of key 1, so that key 1's free is the one that crosses the policy's
# threshold and heads its batch: more than high_watermark (6) frees for RFC v2/v4, from 6 for RFC v5, from
# 4 (the explorer's batch size) for RFC v1/v3; then AFTER pairs, for the grace period to end and a refill
# to reuse the batch
BEFORE = {"reuse_after_gp_pcpu": 5, "no_reuse": 3, "free_after_gp": 3}
AFTER = 6


def setup(run: Run, policy: str, sleepable: bool, planted: bool) -> None:
    env = run.env
    planted_bug = frozenset({"ttrace_as_rcu" if sleepable else "reuse_no_gp"}) if planted else frozenset()
    h = env.new_htab("h", max_entries=8, free_rcu=policy in FREES_WITH_FREE_RCU,
                     profile=profile_for(policy, planted_bug), delayed_free=policy == "call_rcu_free")
    boot = Thread("boot", 1, lambda e, t: None)
    env.bpf_map_update_elem(boot, h, 1, 100)

    def reader(env: Env, t: Thread) -> Any:
        ref = env.bpf_map_lookup_elem(t, h, 1)
        if ref is None:
            return None
        if sleepable:
            env.sleep_until_done(t, "writer")      # e.g. a faulting bpf_copy_from_user() while holding it
        got = []
        for _ in range(2):
            got.append((env.READ_ONCE(t, ref, "key"), env.READ_ONCE(t, ref, "value")))
        return got

    def writer(env: Env, t: Thread) -> Any:
        before = BEFORE.get(policy, 6)
        for k in range(2, 2 + before):
            env.bpf_map_update_elem(t, h, k, 100 * k)
            env.bpf_map_delete_elem(t, h, k)
        env.bpf_map_delete_elem(t, h, 1)            # the free that crosses the threshold: key 1 heads the batch
        for k in range(2 + before, 2 + before + AFTER):
            env.bpf_map_update_elem(t, h, k, 100 * k)
            env.bpf_map_delete_elem(t, h, k)

    run.spawn("reader", 0, reader, rcu=not sleepable, trace=sleepable)
    run.spawn("writer", 1, writer, rcu=False)     # bpf(2) from user space: each call its own short section


REUSE = ("reuse_after_gp", "reuse_after_gp_global", "reuse_after_gp_pcpu")
SCENARIOS = [
    Scenario("htab_churn_rcu", "an RCU reader holds an htab element while the map churns (the proposals' promise)",
             2, lambda r, p, x: setup(r, p, False, x), {"reused_read": True, "freed_read": True},
             {"free": E({"reused_read"}), **{p: E() for p in (*REUSE, "free_after_gp", "no_reuse", "free_rcu",
                                                              "call_rcu_free")}},
             planted="reuse_after_gp's kworker makes a batch reusable without waiting for its RCU GP",
             planted_policy="reuse_after_gp", planted_expect=E({"reuse_before_gp"}), default_schedules=1000,
             notes={"proposals": "each proposal waits at least for an RCU GP before reuse or slab: none found"}),
    Scenario("htab_churn_sleepable", "a sleepable program (RCU Tasks Trace reader) holds an htab element while "
             "the map churns", 2, lambda r, p, x: setup(r, p, True, x), {"reused_read": True, "freed_read": True},
             {"free": E({"reused_read"}), **{p: E({"reused_read"}) for p in (*REUSE, "free_rcu", "call_rcu_free")},
              "free_after_gp": E({"uaf"}), "no_reuse": E()},
             planted="no_reuse's batches wait for a normal RCU GP instead of a tasks-trace GP",
             planted_policy="no_reuse", planted_expect=E({"uaf"}), default_schedules=1000,
             notes={"free_after_gp": "use after free: RFC v3 4/6 requires bpf_rcu_read_lock() in sleepable "
                                     "programs; without it this is a bug",
                    "reuse_after_gp": "reuse after an RCU GP does not wait for sleepable readers: a reused "
                                      "element may be read (accepted for hash-map values)"}),
]
