"""The kernel backend: the same workloads against the running kernel's BPF maps.

Each map lives in its own child memory cgroup (created by a short-lived child
process, ``cgroup.create_in``), so the cgroup's kernel-memory usage is the
map's charge and the measuring process can never be OOM-killed by it.  A
sampler thread reads usage every ``sample_interval_ns`` (and fdinfo
``memlock``); producers run in worker *processes* pinned to their CPUs (the
GIL would serialise threads), passing a token around when a producer's steps
are on several CPUs (the bench's barrier pairs).

Drivers: ``syscall`` runs an invocation's ops as ``BPF_MAP_UPDATE_BATCH`` /
``BPF_MAP_DELETE_BATCH`` (kernel loops, like a ``bpf_loop``); ``prog`` runs
them from a BPF program with ``BPF_PROG_TEST_RUN`` (``prog.MapOpProgram``).
``UPDATE_BATCH`` accepts no ``BPF_NOEXIST``: the syscall driver issues such
updates with ``BPF_ANY`` (the keys are absent by construction); the prog
driver passes the flag.

Everything is cleaned up on exit, exceptions and Ctrl-C: workers are killed
and reaped, maps closed, cgroups removed.
"""

from __future__ import annotations

import ctypes as C
import errno as errno_mod
import json
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..backend.protocol import LRU_MAP_TYPES, Invocation, MapSpec, MemorySample, Producer, RunCounts
from . import DRIVERS
from . import syscall as S
from . import uapi as U
from .cgroup import ChildMemcg, MemcgLayout, create_in, memcg_layout
from .lifecycle import deferred_signals, fork, kill_and_reap

KERNEL_MAP_TYPES = {"hash": U.BPF_MAP_TYPE_HASH, "percpu_hash": U.BPF_MAP_TYPE_PERCPU_HASH,
                    "lru_hash": U.BPF_MAP_TYPE_LRU_HASH, "lru_percpu_hash": U.BPF_MAP_TYPE_LRU_PERCPU_HASH}



class KernelUnavailable(RuntimeError):
    """The kernel backend cannot run here; the message is the one-line reason."""


@dataclass
class KernelMap:
    spec: MapSpec
    bmap: S.BpfMap
    cg: ChildMemcg
    base: int
    samples: list[MemorySample] = field(default_factory=list)
    closed: bool = False


class _OpRunner:
    """Runs invocations on one map in this process (arrays prepared once per op)."""

    def __init__(self, bmap: S.BpfMap, driver: str) -> None:
        self.m = bmap
        self.driver = driver
        self._arrays: dict[int, tuple[tuple[int, ...], Any, Any]] = {}
        self._prog: Any = None

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
            self._prog = None

    def _keys(self, keys: tuple[int, ...]) -> tuple[Any, Any]:
        """ctypes key and value arrays for a key tuple, built once (the tuple is kept, so its id stays unique)."""
        got = self._arrays.get(id(keys))
        if got is None:
            got = self._arrays[id(keys)] = (keys, S.u32_array(keys),
                                            (C.c_uint8 * (len(keys) * self.m.value_stride))())
        return got[1], got[2]

    def invoke(self, inv: Invocation, errors: dict[str, int]) -> int:
        n = 0
        for op in inv.ops:
            n += len(op.keys)
            if self.driver == "prog":
                self._prog_op(op.kind, op.keys, op.flags, errors)
            elif op.kind == "update" and op.flags & U.BPF_EXIST:
                self._each(op.keys, op.flags, errors)          # a batch cannot pass BPF_EXIST
            elif op.kind == "update":
                self._batch(op.keys, errors, update=True, elem_flags=op.flags & U.BPF_F_LOCK)
            elif op.kind == "delete":
                self._batch(op.keys, errors, update=False)
            else:
                for k in op.keys:
                    S.map_lookup_elem(self.m, k.to_bytes(4, "little"))
        return n

    def _each(self, keys: tuple[int, ...], flags: int, errors: dict[str, int]) -> None:
        """``BPF_MAP_UPDATE_ELEM`` per key, with ``flags``."""
        value = bytes(self.m.value_stride)
        for k in keys:
            try:
                S.map_update_elem(self.m, k.to_bytes(self.m.key_size, "little"), value, flags)
            except S.BpfSyscallError as e:
                name = errno_mod.errorcode.get(e.errno, str(e.errno))
                errors[name] = errors.get(name, 0) + 1

    def _batch(self, keys: tuple[int, ...], errors: dict[str, int], update: bool, elem_flags: int = 0) -> None:
        karr, varr = self._keys(keys)
        start, total = 0, len(keys)
        while start < total:
            try:
                if update:
                    S.map_update_batch(self.m, karr, varr, total - start, elem_flags, start)
                else:
                    S.map_delete_batch(self.m, karr, total - start, start)
                return
            except S.BpfSyscallError as e:
                done = int(e.attrs.get("done", 0))
                name = errno_mod.errorcode.get(e.errno, str(e.errno))
                if done >= total - start:  # refused before the first key (count left unwritten): all fail
                    errors[name] = errors.get(name, 0) + total - start
                    return
                errors[name] = errors.get(name, 0) + 1
                start += done + 1          # skip the failing key, go on with the rest

    def _prog_op(self, kind: str, keys: tuple[int, ...], flags: int, errors: dict[str, int]) -> None:
        if self._prog is None:
            from .prog import MapOpProgram
            self._prog = MapOpProgram(self.m, capacity=1 << 16)
        _ok, nerr, last = self._prog.run(kind, keys, flags)
        if nerr:
            name = errno_mod.errorcode.get(last, str(last))
            errors[name] = errors.get(name, 0) + nerr


class KernelBackend:
    """A ``Backend`` on the running kernel."""

    name = "kernel"
    modelled = False

    def __init__(self, ncpus: int, *, driver: str = "syscall", sample_interval_ns: int = 1_000_000,
                 policy: str = "v6.18") -> None:
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        from .probe import require_kernel
        reason = require_kernel()
        if reason:
            raise KernelUnavailable(reason)
        have = len(os.sched_getaffinity(0))
        if ncpus > have:
            raise KernelUnavailable(f"{ncpus} CPUs asked for, this process may run on {have}")
        layout = memcg_layout()
        assert layout is not None
        self.layout: MemcgLayout = layout
        self.ncpus = ncpus
        self.driver = driver
        self.policy = policy
        self.sample_interval_ns = sample_interval_ns
        self._t0 = time.monotonic_ns()
        self.phase = ""
        self._maps: list[KernelMap] = []
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[int] = []

    # -- clock and sampling -------------------------------------------------------------
    def now_ns(self) -> int:
        return time.monotonic_ns() - self._t0

    def _read(self, m: KernelMap, memlock: bool = True) -> MemorySample:
        charged = m.cg.usage() - m.base
        ml = 0
        if memlock and not m.closed:
            try:
                ml = int(S.fdinfo(m.bmap).get("memlock", "0"))
            except OSError:
                ml = 0
        return MemorySample(self.now_ns(), charged, ml, None, self.phase)

    def _sample_loop(self, m: KernelMap) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > self.ncpus:
            try:
                os.sched_setaffinity(threading.get_native_id(), {cpus[-1]})
            except OSError:
                pass
        i = 0
        interval = self.sample_interval_ns / 1e9
        while not self._stop.is_set():
            try:
                s = self._read(m, memlock=i % 5 == 0)
            except OSError:
                break
            with self._lock:
                m.samples.append(s)
            i += 1
            self._stop.wait(interval)

    # -- maps -------------------------------------------------------------------------------
    def map_create(self, spec: MapSpec) -> KernelMap:
        mtype = KERNEL_MAP_TYPES[spec.map_type]
        lru = spec.map_type in LRU_MAP_TYPES          # always preallocated (BPF_F_NO_PREALLOC is -ENOTSUPP)
        flags = U.BPF_F_NO_PREALLOC if (spec.no_prealloc and self.policy != "prealloc" and not lru) else 0
        # values no attr field can hold are refused here (ValueError): the creating child forwards only OSError
        S.check_map_create_attr(spec.key_size, spec.value_size, spec.max_entries, flags, map_type=mtype)
        cg = ChildMemcg(self.layout, "map")
        try:
            base = cg.usage()
            fd = create_in(cg, lambda: S.map_create(mtype, spec.key_size, spec.value_size, spec.max_entries, flags,
                                                    name="bpfmem").release())
            bmap = S.BpfMap(fd, mtype, spec.key_size, spec.value_size, spec.max_entries, flags)
            cg.reset_peak()
        except BaseException:
            cg.remove()
            raise
        m = KernelMap(spec, bmap, cg, base)
        self._maps.append(m)
        self.phase = "create"
        m.samples.append(self._read(m))
        self._stop.clear()
        sampler = threading.Thread(target=self._sample_loop, args=(m,), daemon=True, name="bpfmem-sampler")
        with deferred_signals():        # a signal inside start() left a thread that join() refuses (exit 70)
            sampler.start()
            self._sampler = sampler
        return m

    def sample(self, m: KernelMap, phase: str = "") -> MemorySample:
        s = self._read(m)
        return MemorySample(s.t_ns, s.charged, s.memlock, None, phase or self.phase)

    def samples(self, m: KernelMap) -> list[MemorySample]:
        with self._lock:
            return list(m.samples)

    def peak(self, m: KernelMap) -> int:
        p = m.cg.peak()
        if p is None:
            with self._lock:
                return max(s.charged for s in m.samples)
        return p - m.base

    # -- running ------------------------------------------------------------------------------
    def execute(self, m: KernelMap, invocations: tuple[Invocation, ...], phase: str = "") -> RunCounts:
        """Run ``invocations`` in order from this process, pinned to each one's CPU."""
        if phase:
            self.phase = phase
        counts = RunCounts()
        runner = _OpRunner(m.bmap, self.driver)
        old = os.sched_getaffinity(0)
        t0 = self.now_ns()
        try:
            for inv in invocations:
                os.sched_setaffinity(0, {inv.cpu})
                errors: dict[str, int] = {}
                counts.ops += runner.invoke(inv, errors)
                counts.hits += inv.hits
                counts.invocations += 1
                for k, v in errors.items():
                    counts.add_error(k, v)
        finally:
            os.sched_setaffinity(0, old)
            runner.close()
        counts.elapsed_ns = self.now_ns() - t0
        return counts

    def run(self, m: KernelMap, producers: tuple[Producer, ...], duration_ns: int, phase: str = "run") -> RunCounts:
        """Run every producer cyclically for ``duration_ns`` in pinned worker processes."""
        self.phase = phase
        go_r, go_w = os.pipe()
        results: list[int] = []
        pids: list[int] = []
        try:
            for p in producers:
                cpus = list(dict.fromkeys(inv.cpu for inv in p.steps))
                rings = {cpu: os.pipe() for cpu in cpus} if len(cpus) > 1 else {}
                for cpu in cpus:
                    res_r, res_w = os.pipe()
                    pid = fork()
                    if pid == 0:  # pragma: no cover - worker process
                        code = 0
                        try:
                            os.close(go_w)
                            os.close(res_r)
                            out = self._worker(m, p, cpu, cpus, rings, go_r, duration_ns)
                            os.write(res_w, json.dumps(out).encode())
                        except BaseException as e:  # report, never raise into the parent's code
                            os.write(res_w, json.dumps({"fatal": repr(e)}).encode())
                            code = 1
                        finally:
                            os._exit(code)
                    os.close(res_w)
                    pids.append(pid)
                    results.append(res_r)
                for r_, w_ in rings.values():
                    os.close(r_)
                    os.close(w_)
            self._workers = pids
            os.close(go_r)
            go_r = -1
            t_start = self.now_ns()
            os.write(go_w, b"g" * len(pids))
            outs = []
            for fd in results:
                chunks = []
                while True:
                    b = os.read(fd, 65536)
                    if not b:
                        break
                    chunks.append(b)
                outs.append(json.loads(b"".join(chunks) or b'{"fatal": "worker died"}'))
            elapsed = self.now_ns() - t_start
        finally:
            for fd in results:
                os.close(fd)
            if go_r >= 0:
                os.close(go_r)
            os.close(go_w)
            self._reap(pids)
        counts = RunCounts(elapsed_ns=elapsed)
        for o in outs:
            if "fatal" in o:
                raise RuntimeError(f"kernel worker failed: {o['fatal']}")
            counts.ops += o["ops"]
            counts.hits += o["hits"]
            counts.invocations += o["invocations"]
            for k, v in o["errors"].items():
                counts.add_error(k, v)
        return counts

    def _worker(self, m: KernelMap, p: Producer, cpu: int, cpus: list[int], rings: dict[int, tuple[int, int]],
                go_r: int, duration_ns: int) -> dict[str, Any]:  # pragma: no cover - runs in a worker
        os.sched_setaffinity(0, {cpu})
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runner = _OpRunner(m.bmap, self.driver)
        os.read(go_r, 1)
        deadline = time.monotonic_ns() + duration_ns
        ops = hits = invs = 0
        errors: dict[str, int] = {}
        steps = p.steps
        if not rings:
            i = 0
            while time.monotonic_ns() < deadline:
                inv = steps[i]
                ops += runner.invoke(inv, errors)
                hits += inv.hits
                invs += 1
                i = (i + 1) % len(steps)
        else:
            my_r = rings[cpu][0]
            nxt = cpus[(cpus.index(cpu) + 1) % len(cpus)]
            nxt_w = rings[nxt][1]
            i = 0
            if steps[0].cpu != cpu:        # wait for our first turn
                i = int(os.read(my_r, 16).split(b",")[0])
            while True:
                if i < 0 or time.monotonic_ns() >= deadline:
                    try:
                        os.write(nxt_w, b"-1,")
                    except OSError:
                        pass
                    break
                inv = steps[i]
                ops += runner.invoke(inv, errors)
                hits += inv.hits
                invs += 1
                i = (i + 1) % len(steps)
                while steps[i].cpu == cpu:          # consecutive steps on this CPU
                    inv = steps[i]
                    ops += runner.invoke(inv, errors)
                    hits += inv.hits
                    invs += 1
                    i = (i + 1) % len(steps)
                os.write(nxt_w, f"{i},".encode())
                tok = os.read(my_r, 16)
                i = int(tok.split(b",")[0]) if tok else -1
        runner.close()
        return {"ops": ops, "hits": hits, "invocations": invs, "errors": errors}

    def _reap(self, pids: list[int]) -> None:
        for pid in pids:
            kill_and_reap(pid)
        self._workers = []

    def idle(self, m: KernelMap, duration_ns: int, phase: str = "idle") -> None:
        self.phase = phase
        time.sleep(duration_ns / 1e9)

    def map_close(self, m: KernelMap) -> MemorySample:
        """Close the map and wait (up to 1 s) for the kernel to free it; then remove the cgroup."""
        self.phase = "close"
        m.bmap.close()
        m.closed = True
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end and m.cg.usage() - m.base > 8192:
            time.sleep(0.001)
        s = self._read(m, memlock=False)
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
            self._sampler = None
        with self._lock:
            m.samples.append(s)
        m.cg.remove()
        self._maps.remove(m)
        return s

    def close(self) -> None:
        """Release everything still open (workers, maps, cgroups)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
            self._sampler = None
        self._reap(self._workers)
        for m in list(self._maps):
            m.bmap.close()
            m.closed = True
            try:
                m.cg.remove()
            except OSError:
                pass
            self._maps.remove(m)

    def __enter__(self) -> KernelBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": "kernel", "kernel": platform.release(), "cpus": self.ncpus, "driver": self.driver,
                "memcg": self.layout.version, "usage_file": self.layout.usage_file,
                "sample_interval_ms": self.sample_interval_ns / 1e6, "seed": None,
                "costs": "measured"}
