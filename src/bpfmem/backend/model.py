"""The model backend: runs workloads on the executable model of the kernel.

Wires ``sim`` + ``rcu`` + ``mm`` + ``alloc`` + ``maps`` into a ``Backend``.
The map is created by a task in its own memory cgroup (``bpfmem``), so that
cgroup's usage is exactly the map's memcg charge, and its peak is what
``memory.peak`` would show.

Time: each producer is a chain of engine events; an invocation runs at once
at its start time and its CPU is busy for the modelled cost (``costs.py``).
A sampler event records memory every ``sample_interval_ns``.

Determinism: everything random goes through the machine's seeded scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..maps import (BPF_F_NO_PREALLOC, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH,
                    BPF_MAP_TYPE_PERCPU_HASH, ERRNO_NAMES, BpfHtab, MapAttr)
from ..maps.policies import HtabPolicy, get_policy
from ..mm import MemCgroup, Mm
from ..rcu import RCU_DEFAULT, TASKS_TRACE_DEFAULT, GpModel, Rcu, srcu_fast_tasks_trace
from ..sim import NSEC_PER_MSEC, Cpu, Machine, RandomScheduler
from .costs import DEFAULT_COSTS, CostModel
from .memo import InvocationMemo, Tally
from .protocol import LRU_MAP_TYPES, Invocation, MapSpec, MemorySample, Producer, RunCounts


MODEL_MAP_TYPES = {"hash": BPF_MAP_TYPE_HASH, "percpu_hash": BPF_MAP_TYPE_PERCPU_HASH,
                   "lru_hash": BPF_MAP_TYPE_LRU_HASH, "lru_percpu_hash": BPF_MAP_TYPE_LRU_PERCPU_HASH}
CHUNK = 1024  # keys per model step of a long invocation


@dataclass
class _ProducerState:
    steps: tuple[Invocation, ...]
    cpus: tuple[int, ...]
    keys: tuple[int, ...]
    ff: bool
    counts: RunCounts = field(default_factory=RunCounts)
    skipped: RunCounts = field(default_factory=RunCounts)
    history: dict[tuple[Any, ...], tuple[int, int, int, int]] = field(default_factory=dict)
    epoch: int = -1
    clean: bool = True
    done: bool = False
    busy: bool = False
    reader: int | None = None
    reader_since: int = 0
    finish_at: int = 0


@dataclass
class ModelMap:
    spec: MapSpec
    htab: BpfHtab
    memcg: MemCgroup
    samples: list[MemorySample] = field(default_factory=list)
    sampling: bool = True
    memo: InvocationMemo | None = None


def tasks_trace_for(policy: HtabPolicy, rcu_model: GpModel, tasks_trace_model: GpModel) -> GpModel:
    """The tasks-trace grace periods of a policy's release: lazily batched callbacks from 6.6
    (d119357d0743), none before; the 7.0 prediction runs them on SRCU-fast."""
    if policy.tasks_trace_srcu_fast:
        return srcu_fast_tasks_trace(rcu_model)
    if not policy.tasks_trace_lazy:
        return replace(tasks_trace_model, lazy_delay_ns=0)
    return tasks_trace_model


class ModelBackend:
    """A ``Backend`` on the model: ``ncpus`` possible CPUs, one policy, one seed."""

    name = "model"
    modelled = True

    def __init__(self, ncpus: int, policy: str | HtabPolicy = "v6.18", *, seed: int = 0,
                 costs: CostModel = DEFAULT_COSTS, rcu_model: GpModel = RCU_DEFAULT,
                 tasks_trace_model: GpModel = TASKS_TRACE_DEFAULT, trace_implies_rcu_gp: bool = True,
                 sample_interval_ns: int = 10 * NSEC_PER_MSEC, breakdown: bool = True,
                 fast_forward: bool = True, profile_name: str = "built-in defaults", identity: bool = False,
                 memo: bool = True) -> None:
        if sample_interval_ns <= 0:
            raise ValueError(f"sample_interval_ns must be > 0, got {sample_interval_ns}")
        self.policy = get_policy(policy) if isinstance(policy, str) else policy
        self.seed = seed
        self.machine = Machine(ncpus, RandomScheduler(seed))
        self.machine.identity = identity       # False: parked objects are counted, not made one by one
        self.ncpus = ncpus
        self.mm = Mm(self.machine)
        self.rcu = Rcu(self.machine, rcu_model, tasks_trace_for(self.policy, rcu_model, tasks_trace_model),
                       trace_implies_rcu_gp=trace_implies_rcu_gp)
        self.memcg = self.mm.root_memcg.child("bpfmem")
        self.costs = costs
        self.sample_interval_ns = sample_interval_ns
        self.want_breakdown = breakdown
        self.fast_forward = fast_forward
        self.memo = memo and not identity          # records of invocations (memo.py): counted objects only
        self.profile_name = profile_name
        self._passive: set[Any] = set()
        self._all_keys: frozenset[int] = frozenset()   # every key any producer uses
        self.phase = ""
        self.on_tick: Callable[[int], None] | None = None   # told the simulated time at each sample (progress)

    # -- maps -------------------------------------------------------------------
    def map_create(self, spec: MapSpec) -> ModelMap:
        map_type = MODEL_MAP_TYPES[spec.map_type]
        prealloc = self.policy.elems == "prealloc" or not spec.no_prealloc or spec.map_type in LRU_MAP_TYPES
        attr = MapAttr(map_type, spec.key_size, spec.value_size, spec.max_entries,
                       0 if prealloc else BPF_F_NO_PREALLOC)
        htab = BpfHtab(self.machine, self.mm, self.rcu, attr, self.memcg, profile=self.policy.make_profile(),
                       elems="ma" if prealloc else self.policy.elems, free_rcu=self.policy.free_rcu,
                       lru_scaled_target=self.policy.lru_scaled_target)
        htab.memlock_footprint = self.policy.memlock_footprint
        m = ModelMap(spec, htab, self.memcg)
        if self.memo:
            m.memo = InvocationMemo(m)
        self.phase = "create"
        self._sample_tick(m)
        return m

    def _sample_tick(self, m: ModelMap) -> None:
        if not m.sampling:
            return
        m.samples.append(self.sample(m, self.phase))
        if self.on_tick is not None:
            self.on_tick(self.machine.engine.now)
        self.machine.engine.after(self.sample_interval_ns, self._sample_tick, m)

    def sample(self, m: ModelMap, phase: str = "") -> MemorySample:
        h = m.htab
        bd = h.breakdown() if (self.want_breakdown and not h.closed) else None
        return MemorySample(self.machine.engine.now, m.memcg.usage, 0 if h.closed else h.mem_usage(), bd,
                            phase or self.phase)

    def uncharged(self, m: ModelMap) -> dict[str, int]:
        """What the map holds outside any cgroup's charge (``BpfHtab.uncharged``)."""
        return {} if m.htab.closed else m.htab.uncharged()

    def samples(self, m: ModelMap) -> list[MemorySample]:
        return m.samples

    def peak(self, m: ModelMap) -> int:
        return m.memcg.peak

    # -- running ------------------------------------------------------------------
    def _invoke(self, m: ModelMap, inv: Invocation, counts: RunCounts,
                pos: tuple[int, int] = (0, 0)) -> tuple[int, tuple[int, int] | None, bool]:
        """Run (part of) one program invocation now, from op ``pos[0]``, key ``pos[1]``.

        At most ``CHUNK`` keys run per call, so a long invocation (a batch
        syscall over 100k keys) spreads over its modelled duration and grace
        periods can end in the middle of it, as in the kernel.  Returns the
        cost in ns, where to continue (None when the invocation is done) and
        whether an operation failed.  An invocation met before in the same situation is applied from its
        record (``memo.py``): the same effect, in one step.
        """
        cpu = self.machine.cpus[inv.cpu]
        charged = m.memcg.usage
        memo = m.memo
        if memo is not None and memo.static_ok and memo.usable(cpu):
            key, keys, caches = memo.situation(inv, pos, CHUNK, cpu)
            rec = memo.records.get(key)
            if rec.__class__ is int:                 # not replayable when last met: run it, look again later
                memo.records[key] = rec - 1 if rec else None  # type: ignore[operator]
                tally = self._execute(m, inv, cpu, pos)
            elif rec is not None and not memo.verify and memo.applies(rec):  # type: ignore[arg-type]
                memo.apply(rec)  # type: ignore[arg-type]
                tally = rec.tally  # type: ignore[union-attr]
            else:
                before = memo.before(caches)
                tally = self._execute(m, inv, cpu, pos)
                memo.record(key, before, keys, caches, tally, cpu, rec)  # type: ignore[arg-type]
        else:
            tally = self._execute(m, inv, cpu, pos)
        counts.ops += tally.ops
        errors = tally.errors
        if errors:
            for errno, cnt in errors.items():
                counts.add_error(ERRNO_NAMES.get(errno, str(errno)), cnt)
        if tally.nxt is None:
            counts.hits += inv.hits
            counts.invocations += 1
        return self._cost(m, tally, charged), tally.nxt, bool(errors)

    def _cost(self, m: ModelMap, tally: Tally, charged: int) -> int:
        """The modelled duration of an invocation (chunk) that did ``tally`` with ``charged`` bytes in the
        map's memcg at its start (a map larger than a cache level pays a miss there on most operations)."""
        c = self.costs
        cost = tally.base_ns
        miss = c.miss_ns * (1 - c.llc_bytes / charged) if c.miss_ns and charged > c.llc_bytes else 0.0
        if (c.l2_miss_ns or c.l2_miss_ns_per_kb) and charged > c.l2_bytes:
            miss += (c.l2_miss_ns + c.l2_miss_ns_per_kb * m.spec.value_size / 1024) * (1 - c.l2_bytes / charged)
        if miss:
            cost += int(miss * tally.keys)
        if m.htab.prealloc:
            cost = int(cost * c.prealloc_factor)
        if tally.kmallocs:
            cost += tally.kmallocs * c.kmalloc_ns + int(tally.kmalloc_bytes / 1024 * c.kmalloc_ns_per_kb)
        return cost

    def _execute(self, m: ModelMap, inv: Invocation, cpu: Cpu, pos: tuple[int, int]) -> Tally:
        """Run the map operations of one invocation (chunk) through the model; what they did."""
        h = m.htab
        slab = self.mm.slab
        k0, b0 = slab.kmalloc_calls, slab.kmalloc_bytes
        sf = getattr(getattr(h.elems, "ma", None), "shared", None)
        locks0 = getattr(sf, "locks", 0)
        c = self.costs
        cost = c.invocation_ns if pos == (0, 0) else 0
        copy_ns = c.value_copy_ns_per_kb * m.spec.value_size / 1024
        errors: dict[int, int] = {}
        op_i, first = pos
        budget = CHUNK
        ops = 0
        nxt: tuple[int, int] | None = None
        while op_i < len(inv.ops):
            op = inv.ops[op_i]
            keys = op.keys
            if not first:
                cost += c.update_batch_ns if op.kind == "update" else c.delete_batch_ns if op.kind == "delete" else 0
            if first or len(keys) - first > budget:
                keys = keys[first:first + budget]
            n = len(keys)
            ops += n
            if op.kind == "update":
                before = h.count
                ok = h.update_batch(cpu, keys, op.flags, errors)
                new = h.count - before
                cost += new * c.update_new_ns + (ok - new) * c.update_replace_ns + (n - ok) * c.error_ns
                cost += int(ok * copy_ns)
            elif op.kind == "delete":
                ok = h.delete_batch(cpu, keys, errors)
                cost += ok * c.delete_ns + (n - ok) * c.error_ns
            else:
                if cpu.point_hook is not None:       # a lookup has no effect but its interruption point
                    look = h.lookup
                    for key in keys:
                        look(cpu, key)
                cost += n * c.lookup_ns
            budget -= n
            if first + n < len(op.keys):
                nxt = (op_i, first + n)
                break
            op_i, first = op_i + 1, 0
            if budget <= 0 and op_i < len(inv.ops):
                nxt = (op_i, 0)
                break
        shared = getattr(h.elems, "ma", None)
        shared = getattr(shared, "shared", None)
        if shared is not None and hasattr(shared, "locks") and shared.locks != locks0:
            cost += (shared.locks - locks0) * c.lock_ns        # +share: its lock, charged to this CPU's time
        return Tally(cost, CHUNK - budget, slab.kmalloc_calls - k0, slab.kmalloc_bytes - b0, ops, errors, nxt)

    def _epoch(self) -> int:
        """Changes whenever memory is allocated or freed or RCU is called or calls back."""
        slab, r, t = self.mm.slab, self.rcu.rcu, self.rcu.tasks_trace
        return (slab.kmalloc_calls + slab.kfree_calls + r.calls + t.calls + r.callbacks_invoked
                + t.callbacks_invoked + r.gps + t.gps)

    def _signature(self, m: ModelMap, ps: _ProducerState) -> tuple[Any, ...] | None:
        """Everything that decides what the producer's next cycle does, except object identities."""
        sig = m.htab.elems.signature(ps.cpus)
        if sig is None:
            return None
        table = m.htab.table
        return sig, tuple(k in table for k in ps.keys)

    def _unlock_reader(self, ps: _ProducerState) -> None:
        if ps.reader is not None:
            self.rcu.rcu.read_unlock(ps.reader)
            ps.reader = None

    def _chain(self, m: ModelMap, ps: _ProducerState, i: int, end: int | None, counts: RunCounts,
               pos: tuple[int, int] = (0, 0)) -> None:
        """One step of a producer.  An invocation is an RCU read-side section from its start to its end
        (a BPF program runs under rcu_read_lock; a batch syscall reports no quiescent state before it
        returns), except that a section longer than ``urgent_qs_ns``, or one on a CPU where
        ``rcu_request_urgent_qs_task`` asked for it (6.6+ ``check_free_by_rcu``), reports one at a chunk
        boundary (the batch syscall's ``cond_resched()`` between keys)."""
        eng = self.machine.engine
        now = eng.now
        if end is not None and now >= end and pos == (0, 0):
            return
        steps = ps.steps
        if i == 0 and pos == (0, 0) and ps.ff:
            now = self._fast_forward(m, ps, end)
            if now != eng.now:
                eng.at(now, self._chain, m, ps, 0, end, counts, prio=1)
                return
        inv = steps[i]
        rcu = self.rcu.rcu
        if pos == (0, 0):
            rcu.urgent_qs.discard(inv.cpu)         # the last run's request ended with it
            ps.reader = rcu.read_lock()
            ps.reader_since = now
        elif (rcu.model.urgent_qs_ns and now - ps.reader_since >= rcu.model.urgent_qs_ns) or inv.cpu in rcu.urgent_qs:
            rcu.urgent_qs.discard(inv.cpu)         # (rcu_request_urgent_qs_task asked for it)
            self._unlock_reader(ps)                # cond_resched(): an urgent quiescent state
            ps.reader = rcu.read_lock()
            ps.reader_since = now
        cost, more, erred = self._invoke(m, inv, counts, pos)
        if erred:
            ps.history.clear()
            ps.clean = False
        if more is not None:                       # the rest of a long invocation
            ps.busy = True
            eng.at(now + cost, self._chain, m, ps, i, end, counts, more)
            return
        ps.busy = False
        eng.at(now + cost, self._unlock_reader, ps, prio=0)
        nxt = i + 1
        if nxt == len(steps):
            if end is None:
                ps.done = True
                ps.finish_at = now + cost
                return
            nxt = 0
        if steps[nxt].cpu != inv.cpu:
            cost += self.costs.handoff_ns
        eng.at(now + cost, self._chain, m, ps, nxt, end, counts)

    def _fast_forward(self, m: ModelMap, ps: _ProducerState, end: int | None) -> int:
        """Skip whole cycles of a producer whose state repeats with nothing else happening.

        At the start of each cycle the producer's signature is recorded.  If it
        matches one recorded earlier, and since then no memory was allocated or
        freed, no RCU call or callback happened and no operation failed, the
        cycles in between form a period: running them again changes no count,
        only which object holds which key.  They are skipped up to the next
        event that is not a producer or the sampler.  Counters advance as if
        they had run; the producer's lists stay at the phase where the period
        was found (samples taken meanwhile show that phase).
        """
        eng = self.machine.engine
        now = eng.now
        epoch = self._epoch()
        if epoch != ps.epoch or not ps.clean:
            ps.history.clear()
            ps.epoch = epoch
            ps.clean = True
        sig = self._signature(m, ps)
        if sig is None:
            ps.ff = False
            return now
        seen = ps.history.get(sig)
        mine = (ps.counts.ops, ps.counts.hits, ps.counts.invocations)
        if seen is None:
            ps.history[sig] = (now, *mine)
            return now
        t0, ops0, hits0, inv0 = seen
        period = now - t0
        horizon = eng.next_time(lambda t: t.fn in self._passive)
        limit = end if horizon is None else min(horizon, end if end is not None else horizon)
        if period <= 0 or limit is None:
            return now
        table = m.htab.table
        present = sum(1 for k in self._all_keys if k in table)
        if m.htab.count - present + len(self._all_keys) > m.htab.attr.max_entries:
            return now  # is_map_full() could answer differently during the skipped span
        k = (limit - now) // period
        if k < 1:
            return now
        d = ps.skipped
        d.ops += k * (mine[0] - ops0)
        d.hits += k * (mine[1] - hits0)
        d.invocations += k * (mine[2] - inv0)
        ps.history.clear()
        return now + k * period

    def run(self, m: ModelMap, producers: tuple[Producer, ...], duration_ns: int, phase: str = "run") -> RunCounts:
        """Run every producer cyclically for ``duration_ns`` of simulated time."""
        self._check_cpus(producers)
        self.phase = phase
        counts = RunCounts()
        eng = self.machine.engine
        start = eng.now
        end = start + duration_ns
        states = self._producer_states(m, producers)
        for ps in states:
            eng.at(start, self._chain, m, ps, 0, end, ps.counts)
        eng.run(until=end)
        while any(ps.busy for ps in states) and eng.step():   # invocations in flight finish, as in the kernel
            pass
        for ps in states:
            counts.merge(ps.counts)
            counts.merge(ps.skipped)
        counts.skipped_invocations = sum(ps.skipped.invocations for ps in states)
        counts.elapsed_ns = eng.now - start       # as the kernel's: until the last invocation in flight ended
        return counts

    def _producer_states(self, m: ModelMap, producers: tuple[Producer, ...]) -> list[_ProducerState]:
        cpus_of = [sorted({inv.cpu for inv in p.steps}) for p in producers]
        shared = {cpu for i, a in enumerate(cpus_of) for j, b in enumerate(cpus_of) if i != j for cpu in a if cpu in b}
        self._all_keys = frozenset(k for p in producers for inv in p.steps for op in inv.ops for k in op.keys)
        eligible = self.fast_forward
        self._passive = {self._chain, self._sample_tick, self._unlock_reader}
        out = []
        for p, cpus in zip(producers, cpus_of):
            keys = tuple(sorted({k for inv in p.steps for op in inv.ops for k in op.keys}))
            ff = eligible and not (set(cpus) & shared)
            out.append(_ProducerState(p.steps, tuple(cpus), keys, ff))
        return out

    def execute(self, m: ModelMap, invocations: tuple[Invocation, ...], phase: str = "") -> RunCounts:
        """Run ``invocations`` once, in order, back to back."""
        if phase:
            self.phase = phase
        if not invocations:
            return RunCounts()
        eng = self.machine.engine
        start = eng.now
        ps = _ProducerState(invocations, (), (), False)
        eng.at(start, self._chain, m, ps, 0, None, ps.counts)
        while not ps.done:
            if not eng.step():
                break
        eng.run(until=ps.finish_at)
        ps.counts.elapsed_ns = eng.now - start
        return ps.counts

    def idle(self, m: ModelMap, duration_ns: int, phase: str = "idle") -> None:
        self.phase = phase
        self.machine.engine.run(until=self.machine.engine.now + duration_ns)

    def map_close(self, m: ModelMap) -> MemorySample:
        """Last reference dropped: ``htab_map_free`` runs from a workqueue."""
        self.phase = "close"
        self.machine.system_dfl_wq.queue_work(m.htab.close)
        self.machine.engine.run(until=self.machine.engine.now + 10 * NSEC_PER_MSEC)
        s = self.sample(m, "close")
        m.samples.append(s)
        m.sampling = False
        return s

    def now_ns(self) -> int:
        return self.machine.engine.now

    def _check_cpus(self, producers: tuple[Producer, ...]) -> None:
        for p in producers:
            for inv in p.steps:
                if not 0 <= inv.cpu < self.ncpus:
                    raise ValueError(f"producer {p.name}: cpu {inv.cpu} outside 0..{self.ncpus - 1}")

    def describe(self) -> dict[str, Any]:
        tt = self.rcu.tasks_trace.model
        return {
            "backend": "model", "policy": self.policy.name, "kernel": self.policy.kernel, "seed": self.seed,
            "cpus": self.ncpus, "profile": self.profile_name, "costs": self.costs.source,
            "tasks_trace": {"lazy_ms": tt.lazy_delay_ns / 1e6, "gp_ms": [tt.gp_min_ns / 1e6, tt.gp_max_ns / 1e6],
                            "lazy_lim": tt.lazy_lim},
            "rcu_gp_ms": [self.rcu.rcu.model.gp_min_ns / 1e6, self.rcu.rcu.model.gp_max_ns / 1e6],
        }
