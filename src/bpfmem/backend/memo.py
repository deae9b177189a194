"""Recorded invocations: a program run whose effect is already known is applied, not run again.

Problem: a producer repeats the same few invocations (the same keys, the same
operations) millions of times per simulated second.  Where memory grows the
model's state never repeats exactly — objects pile up on lists waiting for a
grace period — so whole cycles cannot be skipped (``ModelBackend._fast_forward``).
But what an invocation *decides* (which keys are present, where a refill runs,
how many objects it reuses) depends only on a few small numbers, and those do
repeat.

Mechanism: before an invocation (or one chunk of a long one) runs, its
*situation* is read: which invocation and where in it, the element behind each
of its keys, and for every allocator cache it can touch the numbers its code
branches on — free_cnt, list lengths (capped at ``batch + 1`` for the lists
the code only asks "empty?" or "at least this many?" of), flags and the tgt
hint — plus, for the pre-6.1 store, whether a new ``call_rcu`` would join the
newest queued batch.  The first time a situation is met the invocation runs
through the model and its *effect* is recorded: how far every counter, list,
charge, slab count and table entry moved.  The next time the record is applied.
The invocation's cost is computed from the record as from a run (the cache
misses depend on the memcg charge at its start, read then).

Invariant (why it is exact): an invocation's code reads nothing outside its
situation except what it only adds to; a record is kept only if the invocation
started no grace period, scheduled no event, freed nothing to slab, saw no
allocation fail, changed no flag and left no irq_work pending; it is applied
only where the memcg and all its ancestors have room for its charge (so every
charge inside it succeeds, as recorded) and, if it ran into a full map, where
the map holds as many elements as then.  Records are used only with counted
objects, no instrument, no interruption hook and no fault injection; a
differential test runs every workload both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..alloc.memalloc import ANON, BpfMemCache
from ..maps import E2BIG
from ..maps.htab import KmallocRcuElems, MemAllocElems

if TYPE_CHECKING:
    from ..sim import Cpu
    from .model import ModelMap
    from .protocol import Invocation

LIMIT = 200_000          # records kept per map; past it the table starts over
RETRY = 16               # a situation whose run could not be recorded runs this many times before the next try
_LISTS = ("free_llist", "free_llist_extra", "free_llist_extra_rcu", "free_by_rcu", "waiting_for_gp",
          "free_by_rcu_ttrace", "waiting_for_gp_ttrace")


@dataclass
class Tally:
    """What one invocation (chunk) did, for its cost and the run's counts."""

    base_ns: int = 0           # cost before cache misses, the prealloc factor and kmalloc
    keys: int = 0              # keys done (the miss terms scale with it)
    kmallocs: int = 0
    kmalloc_bytes: int = 0
    ops: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    nxt: tuple[int, int] | None = None


def cache_situation(c: BpfMemCache, nkeys: int, reuse: tuple[bool, bool] | None = None) -> tuple[Any, ...]:
    """The numbers the fast paths, ``bpf_mem_refill``, ``alloc_bulk``, ``free_bulk``,
    ``check_free_by_rcu`` and ``do_call_rcu_ttrace`` branch on, for a chunk of ``nkeys`` keys.

    Lists the code only tests for emptiness (or hands to RCU whole, which no record does) count as
    0 or 1.  Lists a refill takes objects from count exactly up to what the chunk's refills could
    take.  A refill runs at the allocation that takes free_cnt below low_watermark (the irq_work
    runs at the unlock right after it) and adds ``batch`` (>= low_watermark for every unit size);
    so after the chunk's first two refills free_cnt is at least low_watermark - 1 + batch after
    each, and the next comes ``batch`` allocations later: at most ``nkeys // batch + 2`` refills of
    ``batch`` in a chunk of ``nkeys`` keys (a refill that gets less failed an allocation: never
    recorded).
    """
    if reuse is None:
        reuse = reused_lists(c)
    cap = c.batch * (nkeys // c.batch + 2) + 1
    fbt, wgt = c.free_by_rcu_ttrace, c.waiting_for_gp_ttrace
    return (c.free_cnt, len(c.free_llist), len(c.free_llist_extra), len(c.free_llist_extra_rcu),
            bool(c.free_by_rcu), bool(c.waiting_for_gp),
            min(len(fbt), cap) if reuse[0] else bool(fbt), min(len(wgt), cap) if reuse[1] else bool(wgt),
            c.tgt, c.active, c.refill_work.pending, c.call_rcu_in_progress, c.call_rcu_ttrace_in_progress, c.draining)


def reused_lists(c: BpfMemCache) -> tuple[bool, bool]:
    """Whether ``alloc_bulk`` takes objects from ``free_by_rcu_ttrace`` / ``waiting_for_gp_ttrace``."""
    src = c.ma.profile.reuse_sources(c)
    return any(x is c.free_by_rcu_ttrace for x in src), any(x is c.waiting_for_gp_ttrace for x in src)


def _cache_flags(c: BpfMemCache) -> tuple[Any, ...]:
    return (c.active, c.refill_work.pending, c.call_rcu_in_progress, c.call_rcu_ttrace_in_progress, c.draining)


def _cache_counts(c: BpfMemCache) -> tuple[int, ...]:
    return (c.free_cnt, len(c.free_llist), len(c.free_llist_extra), len(c.free_llist_extra_rcu), len(c.free_by_rcu),
            len(c.waiting_for_gp), len(c.free_by_rcu_ttrace), len(c.waiting_for_gp_ttrace), c.kmallocs, c.kfrees,
            c.refill_work.raised, c.refill_work.runs)


@dataclass
class Record:
    """The effect of one invocation (chunk) in one situation."""

    tally: Tally
    # per cache: (cache, tgt after, free_cnt delta, ((list, length delta), ...), counter deltas or None)
    caches: tuple[tuple[BpfMemCache, BpfMemCache, int, tuple[tuple[str, int], ...], tuple[int, ...] | None], ...]
    table_set: tuple[tuple[int, ...], tuple[Any, ...]]   # keys whose element changed, and the new elements
    table_pop: tuple[int, ...]                            # keys deleted
    count: int                  # htab.count delta
    outstanding: tuple[int, int]
    slab: tuple[int, ...]
    charge: int
    rcu_calls: int
    pending: int                # KmallocRcuElems.pending delta
    full_at: int | None         # htab.count when the invocation met a full map (then it must match)
    grow: int                   # the most the map's element count can rise inside the invocation (its keys)
    urgent_qs: frozenset[int] = frozenset()   # CPUs the chunk asked for an urgent quiescent state


class InvocationMemo:
    """Records of one map's invocations, by situation."""

    def __init__(self, m: ModelMap) -> None:
        self.m = m
        self.records: dict[tuple[Any, ...], Record | int | None] = {}
        self.hits = 0
        self.misses = 0
        self.verify = False          # run every invocation and check that a record agrees (tests)
        self._chunk_keys: dict[tuple[int, tuple[int, int]], list[int]] = {}
        # every invocation keyed here by id() is kept alive, so that its id is never reused by another one
        # (a short-lived invocation of execute() would otherwise meet a dead one's records)
        self._alive: dict[int, Invocation] = {}
        self._scopes: dict[tuple[Any, ...], list[BpfMemCache]] = {}
        store = m.htab.elems
        # counted objects and an element store that runs by runs (not preallocated maps)
        # (not the proposals: their own lists are not in a record)
        self.static_ok = (not m.htab.m.identity and isinstance(store, (MemAllocElems, KmallocRcuElems))
                          and store.runs and not (isinstance(store, MemAllocElems) and store.ma.profile.proposal))
        self._reuse = reused_lists(store.ma.cache[0]) if isinstance(store, MemAllocElems) else (False, False)  # type: ignore[index]

    # -- situation --------------------------------------------------------------
    def usable(self, cpu: Cpu) -> bool:
        """Whether records may be used for an invocation on ``cpu`` now (``static_ok`` checked first)."""
        h = self.m.htab
        return (not cpu.irq_work_list and not cpu.irq_off and cpu.point_hook is None
                and not h.m.instruments.active and h.mm.slab.fail_after is None and h.m.batching)

    def _keys(self, inv: Invocation, pos: tuple[int, int], chunk: int) -> list[int]:
        """The keys this chunk of ``inv`` touches, in order."""
        out: list[int] = []
        op_i, first = pos
        budget = chunk
        while op_i < len(inv.ops) and budget > 0:
            ks = inv.ops[op_i].keys
            take = ks[first:first + budget]
            out.extend(take)
            budget -= len(take)
            op_i, first = op_i + 1, 0
        return out

    def scope(self, ck: tuple[Any, ...], cpu: Cpu, elems: tuple[Any, ...]) -> list[BpfMemCache]:
        """Every cache the chunk can touch: those of its CPU and of the CPUs its elements came from,
        in each allocator, and their tgt hints."""
        store = self.m.htab.elems
        if not isinstance(store, MemAllocElems):
            return []
        sk = (ck, elems)
        base = self._scopes.get(sk)
        if base is None:
            cpus = {cpu.id}
            for e in set(elems):
                if e is not None:
                    cpus.add(e.cpu.id)
            order = sorted(cpus)
            base = [store.ma.cache[i] for i in order]  # type: ignore[index]
            if store.pcpu_ma is not None:
                base += [store.pcpu_ma.cache[i] for i in order]  # type: ignore[index]
            if len(self._scopes) >= LIMIT:
                self._scopes.clear()
            self._scopes[sk] = base
        out = base
        for c in base:
            if c.tgt not in out:
                if out is base:
                    out = list(base)
                out.append(c.tgt)
        return out

    def situation(self, inv: Invocation, pos: tuple[int, int], chunk: int,
                  cpu: Cpu) -> tuple[tuple[Any, ...], list[int], list[BpfMemCache]]:
        h = self.m.htab
        ck = (id(inv), pos)
        keys = self._chunk_keys.get(ck)
        if keys is None:
            self._alive[id(inv)] = inv
            keys = self._chunk_keys[ck] = self._keys(inv, pos, chunk)
        elems = tuple(map(h.table.get, keys))
        caches = self.scope(ck, cpu, elems)
        extra: tuple[Any, ...] = ()
        store = h.elems
        if isinstance(store, KmallocRcuElems):
            r = h.rcu.rcu
            q = r._queue
            extra = (r._in_gp or r._sleeping, bool(q) and bool(q[-1][1]) and q[-1][1][0] is store._batch)
        n = len(keys)
        reuse = self._reuse
        key = (ck, elems, tuple([cache_situation(c, n, reuse) for c in caches]), extra)
        return key, keys, caches

    # -- record -------------------------------------------------------------------
    def before(self, caches: list[BpfMemCache]) -> tuple[Any, ...]:
        h = self.m.htab
        s = h.mm.slab
        r, t = h.rcu.rcu, h.rcu.tasks_trace
        store = h.elems
        outs = (store.ma.outstanding, store.pcpu_ma.outstanding if store.pcpu_ma else 0) \
            if isinstance(store, MemAllocElems) else (0, 0)
        return ([_cache_counts(c) for c in caches], [_cache_flags(c) for c in caches], h.count, outs,
                (s.live_objects, s.live_bytes, s.kmalloc_calls, s.kmalloc_bytes, s.kfree_calls, s.failures),
                self._charges(), (r.calls, r.gps, r.callbacks_invoked, t.calls, t.gps, t.callbacks_invoked,
                                  frozenset(r.urgent_qs)),
                h.m.engine._seq, getattr(store, "pending", 0), self.m.memcg.failcnt)

    def _charges(self) -> tuple[int, ...]:
        out = []
        c = self.m.memcg
        while c is not None:
            out.append(c.usage)
            c = c.parent
        return tuple(out)

    def record(self, key: tuple[Any, ...], before: tuple[Any, ...], keys: list[int], caches: list[BpfMemCache],
               tally: Tally, cpu: Cpu, old: Record | None = None) -> None:
        """Keep the effect of the chunk that just ran, if it is one that can be applied again.  With
        ``verify``, a record that was there and applied must equal the new one."""
        self.misses += 1
        after = self.before(caches)
        c0, f0, n0, o0, s0, m0, rcu0, seq0, p0, fc0 = before
        c1, f1, n1, o1, s1, m1, rcu1, seq1, p1, fc1 = after
        h = self.m.htab
        store = h.elems
        ok = (f0 == f1 and seq0 == seq1 and fc0 == fc1 and s1[4] == s0[4] and s1[5] == s0[5]
              and rcu1[1:-1] == rcu0[1:-1] and rcu0[-1] <= rcu1[-1] and not cpu.irq_work_list and not cpu.irq_off)
        charges = {b - a for a, b in zip(m0, m1)}
        ok = ok and len(charges) == 1
        rcu_calls = rcu1[0] - rcu0[0]
        if rcu_calls and not (isinstance(store, KmallocRcuElems) and key[3] and key[3][0]):
            ok = False       # a call_rcu that could start a grace period, or of another kind
        if len(self.records) >= LIMIT:
            self.records.clear()
        if not ok:
            self.records[key] = RETRY
            return
        table = h.table
        cache_ops = []
        for c, x, y in zip(caches, c0, c1):
            d = [b - a for a, b in zip(x, y)]
            lists = tuple((name, dn) for name, dn in zip(_LISTS, d[1:8]) if dn)
            cache_ops.append((c, c.tgt, d[0], lists, tuple(d[8:]) if any(d[8:]) else None))
        was: dict[int, Any] = {}
        for k, e in zip(keys, key[1]):
            was.setdefault(k, e)            # a key met twice: its element before the chunk
        now = {k: table.get(k) for k in was}
        changed = [k for k, e in now.items() if e is not None and e is not was[k]]
        rec = Record(
            tally, tuple(cache_ops), (tuple(changed), tuple(now[k] for k in changed)),
            tuple(k for k, e in now.items() if e is None and was[k] is not None), n1 - n0,
            (o1[0] - o0[0], o1[1] - o0[1]), tuple(b - a for a, b in zip(s0, s1)), charges.pop(), rcu_calls, p1 - p0,
            n0 if tally.errors.get(E2BIG) else None, len(keys), rcu1[-1] - rcu0[-1])
        if self.verify and old is not None and self.applies_before(old, n0, m0) and old != rec:
            raise AssertionError(f"invocation record disagrees with a run in the same situation:\n{old}\n{rec}")
        self.records[key] = rec

    # -- replay -------------------------------------------------------------------
    def applies(self, rec: Record) -> bool:
        """Whether ``rec`` may be applied now: room in the map and in every memcg level."""
        return self.applies_before(rec, self.m.htab.count, self._charges())

    def applies_before(self, rec: Record, count: int, usages: tuple[int, ...]) -> bool:
        h = self.m.htab
        if rec.full_at is not None:
            if count != rec.full_at:
                return False
        elif count + rec.grow > h.attr.max_entries:
            return False
        if rec.charge:
            c = self.m.memcg
            for usage in usages:
                assert c is not None
                if usage + rec.charge > c.limit:
                    return False
                c = c.parent
        return True

    def apply(self, rec: Record) -> None:
        """Move everything the recorded run moved."""
        self.hits += 1
        if rec.urgent_qs:
            self.m.htab.rcu.rcu.urgent_qs |= rec.urgent_qs
        h = self.m.htab
        for c, tgt, dfree, lists, counters in rec.caches:
            c.tgt = tgt
            c.free_cnt += dfree
            for name, dn in lists:
                lst = getattr(c, name)
                if dn > 0:
                    lst.extend([ANON] * dn)
                else:
                    del lst[len(lst) + dn:]
            if counters is not None:
                c.kmallocs += counters[0]
                c.kfrees += counters[1]
                c.refill_work.raised += counters[2]
                c.refill_work.runs += counters[3]
        table = h.table
        ks, es = rec.table_set
        if ks:
            table.update(zip(ks, es))
        for k in rec.table_pop:
            del table[k]
        h.count += rec.count
        store = h.elems
        if isinstance(store, MemAllocElems):
            store.ma.outstanding += rec.outstanding[0]
            if store.pcpu_ma is not None:
                store.pcpu_ma.outstanding += rec.outstanding[1]
        d = rec.slab
        if any(d):
            s = h.mm.slab
            s.live_objects += d[0]
            s.live_bytes += d[1]
            s.kmalloc_calls += d[2]
            s.kmalloc_bytes += d[3]
        if rec.charge:
            if not self.m.memcg.try_charge(rec.charge):
                raise AssertionError("recorded charge refused although applies() found room")
        if rec.rcu_calls:
            assert isinstance(store, KmallocRcuElems)
            store._batch = h.rcu.rcu.call_coalesced(store._batch, store._htab_elem_free_rcu_n, h, n=rec.rcu_calls)
        if rec.pending:
            store.pending += rec.pending  # type: ignore[union-attr]
