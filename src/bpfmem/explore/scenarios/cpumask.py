"""bpf_cpumask: a reader of the map's kptr against release + re-create, per kernel version.

Models kernel/bpf/cpumask.c:

- 6.3 (516f4d3397c9, ``free``): ``bpf_cpumask_kptr_get()`` =
  ``rcu_read_lock(); p = READ_ONCE(*kptr); if (p && !refcount_inc_not_zero(&p->usage)) p = NULL``;
  ``bpf_cpumask_release()`` = ``if (refcount_dec_and_test(&usage)) bpf_mem_free()`` — immediate
  reuse, so the refcount check can pass on a re-created cpumask (ABA).
- 6.4-6.5 (77473d1a962f, ``call_rcu_free``): release frees in a ``call_rcu`` callback;
  ``kptr_get`` is gone (1b403ce77dfb): a program reads the kptr under ``bpf_rcu_read_lock``
  and uses it with ``KF_RCU`` kfuncs, no refcount taken.
- 6.6+ (8e07bb9ebcd9, ``free_rcu``): release calls ``bpf_mem_cache_free_rcu``.

``bpf_cpumask_create()`` is ``bpf_mem_cache_alloc`` + ``memset(0)`` + ``refcount_set(usage, 1)``
(plain stores over the old contents); ``bpf_kptr_xchg`` is a fully ordered ``xchg``.
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Ref, Run, Thread
from . import Scenario, new_ma

E = frozenset


def setup(run: Run, policy: str, planted: bool) -> None:
    env = run.env
    ma = new_ma(run, policy, 32)
    env.objects["ma"] = ma
    mapval = env.static("map_value")
    boot = Thread("boot", 1, lambda e, t: None)
    kptr_get = policy.split("+")[0] == "free" or planted        # 6.3 code; the planted bug splits its refcount RMW

    made: dict[tuple[int, int], int] = {}                 # (object, generation) -> the mask it was created with

    def create(t: Thread, mask: int) -> Ref | None:
        p = env.bpf_mem_cache_alloc(t, ma)
        if p is None:
            return None
        made[(p.obj.id, p.gen)] = mask
        env.WRITE_ONCE(t, p, "cpumask", 0)                 # memset(cpumask, 0, sizeof(*cpumask))
        env.WRITE_ONCE(t, p, "usage", 0)
        env.WRITE_ONCE(t, p, "usage", 1)                   # refcount_set(&cpumask->usage, 1)
        env.WRITE_ONCE(t, p, "cpumask", mask)              # bpf_cpumask_set_cpu()
        return p

    def release(t: Thread, p: Ref) -> None:
        if env.refcount_dec_and_test(t, p):
            env.free(t, ma, p, policy)

    a = create(boot, 0xA)
    env.xchg(boot, mapval, "mask", a, "bpf_kptr_xchg")

    def reader(env: Env, t: Thread) -> Any:
        if not kptr_get:                                   # 6.4+: bpf_rcu_read_lock(); p = v->mask; use it
            p = env.rcu_dereference(t, mapval, "mask")
            if not p:
                return None
            m = env.READ_ONCE(t, p, "cpumask")
            if m != made.get((p.obj.id, p.gen)):
                env.wrong(t, f"read mask {m!r} through the kptr: not the cpumask it pointed at (ABA)")
            return m
        p = env.READ_ONCE(t, mapval, "mask")               # bpf_cpumask_kptr_get()
        if not p:
            return None
        if planted:
            usage = env.READ_ONCE(t, p, "usage")           # planted: refcount_inc_not_zero as load + store
            if not usage:
                return None
            env.WRITE_ONCE(t, p, "usage", usage + 1)
        elif not env.refcount_inc_not_zero(t, p):
            return None
        m = env.READ_ONCE(t, p, "cpumask")
        if m != made.get((p.obj.id, p.gen)):
            env.wrong(t, f"acquired a cpumask with mask {m!r}: not the one the kptr pointed at (ABA)")
        release(t, p)
        return m

    def owner(env: Env, t: Thread) -> Any:
        old = env.xchg(t, mapval, "mask", 0, "bpf_kptr_xchg")
        if old:
            release(t, old)
        b = create(t, 0xB)
        if b is not None:
            env.xchg(t, mapval, "mask", b, "bpf_kptr_xchg")

    run.spawn("reader", 0, reader)
    run.spawn("owner", 1, owner)


SCENARIOS = [Scenario(
    "cpumask_aba", "bpf_cpumask: kptr reader (6.3 kptr_get; 6.4+ RCU) vs release + re-create", 2, setup,
    {"freed_read": True},
    {"free": E({"wrong_result", "reused_read"}), "v6.18+share": E({"wrong_result", "reused_read"}),
     "call_rcu_free": E(), "free_rcu": E(),
     "bug_free_rcu_no_gp": E({"reuse_before_gp"})},
    planted="kptr_get's refcount_inc_not_zero done as a load and a store (not one atomic RMW)",
    planted_policy="free_rcu", planted_expect=E({"last_ref"}))]
