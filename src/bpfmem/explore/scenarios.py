"""Shipped exploration scenarios and the policies they run under.

Policies (how the data structure frees its memory):

| policy | free path | kernel |
|---|---|---|
| ``free`` | ``bpf_mem_cache_free``: reusable at once | htab in every version; bpf_cpumask before 6.6 |
| ``free_rcu`` | ``bpf_mem_cache_free_rcu``: reusable after an RCU GP | bpf_cpumask, LPM trie since 6.6 |
| ``bug_free_rcu_no_gp`` | ``bpf_mem_cache_free_rcu`` that forgets the GP | a planted bug the explorer must find |

Each scenario states the verdict it expects per policy (``expect``): the set
of violation kinds that must be found within the budget (``found``) or
``none`` (no violation may be found).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..alloc import V6_6, BpfMemAlloc, bpf_mem_alloc_init
from .runtime import Env, Ref, Run, Thread

POLICIES = ("free", "free_rcu", "bug_free_rcu_no_gp")


class V6_6_FreeRcuNoGp(V6_6):
    """Planted bug: bpf_mem_cache_free_rcu hands the object back for immediate reuse."""

    name = "bug:free_rcu_no_gp"
    free_rcu_waits_for_gp = False


class ExploreWatermarks:
    """Small caches (low 2, high 6, batch 3: what a 4 KiB unit gets): refills, trims and the trip to slab
    happen within a handful of operations, so short schedules reach every path (and run fast)."""

    def init_refill_work(self, c: Any) -> None:
        c.low_watermark, c.high_watermark, c.batch = 2, 6, 3


def profile_for(policy: str) -> V6_6:
    cls = V6_6_FreeRcuNoGp if policy == "bug_free_rcu_no_gp" else V6_6
    return cls(watermarks=ExploreWatermarks())


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    ncpus: int
    setup: Callable[[Run, str], None]
    accepted: dict[str, bool]                      # violation kind -> accepted by the kernel here
    expect: dict[str, frozenset[str]]              # policy -> kinds that must be found (empty: none)
    default_schedules: int = 2000


def _ma(run: Run, policy: str, size: int = 56) -> BpfMemAlloc:
    ma = BpfMemAlloc(run.m, run.mm, run.rcu, profile_for(policy))
    bpf_mem_alloc_init(ma, size, False, run.memcg)
    return ma


# ---------------------------------------------------------------------------------------------
# htab: a program holds an element while another CPU deletes it and re-adds another key
# ---------------------------------------------------------------------------------------------

def setup_htab(run: Run, policy: str) -> None:
    env = run.env
    h = env.new_htab("h", free_rcu=policy != "free", profile=profile_for(policy))
    boot = Thread("boot", 1, lambda e, t: iter(()))
    env.htab_update(boot, h, 1, 100)

    def reader(env: Env, t: Thread) -> Any:
        ref = env.htab_lookup(t, h, 1)
        yield "after_lookup"
        if ref is None:
            return None
        v = env.read(t, ref, "value")
        yield "after_read"
        k = env.read(t, ref, "key")
        return (k, v)

    def writer(env: Env, t: Thread) -> Any:
        env.htab_delete(t, h, 1)
        yield "after_delete"
        env.htab_update(t, h, 2, 200)
        yield "after_add"

    run.spawn("reader", 0, reader)
    run.spawn("writer", 1, writer)


# ---------------------------------------------------------------------------------------------
# qp-trie (the seed's demo): internal nodes on bpf_mem_alloc, lookup vs delete + insert
# ---------------------------------------------------------------------------------------------

def setup_qp_trie(run: Run, policy: str, versions: bool) -> None:
    """A two-level trie: root slot -> node for a prefix (children by low nibble) -> leaf.

    Keys 0x12 and 0x13 share node N (prefix 0x1).  The writer deletes 0x13
    (copies N to N' without it, publishes N', frees N) and inserts 0x32 (a new
    node M for prefix 0x3, which may reuse N's memory).  The reader looks up
    0x12, which is present in every sequential order.  With version numbers,
    the parent keeps the child's version next to the pointer, every node
    keeps its own, and the reader retries from the root on a mismatch.
    """
    env = run.env
    ma = _ma(run, policy)
    rcu_free = policy != "free"
    boot = Thread("boot", 1, lambda e, t: iter(()))
    ver = [0]

    def next_ver() -> int:
        ver[0] += 1
        return ver[0]

    def node(t: Thread, prefix: int, children: dict[int, Ref]) -> Ref:
        ref = env.alloc(t, ma, prefix=prefix, children=dict(children), ver=next_ver())
        assert ref is not None
        return ref

    def leaf(t: Thread, key: int) -> Ref:
        ref = env.alloc(t, ma, key=key, value=key * 10, ver=next_ver())
        assert ref is not None
        return ref

    n = node(boot, 1, {2: leaf(boot, 0x12), 3: leaf(boot, 0x13)})
    env.slots["root"] = {1: (n, n.obj.fields["ver"])}          # parent slot: (pointer, child version)

    def lookup(env: Env, t: Thread) -> Any:
        key = 0x12
        for _attempt in range(3):
            ptr, pver = env.slots["root"][key >> 4]
            yield "read_root"
            children = env.read(t, ptr, "children")
            yield "read_children"
            child = (children or {}).get(key & 0xF)
            if versions:
                nver = env.read(t, ptr, "ver")
                if nver != pver:
                    env.log(t, f"version mismatch ({nver} != {pver}): retry")
                    yield "retry"
                    continue
            if child is None:
                env.wrong(t, "lookup(0x12) found nothing although 0x12 was never deleted")
                return None
            k = env.read(t, child, "key")
            if k != key:
                env.wrong(t, f"lookup(0x12) reached the leaf of 0x{k:x}")
            return k
        return "gave up"

    def writer(env: Env, t: Thread) -> Any:
        old, _ = env.slots["root"][1]
        children = dict(old.obj.fields["children"])
        gone = children.pop(3)
        n2 = node(t, 1, children)
        env.slots["root"][1] = (n2, n2.obj.fields["ver"])
        env.log(t, f"publish node obj#{n2.obj.id} for prefix 0x1")
        yield "published"
        env.free(t, ma, old, rcu=rcu_free)
        env.free(t, ma, gone, rcu=rcu_free)
        yield "freed"
        m = node(t, 3, {2: leaf(t, 0x32)})
        env.slots["root"][3] = (m, m.obj.fields["ver"])
        env.log(t, f"publish node obj#{m.obj.id} for prefix 0x3")
        yield "inserted"

    run.spawn("lookup", 0, lookup)
    run.spawn("writer", 0 if run.m.num_possible_cpus() == 1 else 1, writer)


# ---------------------------------------------------------------------------------------------
# bpf_cpumask: acquire by refcount-not-zero against release + re-create
# ---------------------------------------------------------------------------------------------

def setup_cpumask(run: Run, policy: str) -> None:
    env = run.env
    ma = _ma(run, policy, 32)
    rcu_free = policy != "free"
    boot = Thread("boot", 1, lambda e, t: iter(()))
    a = env.alloc(boot, ma, usage=1, mask=0xA)
    env.slots["kptr"] = a

    def acquirer(env: Env, t: Thread) -> Any:
        p = env.slots["kptr"]                                   # bpf_cpumask_kptr_get(): read under RCU
        yield "read_kptr"
        if p is None:
            return None
        usage = env.read(t, p, "usage")
        yield "read_usage"
        if not usage:
            return None                                         # refcount was zero: not acquired
        env.write(t, p, "usage", usage + 1)
        mask = env.read(t, p, "mask")
        if mask != 0xA:
            env.wrong(t, f"acquired a cpumask with mask 0x{mask:x}: not the one the kptr pointed at (ABA)")
        return mask

    def owner(env: Env, t: Thread) -> Any:
        p = env.slots["kptr"]
        env.slots["kptr"] = None                                # bpf_kptr_xchg(&v->mask, NULL)
        env.log(t, "kptr_xchg -> NULL")
        p.obj.fields["usage"] -= 1                              # bpf_cpumask_release(): refcount to 0
        env.free(t, ma, p, rcu=rcu_free)
        yield "released"
        b = env.alloc(t, ma, usage=1, mask=0xB)                 # bpf_cpumask_create()
        env.log(t, f"created cpumask obj#{b.obj.id if b else 0} with mask 0xb")
        yield "created"

    run.spawn("acquirer", 0, acquirer)
    run.spawn("owner", 1, owner)


# ---------------------------------------------------------------------------------------------
# NMI re-entrancy on one CPU
# ---------------------------------------------------------------------------------------------

def setup_nmi(run: Run, policy: str) -> None:
    env = run.env
    ma = _ma(run, policy)

    def task(env: Env, t: Thread) -> Any:
        a = env.alloc(t, ma, v=1)
        yield "allocated"
        if a is not None:
            env.free(t, ma, a)
        yield "freed"
        b = env.alloc(t, ma, v=2)
        if b is not None:
            env.free(t, ma, b)

    def nmi(env: Env, t: Thread) -> Any:
        x = env.alloc(t, ma, v=3)
        if x is not None:
            env.free(t, ma, x)
        yield "nmi_done"

    run.spawn("task", 0, task)
    run.nmi("nmi", 0, nmi)
    env.objects["ma"] = ma


def check_nmi(run: Run) -> None:
    """After the run every list is consistent: free_cnt matches, active is 0, no object lost."""
    ma: BpfMemAlloc = run.env.objects["ma"]
    c = ma.cache[0]  # type: ignore[index]
    if c.free_cnt != len(c.free_llist) or c.active != 0:
        run.checker.flag("invariant", f"cache cpu0: free_cnt {c.free_cnt}, free_llist {len(c.free_llist)}, "
                                      f"active {c.active}")
    if ma.outstanding != 0:
        run.checker.flag("leak", f"{ma.outstanding} objects still allocated")


FINAL_CHECKS: dict[str, Callable[[Run], None]] = {"nmi_reentrancy": check_nmi}

E = frozenset
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("htab_reuse", "htab lookup holds an element while another CPU deletes it and adds another key",
             2, setup_htab, {"reused_read": True},
             {"free": E({"reused_read"}), "free_rcu": E(), "bug_free_rcu_no_gp": E({"reused_read",
                                                                                     "reuse_before_gp"})}),
    Scenario("qp_trie", "the seed's qp-trie: lookup vs delete + insert, internal nodes on bpf_mem_alloc",
             2, lambda r, p: setup_qp_trie(r, p, False), {},
             {"free": E({"reused_read", "wrong_result"}), "free_rcu": E(), "bug_free_rcu_no_gp": E({"reuse_before_gp"})}),
    Scenario("qp_trie_versions", "the qp-trie with the two-version-number scheme",
             2, lambda r, p: setup_qp_trie(r, p, True), {"reused_read": True},
             {"free": E(), "free_rcu": E(), "bug_free_rcu_no_gp": E({"reuse_before_gp"})}),
    Scenario("cpumask_aba", "bpf_cpumask acquire by refcount-not-zero vs release + re-create",
             2, setup_cpumask, {}, {"free": E({"wrong_result", "reused_read"}), "free_rcu": E(),
                                    "bug_free_rcu_no_gp": E({"wrong_result", "reuse_before_gp"})}),
    Scenario("nmi_reentrancy", "NMI programs allocate and free inside unit_alloc/unit_free on the same CPU",
             1, setup_nmi, {"nmi_alloc_fail": True}, {"free": E({"nmi_alloc_fail"}), "free_rcu": E({"nmi_alloc_fail"}),
                                                       "bug_free_rcu_no_gp": E({"nmi_alloc_fail"})}),
)}
