"""A real BPF program that allocates from ``bpf_global_ma``: ``bpf_obj_new`` and ``bpf_obj_drop``.

Problem: ``bpf_obj_new_impl(local_type_id__k, meta__ign)`` allocates a struct the program itself
defines: the verifier looks the id up in the program's BTF (``check_kfunc_call``: "bpf_obj_new/
bpf_percpu_obj_new requires prog BTF"), and it keeps a program BTF only when ``func_info`` comes with it
(``check_btf_info`` returns early without one).  So the program carries six BTF types of its own:
``int``, ``unsigned char``, ``unsigned char[size]``, ``struct obj { data[size] }``, and the
``FUNC_PROTO``/``FUNC`` its one ``func_info`` record names.

Mechanism: a sleepable ``BPF_PROG_TYPE_SYSCALL`` program (``bpf_obj_new_impl`` is in the common kfunc
set the syscall program type has) allocates ``objects`` objects, spills each owned reference to its own
stack slot (64 x 8 B fill the 512-byte stack, which bounds a batch), then drops every non-NULL one.  A
``BPF_PROG_TEST_RUN`` is one round of Hou Tao's ``bench bpf_ma`` (lore
20231221141501.3588586-3-houtao@huaweicloud.com): allocate a batch, hold it, free it, on the calling
CPU.  ``bpf_global_ma`` charges nobody (objcg NULL): the memory is seen in the slab cache of the size
class, ``kmalloc-cg-<class>`` (the allocator asks with ``__GFP_ACCOUNT``), in /proc/slabinfo.
"""

from __future__ import annotations

import ctypes as C
import os
import struct
import threading
import time
from typing import Any

from . import asm as A
from . import syscall as S
from . import uapi as U
from .arena_prog import kfunc_call
from .storage_create import refused
from .btf import BTF_MAGIC, KIND_ARRAY, KIND_FUNC, KIND_FUNC_PROTO, KIND_INT, KIND_STRUCT, find_func_id, struct_size

MAX_OBJECTS = 64                 # one 8-byte stack slot per held object: 512 B of stack
OBJ_TYPE_ID, FUNC_TYPE_ID = 4, 6
LLIST_NODE_SZ = 8                # bpf_mem_alloc's header in front of every object
# bpf_mem_alloc's size classes (sizes[] in kernel/bpf/memalloc.c) and the kmalloc cache each comes from
SIZE_CLASSES = (16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096)


def size_class(size: int) -> int:
    """The unit an object of ``size`` bytes takes: the smallest class >= size + the 8-byte header."""
    need = size + LLIST_NODE_SZ
    for c in SIZE_CLASSES:
        if c >= need:
            return c
    raise ValueError(f"--size must be 1..{SIZE_CLASSES[-1] - LLIST_NODE_SZ} (bpf_mem_alloc_check_size), got {size}")


def slab_cache(size: int) -> str:
    c = size_class(size)
    return f"kmalloc-cg-{c // 1024}k" if c >= 1024 else f"kmalloc-cg-{c}"


def slab_objects(cache: str) -> int:
    """Allocated objects of a slab cache (``active_objs`` in /proc/slabinfo, or 0 if it is merged away)."""
    with open("/proc/slabinfo") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == cache:
                return int(parts[1])
    return 0


def btf_blob(size: int) -> bytes:
    """Raw BTF: [1] int, [2] unsigned char, [3] unsigned char[size], [4] struct obj, [5] int (void), [6] bench_obj."""
    names = ("int", "unsigned char", "obj", "data", "bench_obj")
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    off = {n: strings.index(b"\0" + n.encode() + b"\0") + 1 for n in names}

    def t(name: int, kind: int, vlen: int, size_or_type: int) -> bytes:
        return struct.pack("<III", name, kind << 24 | vlen, size_or_type)

    types = (t(off["int"], KIND_INT, 0, 4) + struct.pack("<I", 1 << 24 | 32)
             + t(off["unsigned char"], KIND_INT, 0, 1) + struct.pack("<I", 8)
             + t(0, KIND_ARRAY, 0, 0) + struct.pack("<III", 2, 1, size)
             + t(off["obj"], KIND_STRUCT, 1, size) + struct.pack("<III", off["data"], 3, 0)
             + t(0, KIND_FUNC_PROTO, 0, 1)
             + t(off["bench_obj"], KIND_FUNC, 0, 5))
    return struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings)) + types + strings


# the kfuncs of each kind: (allocate, free); obj and percpu take (type id, meta), cpumask nothing
KFUNCS = {"obj": ("bpf_obj_new_impl", "bpf_obj_drop_impl"),
          "percpu": ("bpf_percpu_obj_new_impl", "bpf_percpu_obj_drop_impl"),
          "cpumask": ("bpf_cpumask_create", "bpf_cpumask_release")}


def program(objects: int, new_id: int, drop_id: int, counts: int, type_id: int = OBJ_TYPE_ID,
            typed: bool = True) -> bytes:
    """``objects`` x ``bpf_obj_new(struct obj)`` into stack slots, then ``bpf_obj_drop`` of each non-NULL one;
    the objects it got are added to ``counts[0]`` (an array map), so a NULL ``bpf_obj_new`` shows.  ``typed``
    False: the kfuncs take no type (``bpf_cpumask_create``/``bpf_cpumask_release``)."""
    if not 1 <= objects <= MAX_OBJECTS:
        raise ValueError(f"--objects must be 1..{MAX_OBJECTS} on the kernel (one stack slot each), got {objects}")
    code: list[Any] = [A.mov64_imm(A.R6, 0)]                     # r6: objects allocated (callee-saved)
    for i in range(objects):
        args = [A.mov64_imm(A.R1, type_id), A.mov64_imm(A.R2, 0)] if typed else []
        code += [*args, kfunc_call(new_id), A.stx_mem(A.DW, A.FP, A.R0, -8 * (i + 1))]
    for i in range(objects):             # (counted here: a branch per bpf_obj_new would defeat state pruning)
        code += [A.ldx_mem(A.DW, A.R1, A.FP, -8 * (i + 1)), A.jeq_imm(A.R1, 0, f"null{i}"),
                 *([A.mov64_imm(A.R2, 0)] if typed else []), kfunc_call(drop_id), A.alu64_imm(A.ADD, A.R6, 1),
                 A.label(f"null{i}")]
    code += [A.st_mem(A.W, A.FP, -8, 0), A.ld_map_fd(A.R1, counts), A.mov64_reg(A.R2, A.FP),
             A.alu64_imm(A.ADD, A.R2, -8), A.call(A.MAP_LOOKUP_ELEM), A.jeq_imm(A.R0, 0, "out"),
             A.atomic_add(A.DW, A.R0, A.R6, 0), A.label("out")]
    return A.assemble(code + [A.mov64_imm(A.R0, 0), A.exit_()])


class ObjProgram:
    """One loaded program: ``run()`` is one round (allocate ``objects``, hold, free) on the calling CPU;
    ``allocated()`` the objects ``bpf_obj_new`` returned so far (all rounds, all CPUs)."""

    def __init__(self, objects: int = 64, size: int = 128, type_id: int = OBJ_TYPE_ID, kind: str = "obj") -> None:
        if kind not in KFUNCS:
            raise ValueError(f"--kind must be one of {', '.join(KFUNCS)}, got {kind!r}")
        size_class(size)
        new_id, drop_id = (find_func_id(f) for f in KFUNCS[kind])
        self.counts = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="obj_count")
        try:
            self.btf = S.btf_load(btf_blob(size))
            try:
                self.prog = _load(program(objects, new_id, drop_id, self.counts.fd, type_id, kind != "cpumask"),
                                  self.btf)
            except OSError as e:
                self.btf.close()
                raise OSError(e.errno, refused(f"loading the {KFUNCS[kind][0]} program", e)) from e
            except BaseException:
                self.btf.close()
                raise
        except BaseException:
            self.counts.close()
            raise

    def run(self) -> None:
        S.prog_test_run(self.prog)

    def allocated(self) -> int:
        raw = S.map_lookup_elem(self.counts, b"\0\0\0\0")
        assert raw is not None
        return int(struct.unpack("<Q", raw)[0])

    def close(self) -> None:
        self.prog.close()
        self.btf.close()
        self.counts.close()

    def __enter__(self) -> ObjProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load(code: bytes, btf: S.BpfFd) -> S.BpfFd:
    """``BPF_PROG_LOAD`` with the program BTF and one ``func_info`` record (insn 0 is ``bench_obj``)."""
    buf = C.create_string_buffer(code, len(code))
    lic = C.create_string_buffer(b"GPL")
    log_size = 1 << 22
    log = C.create_string_buffer(log_size)
    fi = (C.c_uint32 * 2)(0, FUNC_TYPE_ID)
    a = U.ProgLoadAttr(prog_type=U.BPF_PROG_TYPE_SYSCALL, insn_cnt=len(code) // 8, insns=C.addressof(buf),
                       license=C.addressof(lic), log_level=1, log_size=log_size, log_buf=C.addressof(log),
                       prog_flags=U.BPF_F_SLEEPABLE, prog_name=S.obj_name("bench_obj"), prog_btf_fd=btf.fd,
                       func_info_rec_size=8, func_info=C.addressof(fi), func_info_cnt=1)
    try:
        return S.BpfFd(S.bpf(U.BPF_PROG_LOAD, a, log), "prog")
    except S.BpfSyscallError as e:
        if not e.log:
            e.log = log.value.decode(errors="replace")
        raise


def run_obj_kernel(producers: int, objects: int = 64, size: int = 128, rounds: int = 10000,
                   warmup: int = 1000, kind: str = "obj") -> dict[str, Any]:
    """Hou Tao's ``bench bpf_ma`` on the running kernel: ``producers`` threads, each pinned to its own CPU, run
    ``warmup`` rounds and then ``rounds`` measured ones.  Measured: this process's kmallocs per round (a
    ``raw_tp/kmalloc`` program; the refill irq_work runs on the producer's thread), the wall time per round,
    and the slab cache's object count before and after (noisy: see ``measured``)."""
    from .storage_create import kmalloc_counter
    ncpu = len(os.sched_getaffinity(0))
    if not 1 <= producers <= ncpu:
        raise ValueError(f"--producers must be 1..{ncpu} on the kernel (one CPU each), got {producers}")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"--rounds must be >= 1 and --warmup >= 0, got {rounds} and {warmup}")
    if kind == "cpumask":
        size = struct_size("bpf_cpumask")          # bpf_cpumask_ma's objects: sizeof(struct bpf_cpumask)
    cache = "kmalloc-cg-16" if kind == "percpu" else slab_cache(size)       # a percpu object's slab part: 16 B
    cpus = sorted(os.sched_getaffinity(0))[:producers]
    with ObjProgram(objects, size, kind=kind) as prog, S.map_create(U.BPF_MAP_TYPE_HASH, 4, 4, 1, name="obj_tgid") as me, \
            kmalloc_counter(me) as kmallocs:
        S.map_update_elem(me, struct.pack("=I", os.getpid()), b"\0\0\0\0")
        before: dict[str, int] = {}

        def mark() -> None:                             # all producers warmed up: the measured window opens
            before["k"], before["slab"] = kmallocs.read_tgids(), slab_objects(cache)

        times: list[float] = [0.0] * producers
        errors: list[BaseException] = []
        warm = threading.Barrier(producers, action=mark)
        stop = threading.Event()                        # a signal in the main thread stops the producers

        def producer(i: int) -> None:
            try:
                os.sched_setaffinity(0, {cpus[i]})      # this thread only (pid 0: the calling thread)
                for _ in range(warmup):
                    if stop.is_set():
                        return
                    prog.run()
                warm.wait()
                t0 = time.perf_counter()
                for _ in range(rounds):
                    if stop.is_set():
                        return
                    prog.run()
                times[i] = time.perf_counter() - t0
            except threading.BrokenBarrierError:
                return                                  # another producer failed or the run was stopped
            except BaseException as e:                  # re-raised in the caller
                errors.append(e)
                warm.abort()

        threads = [threading.Thread(target=producer, args=(i,)) for i in range(producers)]
        for th in threads:
            th.start()
        try:
            for th in threads:
                while th.is_alive():
                    th.join(0.1)                        # short joins: the main thread takes signals
        except BaseException:
            stop.set()
            warm.abort()
            for th in threads:
                th.join()
            raise
        if errors:
            raise errors[0]
        k = kmallocs.read_tgids() - before["k"]
        slab_delta = slab_objects(cache) - before["slab"]
        asked = (warmup + rounds) * objects * producers
        got = prog.allocated()
    us_per_round = max(times) / rounds * 1e6
    return {"backend": "kernel", "kind": kind, "producers": producers, "objects": objects, "size": size, "rounds": rounds,
            "warmup": warmup, "cpus": cpus, "machine_cpus": ncpu, "modelled": False, "slab_cache": cache,
            "kmallocs_per_round": round(k / rounds / producers, 3),
            "failed_allocations": asked - got,
            "us_per_round": round(us_per_round, 2),
            "ns_per_alloc_free": round(us_per_round * 1000 / objects, 1),
            "slab_objects_delta": slab_delta,
            "measured": "kmallocs: a raw_tp/kmalloc program counting this process's kmallocs (the refill irq_work "
                        "runs on the producer's thread); speed: wall time of BPF_PROG_TEST_RUN, syscall included; "
                        "slab_objects_delta: /proc/slabinfo active_objs of the size class's cache, which every "
                        "__GFP_ACCOUNT kmalloc of that size shares and SLUB counts by whole slabs: tens of thousands "
                        "of objects either way between runs here, so no memory figure is derived from it"}
