"""Shared memory as another CPU sees it: field-level locations, weak ordering, the kernel's barriers.

Problem: a lock-free reader (the seed's qp-trie, ``bpf_cpumask_kptr_get``) is
correct only if the writer's stores reach it in the right order, and the
kernel orders them only where the code says so (``smp_wmb``,
``smp_store_release``, ``rcu_assign_pointer``; ``smp_rmb``,
``smp_load_acquire``, ``rcu_dereference`` on the reading side).  A
sequentially consistent model can never show a missing barrier.

Mechanism: a view-based operational model of the release/acquire + relaxed
fragment of the Linux-kernel memory model (LKMM), in the style of the
"promising"/view semantics of C11:

- every location (object, field) keeps its *history*: the writes in
  coherence order.  Memory the allocator hands out keeps its old contents
  (``bpf_mem_alloc`` reuses objects without clearing them); a fresh slab
  object starts as one zero write (``__GFP_ZERO``);
- each write carries a *message view*: which writes a reader that
  synchronises with it must see.  A plain (``WRITE_ONCE``) store carries only
  itself, or the view at the writer's last ``smp_wmb``; a release store
  (``smp_store_release``, ``rcu_assign_pointer``) carries the writer's whole
  view;
- each CPU keeps a view (per location, the oldest write it may still read).
  A plain load (``READ_ONCE``, a plain C read) may return any write at or
  after that point — *which one is a scheduler choice* (``rf:``), choice 0
  being the newest, so the default schedule is sequentially consistent and
  every stale read is a counted deviation.  An acquire load
  (``smp_load_acquire``; ``rcu_dereference``, whose address dependency is
  modelled as acquire) joins the message view into the CPU's view;
  ``smp_rmb`` joins the views of every write read so far;
- atomic read-modify-writes (``refcount_inc_not_zero``, ``xchg``) always read
  the newest write (RMW atomicity) and are one step;
- the allocator orders free before the next allocation of the same object
  ("the allocator is responsible for ordering things between free() and
  alloc()", include/linux/refcount.h): the allocating CPU joins the freeing
  CPU's view;
- a reader that enters a read-side section after a grace period of its
  flavour started sees every write made before that start (the grace period
  waits only for readers that entered earlier).

What it does not model: load buffering / out-of-thin-air values (a load never
reads a write that happens later), control dependencies (``smp_rmb`` is
needed where LKMM would accept a control dependency for loads->stores), and
the allocator's and RCU's own internals, which stay sequentially consistent
(they are the kernel's, not the scenario's).
"""

from __future__ import annotations

from typing import Any, Callable

View = dict  # location -> index into that location's history

ZERO: Any = 0


class _NoWrite:
    """What a conditional RMW's function returns when it does not write (a failed cmpxchg)."""

    def __repr__(self) -> str:
        return "NOWRITE"


NOWRITE: Any = _NoWrite()
_EMPTY: View = {}        # shared, never written: the view of a plain store with no fence before it


class Msg:
    """One write: its value and the view a synchronising reader acquires."""

    __slots__ = ("value", "view", "who")

    def __init__(self, value: Any, view: View, who: str) -> None:
        self.value = value
        self.view = view
        self.who = who


def join(into: View, other: View) -> None:
    """``into := into ⊔ other`` (pointwise maximum)."""
    for loc, i in other.items():
        if into.get(loc, -1) < i:
            into[loc] = i


class Memory:
    """The field-level shared memory of one explored run."""

    def __init__(self, ncpus: int, choose: Callable[[str, int], int]) -> None:
        self.hist: dict[tuple[int, str], list[Msg]] = {}
        self.cur: list[View] = [{} for _ in range(ncpus)]      # what each CPU must at least see
        self.acq: list[View] = [{} for _ in range(ncpus)]      # views of writes read with plain loads
        self.wmb: list[View | None] = [None for _ in range(ncpus)]   # view at the last smp_wmb
        self.freed_view: dict[int, View] = {}
        self.gp_view: View = {}
        self.gp_view_trace: View = {}
        self.floor: View = {}
        self.choose = choose
        self.stale_reads = 0

    # -- locations ------------------------------------------------------------------------
    def _h(self, loc: tuple[int, str]) -> list[Msg]:
        h = self.hist.get(loc)
        if h is None:
            h = self.hist[loc] = [Msg(ZERO, _EMPTY, "zero")]
        return h

    def settle(self) -> None:
        """Setup happened before the run: every CPU has seen every write made so far.  Those indices
        go into one shared floor, so views stay small (only what the run itself wrote or read)."""
        self.floor = {loc: len(h) - 1 for loc, h in self.hist.items()}
        for v in (*self.cur, *self.acq):
            v.clear()
        self.wmb = [None for _ in self.wmb]
        for h in self.hist.values():
            for m in h:
                m.view = _EMPTY

    def latest(self, loc: tuple[int, str]) -> Any:
        """The newest value (for the checker's final invariants, not for programs)."""
        return self._h(loc)[-1].value

    # -- loads ----------------------------------------------------------------------------
    def load(self, cpu: int, loc: tuple[int, str], acquire: bool = False) -> Any:
        h = self._h(loc)
        cur = self.cur[cpu]
        lo = cur.get(loc, 0)
        fl = self.floor.get(loc, 0)
        if fl > lo:
            lo = fl
        n = len(h) - lo
        i = len(h) - 1
        if n > 1:
            i -= self.choose(f"rf:cpu{cpu}:obj#{loc[0]}.{loc[1]}", n)
            if i != len(h) - 1:
                self.stale_reads += 1
        m = h[i]
        cur[loc] = i
        if acquire:
            join(cur, m.view)
        else:
            join(self.acq[cpu], m.view)
        return m.value

    # -- stores ---------------------------------------------------------------------------
    def store(self, cpu: int, loc: tuple[int, str], value: Any, who: str, release: bool = False) -> None:
        """A message's view never changes once made, so plain stores share the last fence's view; a
        reader of the message sets its own index for ``loc`` itself, so the view need not hold it."""
        h = self.hist.get(loc)
        if h is None:
            h = self.hist[loc] = [Msg(ZERO, _EMPTY, "zero")]
        cur = self.cur[cpu]
        cur[loc] = len(h)
        if release:
            h.append(Msg(value, dict(cur), who))
        else:
            h.append(Msg(value, self.wmb[cpu] or _EMPTY, who))

    def rmw(self, cpu: int, loc: tuple[int, str], fn: Callable[[Any], Any], who: str,
            acquire: bool = False, release: bool = False) -> tuple[Any, Any]:
        """Atomic read-modify-write on the newest write; returns (old, new).  ``fn`` returning
        ``NOWRITE`` (a failed conditional RMW) writes nothing."""
        h = self._h(loc)
        m = h[-1]
        cur = self.cur[cpu]
        cur[loc] = len(h) - 1
        if acquire:
            join(cur, m.view)
        else:
            join(self.acq[cpu], m.view)
        new = fn(m.value)
        if new is NOWRITE:
            return m.value, m.value
        view = dict(cur) if release else dict(self.wmb[cpu] or _EMPTY)
        join(view, m.view)                          # an RMW continues the release sequence it read from
        h.append(Msg(new, view, who))
        cur[loc] = len(h) - 1
        return m.value, new

    # -- barriers -------------------------------------------------------------------------
    def smp_wmb(self, cpu: int) -> None:
        """Later stores of this CPU carry everything it has seen or written so far."""
        self.wmb[cpu] = dict(self.cur[cpu])

    def smp_rmb(self, cpu: int) -> None:
        """Later loads of this CPU see at least what the writes it read so far had seen."""
        join(self.cur[cpu], self.acq[cpu])

    def smp_mb(self, cpu: int) -> None:
        self.smp_rmb(cpu)
        self.smp_wmb(cpu)

    # -- what the kernel's other mechanisms order ----------------------------------------------
    def freed(self, cpu: int, obj_id: int) -> None:
        self.freed_view[obj_id] = dict(self.cur[cpu])

    def allocated(self, cpu: int, obj_id: int) -> None:
        v = self.freed_view.pop(obj_id, None)
        if v is not None:
            join(self.cur[cpu], v)

    def gp_start(self, orders_rcu: bool, orders_trace: bool) -> None:
        """A grace period starts: a reader that begins from now on sees every write made before (a
        reader it does not wait for runs on a CPU that passed a quiescent state, a full barrier).
        A normal RCU GP orders RCU readers; an RCU Tasks Trace GP orders sleepable readers and, as it
        contains a normal RCU GP (``rcu_trace_implies_rcu_gp``), RCU readers too."""
        floor = self.floor
        now = {loc: len(h) - 1 for loc, h in self.hist.items() if len(h) - 1 > floor.get(loc, 0)}
        if orders_rcu:
            self.gp_view = now
        if orders_trace:
            self.gp_view_trace = now

    def reader_start(self, cpu: int, sleepable: bool = False) -> None:
        join(self.cur[cpu], self.gp_view_trace if sleepable else self.gp_view)
