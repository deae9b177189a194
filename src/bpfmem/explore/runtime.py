"""Model programs and one explored execution.

Problem: to find reuse bugs we must run BPF-program-like code on several CPUs
(and NMIs) in many interleavings, with every choice made by the scheduler so
a bad interleaving replays exactly.

Mechanism:
- a *program* is a generator function ``prog(env, t)``; each ``yield label``
  is a point where another CPU may run (a preemption point between helper
  calls).  Helpers (``env.htab_lookup``, ``env.read``...) run atomically, as
  helper calls do with respect to other CPUs' programs at this granularity.
- a program runs inside an RCU read-side section (normal BPF programs do);
  ``t.rcu=False`` makes it a program outside one (for "reader not in RCU").
- NMI programs are bound to a CPU and run, nested and to completion, at a
  labelled point of kernel code on that CPU (``unit_alloc:active``...) when
  the scheduler says so.
- the choice at each step is among the runnable programs and "time" (run the
  next engine event: a grace period ending, RCU callbacks).
- the ``Checker`` observes allocator events and every access through a
  program's pointer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

from ..alloc import BpfMemAlloc, bpf_mem_cache_alloc, bpf_mem_cache_free, bpf_mem_cache_free_rcu
from ..check import Checker, Violation
from ..maps import BPF_F_NO_PREALLOC, BpfHtab, MapAttr
from ..mm import MemObj, Mm
from ..rcu import GpModel, Rcu
from ..sim import Context, Cpu, Machine, Scheduler

MS = 1_000_000
# fixed grace periods: no scheduler choice hides in a GP length, so DFS stays small
EXPLORE_RCU = GpModel(gp_min_ns=1 * MS, gp_max_ns=1 * MS)
EXPLORE_TT = GpModel(gp_min_ns=2 * MS, gp_max_ns=2 * MS, lazy_delay_ns=5 * MS, lazy_lim=32, gp_sleep_ns=1 * MS)

Program = Callable[["Env", "Thread"], Generator[str, None, Any]]


@dataclass(frozen=True)
class Ref:
    """A program's pointer: the object and its allocation generation when the pointer was taken."""

    obj: MemObj
    gen: int


@dataclass
class Thread:
    name: str
    cpu: int
    prog: Program
    ctx: str = "task"
    rcu: bool = True
    it: Iterator[str] | None = None
    done: bool = False
    result: Any = None
    reader: int | None = None
    delivered: bool = False


class Env:
    """What model programs call: map helpers, allocator, checked memory accesses, RCU."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.m, self.mm, self.rcu, self.checker = run.m, run.mm, run.rcu, run.checker
        self.objects: dict[str, Any] = {}
        self.slots: dict[str, Any] = {}

    def cpu(self, t: Thread) -> Cpu:
        return self.m.cpus[t.cpu]

    def log(self, t: Thread, text: str) -> None:
        self.run.log(f"cpu{t.cpu}/{t.ctx}: {text}")

    # -- hash map helpers ------------------------------------------------------------------
    def new_htab(self, name: str, max_entries: int = 16, free_rcu: bool = False, profile: Any = None) -> BpfHtab:
        h = BpfHtab(self.m, self.mm, self.rcu, MapAttr(1, 4, 8, max_entries, BPF_F_NO_PREALLOC), self.run.memcg,
                    profile=profile, free_rcu=free_rcu)
        self.objects[name] = h
        return h

    def htab_update(self, t: Thread, h: BpfHtab, key: int, value: int) -> int:
        cpu = self.cpu(t)
        ret = h.update(cpu, key, 0)
        if ret == 0:
            obj = h.table[key]
            obj.fields = {"key": key, "value": value}
        self.log(t, f"htab_update(key {key}, value {value}) -> {ret}")
        return ret

    def htab_delete(self, t: Thread, h: BpfHtab, key: int) -> int:
        ret = h.delete(self.cpu(t), key)
        self.log(t, f"htab_delete(key {key}) -> {ret}")
        return ret

    def htab_lookup(self, t: Thread, h: BpfHtab, key: int) -> Ref | None:
        obj = h.lookup(self.cpu(t), key)
        ref = Ref(obj, self.checker.shadow(obj).gen) if obj is not None else None
        self.log(t, f"htab_lookup(key {key}) -> {f'obj#{obj.id}' if obj is not None else 'NULL'}")
        return ref

    # -- allocator helpers --------------------------------------------------------------------
    def alloc(self, t: Thread, ma: BpfMemAlloc, **fields: Any) -> Ref | None:
        obj = bpf_mem_cache_alloc(ma, self.cpu(t))
        if obj is None:
            self.log(t, "bpf_mem_cache_alloc -> NULL")
            if t.ctx == "nmi":
                self.checker.flag("nmi_alloc_fail", f"cpu{t.cpu}/nmi: allocation failed (re-entered cache)")
            return None
        obj.fields = dict(fields)
        self.log(t, f"bpf_mem_cache_alloc -> obj#{obj.id}")
        return Ref(obj, self.checker.shadow(obj).gen)

    def free(self, t: Thread, ma: BpfMemAlloc, ref: Ref, rcu: bool = False) -> None:
        self.log(t, f"bpf_mem_cache_free{'_rcu' if rcu else ''}(obj#{ref.obj.id})")
        if rcu:
            bpf_mem_cache_free_rcu(ma, self.cpu(t), ref.obj)
        else:
            bpf_mem_cache_free(ma, self.cpu(t), ref.obj)

    # -- memory accesses through a program's pointer ----------------------------------------------
    def read(self, t: Thread, ref: Ref, name: str) -> Any:
        clean = self.checker.access(f"cpu{t.cpu}/{t.ctx}", ref.obj, ref.gen, f"read of {name!r}")
        value = (ref.obj.fields or {}).get(name) if not ref.obj.freed else None
        self.log(t, f"read obj#{ref.obj.id}.{name} -> {value}{'' if clean else ' (stale)'}")
        return value

    def write(self, t: Thread, ref: Ref, name: str, value: Any) -> None:
        self.checker.access(f"cpu{t.cpu}/{t.ctx}", ref.obj, ref.gen, f"write of {name!r}")
        if ref.obj.fields is None:
            ref.obj.fields = {}
        ref.obj.fields[name] = value
        self.log(t, f"write obj#{ref.obj.id}.{name} = {value}")

    def wrong(self, t: Thread, message: str) -> None:
        self.checker.flag("wrong_result", f"cpu{t.cpu}/{t.ctx}: {message}")


@dataclass
class RunResult:
    steps: list[str]
    violations: list[Violation]
    choices: list[int]
    results: dict[str, Any] = field(default_factory=dict)


class Run:
    """One execution of a scenario under one scheduler."""

    def __init__(self, ncpus: int, sched: Scheduler, accepted: dict[str, bool], max_steps: int = 200) -> None:
        self.m = Machine(ncpus, sched)
        self.sched = sched
        self.mm = Mm(self.m)
        self.rcu = Rcu(self.m, EXPLORE_RCU, EXPLORE_TT)
        self.memcg = self.mm.root_memcg.child("explore")
        self.steps: list[str] = []
        self.max_steps = max_steps
        self.checker = Checker(step=lambda: len(self.steps), reader_seq=lambda: self.rcu.rcu._seq[0],
                               active_readers=self._active_readers, accepted=accepted)
        self.m.instruments.add(self.checker)          # before setup: it must see every allocation
        self.env = Env(self)
        self.threads: list[Thread] = []
        self.nmis: list[Thread] = []
        self.choices: list[int] = []

    def _active_readers(self) -> list[int]:
        return list(self.rcu.rcu._readers)

    def log(self, text: str) -> None:
        self.steps.append(text)

    def spawn(self, name: str, cpu: int, prog: Program, *, rcu: bool = True) -> Thread:
        t = Thread(name, cpu, prog, rcu=rcu)
        self.threads.append(t)
        return t

    def nmi(self, name: str, cpu: int, prog: Program) -> Thread:
        t = Thread(name, cpu, prog, ctx="nmi")
        self.nmis.append(t)
        self.m.cpus[cpu].point_hook = self._point
        return t

    def choose(self, label: str, n: int) -> int:
        c = self.sched.choose(label, n)
        if n > 1:
            self.choices.append(c)
        return c

    def _point(self, cpu: Cpu, label: str) -> None:
        """A labelled point in kernel code: maybe an NMI program runs here, nested and to completion."""
        for t in self.nmis:
            if t.cpu == cpu.id and not t.delivered and cpu.ctx != Context.NMI:
                if self.choose(f"nmi@{label}", 2):
                    t.delivered = True
                    self.log(f"cpu{cpu.id}: NMI at {label}")
                    hook, cpu.point_hook = cpu.point_hook, None
                    cpu.enter(Context.NMI)
                    try:
                        for _ in t.prog(self.env, t):
                            pass
                    finally:
                        cpu.exit(Context.NMI)
                        cpu.point_hook = hook
                    t.done = True

    def _step(self, t: Thread) -> None:
        if t.it is None:
            if t.rcu:
                t.reader = self.rcu.rcu.read_lock()
            t.it = t.prog(self.env, t)
        try:
            next(t.it)
        except StopIteration as stop:
            t.done = True
            t.result = stop.value
            if t.reader is not None:
                self.rcu.rcu.read_unlock(t.reader)
                t.reader = None

    def execute(self) -> RunResult:
        eng = self.m.engine
        while True:
            runnable = [t for t in self.threads if not t.done]
            has_time = eng.peek() is not None
            n = len(runnable) + (1 if has_time else 0)
            if n == 0 or (not runnable and all(t.done for t in self.threads) and not has_time):
                break
            if not runnable:            # only time is left: let callbacks run out
                eng.step()
                continue
            if len(self.steps) >= self.max_steps:
                break
            c = self.choose("next:" + ",".join([t.name for t in runnable] + (["time"] if has_time else [])), n)
            if c == len(runnable):
                eng.step()
            else:
                self._step(runnable[c])
        return RunResult(self.steps, list(self.checker.violations), list(self.choices),
                         {t.name: t.result for t in self.threads})
