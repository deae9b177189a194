"""Hash map: a program holds an element while another CPU deletes it and adds another key.

Models the reuse the kernel accepts for htab values (``BPF_F_NO_PREALLOC``
elements freed with ``bpf_mem_cache_free`` are reused at once: a lookup's
pointer may show another key's contents; kernel/bpf/hashtab.c, every version
since 6.1) and the publication order the update path relies on:
``alloc_htab_elem()`` copies key and value before
``hlist_nulls_add_head_rcu()`` links the element.
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Run, Thread
from . import FREES_WITH_FREE_RCU, Scenario, attach_whatif, profile_for

E = frozenset


def setup(run: Run, policy: str, planted: bool) -> None:
    env = run.env
    h = env.new_htab("h", free_rcu=policy in FREES_WITH_FREE_RCU, profile=profile_for(policy))
    attach_whatif(h.elems.ma, policy)  # type: ignore[attr-defined]
    boot = Thread("boot", 1, lambda e, t: None)
    env.bpf_map_update_elem(boot, h, 1, 100)

    def reader(env: Env, t: Thread) -> Any:
        ref = env.bpf_map_lookup_elem(t, h, 1)
        got = None
        if ref is not None:
            got = (env.READ_ONCE(t, ref, "key"), env.READ_ONCE(t, ref, "value"))
        ref2 = env.bpf_map_lookup_elem(t, h, 2)
        if ref2 is not None:
            v = env.READ_ONCE(t, ref2, "value")
            if v != 200:
                env.wrong(t, f"key 2 found with value {v!r}: its update had not finished")
        return got

    def writer(env: Env, t: Thread) -> Any:
        env.bpf_map_delete_elem(t, h, 1)
        env.bpf_map_update_elem(t, h, 2, 200, late_value=planted)

    run.spawn("reader", 0, reader)
    run.spawn("writer", 1, writer)


SCENARIOS = [Scenario(
    "htab_reuse", "htab lookup holds an element while another CPU deletes it and adds another key", 2, setup,
    {"reused_read": True, "freed_read": True},
    {"free": E({"reused_read", "freed_read"}), "v6.18+share": E({"reused_read", "freed_read"}), "free_rcu": E(),
     "bug_free_rcu_no_gp": E({"reuse_before_gp"})},
    planted="the update stores the value after linking the element (publication before initialisation)",
    planted_policy="free_rcu", planted_expect=E({"wrong_result"}))]
