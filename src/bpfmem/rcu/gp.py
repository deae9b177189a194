"""The grace-period state machine shared by every RCU flavour.

Models: kernel/rcu/tasks.h (``call_rcu_tasks_generic``,
``call_rcu_tasks_generic_timer``, ``rcu_tasks_need_gpcb``,
``rcu_tasks_one_gp``) v6.18 for RCU Tasks Trace, and kernel/rcu/tree.c
``call_rcu``/``rcu_barrier`` for normal RCU, at the level that decides memory:
when callbacks run.

Lazy flavour (``model.lazy_delay_ns > 0``)::

    enqueue, no timer pending      -> arm lazy timer (now + lazy_delay)
    enqueue seeing n_cbs == lim,   -> urgent_gp = 3, wake the GP kthread
      or a hurry/barrier callback
    lazy timer, callbacks remain   -> urgent_gp = max(urgent_gp, 1), re-arm, wake
    kthread: pending and urgent>0  -> urgent_gp -= 1, one GP for what is pending,
                                      run those callbacks, sleep gp_sleep, retry

Callbacks queued during a grace period wait for the next one.  A non-lazy
flavour (tree RCU) starts a grace period whenever callbacks are pending and
none is running.  A grace period started at ``t`` cannot end while a reader
that entered before ``t`` is still inside its read-side section.  ``gp_seq``
counts completed grace periods.

Deviations: one callback list per flavour (the kernel's default enqueue mode
also uses the CPU-0 queue for tasks-trace); expedited GPs are not modelled;
``rcu_request_urgent_qs_task`` only records the CPU (``urgent_qs``), which the
backend's next chunk boundary honours; timer jiffies are not quantised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..sim import Machine, Timer, uniform_ns
from .models import GpModel

URGENT_GP_ON_WAKE = 3


@dataclass(frozen=True)
class RcuStatistics:
    name: str
    gp_seq: int
    in_gp: bool
    queued: int
    in_flight: int
    readers: int
    callbacks_invoked: int
    urgent_gp: int


class RcuFlavour:
    """One RCU flavour (``rcu`` or ``rcu_tasks_trace``) with its GP model."""

    def __init__(self, machine: Machine, name: str, model: GpModel, reader_seq: list[int] | None = None) -> None:
        self.m = machine
        # readers of every flavour draw tokens from one sequence, so "entered before this GP began"
        # is comparable across flavours; also_wait: flavours whose readers this flavour's GP waits for
        self._seq = reader_seq if reader_seq is not None else [0]
        self.also_wait: list[RcuFlavour] = []
        self._waiters: list[RcuFlavour] = []
        self.name = name
        self.model = model
        self.lazy = model.lazy_delay_ns > 0
        self.gp_seq = 0
        self.urgent_gp = 0
        self._queue: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._batch: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        # callbacks (not entries: a coalesced entry holds many) in the queue and in the GP's batch
        self._nq = 0
        self._nb = 0
        self._in_gp = False
        self._sleeping = False
        self._lazy_timer: Timer | None = None
        self._gp_start = 0
        self._gp_first_reader = 0
        self._implied_first_reader = 0
        self._readers: dict[int, int] = {}
        self._waiting_for_readers = False
        self.callbacks_invoked = 0
        self.calls = 0
        self.gps = 0
        # CPUs asked for an urgent quiescent state (rcu_request_urgent_qs_task): the next cond_resched()
        # of the program running there reports one
        self.urgent_qs: set[int] = set()

    # -- updaters ------------------------------------------------------------
    def n_cbs(self) -> int:
        """Callbacks pending: ``rcu_segcblist_n_cbs`` (a coalesced entry counts every call it stands for)."""
        return self._nq + self._nb

    def call(self, fn: Callable[..., Any], *args: Any, hurry: bool = False) -> None:
        """Queue ``fn(*args)`` to run after a full grace period from now."""
        self.calls += 1
        if self.lazy:
            needwake = hurry or self._nq + self._nb == self.model.lazy_lim
            if not needwake and self._lazy_timer is None:
                self._lazy_timer = self.m.engine.after(self.model.lazy_delay_ns, self._lazy_timeout)
            if needwake:
                self.urgent_gp = URGENT_GP_ON_WAKE
            self._queue.append((fn, args))
            self._nq += 1
            if needwake:
                self._wake()
        else:
            self._queue.append((fn, args))
            self._nq += 1
            self._wake()

    def call_coalesced(self, batch: list[Any] | None, fn: Callable[..., Any], *args: Any, n: int = 1) -> list[Any]:
        """``call(fn, *args)`` ``n`` times for more of many identical callbacks: while ``batch`` (what the
        previous call returned) is the newest entry of the queue it only counts; otherwise a new batch is
        queued.  At the grace period's end ``fn(count, *args)`` runs once.  Exactly what one entry per call
        would do (the first call may start a grace period that the others then wait behind); on a lazy
        flavour each call decides the lazy timer and the wake as ``call`` does (``n_cbs`` counts calls, not
        entries).  Returns the newest batch."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.lazy:
            for _ in range(n):          # each call decides the lazy timer and the wake as call() does
                batch = self._call_coalesced_lazy(batch, fn, args)
            return batch
        q = self._queue
        for step in ((1, n - 1) if n > 1 else (1,)):
            self.calls += step
            if batch is not None and q and q[-1][1] and q[-1][1][0] is batch:
                batch[0] += step
            else:
                batch = [step, fn, args]
                q.append((self._run_batch, (batch,)))
            self._nq += step
            self._wake()          # after the first call a GP is running or the kthread sleeps: a no-op
            q = self._queue
        return batch

    def _call_coalesced_lazy(self, batch: list[Any] | None, fn: Callable[..., Any], args: tuple[Any, ...]) -> list[Any]:
        """One ``call()`` on a lazy flavour, merged into ``batch`` while that is the newest queue entry."""
        self.calls += 1
        needwake = self._nq + self._nb == self.model.lazy_lim
        if not needwake and self._lazy_timer is None:
            self._lazy_timer = self.m.engine.after(self.model.lazy_delay_ns, self._lazy_timeout)
        if needwake:
            self.urgent_gp = URGENT_GP_ON_WAKE
        q = self._queue
        if batch is not None and q and q[-1][1] and q[-1][1][0] is batch:
            batch[0] += 1
        else:
            batch = [1, fn, args]
            q.append((self._run_batch, (batch,)))
        self._nq += 1
        if needwake:
            self._wake()
        return batch

    def _run_batch(self, batch: list[Any]) -> None:
        n, fn, args = batch
        self.callbacks_invoked += n - 1        # _end_gp counts the entry once
        fn(n, *args)

    def barrier(self, fn: Callable[..., Any], *args: Any) -> None:
        """``rcu_barrier()`` / ``rcu_barrier_tasks_trace()``: ``fn`` once every callback queued so far ran.

        The kernel entrains a barrier callback behind the callbacks of each CPU list that holds any
        (``rcu_segcblist_entrain``: tree.c ``rcu_barrier``; tasks.h ``rcu_barrier_tasks_generic``, 6.18):
        it starts or hurries no grace period (lazy tasks-trace callbacks keep waiting for their timer),
        and with nothing queued it returns at once."""
        if not self._queue and not self._batch:
            fn(*args)
            return
        if self._queue:
            self._queue.append((fn, args))
            self._nq += 1
        else:
            self._batch.append((fn, args))
            self._nb += 1

    def get_state(self) -> int:
        """Cookie for ``poll_state``: the GP number that must complete."""
        return self.gp_seq + (2 if self._in_gp else 1)

    def poll_state(self, cookie: int) -> bool:
        return self.gp_seq >= cookie

    # -- readers -------------------------------------------------------------
    def read_lock(self) -> int:
        """Enter a read-side critical section; returns a token for unlock."""
        self._seq[0] += 1
        tok = self._seq[0]
        self._readers[tok] = self.m.engine.now
        return tok

    def read_unlock(self, token: int) -> None:
        del self._readers[token]
        self._recheck()
        for w in self._waiters:
            w._recheck()

    def _recheck(self) -> None:
        if self._waiting_for_readers and not self._blocking_readers():
            self._waiting_for_readers = False
            self._end_gp()

    def wait_also_for(self, other: RcuFlavour) -> None:
        """This flavour's GP implies ``other``'s: it also waits for ``other``'s readers."""
        self.also_wait.append(other)
        other._waiters.append(self)

    def stop_waiting_for(self, other: RcuFlavour) -> None:
        """Undo ``wait_also_for`` (a planted bug for the explorer: the implied GP is missing)."""
        self.also_wait.remove(other)
        other._waiters.remove(self)

    def _blocking_readers(self) -> bool:
        """Readers of this flavour that entered before the current GP started, and readers of the
        flavours it implies that entered before the implied wait began (``_gp_timer``: the tasks-trace
        GP calls synchronize_rcu() in its post-scan step, near its end)."""
        first_after = self._gp_first_reader
        if any(tok < first_after for tok in self._readers):
            return True
        implied = self._implied_first_reader
        return any(tok < implied for f in self.also_wait for tok in f._readers)

    # -- the state machine ---------------------------------------------------
    def _lazy_timeout(self) -> None:
        self._lazy_timer = None
        if self.n_cbs():
            self.urgent_gp = max(self.urgent_gp, 1)
            self._lazy_timer = self.m.engine.after(self.model.lazy_delay_ns, self._lazy_timeout)
            self._wake()

    def _wake(self) -> None:
        if self._in_gp or self._sleeping:
            return
        if not self._queue:
            self.urgent_gp = 0
            return
        if self.lazy:
            if self.urgent_gp <= 0:
                return
            self.urgent_gp -= 1
        self._start_gp()

    def _start_gp(self) -> None:
        self._in_gp = True
        self._batch, self._queue = self._queue, []
        self._nb, self._nq = self._nq, 0
        now = self.m.engine.now
        self._gp_start = now
        self._gp_first_reader = self._seq[0] + 1
        self._implied_first_reader = 0
        self.gps += 1
        ins = self.m.instruments
        if ins.active:
            ins.emit("gp_start", self.name, self.gp_seq + 1)
        md = self.model
        dur = uniform_ns(self.m.sched, f"{self.name}:gp_len", md.gp_min_ns, md.gp_max_ns, md.quantum_ns) \
            if md.gp_max_ns > md.gp_min_ns else md.gp_min_ns
        self.m.engine.at(now + dur, self._gp_timer)

    def _gp_timer(self) -> None:
        self._implied_first_reader = self._seq[0] + 1
        if self._blocking_readers():
            self._waiting_for_readers = True
            return
        self._end_gp()

    def _end_gp(self) -> None:
        self.gp_seq += 1
        ins = self.m.instruments
        if ins.active:
            ins.emit("gp_end", self.name, self.gp_seq)
        batch, self._batch = self._batch, []
        self._nb = 0
        self._in_gp = False
        for fn, args in batch:
            self.callbacks_invoked += 1
            fn(*args)
        if self.model.gp_sleep_ns:
            self._sleeping = True
            self.m.engine.after(self.model.gp_sleep_ns, self._after_sleep)
        else:
            self._wake()

    def _after_sleep(self) -> None:
        self._sleeping = False
        self._wake()

    def statistics(self) -> RcuStatistics:
        return RcuStatistics(self.name, self.gp_seq, self._in_gp, len(self._queue), len(self._batch),
                             len(self._readers), self.callbacks_invoked, self.urgent_gp)
