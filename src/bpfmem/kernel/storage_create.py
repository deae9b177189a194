"""The kernel selftests' ``local-storage-create`` benchmark on the running kernel: owners churned, storage created.

Problem: what creating one local storage element costs (time, kmallocs, charge) is only visible when
owners come and go as in real use: tools/testing/selftests/bpf/benchs/bench_local_storage_create.c
(commit cbe9d93d58b1 task mode, 4659fba121da socket mode) has each producer create ``batch_size``
owners and destroy them again, in a loop, while a BPF program creates the storage for each new owner
and a ``raw_tp/kmalloc`` program counts every kmalloc system-wide.

Mechanism (no libbpf, no clang: programs are hand-assembled, attach points found in vmlinux BTF):
- ``kmalloc_counter()``: a ``BPF_PROG_TYPE_RAW_TRACEPOINT`` program attached by
  ``BPF_RAW_TRACEPOINT_OPEN`` to ``kmalloc`` (``trace_kmalloc()``: every ``kmalloc``/``kmalloc_node``,
  not ``kmem_cache_alloc``) adds 1 to a u64 of a one-entry array, and optionally a second u64 when
  the current thread group is in a tgid filter map (the producers only);
- task storage from ``tp_btf/sched_process_fork`` (``BPF_PROG_TYPE_TRACING``, ``BPF_TRACE_RAW_TP``,
  ``attach_btf_id`` = the ``BTF_KIND_TYPEDEF`` ``btf_trace_sched_process_fork``, as libbpf resolves
  tp_btf): ``bpf_task_storage_get(map, ctx[1] /* child */, NULL, F_CREATE)``;
  socket storage from ``lsm.s/socket_post_create`` (``BPF_PROG_TYPE_LSM``, ``BPF_LSM_MAC``, sleepable,
  ``attach_btf_id`` = FUNC ``bpf_lsm_socket_post_create``): ``bpf_sk_storage_get(map, sock->sk, NULL,
  F_CREATE)`` with the ``sk`` offset read from BTF.  Both count successes and failures and act only for
  the producers' tgids (the selftest's ``bench_pid`` test);
- where the kernel refuses a program (or the BPF LSM is not active, or the attached program did not
  run for a probe owner made here), storage comes from bpf(2) instead: ``BPF_MAP_UPDATE_ELEM`` keyed
  by a pidfd of each new thread, or by each new socket's fd; the result says which path and why;
- ``run_create()``: maps created inside a child memory cgroup (``cgroup.create_in``), producers forked
  (``lifecycle.fork``: they die with this process) and pinned one per CPU.  A task producer
  ``pthread_create``s ``batch_size`` C threads (start routine ``sem_wait``, a 64 KiB stack: glibc's
  stack cache then reuses every stack) and joins them; a socket producer makes ``batch_size``
  ``socket(AF_INET6, SOCK_DGRAM, 0)`` and closes them; both through ctypes, no Python per thread.

6.18 facts relied on: task storage elements and ``bpf_local_storage`` come from per-map
``bpf_mem_alloc`` caches (refilled in batches from irq_work: few kmallocs per create) and a thread's
end gives them back to that cache (``bpf_task_storage_free()``, ``reuse_now``); socket storage
``kzalloc``s the element and the socket's ``bpf_local_storage`` (``bpf_selem_alloc()``,
``bpf_local_storage_alloc()``): two kmallocs per create; ``bpf_raw_tp_link_attach()`` attaches a
tp_btf program by its ``attach_func_name`` and an LSM program through its trampoline when
``BPF_RAW_TRACEPOINT_OPEN`` is given no name.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import errno as errno_mod
import functools
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import asm as A
from . import syscall as S
from . import uapi as U
from .btf import BTF_MAGIC, KIND_FUNC, KIND_STRUCT, KIND_TYPEDEF, VMLINUX_BTF, _trailer
from .cgroup import ChildMemcg, create_in, memcg_layout
from .lifecycle import deferred_signals, fork, kill_and_reap, unregister_pid
from .local_storage import KEY_SIZE, check_value_size, create_local_storage, key, pidfd_open

KINDS = ("task", "socket")
PATHS = {"tp_btf": "program (tp_btf/sched_process_fork)", "lsm": "program (lsm/socket_post_create)",
         "pidfd": "syscall (pidfd update)", "sockfd": "syscall (socket fd update)", "none": "none"}
KMALLOC_COUNT = "raw_tp/kmalloc, system-wide"
LSM_FILE = "/sys/kernel/security/lsm"

# helper ids (enum bpf_func_id, 6.18 BTF)
GET_CURRENT_PID_TGID, SK_STORAGE_GET, TASK_STORAGE_GET = 14, 107, 156
F_CREATE = 1                                  # BPF_LOCAL_STORAGE_GET_F_CREATE
THREAD_STACK = 64 * 1024                      # producer threads' stack: all of a batch fit glibc's stack cache
START_TIMEOUT_S = 30.0                        # producers ready / finished beyond the deadline
_STATS = struct.Struct("<QQ")                 # successes, failures
_KEY0 = bytes(4)

_libc = C.CDLL(None, use_errno=True)


# -- vmlinux BTF: typedef ids, func ids, member offsets ------------------------------------------------


@dataclass(frozen=True)
class _Btf:
    data: bytes
    strs: int
    types: tuple[tuple[int, int, int, int, int], ...]   # (kind, name_off, info, size_or_type, trailer pos)

    def name(self, off: int) -> str:
        s = self.strs + off
        return self.data[s:self.data.index(b"\0", s)].decode()

    def find(self, kind: int, name: str) -> int:
        """Type id of the first type of ``kind`` named ``name``; ``LookupError`` if none."""
        want = name.encode() + b"\0"
        for tid, (k, name_off, _info, _st, _pos) in enumerate(self.types, 1):
            if k == kind and name_off and self.data[self.strs + name_off:self.strs + name_off + len(want)] == want:
                return tid
        raise LookupError(f"no BTF kind {kind} named {name!r} in vmlinux BTF")


@functools.lru_cache(maxsize=2)
def _vmlinux(path: str = VMLINUX_BTF) -> _Btf:
    data = open(path, "rb").read()
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != BTF_MAGIC:
        raise ValueError(f"{path} is not BTF")
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    out = []
    while pos < end:
        name_off, info, st = struct.unpack_from("<III", data, pos)
        kind = (info >> 24) & 0x1F
        out.append((kind, name_off, info, st, pos + 12))
        pos += 12 + _trailer(kind, info & 0xFFFF)
    return _Btf(data, hdr_len + str_off, tuple(out))


def typedef_id(name: str, path: str = VMLINUX_BTF) -> int:
    """BTF id of ``typedef name`` in vmlinux: a tp_btf program's ``attach_btf_id`` is the typedef
    ``btf_trace_<tracepoint>`` (libbpf's ``find_btf_by_prefix_kind(.., "btf_trace_", .., TYPEDEF)``)."""
    return _vmlinux(path).find(KIND_TYPEDEF, name)


def func_id(name: str, path: str = VMLINUX_BTF) -> int:
    """BTF id of the FUNC ``name`` in vmlinux (an LSM program attaches to ``bpf_lsm_<hook>``)."""
    return _vmlinux(path).find(KIND_FUNC, name)


def member_offset(struct_name: str, member: str, path: str = VMLINUX_BTF) -> int:
    """Byte offset of ``struct_name.member`` from vmlinux BTF (``LookupError`` if absent or a bitfield)."""
    b = _vmlinux(path)
    tid = b.find(KIND_STRUCT, struct_name)
    _k, _n, info, _size, pos = b.types[tid - 1]
    for i in range(info & 0xFFFF):
        name_off, _type, offset = struct.unpack_from("<III", b.data, pos + 12 * i)
        if b.name(name_off) == member:
            bits = offset & 0xFFFFFF if info >> 31 else offset     # kind_flag: bitfield size in the top byte
            if bits % 8:
                raise LookupError(f"struct {struct_name}.{member} is a bitfield")
            return bits // 8
    raise LookupError(f"struct {struct_name} has no member {member!r}")


def _last_line(log: str) -> str:
    """The verifier's last word: its last line, not counting the "processed N insns" statistics."""
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("processed ")]
    return lines[-1].strip() if lines else "(no verifier log)"


def refused(what: str, e: OSError) -> str:
    """One line for a refused step: the errno name and the verifier log's last line."""
    name = errno_mod.errorcode.get(e.errno or 0, str(e.errno))
    log = getattr(e, "log", "")
    cmd = getattr(e, "cmd", "")
    return f"{what}: {cmd + ' ' if cmd else ''}{name} ({os.strerror(e.errno or 0)})" + (
        f"; verifier: {_last_line(log)}" if log else "; verifier log empty: refused before verification")


# -- the kmalloc counter -----------------------------------------------------------------------------


def _filter(tgids: int, miss: str) -> list[A.Item]:
    """Jump to ``miss`` unless the current thread group is a key of the ``tgids`` hash map (fp-4 used)."""
    return [A.call(GET_CURRENT_PID_TGID), A.alu64_imm(A.RSH, A.R0, 32), A.stx_mem(A.W, A.FP, A.R0, -4),
            A.ld_map_fd(A.R1, tgids), A.mov64_reg(A.R2, A.FP), A.alu64_imm(A.ADD, A.R2, -4),
            A.call(A.MAP_LOOKUP_ELEM), A.jeq_imm(A.R0, 0, miss)]


def _kmalloc_program(counts: int, tgids: int | None) -> bytes:
    """``counts[0].all++``; with ``tgids``, ``counts[0].in_tgids++`` when current's tgid is a key."""
    body: list[A.Item] = [
        A.st_mem(A.W, A.FP, -8, 0),
        A.ld_map_fd(A.R1, counts), A.mov64_reg(A.R2, A.FP), A.alu64_imm(A.ADD, A.R2, -8),
        A.call(A.MAP_LOOKUP_ELEM), A.jeq_imm(A.R0, 0, "out"),
        A.mov64_reg(A.R6, A.R0),
        A.mov64_imm(A.R1, 1), A.atomic_add(A.DW, A.R6, A.R1, 0),
    ]
    if tgids is not None:
        body += [*_filter(tgids, "out"), A.mov64_imm(A.R1, 1), A.atomic_add(A.DW, A.R6, A.R1, 8)]
    return A.assemble([*body, A.label("out"), A.mov64_imm(A.R0, 0), A.exit_()])


class KmallocCounter:
    """Reads the counter of an attached ``raw_tp/kmalloc`` program; calling it is ``read()``."""

    def __init__(self, counts: S.BpfMap) -> None:
        self._counts = counts

    def _both(self) -> tuple[int, int]:
        raw = S.map_lookup_elem(self._counts, _KEY0)
        assert raw is not None
        return _STATS.unpack(raw)  # type: ignore[return-value]

    def read(self) -> int:
        """kmallocs since attach, system-wide."""
        return self._both()[0]

    def read_tgids(self) -> int:
        """kmallocs since attach by thread groups in the filter map (0 without one)."""
        return self._both()[1]

    __call__ = read


@contextlib.contextmanager
def kmalloc_counter(tgids: S.BpfMap | None = None) -> Iterator[KmallocCounter]:
    """A ``raw_tp/kmalloc`` program counting every kmalloc, attached for the duration.

    ``tgids``: a hash map with u32 tgid keys; kmallocs by those thread groups are counted apart too
    (``read_tgids()``).  ``OSError`` naming the step when the kernel refuses (map, load or attach);
    program, link and map are closed on exit.
    """
    with contextlib.ExitStack() as stack:
        try:
            counts = stack.enter_context(S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, _STATS.size, 1, name="kmalloc_cnt"))
        except OSError as e:
            raise OSError(e.errno, f"kmalloc counter: creating its array map failed: {e}") from e
        code = _kmalloc_program(counts.fd, tgids.fd if tgids is not None else None)
        try:
            prog = stack.enter_context(S.prog_load(U.BPF_PROG_TYPE_RAW_TRACEPOINT, code, name="kmalloc_cnt"))
        except OSError as e:
            raise OSError(e.errno, refused("kmalloc counter: loading the raw_tp/kmalloc program", e)) from e
        try:
            stack.enter_context(S.raw_tracepoint_open(prog, "kmalloc"))
        except OSError as e:
            raise OSError(e.errno, refused("kmalloc counter: BPF_RAW_TRACEPOINT_OPEN of 'kmalloc'", e)) from e
        yield KmallocCounter(counts)


# -- storage-creating programs -------------------------------------------------------------------------


def _storage_program(owner: list[A.Item], helper: int, storage: int, stats: int, tgids: int) -> bytes:
    """Filter on tgid; ``owner`` puts the owner pointer in r2 (from ctx in r6; 0 jumps to "count" with
    r7 = NULL); ``helper(storage, r2, NULL, F_CREATE)``; ``stats`` successes (+0) or failures (+8)."""
    return A.assemble([
        A.mov64_reg(A.R6, A.R1),
        *_filter(tgids, "out"),
        A.mov64_imm(A.R7, 0),
        *owner,
        A.ld_map_fd(A.R1, storage), A.mov64_imm(A.R3, 0), A.mov64_imm(A.R4, F_CREATE),
        A.call(helper),
        A.mov64_reg(A.R7, A.R0),
        A.label("count"),
        A.st_mem(A.W, A.FP, -8, 0),
        A.ld_map_fd(A.R1, stats), A.mov64_reg(A.R2, A.FP), A.alu64_imm(A.ADD, A.R2, -8),
        A.call(A.MAP_LOOKUP_ELEM), A.jeq_imm(A.R0, 0, "out"),
        A.mov64_imm(A.R1, 1),
        A.jeq_imm(A.R7, 0, "fail"),
        A.atomic_add(A.DW, A.R0, A.R1, 0),
        A.jmp("out"),
        A.label("fail"),
        A.atomic_add(A.DW, A.R0, A.R1, 8),
        A.label("out"),
        A.mov64_imm(A.R0, 0),
        A.exit_(),
    ])


def fork_program(storage: int, stats: int, tgids: int) -> bytes:
    """tp_btf/sched_process_fork: ctx[0] parent, ctx[1] child (a BTF-typed ``struct task_struct *``)."""
    return _storage_program([A.ldx_mem(A.DW, A.R2, A.R6, 8)], TASK_STORAGE_GET, storage, stats, tgids)


def socket_program(storage: int, stats: int, tgids: int, sk_off: int) -> bytes:
    """lsm.s/socket_post_create: ctx[0] ``struct socket *``; its ``sk`` (may be NULL to the verifier)."""
    owner = [A.ldx_mem(A.DW, A.R1, A.R6, 0), A.ldx_mem(A.DW, A.R2, A.R1, sk_off), A.jeq_imm(A.R2, 0, "count")]
    return _storage_program(owner, SK_STORAGE_GET, storage, stats, tgids)


def lsm_list() -> tuple[list[str] | None, str]:
    """The active LSMs (``/sys/kernel/security/lsm``) and where they were read.

    Where securityfs is not mounted, a forked child mounts it in a private mount namespace of its own
    (``unshare(CLONE_NEWNS)``, ``/`` made ``MS_REC|MS_PRIVATE``), so nothing changes outside.  None
    with the reason when neither works.
    """
    try:
        with open(LSM_FILE) as f:
            return f.read().strip().split(","), LSM_FILE
    except FileNotFoundError:
        pass
    except OSError as e:
        return None, f"{LSM_FILE}: {e.strerror}"
    CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 1 << 18
    r, w = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            if _libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(C.get_errno(), "unshare(CLONE_NEWNS)")
            if _libc.mount(None, b"/", None, C.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
                raise OSError(C.get_errno(), "mount --make-rprivate /")
            if _libc.mount(b"securityfs", os.path.dirname(LSM_FILE).encode(), b"securityfs", C.c_ulong(0), None):
                raise OSError(C.get_errno(), "mount -t securityfs")
            with open(LSM_FILE, "rb") as f:
                os.write(w, b"ok " + f.read())
            code = 0
        except BaseException as e:
            os.write(w, f"err {e}".encode()[:4000])
        finally:
            os._exit(code)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
        unregister_pid(pid)
    text = b"".join(chunks).decode(errors="replace")
    if text.startswith("ok "):
        return text[3:].strip().split(","), f"{LSM_FILE} (securityfs mounted in a private mount namespace)"
    return None, f"securityfs not mounted and not mountable privately: {text[4:] or 'child died'}"


# -- owners made the producers' way -----------------------------------------------------------------------


class _Native:
    """libc entry points the producers call (no Python per thread), with their argument types."""

    def __init__(self) -> None:
        c = C.CDLL(None, use_errno=True)
        self.pthread_create = c.pthread_create
        self.pthread_create.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p]
        self.pthread_join = c.pthread_join
        self.pthread_join.argtypes = [C.c_ulong, C.c_void_p]
        self.sem_post = c.sem_post
        self.sem_post.argtypes = [C.c_void_p]
        self.socket = c.socket
        self.socket.argtypes = [C.c_int, C.c_int, C.c_int]
        self.close = c.close
        self.close.argtypes = [C.c_int]
        self.sem_wait_addr = C.cast(c.sem_wait, C.c_void_p).value
        self.attr = C.create_string_buffer(128)           # pthread_attr_t (56 B on x86-64, 64 on arm64)
        self.sem = C.create_string_buffer(64)             # sem_t (32 B)
        if c.pthread_attr_init(self.attr) or c.pthread_attr_setstacksize(self.attr, C.c_size_t(THREAD_STACK)):
            raise OSError(errno_mod.EINVAL, "pthread_attr_init/setstacksize failed")
        if c.sem_init(self.sem, 0, 0):
            raise OSError(C.get_errno(), "sem_init failed")

    def threads(self, tids: C.Array[C.c_ulong], n: int) -> int:
        """Start up to ``n`` threads blocked in ``sem_wait``; returns how many started."""
        base = C.addressof(tids)
        for i in range(n):
            if self.pthread_create(base + C.sizeof(C.c_ulong) * i, self.attr, self.sem_wait_addr, self.sem):
                return i
        return n

    def end_threads(self, tids: C.Array[C.c_ulong], n: int) -> None:
        for _ in range(n):
            self.sem_post(self.sem)
        for i in range(n):
            self.pthread_join(tids[i], None)


def socket_family() -> int:
    """``AF_INET6`` as the selftest, ``AF_INET`` where IPv6 is unavailable."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
        return socket.AF_INET6
    except OSError:
        return socket.AF_INET


def _produce(kind: str, path: str, batch: int, duration_s: float, storage: S.BpfMap | None,
             family: int, ctl: int, out_w: int, cpu: int) -> None:  # pragma: no cover - runs in a producer
    """A producer: pin, say ready, wait for go on ``ctl``, churn batches until the deadline, report on
    ``out_w``, wait for EOF on ``ctl`` (the parent has read the counters)."""
    os.sched_setaffinity(0, {cpu})
    nat = _Native()
    value = bytes(storage.value_size) if storage is not None else b""
    tids = (C.c_ulong * batch)()
    me = os.getpid()
    owners = owner_errors = creates = create_errors = 0
    last_error = ""

    def update(fd: int) -> None:
        nonlocal creates, create_errors, last_error
        try:
            S.map_update_elem(storage, key(fd), value, U.BPF_NOEXIST)  # type: ignore[arg-type]
            creates += 1
        except OSError as e:
            create_errors += 1
            last_error = str(e)

    os.write(out_w, b"r")
    if os.read(ctl, 1) != b"g":
        return
    t0 = time.monotonic()
    end = t0 + duration_s
    while True:
        if kind == "task":
            n = nat.threads(tids, batch)
            owner_errors += batch - n
            if path == "pidfd":
                for tid in os.listdir("/proc/self/task"):
                    if int(tid) == me:
                        continue
                    try:
                        fd = pidfd_open(int(tid))
                    except OSError as e:
                        create_errors += 1
                        last_error = str(e)
                        continue
                    update(fd)
                    os.close(fd)
            nat.end_threads(tids, n)
        else:
            fds = []
            for _ in range(batch):
                fd = nat.socket(family, socket.SOCK_DGRAM, 0)
                if fd < 0:
                    owner_errors += 1
                    continue
                fds.append(fd)
                if path == "sockfd":
                    update(fd)
            n = len(fds)
            for fd in fds:
                nat.close(fd)
        owners += n
        if time.monotonic() >= end:
            break
    elapsed = time.monotonic() - t0
    os.write(out_w, (json.dumps({"owners": owners, "owner_errors": owner_errors, "creates": creates,
                                 "create_errors": create_errors, "elapsed_s": elapsed,
                                 "last_error": last_error}) + "\n").encode())
    os.read(ctl, 1)


def _probe_owner(kind: str, family: int) -> None:
    """Make and end one owner in this process, the producers' way (the storage program must see it)."""
    nat = _Native()
    if kind == "task":
        tids = (C.c_ulong * 1)()
        if nat.threads(tids, 1) != 1:
            raise OSError(errno_mod.EAGAIN, "pthread_create of a probe thread failed")
        nat.end_threads(tids, 1)
    else:
        fd = nat.socket(family, socket.SOCK_DGRAM, 0)
        if fd < 0:
            raise OSError(C.get_errno(), "socket() of a probe socket failed")
        nat.close(fd)


def _stats(m: S.BpfMap) -> tuple[int, int]:
    raw = S.map_lookup_elem(m, _KEY0)
    assert raw is not None
    return _STATS.unpack(raw)  # type: ignore[return-value]


def _trivial_note(ptype: int, attach: int, btf_id: int, flags: int) -> str:
    """Whether ``r0 = 0; exit`` with the same type and attach point loads: tells a refusal of this
    program's code from a refusal of every such program (a policy, e.g. ``security_bpf_prog_load()``)."""
    ret0 = A.assemble([A.mov64_imm(A.R0, 0), A.exit_()])
    try:
        S.prog_load_attach(ptype, ret0, expected_attach_type=attach, attach_btf_id=btf_id, flags=flags).close()
    except OSError as e:
        return (f" (a trivial 'r0 = 0; exit' program of the same type and attach point is refused too, "
                f"{errno_mod.errorcode.get(e.errno or 0, e.errno)}: this kernel refuses such programs, "
                f"not this one's code)")
    return " (a trivial 'r0 = 0; exit' program of the same type and attach point loads)"


def _attach_storage_program(kind: str, storage: S.BpfMap, stats: S.BpfMap, tgids: S.BpfMap, family: int,
                            stack: contextlib.ExitStack) -> tuple[str, str]:
    """Load and attach the storage program for ``kind`` and check it creates storage for a probe owner
    made here; returns (path key, why).  On any refusal nothing stays attached and the path is the
    syscall one, with the reason."""
    fallback = "pidfd" if kind == "task" else "sockfd"
    if kind == "task":
        where, label = "btf_trace_sched_process_fork", "tp_btf/sched_process_fork"
        try:
            btf_id = typedef_id(where)
        except (LookupError, OSError, ValueError) as e:
            return fallback, f"{label}: no BTF typedef {where} ({e})"
        ptype, attach, flags = U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_RAW_TP, 0
        code = fork_program(storage.fd, stats.fd, tgids.fd)
    else:
        label = "lsm.s/socket_post_create"
        lsms, source = lsm_list()
        if lsms is not None and "bpf" not in lsms:
            return fallback, f"BPF LSM not active: {source} is {','.join(lsms)!r}"
        where = "bpf_lsm_socket_post_create"
        try:
            btf_id = func_id(where)
            sk_off = member_offset("socket", "sk")
        except (LookupError, OSError, ValueError) as e:
            return fallback, f"{label}: {e}"
        ptype, attach, flags = U.BPF_PROG_TYPE_LSM, U.BPF_LSM_MAC, U.BPF_F_SLEEPABLE
        code = socket_program(storage.fd, stats.fd, tgids.fd, sk_off)
    with contextlib.ExitStack() as mine:
        try:
            prog = mine.enter_context(S.prog_load_attach(ptype, code, expected_attach_type=attach,
                                                         attach_btf_id=btf_id, name="lsc_" + kind, flags=flags))
        except OSError as e:
            why = refused(f"{label} refused", e)
            if not getattr(e, "log", ""):
                why += _trivial_note(ptype, attach, btf_id, flags)
            return fallback, why
        try:
            mine.enter_context(S.raw_tracepoint_open(prog))
        except OSError as e:
            return fallback, refused(f"{label} loaded but not attached", e)
        me = struct.pack("=I", os.getpid())
        before = _stats(stats)
        S.map_update_elem(tgids, me, bytes(4))
        try:
            _probe_owner(kind, family)
        finally:
            S.map_delete_elem(tgids, me)
        ok, failed = (a - b for a, b in zip(_stats(stats), before))
        if ok != 1:
            lsm_note = "" if kind == "task" else f" (LSMs: {source})"
            return fallback, (f"{label} attached but created {ok} storage (failed {failed}) for a probe "
                              f"{'thread' if kind == 'task' else 'socket'}{lsm_note}")
        stack.enter_context(mine.pop_all())
    btf_what = f"BTF {'typedef' if kind == 'task' else 'func'} {where} id {btf_id}"
    return ("tp_btf" if kind == "task" else "lsm"), (
        f"{label} loaded ({btf_what}), attached, and created storage for a probe "
        f"{'thread' if kind == 'task' else 'socket'}" + ("" if kind == "task" else f"; LSMs from {source}"))


# -- the benchmark -------------------------------------------------------------------------------------


def update_overhead(storage: S.BpfMap, counter: KmallocCounter, tgids: S.BpfMap, n: int = 2000) -> float:
    """kmallocs of one ``BPF_MAP_UPDATE_ELEM`` itself, without the storage it creates.

    ``map_update_elem()`` copies key and value into the kernel (``___bpf_copy_key()``,
    ``kvmemdup_bpfptr()``: two kmallocs) before the map's update; an update keyed by an fd that is
    no owner (a pipe: ``sockfd_lookup()`` ENOTSOCK, ``pidfd_get_pid()`` EBADF) fails right after the
    copies.  ``n`` of those from this process, counted with its tgid in ``tgids``, give what the
    syscall path adds per create on top of the storage's own kmallocs.
    """
    me = struct.pack("=I", os.getpid())
    value = bytes(storage.value_size)
    r, w = os.pipe()
    try:
        S.map_update_elem(tgids, me, bytes(4))
        try:
            k0 = counter.read_tgids()
            for _ in range(n):
                with contextlib.suppress(OSError):
                    S.map_update_elem(storage, key(r), value, U.BPF_NOEXIST)
            k1 = counter.read_tgids()
        finally:
            S.map_delete_elem(tgids, me)
    finally:
        os.close(r)
        os.close(w)
    return (k1 - k0) / n


def _check(kind: str, batch_size: int, producers: int, duration_s: float, value_size: int, prefer: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    for name, v in (("batch_size", batch_size), ("producers", producers)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    if not isinstance(duration_s, (int, float)) or not 0 < duration_s <= 3600:
        raise ValueError(f"duration_s must be in (0, 3600]; got {duration_s!r}")
    check_value_size(value_size)
    if prefer not in ("program", "syscall"):
        raise ValueError(f"prefer must be 'program' or 'syscall'; got {prefer!r}")


def _read_line(fd: int, deadline: float, what: str) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"{what}: no answer in time")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise OSError(errno_mod.EPIPE, f"{what}: died before reporting")
        buf += chunk
    return buf


def run_create(kind: str, batch_size: int, producers: int, duration_s: float, value_size: int = 64,
               with_storage: bool = True, *, prefer: str = "program") -> dict[str, Any]:
    """The ``local-storage-create`` benchmark: ``producers`` processes churn owners, storage is created
    for each; returns rates, kmallocs per create and the charge left.

    ``kind``: "task" (threads) or "socket"; ``with_storage=False`` churns the same owners with no map
    and no program (the baseline to subtract); ``prefer="syscall"`` skips the program path.
    Everything made (cgroup, maps, programs, links, producers) is gone on return, exception or signal.

    Keys: kind, batch_size, producers, duration_s, value_size; storage_from (``PATHS`` value) and why;
    owners_created, owner_errors; creates (the program's success count, or the syscall updates that
    succeeded), create_errors; elapsed_s (the longest producer's run); creates_per_s,
    per_producer_per_s; kmallocs (``raw_tp/kmalloc`` system-wide, from go to every producer done),
    kmallocs_per_create; kmallocs_producers(_per_create) (only those in the producers' thread groups:
    what a concurrent load elsewhere does not disturb); owners_per_s, kmallocs_per_owner;
    syscall_kmallocs_per_update (syscall paths: ``update_overhead()``, the update's own kmallocs that
    a program does not have; None otherwise);
    charged_bytes_after (the child cgroup's usage after minus before the run); cpus (producer i on
    cpus[i]); socket_family; kmalloc_count.  For ``storage_from == "none"`` there is no storage:
    creates is 0 and creates_per_s, per_producer_per_s and the per-create kmallocs are per owner.
    """
    _check(kind, batch_size, producers, duration_s, value_size, prefer)
    layout = memcg_layout()
    if layout is None:
        raise OSError(errno_mod.ENOENT, "no memory cgroup controller: cannot charge the maps to a child cgroup")
    allowed = sorted(os.sched_getaffinity(0))
    cpus = [allowed[i % len(allowed)] for i in range(producers)]
    family = socket_family() if kind == "socket" else 0
    out: dict[str, Any] = {"kind": kind, "batch_size": batch_size, "producers": producers, "duration_s": duration_s,
                           "value_size": value_size}
    with contextlib.ExitStack() as stack:
        cg = stack.enter_context(ChildMemcg(layout, "lscreate"))

        def in_cg(make: Callable[[], S.BpfMap], shape: tuple[int, int, int, int, int]) -> S.BpfMap:
            """``make()`` run inside ``cg`` (its charge goes there); the map of that ``shape`` here."""
            fd = create_in(cg, lambda: make().release())
            with deferred_signals():
                m = S.BpfMap(fd, *shape)
                stack.callback(m.close)
            return m

        tgid_shape = (U.BPF_MAP_TYPE_HASH, 4, 4, producers + 1, 0)
        tgids = in_cg(lambda: S.map_create(*tgid_shape, name="lsc_tgids"), tgid_shape)
        storage = stats = None
        path, why = "none", "with_storage=False: owner churn only (the baseline)"
        if with_storage:
            mtype = U.BPF_MAP_TYPE_TASK_STORAGE if kind == "task" else U.BPF_MAP_TYPE_SK_STORAGE
            storage = in_cg(lambda: create_local_storage(kind, value_size, name="lsc_storage"),
                            (mtype, KEY_SIZE, value_size, 0, U.BPF_F_NO_PREALLOC))
            stats_shape = (U.BPF_MAP_TYPE_ARRAY, 4, _STATS.size, 1, 0)
            stats = in_cg(lambda: S.map_create(*stats_shape, name="lsc_stats"), stats_shape)
            if prefer == "program":
                path, why = _attach_storage_program(kind, storage, stats, tgids, family, stack)
            else:
                path, why = ("pidfd" if kind == "task" else "sockfd"), "prefer='syscall'"
        out["storage_from"], out["why"] = PATHS[path], why
        counter = stack.enter_context(kmalloc_counter(tgids))

        pipes = _Pipes()
        stack.callback(pipes.close_all)
        workers: list[tuple[int, int, int]] = []            # pid, its report pipe, its control pipe

        def reap() -> None:
            for pid, _r, _c in workers:
                kill_and_reap(pid)
        stack.callback(reap)
        for cpu in cpus:
            r, w = pipes.pipe()
            ctl_r, ctl_w = pipes.pipe()
            pid = fork()
            if pid == 0:  # pragma: no cover - runs in the producer
                code = 1
                try:
                    for fd in pipes.open - {w, ctl_r}:     # then EOF on a pipe means its one process ended
                        os.close(fd)
                    _produce(kind, path, batch_size, duration_s, storage, family, ctl_r, w, cpu)
                    code = 0
                except BaseException as e:
                    with contextlib.suppress(OSError):
                        os.write(w, (json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n").encode())
                finally:
                    os._exit(code)
            pipes.close(w)
            pipes.close(ctl_r)
            workers.append((pid, r, ctl_w))
            S.map_update_elem(tgids, struct.pack("=I", pid), bytes(4))
        ready_by = time.monotonic() + START_TIMEOUT_S
        for pid, r, _c in workers:
            left = ready_by - time.monotonic()
            first = os.read(r, 1) if left > 0 and select.select([r], [], [], left)[0] else b""
            if first != b"r":
                rest = os.read(r, 4096) if first else b""
                raise OSError(errno_mod.EPIPE, f"producer {pid} did not start: "
                              f"{(first + rest).decode(errors='replace').strip() or 'no answer'}")

        usage0 = cg.usage()
        k0, kp0 = counter.read(), counter.read_tgids()
        s0 = _stats(stats) if stats is not None else (0, 0)
        for _pid, _r, ctl in workers:
            os.write(ctl, b"g")
        reports = []
        done_by = time.monotonic() + duration_s + START_TIMEOUT_S
        for pid, r, _c in workers:
            rep = json.loads(_read_line(r, done_by, f"producer {pid}"))
            if "error" in rep:
                raise OSError(errno_mod.EIO, f"producer {pid} failed: {rep['error']}")
            reports.append(rep)
        k1, kp1 = counter.read(), counter.read_tgids()
        s1 = _stats(stats) if stats is not None else (0, 0)
        usage1 = cg.usage()
        overhead = update_overhead(storage, counter, tgids) if path in ("pidfd", "sockfd") and storage else None
        for _pid, _r, ctl in workers:
            pipes.close(ctl)                               # EOF: the producer exits
        for pid, _r, _c in workers:
            os.waitpid(pid, 0)
            unregister_pid(pid)
        workers.clear()

    owners = sum(r["owners"] for r in reports)
    if path in ("tp_btf", "lsm"):
        creates, create_errors = s1[0] - s0[0], s1[1] - s0[1]
    else:
        creates = sum(r["creates"] for r in reports)
        create_errors = sum(r["create_errors"] for r in reports)
    elapsed = max(r["elapsed_s"] for r in reports)
    per = creates if path != "none" else owners
    kmallocs, kmallocs_p = k1 - k0, kp1 - kp0
    out.update({
        "owners_created": owners, "owner_errors": sum(r["owner_errors"] for r in reports),
        "creates": creates, "create_errors": create_errors,
        "last_error": next((r["last_error"] for r in reports if r["last_error"]), ""),
        "elapsed_s": elapsed,
        "creates_per_s": per / elapsed, "per_producer_per_s": per / elapsed / producers,
        "owners_per_s": owners / elapsed,
        "kmallocs": kmallocs, "kmallocs_per_create": kmallocs / per if per else float("nan"),
        "kmallocs_producers": kmallocs_p,
        "kmallocs_producers_per_create": kmallocs_p / per if per else float("nan"),
        "kmallocs_per_owner": kmallocs / owners if owners else float("nan"),
        "syscall_kmallocs_per_update": overhead,
        "charged_bytes_after": usage1 - usage0,
        "cpus": cpus, "socket_family": {0: None, socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}[family],
        "kmalloc_count": KMALLOC_COUNT,
    })
    return out


class _Pipes:
    """Pipe ends this process holds; each made and recorded in one signal-free step, closed once."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        with deferred_signals():
            r, w = os.pipe()
            self.open.update((r, w))
        return r, w

    def close(self, fd: int) -> None:
        if fd in self.open:
            self.open.discard(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in sorted(self.open):
            self.close(fd)
