"""Who pays for a map's elements, by kernel release, and what happens at a memory cgroup limit.

Problem (Daniel Borkmann's review of the 5.11 memcg series): an orchestrator sizes a container's
memcg for the application; a BPF program on a cgroup hook of that container, or a softirq, updates a
map another agent created.  Whose limit does the element hit?  And with memcg accounting nothing is
limited unless some cgroup sets a limit.

Rules (``CHARGE_RULES``), each the kernel's as released:

- ``v5.10``: no memcg charge for elements; ``bpf_map_charge_init`` precharges the map's estimated
  cost to the creating user's ``locked_vm`` at creation, -EPERM past ``RLIMIT_MEMLOCK`` (64 KiB by
  default, 8 MiB from 5.16, 9dcc38e2813e).
- ``rfc-v8``: the 5.11 series v7/v8 (never merged): process context charges the updating task's
  memcg, interrupt context the map's (``bpf_map_kmalloc_node``).
- ``v5.11``: as merged (48edc1f78aab and the series, merge 97306be45fbe): always the map's memcg
  (``set_active_memcg(map->memcg)``), in every context; elements GFP_ATOMIC, so at the limit the
  charge is forced past it (``__GFP_HIGH``).
- ``v6.0``: the same memcg; ace2bee839e0 drops ``__GFP_HIGH`` from element allocations: ENOMEM at
  the limit (Yafang Shao, "Make non-preallocated allocation low priority"; 5.19.y too).
- ``v6.1`` and later (``v6.18``): ``bpf_mem_alloc`` refills charge the allocator's objcg (the
  creator's memcg) with GFP_NOWAIT from irq_work; per-CPU spares; ENOMEM once the free list is empty.

At the limit, besides the update's own result: a process whose own cgroup is, or is below, the
cgroup that reached its limit meets the memcg OOM killer at its next blocking charge (a page fault,
a page table, a pipe page): measured on 6.18, the process holding the map in its own limited cgroup
is killed before any update fails.  Every number here is modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backend.model import ModelBackend
from ..backend.protocol import MapSpec
from ..maps.base import E2BIG, ENOMEM, round_up, roundup_pow_of_two
from ..mm import PAGE_COUNTER_MAX, MemCgroup, kmalloc_charge

PAGE = 4096
MEMLOCK_DEFAULT_OLD = 64 << 10           # RLIMIT_MEMLOCK default before 5.16
MEMLOCK_DEFAULT = 8 << 20                # from 5.16 (9dcc38e2813e)
CONTEXTS = ("process", "hook", "softirq", "nmi")


@dataclass(frozen=True)
class ChargeRule:
    name: str
    kernel: str
    source: str
    memlock: bool = False                # precharge RLIMIT_MEMLOCK at creation, no memcg charge for elements
    current_in_process_ctx: bool = False
    forced: bool = False                 # GFP_ATOMIC element allocations: forced past the limit
    bpf_ma: bool = False
    merged: bool = True


CHARGE_RULES: dict[str, ChargeRule] = {r.name: r for r in (
    ChargeRule("v5.10", "≤ 5.10", "bpf_map_charge_init (b936ca643ade, c85d69135a91)", memlock=True),
    ChargeRule("rfc-v8", "5.11 series v7/v8", "lore 20201126023000.GB840171@carbon.dhcp.thefacebook.com",
               current_in_process_ctx=True, forced=True, merged=False),
    ChargeRule("v5.11", "5.11-5.19", "merge 97306be45fbe (48edc1f78aab ...)", forced=True),
    ChargeRule("v6.0", "6.0", "ace2bee839e0 (no __GFP_HIGH for elements)"),
    ChargeRule("v6.18", "6.1-6.19", "7c8199e24fa0 (bpf_mem_alloc, objcg refills)", bpf_ma=True),
)}


@dataclass(frozen=True)
class Update:
    """``count`` element additions from ``context`` (process/hook: a task of ``cgroup``)."""

    context: str
    count: int
    cgroup: str = ""

    @staticmethod
    def parse(text: str) -> Update:
        """``process:/orch/app=5000``, ``hook:/orch/app=5000``, ``softirq=1000``, ``nmi=10``."""
        what, _, n = text.partition("=")
        ctx, _, cg = what.partition(":")
        if ctx not in CONTEXTS:
            raise ValueError(f"update context must be one of {', '.join(CONTEXTS)}, got {ctx!r} in {text!r}")
        try:
            count = int(n)
        except ValueError:
            raise ValueError(f"update {text!r}: give a count after '=' (e.g. {ctx}=1000)") from None
        if count < 1:
            raise ValueError(f"update {text!r}: the count must be >= 1")
        if ctx in ("process", "hook") and not cg:
            raise ValueError(f"update {text!r}: a {ctx} update names its task's cgroup ({ctx}:/path=N)")
        if ctx in ("softirq", "nmi") and cg:
            raise ValueError(f"update {text!r}: interrupt context has no cgroup of its own")
        return Update(ctx, count, cg)


@dataclass
class Scenario:
    cgroups: dict[str, int | None]       # path -> limit (None: no limit)
    map_in: str
    updates: list[Update]
    value_size: int = 64
    key_size: int = 4
    max_entries: int = 1 << 20
    cpus: int = 4
    memlock_limit: int = MEMLOCK_DEFAULT_OLD
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for path in self.cgroups:
            if not path.startswith("/") or path == "/" or "//" in path or path.endswith("/"):
                raise ValueError(f"--cgroup {path!r}: give an absolute path below the root, like /orch/app")
        if self.map_in not in self.cgroups and self.map_in != "/":
            raise ValueError(f"--map-in {self.map_in!r} is not one of the --cgroup paths ({', '.join(self.cgroups)})")
        for u in self.updates:
            if u.cgroup and u.cgroup not in self.cgroups and u.cgroup != "/":
                raise ValueError(f"--update: cgroup {u.cgroup!r} is not one of the --cgroup paths")
        if sum(u.count for u in self.updates) > self.max_entries:
            raise ValueError(f"the updates add {sum(u.count for u in self.updates)} elements, more than "
                             f"--max-entries {self.max_entries}")


def _tree(root: MemCgroup, cgroups: dict[str, int | None]) -> dict[str, MemCgroup]:
    """Every path (parents made as needed, without limit) as a memcg under ``root``."""
    out: dict[str, MemCgroup] = {"/": root}
    for path in sorted(cgroups, key=lambda p: p.count("/")):
        parent = "/"
        for part in path.strip("/").split("/"):
            here = (parent.rstrip("/") + "/" + part)
            if here not in out:
                limit = cgroups.get(here)
                out[here] = MemCgroup(here, out[parent], PAGE_COUNTER_MAX if limit is None else limit)
            parent = here
    return out


def _under(path: str, ancestor: str) -> bool:
    return ancestor == "/" or path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def htab_cost_5_10(key: int, value: int, max_entries: int, ncpus: int) -> int:
    """``htab_map_alloc`` cost of 5.10 (no prealloc flag assumed: the element estimate is the same):
    buckets + elements + one extra element per CPU, rounded up to pages (``bpf_map_charge_init``)."""
    elem = 48 + round_up(key, 8) + round_up(value, 8)
    cost = roundup_pow_of_two(max_entries) * 16 + elem * max_entries + elem * ncpus
    return round_up(cost, PAGE)


def run_rule(rule: ChargeRule, sc: Scenario) -> dict[str, Any]:
    """Replay the scenario's updates under ``rule``: per cgroup what was charged, and every outcome."""
    if rule.memlock:
        cost = htab_cost_5_10(sc.key_size, sc.value_size, sc.max_entries, sc.cpus)
        ok = cost <= sc.memlock_limit
        return {"rule": rule.name, "kernel": rule.kernel, "source": rule.source, "merged": rule.merged,
                "memlock": {"cost_bytes": cost, "limit_bytes": sc.memlock_limit,
                            "create": "ok" if ok else "EPERM (RLIMIT_MEMLOCK)",
                            "under_defaults": {f"{lim >> 10} KiB": "ok" if cost <= lim else "EPERM"
                                               for lim in (MEMLOCK_DEFAULT_OLD, MEMLOCK_DEFAULT)}},
                "cgroups": {}, "updates": [{"context": u.context, "cgroup": u.cgroup or None, "count": u.count,
                                            "charged_to": "nobody (elements are not accounted)",
                                            "ok": u.count if ok else 0, "failed": 0 if ok else u.count}
                                           for u in sc.updates],
                "outcomes": ["map creation fails with EPERM: the estimated cost passes RLIMIT_MEMLOCK"] if not ok
                else ["no memcg sees the elements; only the creation-time memlock estimate is limited"]}
    be = ModelBackend(sc.cpus, "v6.18" if rule.bpf_ma else "kmalloc_rcu", breakdown=False, memo=False)
    mm = be.mm
    tree = _tree(mm.root_memcg, sc.cgroups)
    map_cg = tree[sc.map_in]
    be.memcg = map_cg
    elem = 48 + round_up(sc.key_size, 8) + round_up(sc.value_size, 8)
    if rule.bpf_ma:
        m = be.map_create(MapSpec("hash", sc.key_size, sc.value_size, sc.max_entries, True))
        htab = m.htab
    else:
        htab = None
        # the map itself (struct + buckets), charged to the creator at BPF_MAP_CREATE
        if not map_cg.try_charge(kmalloc_charge(1032) + 16 * roundup_pow_of_two(sc.max_entries)):
            raise ValueError(f"the map's creation charge does not fit {sc.map_in}'s limit")
    rows, outcomes = [], []
    key = 0
    forced_total = 0
    for u in sc.updates:
        if rule.current_in_process_ctx and u.context in ("process", "hook"):
            target, who = tree[u.cgroup], u.cgroup
        else:
            target, who = map_cg, sc.map_in
        ok = failed = 0
        cpu = be.machine.cpus[(0 if u.context in ("process", "hook") else 1) % sc.cpus]
        for _ in range(u.count):
            if htab is not None:
                r = htab.update(cpu, key)
                key += 1
                if r == 0:
                    ok += 1
                elif r in (-ENOMEM, -E2BIG):
                    failed += 1
                continue
            charge = kmalloc_charge(elem)
            if target.try_charge(charge):
                ok += 1
            elif rule.forced:
                target.force_charge(charge)
                forced_total += charge
                ok += 1
            else:
                failed += 1
        rows.append({"context": u.context, "cgroup": u.cgroup or None, "count": u.count, "charged_to": who,
                     "ok": ok, "failed": failed})
        if failed:
            outcomes.append(f"{u.context}{':' + u.cgroup if u.cgroup else ''}: {failed:,} of {u.count:,} "
                            f"updates fail with ENOMEM ({who} is at its limit; no reclaim, no OOM for these)")
    if forced_total:
        outcomes.append(f"{forced_total:,} bytes charged past a limit (GFP_ATOMIC: forced), failcnt raised")
    cg_rows: dict[str, Any] = {}
    for path, cg in tree.items():
        if path == "/":
            continue
        full = cg.limit != PAGE_COUNTER_MAX and cg.usage + PAGE > cg.limit
        cg_rows[path] = {"usage_bytes": cg.usage, "limit_bytes": None if cg.limit == PAGE_COUNTER_MAX else cg.limit,
                         "failcnt": cg.failcnt, "at_limit": full,
                         "v1": {"memory.usage_in_bytes": cg.usage, "memory.failcnt": cg.failcnt},
                         "v2": {"memory.current": cg.usage, "memory.events max": cg.failcnt}}
        if full:
            tasks = [p for p in {sc.map_in, *(x.cgroup for x in sc.updates if x.cgroup)} if _under(p, path)]
            for p in sorted(tasks):
                outcomes.append(f"OOM kill: a process in {p} (inside {path}, now at its limit) is killed by the memcg "
                                f"OOM killer at its next blocking allocation")
    if not any(c["limit_bytes"] for c in cg_rows.values()):
        outcomes.append("no cgroup on the path sets a limit: nothing limits this map")
    return {"rule": rule.name, "kernel": rule.kernel, "source": rule.source, "merged": rule.merged,
            "cgroups": cg_rows, "updates": rows, "outcomes": outcomes or ["every update succeeded within the limits"]}


def who_pays(sc: Scenario, rules: list[str]) -> dict[str, Any]:
    """Each rule's replay of ``sc`` (``rules``: names of ``CHARGE_RULES``)."""
    sc.check()
    for r in rules:
        if r not in CHARGE_RULES:
            raise ValueError(f"unknown rule {r!r}; allowed: {', '.join(CHARGE_RULES)} or all")
    return {"scenario": {"cgroups": sc.cgroups, "map_in": sc.map_in,
                         "updates": [u.__dict__ for u in sc.updates], "value_size": sc.value_size,
                         "max_entries": sc.max_entries, "cpus": sc.cpus}, "modelled": True,
            "rules": [run_rule(CHARGE_RULES[r], sc) for r in rules]}


# Daniel's case: a monitoring agent in /monitor creates the map; a program on /orch/app's egress hook
# runs in the app's tasks; softirq traffic too.  The orchestrator limits /orch/app to 4 MiB, the agent has 8 MiB.
DEFAULT = Scenario(cgroups={"/orch": None, "/orch/app": 4 << 20, "/monitor": 8 << 20}, map_in="/monitor",
                   updates=[Update("hook", 40_000, "/orch/app"), Update("softirq", 20_000)], value_size=64,
                   max_entries=1 << 17)
