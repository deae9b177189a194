"""The proposals that would have ended immediate reuse in bpf_mem_alloc (Hou Tao, RFC v1-v5, 2022-2023).

Problem: ``bpf_mem_cache_free()`` makes an object reusable at once, so an RCU reader of a hash map
may find its element reused under it (wrong key or value; the seeds' immediate-reuse debate).  Five
RFCs changed where a freed object goes.  Each is modelled here as it was posted: a
``MemAllocProfile`` whose hooks replace ``unit_free()`` and the refill irq_work (``bpf_mem_refill``),
while ``unit_alloc()`` and ``alloc_bulk()`` stay memalloc.c's, taking reusable objects from
``reuse_sources()``.  Each cache's own lists live in ``c.prop``.

| name | RFC (lore message id of the implementing patch) | freed object goes | reused |
|---|---|---|---|
| ``no_reuse`` | v1 4/6, 20221230041151.1231169-5-houtao@huaweicloud.com | per-CPU batch, a kworker ≤ 1 s later, tasks-trace GP, slab | never |
| ``reuse_after_gp`` | v2 4/4 = v3 3/6, 20230408141846.1878768-5-houtao@huaweicloud.com | per-cache list, kworker, RCU GP, ``reuse_ready`` | after one RCU GP; to slab after a further tasks-trace GP |
| ``free_after_gp`` | v3 4/6, 20230429101215.111262-5-houtao@huaweicloud.com | per-CPU batch, a kworker ≤ 1 s later, RCU GP, slab | never |
| ``reuse_after_gp_global`` | v4 3/3, 20230606035310.4026145-4-houtao@huaweicloud.com | per-cache list, irq_work, RCU GP, one list per allocator | after one RCU GP, by any CPU |
| ``reuse_after_gp_pcpu`` | v5 1/2, 20230619143231.222536-2-houtao@huaweicloud.com | per-cache list, irq_work, RCU GP (many in flight) | after one RCU GP, by the same CPU |

The mechanics, read from the patches, are in docs/history/proposals.md.  All five were posted
against bpf-next of 6.2-6.5, so their base is the ``V6_2`` allocator (no ``tgt`` hint) with a
tasks-trace RCU that is not yet lazy (the policies in ``maps.policies`` say so).

Deviations (docs/kernel-map.md): v1/v3's free context is per CPU *across all allocators* in the
kernel, per allocator and CPU here (the same when one map is in use, as in every bench); the
per-batch ``kmalloc`` of v1/v2/v3/v5 never fails and its few bytes are not charged; v2/v4's
``free_llist_extra`` splice loop (which, as posted, does not advance) is modelled as intended;
v5 2/2's ``rcu_momentary_dyntick_idle()`` (a quiescent state every ≥ 10 ms while ≥ 128 callbacks
are in flight) does not shorten the model's grace periods.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..rcu import call_rcu, call_rcu_tasks_trace
from ..sim import Timer
from .memalloc import NUMA_NO_NODE, QUIET_FOREVER, BpfMemCache, alloc_bulk, free_all, free_lists, irq_work_raise
from .policy import V6_2

NSEC_PER_JIFFY = 4_000_000          # HZ=250, as the reference machine
HZ_NS = 250 * NSEC_PER_JIFFY         # a delay of HZ jiffies: one second


class Batches:
    """Objects handed to RCU callbacks, one batch per callback in flight, counted as one list."""

    __slots__ = ("items", "n")

    def __init__(self) -> None:
        self.items: list[list[Any]] = []
        self.n = 0

    def add(self, objs: list[Any]) -> list[Any]:
        self.items.append(objs)
        self.n += len(objs)
        return objs

    def take(self, objs: list[Any]) -> list[Any]:
        for i, b in enumerate(self.items):
            if b is objs:
                del self.items[i]
                self.n -= len(objs)
                return objs
        raise ValueError("batch not in flight")

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Any]:
        for b in self.items:
            yield from b


def _push(c: BpfMemCache, primary: list[Any], obj: Any, where: str) -> bool:
    """The common head of every proposal's ``unit_free()``: IRQs off, ``active`` taken; the object goes
    onto ``primary``, or onto ``free_llist_extra`` when the cache is re-entered (NMI).  True: primary."""
    cpu = c.cpu
    hook = cpu.point_hook
    cpu.irq_off += 1
    if hook is not None:
        hook(cpu, "unit_free:irqs_off")
    c.active += 1
    ok = c.active == 1
    if ok:
        if hook is not None:
            hook(cpu, f"unit_free:{where}")
        primary.append(obj)
    else:
        c.free_llist_extra.append(obj)
    c.active -= 1
    return ok


def _irqs_on(c: BpfMemCache) -> None:
    cpu = c.cpu
    cpu.irq_off -= 1
    if not cpu.irq_off and cpu.irq_work_list and cpu.self_ipi:
        cpu.deliver_irq_work()


def _append_at_tail(c: BpfMemCache, lst: list[Any], batch: list[Any]) -> None:
    """Append a batch at the *tail* of an llist (the RFCs keep a tail pointer): the model's lists end at the
    head, so the batch goes in front; a refill pops the oldest batch first.  Counted objects have no order."""
    if c.anon:
        lst.extend(batch)
    else:
        lst[:0] = batch


def _take_extra(c: BpfMemCache) -> list[Any]:
    extra, c.free_llist_extra = c.free_llist_extra, []
    return extra


class _Proposal(V6_2):
    """Base of the proposals: the 6.2-6.5 allocator they were posted against."""

    proposal = True
    rfc = ""
    free_kind = "free_after_gp"


# ---------------------------------------------------------------------------------------------------
# RFC v1 (no_reuse) and RFC v3 4/6 (free_after_gp): a per-CPU free context drained by a kworker
# ---------------------------------------------------------------------------------------------------

class FreeCtx:
    """``struct bpf_ma_free_context`` / ``bpf_ma_free_ctx`` (one per CPU; here per allocator and CPU)."""

    __slots__ = ("to_free", "timer", "due", "in_flight")

    def __init__(self) -> None:
        self.to_free: list[Any] = []            # to_free[0] (to_free[1] for percpu objects: the same here)
        self.timer: Timer | None = None         # the delayed work, when pending
        self.due = 0
        self.in_flight = Batches()              # batches waiting for their grace period

    def lists(self) -> dict[str, Any]:
        return {"to_free": self.to_free, "free_batch_in_flight": self.in_flight}


class NoReuse(_Proposal):
    """RFC v1 ``BPF_MA_NO_REUSE``: frees never come back; a kworker sends each CPU's batch to slab after
    a tasks-trace GP (and an RCU GP unless the former implies it).

    ``unit_free`` → ``direct_free()``: push onto the CPU's ``to_free``, then
    ``bpf_ma_schedule_free_dwork()``: run the worker ``delay`` later, ``delay`` = 1 jiffy once 256 objects
    wait, else HZ (1 s); a pending work is pulled in when the new delay is shorter.  The worker takes
    everything and calls ``call_rcu_tasks_trace()`` once per run (callbacks in flight are unbounded)."""

    name = "no_reuse"
    kernel = "proposal: RFC v1 'bpf: Handle reuse in bpf memory alloc' 4/6 (2022-12-30)"
    rfc = "v1"
    threshold = 256
    near_delay_ns = NSEC_PER_JIFFY

    def init_cache(self, c: BpfMemCache) -> None:
        c.prop = FreeCtx()

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        return ()

    def unit_free(self, c: BpfMemCache, obj: Any) -> None:
        ctx: FreeCtx = c.prop
        if _push(c, ctx.to_free, obj, "active"):
            self._schedule(c, ctx)
        _irqs_on(c)

    def quiet_frees(self, c: BpfMemCache) -> int:
        """Frees that neither arm nor pull in the worker: with it pending, those that leave fewer than
        ``threshold`` objects (delay HZ: never sooner than pending), and all once it is due within the near
        delay."""
        ctx: FreeCtx = c.prop
        if ctx.timer is None:
            return 0
        if ctx.due <= c.ma.m.now + self.near_delay_ns:
            return QUIET_FOREVER
        return max(self.threshold - 1 - len(ctx.to_free), 0)

    def unit_free_run(self, c: BpfMemCache, objs: list[Any]) -> None:
        c.prop.to_free.extend(objs)

    def _schedule(self, c: BpfMemCache, ctx: FreeCtx) -> None:
        """``bpf_ma_schedule_free_dwork()``."""
        delay = self.near_delay_ns if len(ctx.to_free) >= self.threshold else HZ_NS
        engine = c.ma.m.engine
        now = c.ma.m.now
        if ctx.timer is not None:
            if now + delay < ctx.due:                       # mod_delayed_work(): pull it in
                ctx.timer.cancel()
            else:
                return
        ctx.due = now + delay
        ctx.timer = engine.after(delay, self._worker, c)

    def refill(self, c: BpfMemCache) -> None:
        """``bpf_mem_refill()``: frees never reach free_llist, so only the low watermark matters."""
        if c.free_cnt < c.low_watermark:
            alloc_bulk(c, c.batch, NUMA_NO_NODE, True)

    def _worker(self, c: BpfMemCache) -> None:
        """``bpf_ma_free_dwork()`` (kworker): take the CPU's lists and free them after a grace period."""
        ctx: FreeCtx = c.prop
        ctx.timer = None
        objs = ctx.to_free + _take_extra(c)
        ctx.to_free = []
        if not objs:
            return
        if c.draining:
            free_all(c, objs)
            return
        self._after_gp(c, ctx.in_flight.add(objs))

    def _after_gp(self, c: BpfMemCache, batch: list[Any]) -> None:
        if "ttrace_as_rcu" in self.planted:        # planted bug for the explorer (never a posted patch)
            call_rcu(c.ma.rcu, self._batch_free, c, batch)
            return
        call_rcu_tasks_trace(c.ma.rcu, self._batch_free_tt, c, batch)

    def _batch_free_tt(self, c: BpfMemCache, batch: list[Any]) -> None:
        """``batch_free_rcu_tasks_trace()``: free now if the tasks-trace GP implied an RCU GP."""
        if c.ma.rcu.trace_implies_rcu_gp:
            self._batch_free(c, batch)
        else:
            call_rcu(c.ma.rcu, self._batch_free, c, batch)

    def _batch_free(self, c: BpfMemCache, batch: list[Any]) -> None:
        free_all(c, c.prop.in_flight.take(batch))

    def drain(self, c: BpfMemCache) -> int:
        ctx: FreeCtx = c.prop
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        objs, ctx.to_free = ctx.to_free, []
        return free_all(c, objs)

    def callbacks_in_flight(self, c: BpfMemCache) -> int:
        return len(c.prop.in_flight.items)


class FreeAfterGp(NoReuse):
    """RFC v3 ``BPF_MA_FREE_AFTER_RCU_GP``: v1's per-CPU batches, freed after a *normal* RCU GP; the
    worker runs at once (delay 0) from 256 objects, else within HZ.  Sleepable programs must hold
    ``bpf_rcu_read_lock()`` to read such objects (stated in the patch)."""

    name = "free_after_gp"
    kernel = "proposal: RFC v3 4/6 'bpf: Introduce BPF_MA_FREE_AFTER_RCU_GP' (2023-04-29)"
    rfc = "v3"
    near_delay_ns = 0

    def _after_gp(self, c: BpfMemCache, batch: list[Any]) -> None:
        call_rcu(c.ma.rcu, self._batch_free, c, batch)


# ---------------------------------------------------------------------------------------------------
# RFC v2 / v3 3/6 (reuse_after_gp): per-cache lists, a kworker per cache
# ---------------------------------------------------------------------------------------------------

class ReuseCtx:
    """The per-cache fields RFC v2 added to ``struct bpf_mem_cache``."""

    __slots__ = ("prepare_reuse", "prepare_reuse_cnt", "reuse_ready", "wait_for_free", "free_cb_in_progress",
                 "work_pending", "in_flight", "batch_in_flight")

    def __init__(self) -> None:
        self.prepare_reuse: list[Any] = []
        self.prepare_reuse_cnt = 0
        self.reuse_ready: list[Any] = []
        self.wait_for_free: list[Any] = []
        self.free_cb_in_progress = False
        self.work_pending = False
        self.in_flight = Batches()              # bpf_reuse_batch'es waiting for their RCU GP
        self.batch_in_flight = False

    def lists(self) -> dict[str, Any]:
        return {"prepare_reuse": self.prepare_reuse, "reuse_batch_in_flight": self.in_flight,
                "reuse_ready": self.reuse_ready, "wait_for_free": self.wait_for_free}


class ReuseAfterGp(_Proposal):
    """RFC v2 ``BPF_MA_REUSE_AFTER_RCU_GP`` (= RFC v3 3/6): a freed object is reusable after one RCU GP
    and goes to slab after a further tasks-trace GP, unless reused first.

    ``wait_gp_reuse_free()``: push onto ``prepare_reuse``; past ``high_watermark`` objects, queue the
    cache's ``reuse_work``.  The kworker takes ``prepare_reuse`` (and ``free_llist_extra``), first
    starting the tasks-trace free of everything on ``reuse_ready`` if none is in flight
    (``reuse_ready`` → ``wait_for_free``), then ``call_rcu()`` of the batch, whose callback appends it
    to ``reuse_ready``.  A refill takes ``reuse_ready`` first, then ``wait_for_free`` (still reusable until
    the tasks-trace callback runs), then kmalloc."""

    name = "reuse_after_gp"
    kernel = "proposal: RFC v2 4/4 / v3 3/6 'bpf: Introduce BPF_MA_REUSE_AFTER_RCU_GP' (2023-04-08)"
    rfc = "v2"

    def init_cache(self, c: BpfMemCache) -> None:
        c.prop = ReuseCtx()

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        p: ReuseCtx = c.prop
        return (p.reuse_ready, p.wait_for_free)

    def unit_free(self, c: BpfMemCache, obj: Any) -> None:
        p: ReuseCtx = c.prop
        if _push(c, p.prepare_reuse, obj, "active"):
            p.prepare_reuse_cnt += 1
            if p.prepare_reuse_cnt > c.high_watermark:
                p.prepare_reuse_cnt = 0
                if not p.work_pending:
                    p.work_pending = True
                    c.ma.m.system_dfl_wq.queue_work(lambda: self._work(c))
        _irqs_on(c)

    def refill(self, c: BpfMemCache) -> None:
        if c.free_cnt < c.low_watermark:
            alloc_bulk(c, c.batch, NUMA_NO_NODE, True)

    def quiet_frees(self, c: BpfMemCache) -> int:
        return max(c.high_watermark - c.prop.prepare_reuse_cnt, 0)

    def unit_free_run(self, c: BpfMemCache, objs: list[Any]) -> None:
        p: ReuseCtx = c.prop
        p.prepare_reuse.extend(objs)
        p.prepare_reuse_cnt += len(objs)

    def _work(self, c: BpfMemCache) -> None:
        """``bpf_ma_prepare_reuse_work()`` (kworker)."""
        p: ReuseCtx = c.prop
        p.work_pending = False
        objs, p.prepare_reuse = p.prepare_reuse, []
        p.prepare_reuse_cnt = 0
        if p.reuse_ready and not p.free_cb_in_progress:        # bpf_ma_try_free_reuse_objs()
            p.free_cb_in_progress = True
            p.wait_for_free = p.reuse_ready + p.wait_for_free
            p.reuse_ready = []
            call_rcu_tasks_trace(c.ma.rcu, self._free_reusable_cb, c)
        objs += _take_extra(c)
        if not objs:
            return
        if c.draining:
            free_all(c, objs)
            return
        if "reuse_no_gp" in self.planted:          # planted bug for the explorer (never a posted patch)
            self._reuse_cb(c, p.in_flight.add(objs))
            return
        call_rcu(c.ma.rcu, self._reuse_cb, c, p.in_flight.add(objs))

    def _reuse_cb(self, c: BpfMemCache, batch: list[Any]) -> None:
        """``bpf_ma_reuse_cb()`` (RCU callback): the batch becomes reusable (or is freed if aborting)."""
        p: ReuseCtx = c.prop
        p.in_flight.take(batch)
        if c.draining:
            free_all(c, batch)
            return
        _append_at_tail(c, p.reuse_ready, batch)

    def _free_reusable_cb(self, c: BpfMemCache) -> None:
        """``bpf_ma_free_reusable_cb()`` (tasks-trace callback): what was not reused goes to slab."""
        p: ReuseCtx = c.prop
        objs, p.wait_for_free = p.wait_for_free, []
        free_all(c, objs)
        p.free_cb_in_progress = False

    def drain(self, c: BpfMemCache) -> int:
        return free_lists(c, c.prop, ("prepare_reuse", "reuse_ready", "wait_for_free"))

    def callbacks_in_flight(self, c: BpfMemCache) -> int:
        p: ReuseCtx = c.prop
        return len(p.in_flight.items) + p.free_cb_in_progress + p.work_pending


# ---------------------------------------------------------------------------------------------------
# RFC v4 (reuse_after_gp_global): irq_work per cache, one RCU callback per cache, one shared list
# ---------------------------------------------------------------------------------------------------

class SharedCache:
    """``struct bpf_mem_shared_cache``: one per allocator, shared by its per-CPU caches."""

    __slots__ = ("reuse_ready", "wait_for_free", "call_rcu_in_progress")

    def __init__(self) -> None:
        self.reuse_ready: list[Any] = []
        self.wait_for_free: list[Any] = []
        self.call_rcu_in_progress = False


class GlobalCtx:
    """RFC v4's per-cache fields, and the allocator's shared cache (its lists counted on CPU 0's)."""

    __slots__ = ("prepare_reuse", "prepare_reuse_cnt", "free_by_rcu", "waiting_for_gp", "call_rcu_in_progress",
                 "sc", "owner")

    def __init__(self, sc: SharedCache, owner: bool) -> None:
        self.prepare_reuse: list[Any] = []
        self.prepare_reuse_cnt = 0
        self.free_by_rcu: list[Any] = []
        self.waiting_for_gp: list[Any] = []
        self.call_rcu_in_progress = False
        self.sc = sc
        self.owner = owner

    def lists(self) -> dict[str, Any]:
        out = {"prepare_reuse": self.prepare_reuse, "reuse_free_by_rcu": self.free_by_rcu,
               "reuse_waiting_for_gp": self.waiting_for_gp}
        if self.owner:
            out |= {"reuse_ready": self.sc.reuse_ready, "wait_for_free": self.sc.wait_for_free}
        return out


class ReuseAfterGpGlobal(_Proposal):
    """RFC v4 (for every allocator, no flag, no kworker): a freed object is reusable by *any* CPU after
    one RCU GP, from one spin-locked list per allocator.

    ``unit_free``: push onto ``prepare_reuse``; past ``high_watermark``, raise the irq_work.  The irq_work
    refills below ``low_watermark`` (taking up to ``batch`` objects from the shared ``reuse_ready`` then
    ``wait_for_free``, then kmalloc), then, past ``high_watermark``, ``reuse_bulk()``: ``prepare_reuse`` →
    ``free_by_rcu`` and, if this cache has no RCU callback in flight, ``free_by_rcu`` →
    ``waiting_for_gp`` and ``call_rcu(reuse_rcu)``.  ``reuse_rcu`` appends to the shared ``reuse_ready``
    and, if the allocator has no tasks-trace callback in flight, moves all of it to ``wait_for_free``
    and starts one; that callback frees what was not reused."""

    name = "reuse_after_gp_global"
    kernel = "proposal: RFC v4 3/3 'bpf: Only reuse after one RCU GP in bpf memory allocator' (2023-06-06)"
    rfc = "v4"

    def init_cache(self, c: BpfMemCache) -> None:
        ma = c.ma
        first = ma.shared is None
        if first:
            ma.shared = SharedCache()
        c.prop = GlobalCtx(ma.shared, owner=first)

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        sc: SharedCache = c.prop.sc
        return (sc.reuse_ready, sc.wait_for_free)

    def unit_free(self, c: BpfMemCache, obj: Any) -> None:
        p: GlobalCtx = c.prop
        cnt = 0
        if _push(c, p.prepare_reuse, obj, "active"):
            p.prepare_reuse_cnt += 1
            cnt = p.prepare_reuse_cnt
        if cnt > c.high_watermark and not c.refill_work.pending:
            irq_work_raise(c)
        _irqs_on(c)

    def refill(self, c: BpfMemCache) -> None:
        p: GlobalCtx = c.prop
        if c.free_cnt < c.low_watermark:
            alloc_bulk(c, c.batch, NUMA_NO_NODE, True)
        if p.prepare_reuse_cnt > c.high_watermark:
            self._reuse_bulk(c)

    def quiet_frees(self, c: BpfMemCache) -> int:
        if c.refill_work.pending:
            return QUIET_FOREVER
        return max(c.high_watermark - c.prop.prepare_reuse_cnt, 0)

    def unit_free_run(self, c: BpfMemCache, objs: list[Any]) -> None:
        p: GlobalCtx = c.prop
        p.prepare_reuse.extend(objs)
        p.prepare_reuse_cnt += len(objs)

    def _reuse_bulk(self, c: BpfMemCache) -> None:
        p: GlobalCtx = c.prop
        p.free_by_rcu += p.prepare_reuse + _take_extra(c)
        p.prepare_reuse = []
        p.prepare_reuse_cnt = 0
        if p.call_rcu_in_progress:
            return
        p.call_rcu_in_progress = True
        p.waiting_for_gp, p.free_by_rcu = p.free_by_rcu, []
        call_rcu(c.ma.rcu, self._reuse_rcu, c)

    def _reuse_rcu(self, c: BpfMemCache) -> None:
        p: GlobalCtx = c.prop
        sc = p.sc
        objs, p.waiting_for_gp = p.waiting_for_gp, []
        if c.draining:
            free_all(c, objs)
        else:
            _append_at_tail(c, sc.reuse_ready, objs)
            if not sc.call_rcu_in_progress:
                sc.call_rcu_in_progress = True
                sc.wait_for_free = sc.reuse_ready + sc.wait_for_free
                sc.reuse_ready = []
                call_rcu_tasks_trace(c.ma.rcu, self._free_rcu, c)
        p.call_rcu_in_progress = False

    def _free_rcu(self, c: BpfMemCache) -> None:
        sc: SharedCache = c.prop.sc
        objs, sc.wait_for_free = sc.wait_for_free, []
        free_all(c, objs)
        sc.call_rcu_in_progress = False

    def drain(self, c: BpfMemCache) -> int:
        p: GlobalCtx = c.prop
        n = free_lists(c, p, ("prepare_reuse", "free_by_rcu"))
        if p.owner:                             # the allocator's shared lists, once
            n += free_lists(c, p.sc, ("reuse_ready", "wait_for_free"))
        return n

    def callbacks_in_flight(self, c: BpfMemCache) -> int:
        p: GlobalCtx = c.prop
        return p.call_rcu_in_progress + (p.owner and p.sc.call_rcu_in_progress)


# ---------------------------------------------------------------------------------------------------
# RFC v5 (reuse_after_gp_pcpu): per-CPU reuse lists, many RCU callbacks in flight
# ---------------------------------------------------------------------------------------------------

class PcpuCtx:
    """RFC v5's per-cache fields."""

    __slots__ = ("free_by_rcu", "prepare_reuse_cnt", "reuse_ready", "wait_for_free", "free_rcu_in_progress",
                 "in_flight")

    def __init__(self) -> None:
        self.free_by_rcu: list[Any] = []
        self.prepare_reuse_cnt = 0
        self.reuse_ready: list[Any] = []
        self.wait_for_free: list[Any] = []
        self.free_rcu_in_progress = False
        self.in_flight = Batches()              # dyn_reuse_rcu batches (dyn_reuse_rcu_cnt = len(items))

    def lists(self) -> dict[str, Any]:
        return {"reuse_free_by_rcu": self.free_by_rcu, "reuse_batch_in_flight": self.in_flight,
                "reuse_ready": self.reuse_ready, "wait_for_free": self.wait_for_free}


class PcpuWatermarks:
    """RFC v5's single watermark: 32 for units <= 256 B, else max(32 * 256 / unit_size, 1); batch = watermark.

    v5 refills when ``free_cnt <= watermark`` where 6.2 refilled below ``low_watermark``; the model's
    ``unit_alloc`` raises below ``low_watermark``, so ``low_watermark`` = watermark + 1 says the same."""

    def init_refill_work(self, c: BpfMemCache) -> None:
        wm = 32 if c.unit_size <= 256 else max(32 * 256 // c.unit_size, 1)
        c.low_watermark, c.high_watermark, c.batch = wm + 1, wm, wm


class ReuseAfterGpPcpu(_Proposal):
    """RFC v5: a freed object is reusable by the same CPU after one RCU GP; each irq_work run starts its
    own RCU callback (no limit in flight), and the tasks-trace free runs once per cache at a time.

    ``unit_free``: push onto ``free_by_rcu``; from ``watermark`` frees, raise the irq_work.  The irq_work
    refills when ``free_cnt <= watermark`` (from ``reuse_ready``, then ``wait_for_free``, then kmalloc),
    then from ``watermark`` frees ``reuse_bulk()``: all of ``free_by_rcu`` (and ``free_llist_extra``) as one
    batch, ``call_rcu(dyn_reuse_rcu)``.  The callback appends the batch to ``reuse_ready`` and, when no
    tasks-trace callback is in flight, moves all of ``reuse_ready`` to ``wait_for_free`` and starts one,
    which frees what was not reused."""

    name = "reuse_after_gp_pcpu"
    kernel = "proposal: RFC v5 1/2 'bpf: Only reuse after one RCU GP in bpf memory allocator' (2023-06-19)"
    rfc = "v5"

    def __init__(self, watermarks: Any = None) -> None:
        super().__init__(watermarks or PcpuWatermarks())

    def init_cache(self, c: BpfMemCache) -> None:
        c.prop = PcpuCtx()

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        p: PcpuCtx = c.prop
        return (p.reuse_ready, p.wait_for_free)

    def unit_free(self, c: BpfMemCache, obj: Any) -> None:
        p: PcpuCtx = c.prop
        cnt = 0
        if _push(c, p.free_by_rcu, obj, "active"):
            p.prepare_reuse_cnt += 1
            cnt = p.prepare_reuse_cnt
        if cnt >= c.high_watermark and not c.refill_work.pending:
            irq_work_raise(c)
        _irqs_on(c)

    def refill(self, c: BpfMemCache) -> None:
        p: PcpuCtx = c.prop
        if c.free_cnt < c.low_watermark:                       # free_cnt <= watermark
            alloc_bulk(c, c.batch, NUMA_NO_NODE, True)
        if p.prepare_reuse_cnt >= c.high_watermark:
            self._reuse_bulk(c)

    def quiet_frees(self, c: BpfMemCache) -> int:
        if c.refill_work.pending:
            return QUIET_FOREVER
        return max(c.high_watermark - 1 - c.prop.prepare_reuse_cnt, 0)

    def unit_free_run(self, c: BpfMemCache, objs: list[Any]) -> None:
        p: PcpuCtx = c.prop
        p.free_by_rcu.extend(objs)
        p.prepare_reuse_cnt += len(objs)

    def _reuse_bulk(self, c: BpfMemCache) -> None:
        p: PcpuCtx = c.prop
        objs = p.free_by_rcu + _take_extra(c)
        p.free_by_rcu = []
        p.prepare_reuse_cnt = 0
        if objs:
            call_rcu(c.ma.rcu, self._dyn_reuse_rcu, c, p.in_flight.add(objs))

    def _dyn_reuse_rcu(self, c: BpfMemCache, batch: list[Any]) -> None:
        """``dyn_reuse_rcu()`` → ``bpf_ma_add_to_reuse_ready_or_free()``."""
        p: PcpuCtx = c.prop
        p.in_flight.take(batch)
        if c.draining:
            free_all(c, batch)
            return
        _append_at_tail(c, p.reuse_ready, batch)
        if not p.free_rcu_in_progress:
            p.free_rcu_in_progress = True
            p.wait_for_free = p.reuse_ready + p.wait_for_free
            p.reuse_ready = []
            call_rcu_tasks_trace(c.ma.rcu, self._free_rcu, c)

    def _free_rcu(self, c: BpfMemCache) -> None:
        p: PcpuCtx = c.prop
        objs, p.wait_for_free = p.wait_for_free, []
        free_all(c, objs)
        p.free_rcu_in_progress = False

    def drain(self, c: BpfMemCache) -> int:
        return free_lists(c, c.prop, ("free_by_rcu", "reuse_ready", "wait_for_free"))

    def callbacks_in_flight(self, c: BpfMemCache) -> int:
        p: PcpuCtx = c.prop
        return len(p.in_flight.items) + p.free_rcu_in_progress


PROPOSALS: dict[str, type[_Proposal]] = {p.name: p for p in (NoReuse, ReuseAfterGp, FreeAfterGp, ReuseAfterGpGlobal,
                                                             ReuseAfterGpPcpu)}

__all__ = ["PROPOSALS", "NoReuse", "ReuseAfterGp", "FreeAfterGp", "ReuseAfterGpGlobal", "ReuseAfterGpPcpu",
           "PcpuWatermarks", "Batches"]
