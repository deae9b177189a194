"""Model programs and one explored execution: one shared-memory access per step.

Problem: a reuse bug lives between two loads of a reader, or between the
stores that initialise an object and the store that publishes it, or inside
the allocator while another CPU frees.  An explorer that runs whole helper
calls atomically, on sequentially consistent memory, cannot see any of it.

Mechanism:
- a *program* is a plain function ``prog(env, t)`` pinned to a CPU.  It runs in
  its own greenlet (a stackful coroutine), so it can be suspended anywhere:
  before each access to shared memory (every load, store, atomic RMW and map
  helper is one step) and at every labelled point inside the kernel code it
  calls (``unit_alloc:active``, ``free_bulk:after_pop``, ``htab_update:locked``
  ...).  At each such point the scheduler decides who runs next: this
  program, another CPU's, or time;
- memory is ``explore.memory.Memory``: per-field histories and per-CPU views,
  so plain stores can be seen out of order unless the program uses the
  kernel's barriers; which write a plain load returns is a scheduler choice;
- a program runs inside an RCU read-side section (normal BPF programs, NMI
  programs too: ``bpf_overflow_handler`` takes ``rcu_read_lock``);
  ``rcu=False`` makes code outside one, ``trace=True`` a sleepable program
  (an RCU Tasks Trace reader);
- NMI programs are bound to a CPU and run, nested, at a labelled point of
  kernel code on that CPU when the scheduler says so; their own accesses are
  steps too (other CPUs run meanwhile);
- *time* (the next engine timestamp: a grace period ending, RCU callbacks, a
  tick) is one more option, offered only while no CPU is inside an IRQs-off
  section, and at most ``TIME_BURST`` times in a row while programs can run,
  so time never starves them;
- every choice goes through the machine's scheduler, wrapped in a recorder
  (grace-period lengths included), so a run is a list of small integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from greenlet import GreenletExit, getcurrent, greenlet

from ..alloc import BpfMemAlloc, bpf_mem_cache_alloc, bpf_mem_cache_free, bpf_mem_cache_free_rcu
from ..check import Checker, Violation
from ..maps import BPF_F_NO_PREALLOC, BpfHtab, MapAttr
from ..mm import MemObj, Mm
from ..rcu import GpModel, Rcu, call_rcu
from ..sim import Context, Cpu, Machine, RecordingScheduler, Scheduler
from .memory import NOWRITE, Memory, join

MS = 1_000_000
# fixed grace periods: no scheduler choice hides in a GP length, so DFS stays small
EXPLORE_RCU = GpModel(gp_min_ns=1 * MS, gp_max_ns=1 * MS)
EXPLORE_TT = GpModel(gp_min_ns=2 * MS, gp_max_ns=2 * MS, lazy_delay_ns=5 * MS, lazy_lim=32, gp_sleep_ns=1 * MS)

TIME_BURST = 64          # time steps in a row while a program could run
MAX_STEPS = 4000         # scheduling steps (program and time) per run before it is reported as a livelock
DRAIN_EVENTS = 20_000    # engine events after the last program ended

Program = Callable[["Env", "Thread"], Any]


@dataclass(frozen=True)
class Ref:
    """A pointer value: the object and its allocation generation when the pointer was made
    (loom-style provenance: a pointer loaded from memory keeps the generation it was stored with)."""

    obj: MemObj
    gen: int

    def __repr__(self) -> str:
        obj = self.obj
        return obj.kind[7:] if obj.id < 0 else f"obj#{obj.id}"


@dataclass(eq=False)
class Thread:
    name: str
    cpu: int
    prog: Program
    ctx: str = "task"
    rcu: bool = True
    trace: bool = False
    glet: Any = None
    done: bool = False
    result: Any = None
    reader: int | None = None
    trace_reader: int | None = None
    delivered: bool = False
    sleeps_until: Thread | None = None      # a sleepable program asleep until that program has ended


class _Hooks:
    """Instrument: the allocator orders free before reuse; RCU grace periods order readers."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def obj_alloc(self, cpu: Cpu, cache: Any, obj: MemObj) -> None:
        self.run.memory.allocated(cpu.id, obj.id)

    def obj_free(self, cpu: Cpu, cache: Any, obj: MemObj, kind: str) -> None:
        self.run.memory.freed(cpu.id, obj.id)

    def gp_start(self, flavour: str, seq: int) -> None:
        trace = flavour == "rcu_tasks_trace"
        self.run.memory.gp_start(not trace or self.run.rcu.trace_implies_rcu_gp, trace)


class Env:
    """What model programs call: checked field accesses with the kernel's orderings, atomics,
    map helpers and the allocator.  Every call that touches shared memory is one step."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.m, self.mm, self.rcu, self.checker, self.mem = run.m, run.mm, run.rcu, run.checker, run.memory
        self.objects: dict[str, Any] = {}
        self._pub: dict[int, dict] = {}      # htab element -> view published with it
        self._static_id = 0

    def log(self, t: Thread, fmt: str, *args: Any) -> None:
        """One line of the run's listing, formatted only if somebody reads it (``fmt % args``)."""
        self.run.steps.append((t, fmt, args))

    def static(self, name: str) -> Ref:
        """Static memory (a map value, a global): never freed, starts zeroed."""
        self._static_id -= 1
        obj = MemObj(self._static_id, 0, 0, 0, None, "static:" + name)
        ref = Ref(obj, 0)
        self.objects[name] = ref
        return ref

    # -- plumbing ----------------------------------------------------------------------------
    def _check(self, t: Thread, ref: Ref, what: str, write: bool = False) -> None:
        if ref.obj.id > 0:                  # static memory (negative ids) is never freed
            self.checker.access(f"cpu{t.cpu}/{t.ctx} {t.name}", ref.obj, ref.gen, what, t.reader, write)

    def _load(self, t: Thread, ref: Ref, fld: str, how: str, acquire: bool) -> Any:
        self.run.yield_()
        v = self.mem.load(t.cpu, (ref.obj.id, fld), acquire)
        self.log(t, "%s(%r.%s) -> %r", how, ref, fld, v)
        self._check(t, ref, f"{how} of {fld!r}")
        return v

    def _store(self, t: Thread, ref: Ref, fld: str, value: Any, how: str, release: bool) -> None:
        self.run.yield_()
        self.log(t, "%s(%r.%s, %r)", how, ref, fld, value)
        self._check(t, ref, f"{how} of {fld!r}", write=True)
        self.mem.store(t.cpu, (ref.obj.id, fld), value, t.name, release)

    # -- loads ------------------------------------------------------------------------------
    def READ_ONCE(self, t: Thread, ref: Ref, fld: str) -> Any:
        """A marked relaxed load (a plain C load is modelled the same way)."""
        return self._load(t, ref, fld, "READ_ONCE", False)

    def rcu_dereference(self, t: Thread, ref: Ref, fld: str) -> Any:
        """``rcu_dereference()``: the address dependency is modelled as acquire."""
        return self._load(t, ref, fld, "rcu_dereference", True)

    def smp_load_acquire(self, t: Thread, ref: Ref, fld: str) -> Any:
        return self._load(t, ref, fld, "smp_load_acquire", True)

    # -- stores -----------------------------------------------------------------------------
    def WRITE_ONCE(self, t: Thread, ref: Ref, fld: str, value: Any) -> None:
        """A marked relaxed store (plain C stores and ``memcpy`` are modelled the same way)."""
        self._store(t, ref, fld, value, "WRITE_ONCE", False)

    def rcu_assign_pointer(self, t: Thread, ref: Ref, fld: str, value: Any) -> None:
        self._store(t, ref, fld, value, "rcu_assign_pointer", True)

    def smp_store_release(self, t: Thread, ref: Ref, fld: str, value: Any) -> None:
        self._store(t, ref, fld, value, "smp_store_release", True)

    # -- barriers (no shared access: not a step) --------------------------------------------------
    def smp_wmb(self, t: Thread) -> None:
        self.mem.smp_wmb(t.cpu)
        self.log(t, "smp_wmb()")

    def smp_rmb(self, t: Thread) -> None:
        self.mem.smp_rmb(t.cpu)
        self.log(t, "smp_rmb()")

    def smp_mb(self, t: Thread) -> None:
        self.mem.smp_mb(t.cpu)
        self.log(t, "smp_mb()")

    # -- atomics (one step each) -----------------------------------------------------------------
    def _rmw(self, t: Thread, ref: Ref, fld: str, fn: Callable[[Any], Any], how: str,
             acquire: bool = False, release: bool = False) -> tuple[Any, Any]:
        self.run.yield_()
        old, new = self.mem.rmw(t.cpu, (ref.obj.id, fld), fn, t.name, acquire, release)
        self.log(t, "%s(%r.%s): %r -> %r", how, ref, fld, old, new)
        self._check(t, ref, f"{how} of {fld!r}", write=old is not new)
        return old, new

    def refcount_inc_not_zero(self, t: Thread, ref: Ref, fld: str = "usage") -> bool:
        """``refcount_inc_not_zero()``: one atomic RMW, no ordering beyond a control dependency."""
        old, new = self._rmw(t, ref, fld, lambda v: v + 1 if v else NOWRITE, "refcount_inc_not_zero")
        if old:
            self.checker.refcount(t.name, ref.obj, old, new, "refcount_inc_not_zero")
        return bool(old)

    def refcount_inc(self, t: Thread, ref: Ref, fld: str = "usage") -> None:
        """``refcount_inc()``: the caller must already hold a reference."""
        old, new = self._rmw(t, ref, fld, lambda v: v + 1, "refcount_inc")
        self.checker.refcount(t.name, ref.obj, old, new, "refcount_inc")

    def refcount_dec_and_test(self, t: Thread, ref: Ref, fld: str = "usage") -> bool:
        """``refcount_dec_and_test()``: release ordering, acquire on success."""
        old, new = self._rmw(t, ref, fld, lambda v: v - 1, "refcount_dec_and_test", acquire=True, release=True)
        self.checker.refcount(t.name, ref.obj, old, new, "refcount_dec_and_test")
        return new == 0

    def xchg(self, t: Thread, ref: Ref, fld: str, value: Any, how: str = "xchg") -> Any:
        """``xchg()`` (``bpf_kptr_xchg``): fully ordered."""
        self.mem.smp_mb(t.cpu)
        old, _ = self._rmw(t, ref, fld, lambda v: value, how, acquire=True, release=True)
        self.mem.smp_mb(t.cpu)
        return old

    # -- allocator helpers ------------------------------------------------------------------------
    def bpf_mem_cache_alloc(self, t: Thread, ma: BpfMemAlloc) -> Ref | None:
        self.run.yield_()
        cpu = self.m.cpus[t.cpu]
        obj = bpf_mem_cache_alloc(ma, cpu)
        if obj is None:
            self.log(t, "bpf_mem_cache_alloc() -> NULL")
            if t.ctx == "nmi":
                self.checker.flag("nmi_alloc_fail", f"cpu{t.cpu}/nmi: allocation failed (re-entered cache)")
            elif any(w.pending and w not in cpu.irq_work_list for w in _refill_works(ma, t.cpu)):
                self.checker.flag("alloc_fail", f"cpu{t.cpu}/{t.name}: allocation failed: the refill irq_work is "
                                                "claimed by a preempted task and not yet queued")
            return None
        ref = Ref(obj, self.checker.shadow(obj).gen)
        self.log(t, "bpf_mem_cache_alloc() -> %r", ref)
        return ref

    def bpf_mem_cache_free(self, t: Thread, ma: BpfMemAlloc, ref: Ref) -> None:
        self.run.yield_()
        self.log(t, "bpf_mem_cache_free(%r)", ref)
        bpf_mem_cache_free(ma, self.m.cpus[t.cpu], ref.obj)

    def bpf_mem_cache_free_rcu(self, t: Thread, ma: BpfMemAlloc, ref: Ref) -> None:
        self.run.yield_()
        self.log(t, "bpf_mem_cache_free_rcu(%r)", ref)
        bpf_mem_cache_free_rcu(ma, self.m.cpus[t.cpu], ref.obj)

    def call_rcu_free(self, t: Thread, ma: BpfMemAlloc, ref: Ref) -> None:
        """``call_rcu(&obj->rcu, cb)`` whose callback does ``bpf_mem_cache_free`` (bpf_cpumask 6.4-6.5)."""
        self.run.yield_()
        self.log(t, "call_rcu(%r) -> bpf_mem_cache_free after a GP", ref)
        cpu = self.m.cpus[t.cpu]

        def cb() -> None:
            self.run.log(f"cpu{cpu.id}/rcu callback: bpf_mem_cache_free({ref})")
            bpf_mem_cache_free(ma, cpu, ref.obj)
        call_rcu(self.rcu, cb)

    def free(self, t: Thread, ma: BpfMemAlloc, ref: Ref, policy: str) -> None:
        """Free by the scenario's policy (see ``scenarios.POLICIES``; ``free+<proposal>`` frees as ``free``)."""
        if policy in ("free", "free_v6.6") or policy.startswith("free+") or ma.profile.proposal:
            self.bpf_mem_cache_free(t, ma, ref)
        elif policy == "call_rcu_free":
            self.call_rcu_free(t, ma, ref)
        else:
            self.bpf_mem_cache_free_rcu(t, ma, ref)

    # -- hash map helpers --------------------------------------------------------------------------
    def new_htab(self, name: str, max_entries: int = 16, free_rcu: bool = False, profile: Any = None,
                 delayed_free: bool = False) -> BpfHtab:
        """``delayed_free``: elements freed by ``call_rcu`` then ``bpf_mem_cache_free`` (RFC v3 5/6)."""
        h = BpfHtab(self.m, self.mm, self.rcu, MapAttr(1, 4, 8, max_entries, BPF_F_NO_PREALLOC), self.run.memcg,
                    profile=profile, free_rcu=free_rcu, elems="ma_delayed_free" if delayed_free else "ma")
        self.objects[name] = h
        return h

    def bpf_map_update_elem(self, t: Thread, h: BpfHtab, key: int, value: int, late_value: bool = False) -> int:
        """``bpf_map_update_elem()``: ``alloc_htab_elem`` copies key and value into the element, then
        ``hlist_nulls_add_head_rcu`` publishes it (release).  ``late_value`` plants a bug: the value is
        stored after the element is linked."""
        self.run.yield_()
        cpu = self.m.cpus[t.cpu]
        made: list[Ref] = []

        def init(obj: MemObj) -> None:
            ref = Ref(obj, self.checker.shadow(obj).gen)
            made.append(ref)
            self.mem.store(t.cpu, (obj.id, "key"), key, t.name)
            if not late_value:
                self.mem.store(t.cpu, (obj.id, "value"), value, t.name)
            self._pub[obj.id] = dict(self.mem.cur[t.cpu])
        ret = h.update(cpu, key, 0, init)
        self.log(t, "bpf_map_update_elem(key %r, value %r) -> %r%s", key, value, ret, f" [{made[0]}]" if made else "")
        if ret == 0 and late_value:
            self.WRITE_ONCE(t, made[0], "value", value)
        return ret

    def bpf_map_delete_elem(self, t: Thread, h: BpfHtab, key: int) -> int:
        self.run.yield_()
        ret = h.delete(self.m.cpus[t.cpu], key)
        self.log(t, "bpf_map_delete_elem(key %r) -> %r", key, ret)
        return ret

    def bpf_map_lookup_elem(self, t: Thread, h: BpfHtab, key: int) -> Ref | None:
        """Lockless lookup: the bucket walk is ``rcu_dereference`` (acquires what the update published)."""
        self.run.yield_()
        obj = h.lookup(self.m.cpus[t.cpu], key)
        if obj is None:
            self.log(t, "bpf_map_lookup_elem(key %r) -> NULL", key)
            return None
        pub = self._pub.get(obj.id)
        if pub is not None:
            join(self.mem.cur[t.cpu], pub)
        ref = Ref(obj, self.checker.shadow(obj).gen)
        self.log(t, "bpf_map_lookup_elem(key %r) -> %r", key, ref)
        return ref

    def sleep_until_done(self, t: Thread, other: str) -> None:
        """A sleepable program sleeps (say, a ``bpf_copy_from_user()`` that faults) until program ``other``
        has ended; only sleepable programs may (an RCU read-side section must not sleep)."""
        if not t.trace:
            raise ValueError(f"{t.name}: only a sleepable program may sleep")
        t.sleeps_until = next(x for x in self.run.threads if x.name == other)
        self.log(t, "sleeps until %s has ended", other)
        self.run.yield_()
        t.sleeps_until = None

    # -- local storage helpers (maps/local_storage.py) ---------------------------------------------------
    def new_local_storage(self, name: str, kind: str = "task", profile: Any = None) -> Any:
        """A local-storage map of ``kind`` (value: one field) on ``profile`` (default: 6.8-6.18)."""
        from ..maps.local_storage import PROFILES, BpfLocalStorageMap
        smap = BpfLocalStorageMap(self.m, self.mm, self.rcu, kind, 8, self.run.memcg, profile or PROFILES["v6.8"])
        self.objects[name] = smap
        return smap

    def bpf_storage_get(self, t: Thread, smap: Any, owner: Any, create_value: int | None = None) -> Ref | None:
        """``bpf_{task,cgrp,sk,inode}_storage_get()``: the owner's element (lockless: it acquires what the
        create published), or with ``create_value`` (``BPF_LOCAL_STORAGE_GET_F_CREATE``) a new one."""
        self.run.yield_()
        cpu = self.m.cpus[t.cpu]
        st = owner.storage
        selem = st.selems.get(smap.id) if st is not None else None
        if selem is None and create_value is not None:
            from ..mm import GFP_ATOMIC
            ret = smap.update(cpu, owner, 1, GFP_ATOMIC)         # BPF_NOEXIST
            st = owner.storage
            selem = st.selems.get(smap.id) if ret == 0 and st is not None else None
            if selem is not None:
                self.mem.store(t.cpu, (selem.obj.id, "value"), create_value, t.name)
                self._pub[selem.obj.id] = dict(self.mem.cur[t.cpu])
        if selem is None:
            self.log(t, "storage_get(%s) -> NULL", owner.name)
            return None
        pub = self._pub.get(selem.obj.id)
        if pub is not None:
            join(self.mem.cur[t.cpu], pub)
        ref = Ref(selem.obj, self.checker.shadow(selem.obj).gen)
        self.log(t, "storage_get(%s) -> %r", owner.name, ref)
        return ref

    def bpf_storage_delete(self, t: Thread, smap: Any, owner: Any) -> int:
        """``bpf_*_storage_delete()`` / ``BPF_MAP_DELETE_ELEM``: ``reuse_now = false``."""
        self.run.yield_()
        ret = smap.delete(self.m.cpus[t.cpu], owner)
        self.log(t, "storage_delete(%s) -> %r", owner.name, ret)
        return ret

    def owner_exit(self, t: Thread, slot: Ref, owner: Any) -> None:
        """The owner goes away: unpublished from ``slot`` (a task unhashed), then after an RCU grace period
        (``put_task_struct_rcu_user`` → ``delayed_put_task_struct`` → ``free_task``) its storage is destroyed
        with ``reuse_now``."""
        from ..maps.local_storage import bpf_local_storage_destroy
        self.WRITE_ONCE(t, slot, "p", 0)
        self.log(t, "owner %s unhashed; destroy after an RCU GP", owner.name)

        def destroy() -> None:
            cpu = self.m.cpus[t.cpu]
            self.run.log(f"cpu{cpu.id}/rcu callback: bpf_local_storage_destroy({owner.name})")
            bpf_local_storage_destroy(cpu, owner)
        call_rcu(self.rcu, destroy)

    # -- read-side sections (no shared access: not a step) ---------------------------------------------
    def rcu_read_unlock(self, t: Thread) -> None:
        """Leave the program's RCU read-side section early (what follows is unprotected)."""
        if t.reader is not None:
            tok, t.reader = t.reader, None
            self.log(t, "rcu_read_unlock()")
            self.rcu.rcu.read_unlock(tok)

    # -- oracle ---------------------------------------------------------------------------------------
    def wrong(self, t: Thread, message: str) -> None:
        self.checker.flag("wrong_result", f"cpu{t.cpu}/{t.ctx} {t.name}: {message}")


def _refill_works(ma: BpfMemAlloc, cpu: int) -> list[Any]:
    """The refill irq_works of ``ma``'s caches on ``cpu``."""
    if ma.cache is not None:
        return [ma.cache[cpu].refill_work]
    return [c.refill_work for c in (ma.caches or [[]])[cpu]]


def render(entry: Any) -> str:
    """A listing line: a string, or (thread, format, args) from ``Env.log``."""
    if entry.__class__ is str:
        return entry
    t, fmt, args = entry
    return f"cpu{t.cpu}/{t.ctx} {t.name}: " + (fmt % args if args else fmt)


@dataclass
class RunResult:
    raw_steps: list[Any]
    violations: list[Violation]
    choices: list[int]
    options: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    sched_steps: int = 0          # scheduling decisions among programs and time ("next:" choices)

    @property
    def steps(self) -> list[str]:
        """The listing, one line per step (rendered on demand: most runs are never read)."""
        return [render(e) for e in self.raw_steps]


_POOLS: dict[tuple[int, int], list[Any]] = {}


def _pool(main: Any) -> list[Any]:
    """Idle program greenlets of this process and scheduler greenlet (making one costs ~10 us)."""
    import os
    return _POOLS.setdefault((os.getpid(), id(main)), [])


def _new_worker(main: Any) -> Any:
    def loop(job: tuple[Run, Thread]) -> None:
        while True:
            run, t = job
            try:
                run._thread_main(t)
            except BaseException as e:            # a model error: raise it in the scheduler, as a dying greenlet would
                _pool(main).append(me)
                job = run.main.throw(e)
                continue
            _pool(main).append(me)
            job = run.main.switch()
    me = greenlet(loop, parent=main)
    return me


class Run:
    """One execution of a scenario under one scheduler."""

    def __init__(self, ncpus: int, sched: Scheduler, accepted: dict[str, bool], max_steps: int = MAX_STEPS) -> None:
        self.rec = RecordingScheduler(sched)
        self.m = Machine(ncpus, self.rec)
        self.mm = Mm(self.m)
        self.rcu = Rcu(self.m, EXPLORE_RCU, EXPLORE_TT)
        self.memcg = self.mm.root_memcg.child("explore")
        self.steps: list[Any] = []                 # str or (thread, format, args): see render()
        self.max_steps = max_steps
        self.memory = Memory(ncpus, self.choose)
        rcu = self.rcu.rcu
        self.checker = Checker(step=lambda: len(self.steps) - 1, reader_seq=lambda: rcu._seq[0],
                               active_readers=lambda: list(rcu._readers), accepted=accepted,
                               on_flag=self._flagged)
        self.m.instruments.add(self.checker)          # before setup: it must see every allocation
        self.m.instruments.add(_Hooks(self))
        self.env = Env(self)
        self.threads: list[Thread] = []
        self.nmis: list[Thread] = []
        self.running = False
        self.in_time = False
        self.aborted = False
        self.current: Thread | None = None
        self.burst = 0
        self._labels: dict[tuple[Any, ...], str] = {}
        self.main = getcurrent()
        self.sched_steps = 0
        self._shared_cpus = False
        self._on_cpu: dict[int, Thread] = {}          # the thread that last ran on each CPU
        for cpu in self.m.cpus:
            cpu.point_hook = self._point

    def log(self, text: str) -> None:
        self.steps.append(text)

    def listing(self) -> list[str]:
        return [render(e) for e in self.steps]

    def _flagged(self, kind: str, accepted: bool, message: str) -> None:
        self.steps.append(f"!! {kind} ({'accepted by the kernel' if accepted else 'BUG'}): {message}")

    def choose(self, label: str, n: int) -> int:
        return self.m.sched.choose(label, n)

    def spawn(self, name: str, cpu: int, prog: Program, *, rcu: bool = True, trace: bool = False) -> Thread:
        t = Thread(name, cpu, prog, rcu=rcu, trace=trace)
        self.threads.append(t)
        return t

    def nmi(self, name: str, cpu: int, prog: Program) -> Thread:
        t = Thread(name, cpu, prog, ctx="nmi")
        self.nmis.append(t)
        return t

    # -- switching -------------------------------------------------------------------------------
    def yield_(self, where: str = "") -> None:
        """A scheduling point (``where``: the kernel code's label, empty for a program's own access).
        Decided where it happens (no switch when the running program goes on); a no-op during setup,
        while time advances and after the run."""
        if self.running and not self.in_time and getcurrent() is not self.main:
            t = self._decide(where)
            if t is None:                              # step limit: the scheduler ends the run
                self.main.switch()
            elif t is not self.current:
                self.current = t
                self._on_cpu[t.cpu] = t
                self._resume(t)

    def _decide(self, where: str = "") -> Thread | None:
        """One scheduling decision among the programs and time; time steps run here.  None: nothing to run
        (or the step limit was reached)."""
        eng = self.m.engine
        cpus = self.m.cpus
        labels = self._labels
        while True:
            runnable = [t for t in self.threads if not t.done and (t.sleeps_until is None or t.sleeps_until.done)]
            if not runnable and any(not t.done for t in self.threads):
                runnable = [t for t in self.threads if not t.done]      # nobody left to wake them: wake all
            if self._shared_cpus and runnable:
                on_cpu = self._on_cpu
                runnable = [t for t in runnable if not cpus[t.cpu].irq_off or on_cpu.get(t.cpu, t) is t]
            if not runnable:
                return None
            if self.sched_steps >= self.max_steps:
                self.aborted = True
                self.checker.flag("livelock", f"no end after {self.sched_steps} steps")
                return None
            cur = self.current
            if cur is not None and runnable[0] is not cur and cur in runnable:
                runnable.remove(cur)
                runnable.insert(0, cur)                # option 0: the running program goes on
            time_ok = self.burst < TIME_BURST and eng.peek() is not None
            if time_ok:
                for c in cpus:
                    if c.irq_off:
                        time_ok = False
                        break
            self.sched_steps += 1
            n = len(runnable) + time_ok
            if n == 1:
                self.burst = 0
                return runnable[0]
            key = (*runnable, time_ok, where)
            label = labels.get(key)
            if label is None:
                label = labels[key] = ("next:" + ",".join([t.name for t in runnable] + (["time"] if time_ok else []))
                                       + (f"@{where}" if where else ""))
            c = self.choose(label, n)
            if c < len(runnable):
                self.burst = 0
                return runnable[c]
            self.burst += 1
            self.in_time = True
            try:
                self._time_step()
            finally:
                self.in_time = False

    def _point(self, cpu: Cpu, label: str) -> None:
        """A labelled point in kernel code: other CPUs may run here; an NMI may arrive on this CPU."""
        if not self.running:
            return
        self.yield_(label)
        for t in self.nmis:
            if t.cpu == cpu.id and not t.delivered and cpu.ctx != Context.NMI:
                if self.choose(f"nmi@cpu{cpu.id}:{label}", 2):
                    t.delivered = True
                    self.log(f"cpu{cpu.id}: NMI at {label}")
                    cpu.enter(Context.NMI)
                    try:
                        self._enter(t)
                        t.result = t.prog(self.env, t)
                        self._leave(t)
                    finally:
                        cpu.exit(Context.NMI)
                    t.done = True

    def _enter(self, t: Thread) -> None:
        if t.rcu:
            t.reader = self.rcu.rcu.read_lock()
            self.memory.reader_start(t.cpu)
        if t.trace:
            t.trace_reader = self.rcu.tasks_trace.read_lock()
            self.memory.reader_start(t.cpu, sleepable=True)

    def _leave(self, t: Thread) -> None:
        if t.trace_reader is not None:
            tok, t.trace_reader = t.trace_reader, None
            self.rcu.tasks_trace.read_unlock(tok)
        if t.reader is not None:
            tok, t.reader = t.reader, None
            self.rcu.rcu.read_unlock(tok)

    def _thread_main(self, t: Thread) -> None:
        try:
            self._enter(t)
            t.result = t.prog(self.env, t)
            self._leave(t)              # may end a grace period and run callbacks here: still this thread's steps
        except GreenletExit:
            t.result = "aborted"
        finally:
            t.done = True

    def _resume(self, t: Thread) -> None:
        """Run ``t`` until its next scheduling point (starting it on a pooled greenlet the first time)."""
        g = t.glet
        if g is None:
            pool = _pool(self.main)
            g = t.glet = pool.pop() if pool else _new_worker(self.main)
            g.switch((self, t))
        else:
            g.switch()

    def _time_step(self) -> None:
        eng = self.m.engine
        nxt = eng.peek()
        if nxt is not None:
            self.log(f"time: {nxt / MS:g} ms")
            eng.run(until=nxt)

    def execute(self) -> RunResult:
        eng = self.m.engine
        self.running = True
        # threads sharing a CPU: one may not run while another holds that CPU's IRQs off (no preemption)
        self._shared_cpus = len({t.cpu for t in self.threads}) < len(self.threads)
        self._on_cpu = {}
        self.memory.settle()
        for t in self.threads:
            t.glet = greenlet(lambda t=t: self._thread_main(t))
        try:
            while not self.aborted:                    # back here when a program ends (or at the step limit)
                t = self._decide()
                if t is None:
                    break
                self.current = t
                self._on_cpu[t.cpu] = t
                self._resume(t)
            if not self.aborted:
                events = 0
                while eng.peek() is not None:
                    if events >= DRAIN_EVENTS:
                        self.checker.flag("livelock", f"callbacks still pending after {events} events")
                        break
                    eng.step()
                    events += 1
        finally:
            self.running = False
            for t in self.threads:
                if t.glet is not None and not t.done:
                    t.glet.throw(GreenletExit)
        return RunResult(self.steps, list(self.checker.violations), list(self.rec.schedule.steps),
                         list(self.rec.options), list(self.rec.labels),
                         {t.name: t.result for t in self.threads + self.nmis}, self.sched_steps)
