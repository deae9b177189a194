"""The seed's qp-trie: lock-free lookup against copy-on-write delete + insert, nodes on bpf_mem_alloc.

Models Hou Tao's qp-trie (bpf-next v1/v2, Sept 2022, lore
20220924133620.4147153-1-houtao@huaweicloud.com) as far as memory goes:
branch nodes ``struct qp_trie_branch`` with ``index``, ``bitmap`` and
``nodes[]`` (the child slot is ``popcount(bitmap & (bit - 1))``); updates
copy a branch, fill the copy with plain stores, publish it with
``rcu_assign_pointer()`` and free the old one; lookup walks with
``rcu_dereference()`` and plain loads of ``bitmap``.  The posted code used
kmalloc + ``call_rcu``; the cover letter says bpf_mem_alloc was tried and
ran into immediate reuse.  Here branches and leaves come from one
``bpf_mem_alloc`` (so a freed branch can come back as a leaf).

The version scheme: the seed says "two version numbers are added for each
internal node ...: one version is saved in its parent node and another in
itself".  That demo was never posted (not in the bpf list archive), so the
model follows the seed's sentence and Alexei Starovoitov's review
(lore 20220927011949.sxxkyhjiig7wg7kv@macbook-pro-4.dhcp.thefacebook.com:
"a sequence number ... Every reuse would inc the seq.  If seq number
differs, re-read the node pointer from parent"): every allocation increments
the version kept in the reused memory; the parent stores the child's version
next to the pointer; the reader compares the node's own version with the
parent's after reading the node (``smp_rmb`` before the check, the writer's
``smp_wmb`` between the new version and the other fields) and restarts from
the root on a mismatch.

Simplifications: two levels (``roots[hi nibble]`` -> branch -> leaf); fields of
different node types do not overlap in memory; deleting a leaf always copies
the branch (no merge of a two-child branch).
"""

from __future__ import annotations

from typing import Any

from ..runtime import Env, Ref, Run, Thread
from . import Scenario, new_ma

E = frozenset
KEY = 0x12


def popcount(x: int) -> int:
    return bin(x).count("1")


def setup(run: Run, policy: str, versions: bool, *, wmb: bool = True, rmb: bool = True,
          publish_first: bool = False) -> None:
    """``publish_first`` (a planted bug) publishes a copied branch before filling it."""
    env = run.env
    ma = new_ma(run, policy)
    env.objects["ma"] = ma
    trie = env.static("trie")
    boot = Thread("boot", 1, lambda e, t: None)

    def new_node(t: Thread, fields: list[tuple[str, Any]], publish: tuple[str, str] | None = None
                 ) -> tuple[Ref, int]:
        r = env.bpf_mem_cache_alloc(t, ma)
        assert r is not None
        ver = 0
        if versions:
            ver = env.READ_ONCE(t, r, "ver") + 1          # the reused memory's version, incremented
            env.WRITE_ONCE(t, r, "ver", ver)
            if wmb:
                env.smp_wmb(t)
        if publish is not None and publish_first:
            env.rcu_assign_pointer(t, trie, publish[0], r)
        for f, v in fields:
            env.WRITE_ONCE(t, r, f, v)
        return r, ver

    def leaf(t: Thread, key: int) -> tuple[Ref, int]:
        return new_node(t, [("key", key), ("value", key * 10)])

    def publish(t: Thread, slot: int, r: Ref, ver: int) -> None:
        if versions:
            env.WRITE_ONCE(t, trie, f"roots_ver[{slot}]", ver)
        if not publish_first:
            env.rcu_assign_pointer(t, trie, f"roots[{slot}]", r)

    def branch(t: Thread, slot: int, kids: list[tuple[int, Ref, int]]) -> None:
        """A branch for ``roots[slot]`` with children (nibble, leaf, leaf version), published."""
        fields: list[tuple[str, Any]] = [("index", slot), ("bitmap", sum(1 << n for n, _, _ in kids))]
        for i, (_n, lf, lv) in enumerate(kids):
            fields.append((f"nodes[{i}]", lf))
            if versions:
                fields.append((f"nodes_ver[{i}]", lv))
        r, ver = new_node(t, fields, (f"roots[{slot}]", "") if publish_first else None)
        publish(t, slot, r, ver)

    l2, v2 = leaf(boot, 0x12)
    l3, v3 = leaf(boot, 0x13)
    branch(boot, 1, [(2, l2, v2), (3, l3, v3)])

    def lookup(env: Env, t: Thread) -> Any:
        """``qp_trie_lookup_elem(0x12)``: 0x12 is present in every sequential order."""
        bit = 1 << (KEY & 0xF)
        for _attempt in range(3):
            br = env.rcu_dereference(t, trie, f"roots[{KEY >> 4}]")
            pver = env.READ_ONCE(t, trie, f"roots_ver[{KEY >> 4}]") if versions else 0
            if not br:
                env.wrong(t, "roots[1] is NULL although 0x12 was never deleted")
                return None
            bitmap = env.READ_ONCE(t, br, "bitmap")
            lf, lver = None, 0
            if bitmap & bit:
                iip = popcount(bitmap & (bit - 1))
                lf = env.rcu_dereference(t, br, f"nodes[{iip}]")
                if versions:
                    lver = env.READ_ONCE(t, br, f"nodes_ver[{iip}]")
            if versions:
                if rmb:
                    env.smp_rmb(t)
                nver = env.READ_ONCE(t, br, "ver")
                if nver != pver:
                    env.log(t, f"branch version {nver} != {pver} in the parent: restart")
                    continue
            if not lf:
                env.wrong(t, "lookup(0x12) found nothing although 0x12 was never deleted")
                return None
            k = env.READ_ONCE(t, lf, "key")
            if versions:
                if rmb:
                    env.smp_rmb(t)
                if env.READ_ONCE(t, lf, "ver") != lver:
                    env.log(t, "leaf version changed: restart")
                    continue
            if k != KEY:
                env.wrong(t, f"lookup(0x12) reached the leaf of {k!r}")
            return k
        return "gave up"

    def writer(env: Env, t: Thread) -> Any:
        """Delete 0x13 (copy the branch without it), then insert 0x32 (a new branch)."""
        old = env.READ_ONCE(t, trie, "roots[1]")           # rcu_dereference_protected under the lock
        bitmap = env.READ_ONCE(t, old, "bitmap")
        kids = []
        for i, n in enumerate(n for n in range(16) if bitmap >> n & 1):
            lf = env.READ_ONCE(t, old, f"nodes[{i}]")
            lv = env.READ_ONCE(t, old, f"nodes_ver[{i}]") if versions else 0
            kids.append((n, lf, lv))
        gone = [k for k in kids if k[0] == 3]
        branch(t, 1, [k for k in kids if k[0] != 3])
        env.free(t, ma, old, policy)
        for _n, lf, _v in gone:
            env.free(t, ma, lf, policy)
        l32, v32 = leaf(t, 0x32)
        branch(t, 3, [(2, l32, v32)])

    run.spawn("lookup", 0, lookup)
    run.spawn("writer", 0 if run.m.num_possible_cpus() == 1 else 1, writer)


SCENARIOS = [
    Scenario("qp_trie", "the seed's qp-trie: lookup vs copy-on-write delete + insert, nodes on bpf_mem_alloc", 2,
             lambda r, p, x: setup(r, p, False, publish_first=x), {},
             {"free": E({"reused_read", "freed_read", "wrong_result"}),
              "v6.18+share": E({"reused_read", "freed_read", "wrong_result"}), "free_rcu": E(), "call_rcu_free": E(),
              "bug_free_rcu_no_gp": E({"reuse_before_gp"})},
             planted="a copied branch is published before it is filled", planted_policy="free_rcu",
             planted_expect=E({"wrong_result"})),
    Scenario("qp_trie_versions", "the qp-trie with the two-version-number scheme (parent's copy vs the node's own)",
             2, lambda r, p, x: setup(r, p, True, wmb=not x), {"reused_read": True, "freed_read": True},
             {"free": E({"reused_read"}), "free_rcu": E(), "call_rcu_free": E(),
              "bug_free_rcu_no_gp": E({"reuse_before_gp"})},
             planted="the writer's smp_wmb between the new version and the node's fields is missing",
             planted_policy="free", planted_expect=E({"wrong_result"})),
]
