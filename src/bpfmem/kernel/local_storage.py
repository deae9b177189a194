"""BPF local storage on the running kernel: task, cgroup, socket and inode storage maps and their charge.

Problem: a local storage map has no elements of its own.  Each element hangs off an *owner* (a
thread, a cgroup, a socket, an inode), is keyed from user space by a file descriptor of that owner,
and the owner's first element also allocates the owner's ``struct bpf_local_storage``.  What a map
costs therefore depends on how many owners it touches, and an element can be freed two ways: by a
delete, or when its owner goes away.

Mechanism (6.18, kernel/bpf/bpf_local_storage.c and bpf_{task,cgrp,inode}_storage.c,
net/core/bpf_sk_storage.c):
- ``bpf_local_storage_map_alloc_check()`` wants ``BPF_F_NO_PREALLOC``, ``max_entries`` 0, a 4-byte
  key and BTF for key and value (``bpf_local_storage_map_check_btf()``); ``local_storage_btf``
  builds that BTF by hand (an ``int`` key, an ``unsigned char[value_size]`` value);
- keys: a pidfd (task storage; ``pidfd_open(tid, PIDFD_THREAD)`` names one thread), a cgroup
  directory fd, a socket fd, a file fd; ``owners()`` makes N of one kind and removes them all;
- ``bpf_selem_alloc()``: an element is ``SELEM_DATA + value_size`` bytes; task and cgroup storage
  take it from a per-map ``bpf_mem_alloc`` (plus its 8-byte llist header), socket and inode storage
  ``kzalloc`` it; either way the charge goes to the memory cgroup the map was created in, whoever
  updates.  An owner's first element also allocates its ``bpf_local_storage`` (176 B);
- a delete frees the element after ``call_rcu_tasks_trace()``.  An owner's end frees socket and
  inode storage through ``kfree_rcu()``, but gives task and cgroup storage back to the map's
  ``bpf_mem_alloc`` (``reuse_now``): the memory stays charged, for new elements, until the map goes;
- ``measure()`` creates maps inside a child memory cgroup (``cgroup.create_in``) and reads that
  cgroup's kernel-memory usage around adds, deletes and owners' ends.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import errno as errno_mod
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from typing import Any, Iterator, Sequence

from . import syscall as S
from . import uapi as U
from .btf import BTF_MAGIC, KIND_ARRAY, KIND_INT
from .cgroup import ChildMemcg, create_in, memcg_layout
from .lifecycle import deferred_signals

KINDS = {"task": U.BPF_MAP_TYPE_TASK_STORAGE, "cgroup": U.BPF_MAP_TYPE_CGRP_STORAGE,
         "socket": U.BPF_MAP_TYPE_SK_STORAGE, "inode": U.BPF_MAP_TYPE_INODE_STORAGE}
KEY_SIZE = 4                        # an int file descriptor
SELEM_SIZE = 128                    # sizeof(struct bpf_local_storage_elem) (6.18 BTF; sdata is cacheline-aligned)
SELEM_DATA = 72                     # offsetof(.., sdata.data): an element is SELEM_DATA + value_size bytes
MAX_VALUE_SIZE = 65535 - SELEM_SIZE  # BPF_LOCAL_STORAGE_MAX_VALUE_SIZE: U16_MAX - sizeof(selem); above, E2BIG
ENOTSUPP = 524                      # kernel-internal errno of get_next_key on local storage
NR_PIDFD_OPEN = 434                 # the same on every architecture (asm-generic numbering since 5.3)
PIDFD_THREAD = os.O_EXCL            # 6.9+: the pidfd names one thread, not a thread-group leader
BTF_INT_SIGNED = 1 << 0
POLL_S = 0.001                      # usage poll period while waiting for a free
PAGE_SIZE = 4096                    # the memory cgroup counts pages
SETTLE_S = 0.05                     # usage unchanged this long after a drop: the free is over

_libc = C.CDLL(None, use_errno=True)
_libc.syscall.restype = C.c_long


def check_kind(kind: str) -> int:
    """The map type of ``kind``; ``ValueError`` naming the parameter and the allowed values otherwise."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return KINDS[kind]


def check_value_size(value_size: int) -> None:
    """``ValueError`` unless 1 <= value_size <= ``MAX_VALUE_SIZE`` (what map creation accepts)."""
    if not isinstance(value_size, int) or not 1 <= value_size <= MAX_VALUE_SIZE:
        raise ValueError(f"value_size must be an int in 1..{MAX_VALUE_SIZE}; got {value_size!r}")


def btf_blob(value_size: int) -> bytes:
    """Raw BTF: [1] ``int``, [2] ``unsigned char``, [3] ``unsigned char[value_size]`` indexed by [1].

    ``bpf_local_storage_map_check_btf()`` wants the key to be a 32-bit int (``btf_type_is_i32``) and
    ``map_check_btf()`` the value type's size to equal ``value_size``.
    """
    strings = b"\0int\0unsigned char\0"
    int_name, uchar_name = 1, 5

    def btf_type(name_off: int, kind: int, size_or_type: int) -> bytes:
        return struct.pack("<III", name_off, kind << 24, size_or_type)

    types = (btf_type(int_name, KIND_INT, 4) + struct.pack("<I", BTF_INT_SIGNED << 24 | 32)
             + btf_type(uchar_name, KIND_INT, 1) + struct.pack("<I", 8)
             + btf_type(0, KIND_ARRAY, 0) + struct.pack("<III", 2, 1, value_size))
    header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


BTF_KEY_TYPE_ID, BTF_VALUE_TYPE_ID = 1, 3


def local_storage_btf(value_size: int) -> S.BpfFd:
    """``BPF_BTF_LOAD`` of ``btf_blob(value_size)``: key type ``BTF_KEY_TYPE_ID``, value ``BTF_VALUE_TYPE_ID``."""
    check_value_size(value_size)
    return S.btf_load(btf_blob(value_size))


def create_local_storage(kind: str, value_size: int, *, btf: S.BpfFd | None = None,
                         name: str = "bpfmem") -> S.BpfMap:
    """``BPF_MAP_CREATE`` of a ``kind`` local storage map (task|cgroup|socket|inode) with ``value_size``.

    ``btf``: a ``local_storage_btf(value_size)`` to use (loaded and closed here when None; the map
    keeps its own reference, ``bpf_map_get_btf``).
    """
    mtype = check_kind(kind)
    check_value_size(value_size)
    own = btf is None
    b = local_storage_btf(value_size) if btf is None else btf
    try:
        return S.map_create(mtype, KEY_SIZE, value_size, 0, U.BPF_F_NO_PREALLOC, name=name, btf_fd=b.fd,
                            btf_key_type_id=BTF_KEY_TYPE_ID, btf_value_type_id=BTF_VALUE_TYPE_ID)
    finally:
        if own:
            b.close()


def key(fd: int) -> bytes:
    """The map key of an owner: its file descriptor as a host-order ``int``."""
    return struct.pack("=i", fd)


def pidfd_open(tid: int, flags: int = PIDFD_THREAD) -> int:
    """``pidfd_open(2)`` through ``syscall(434)``: with ``PIDFD_THREAD`` (6.9+) one thread's pidfd.

    ``os.pidfd_open`` exists too; the raw call keeps the flag exactly as passed on any Python.
    """
    fd = _libc.syscall(C.c_long(NR_PIDFD_OPEN), C.c_int(tid), C.c_uint(flags))
    if fd < 0:
        err = C.get_errno()
        raise OSError(err, f"pidfd_open({tid}, {flags:#o}): {os.strerror(err)}")
    return int(fd)


# -- owners ----------------------------------------------------------------------------------------


class Owners:
    """N owners of one kind, each with an fd (the map key); ``close()`` removes everything made.

    Each resource is made and recorded in one signal-free step (``deferred_signals``), so an
    exception or signal at any point leaves nothing that ``close()`` does not know about.
    """

    kind = ""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.released = False

    def keys(self) -> list[bytes]:
        return [key(fd) for fd in self.fds]

    def release(self) -> None:
        """End the owners' lives (the kernel's owner-destroy path frees their storage); fds stay open
        where they do not keep the owner alive."""
        self.released = True

    def close(self) -> None:
        """Release the owners and close every fd (idempotent)."""
        if not self.released:
            self.release()
        self._close_fds()

    def _close_fds(self) -> None:
        while self.fds:
            with contextlib.suppress(OSError):
                os.close(self.fds.pop())

    def __len__(self) -> int:
        return len(self.fds)

    def __enter__(self) -> Owners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskOwners(Owners):
    """N live Python threads blocked on one ``Event``, each named by a thread pidfd.

    ``release()`` sets the event and joins the threads (their storage goes with the task_struct:
    ``bpf_task_storage_free()`` from ``free_task()``); the pidfds stay open until ``close()`` (a pidfd
    holds the ``struct pid``, not the task).
    Threads are daemons and share the event, so one that started but was never recorded still ends.
    """

    kind = "task"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.go = threading.Event()
        self.threads: list[threading.Thread] = []
        tids: list[int] = []
        ready = threading.Semaphore(0)

        def body() -> None:
            tids.append(threading.get_native_id())
            ready.release()
            self.go.wait()

        try:
            for i in range(n):
                t = threading.Thread(target=body, name=f"bpfmem-owner-{i}", daemon=True)
                with deferred_signals():
                    t.start()
                    self.threads.append(t)
            for _ in range(n):
                ready.acquire()
            for tid in tids:
                with deferred_signals():
                    self.fds.append(pidfd_open(tid))
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        self.go.set()
        for t in self.threads:
            t.join()
        self.released = True


class SocketOwners(Owners):
    """N UDP sockets; ``release()`` closes them (``bpf_sk_storage_free()`` from ``__sk_destruct()``)."""

    kind = "socket"

    def __init__(self, n: int) -> None:
        super().__init__()
        try:
            for _ in range(n):
                with deferred_signals():
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self.fds.append(s.detach())
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        self._close_fds()
        self.released = True


class InodeOwners(Owners):
    """N empty files in a fresh temporary directory, open read-only; ``release()`` closes and removes
    them (the inode's storage goes when the inode is freed, ``bpf_inode_storage_free()``)."""

    kind = "inode"

    def __init__(self, n: int) -> None:
        super().__init__()
        with deferred_signals():
            self.dir: str | None = tempfile.mkdtemp(prefix="bpfmem-inode-")
        try:
            for i in range(n):
                with deferred_signals():
                    self.fds.append(os.open(os.path.join(self.dir, f"owner-{i}"), os.O_RDONLY | os.O_CREAT, 0o600))
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        self._close_fds()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.released = True


class CgroupOwners(Owners):
    """N child directories of our own memory cgroup (``ChildMemcg``: registered before they exist, so
    ``lifecycle.teardown()`` removes them), each open as a directory fd; ``release()`` closes and
    removes them (their storage goes when the cgroup is freed, ``bpf_cgrp_storage_free()``)."""

    kind = "cgroup"

    def __init__(self, n: int) -> None:
        super().__init__()
        layout = memcg_layout()
        if layout is None:
            raise OSError(errno_mod.ENOENT, "no memory cgroup controller to make owner cgroups in")
        self.cgroups: list[ChildMemcg] = []
        try:
            for _ in range(n):
                with deferred_signals():
                    cg = ChildMemcg(layout, "owner")
                    self.cgroups.append(cg)
                    self.fds.append(os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY))
        except BaseException:
            self.close()
            raise

    def release(self) -> None:
        self._close_fds()
        while self.cgroups:
            self.cgroups.pop().remove()
        self.released = True


_OWNERS: dict[str, type[Owners]] = {"task": TaskOwners, "socket": SocketOwners, "inode": InodeOwners,
                                    "cgroup": CgroupOwners}


@contextlib.contextmanager
def owners(kind: str, n: int) -> Iterator[Owners]:
    """``n`` owners of ``kind``, all gone (threads joined, fds closed, files and cgroups removed) on exit."""
    check_kind(kind)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}")
    o = _OWNERS[kind](n)
    try:
        yield o
    finally:
        o.close()


# -- measuring --------------------------------------------------------------------------------------


class Usage:
    """A memory cgroup's usage file kept open: ``pread`` at offset 0 regenerates it (~2 µs against
    ~27 µs for open+read+close), cheap enough to read after every update."""

    def __init__(self, cg: ChildMemcg) -> None:
        self.fd = os.open(os.path.join(cg.path, cg.layout.usage_file), os.O_RDONLY)

    def __call__(self) -> int:
        return int(os.pread(self.fd, 64, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def slope(ys: Sequence[int]) -> float:
    """Least-squares bytes per step of usages read after steps 1..n.

    Task and cgroup storage elements come from ``bpf_mem_alloc``, whose per-CPU cache is refilled
    ``batch`` objects at a time below ``low_watermark`` (``bpf_mem_refill()``): usage is a staircase
    that runs up to ``high_watermark`` objects ahead of the elements.  The slope of a line through
    every point averages the stairs out; ``last - first`` divided by n does not.
    """
    n = len(ys)
    if n < 2:
        return float(ys[0]) if ys else 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    sxy = sum((i - mx) * (y - my) for i, y in enumerate(ys))
    sxx = sum((i - mx) ** 2 for i in range(n))
    return sxy / sxx


def add_elements(m: S.BpfMap, keys: Sequence[bytes], read: Usage) -> list[int]:
    """``BPF_MAP_UPDATE_ELEM`` (``BPF_NOEXIST``) of one zeroed value per key; the usage after each."""
    value = bytes(m.value_size)
    out = []
    for k in keys:
        S.map_update_elem(m, k, value, U.BPF_NOEXIST)
        out.append(read())
    return out


def delete_elements(m: S.BpfMap, keys: Sequence[bytes]) -> None:
    """``BPF_MAP_DELETE_ELEM`` of every key (ENOENT for an owner already gone is not an error)."""
    for k in keys:
        try:
            S.map_delete_elem(m, k)
        except S.BpfSyscallError as e:
            if e.errno != errno_mod.ENOENT:
                raise


def wait_drop(read: Usage, high: int, expect: int, timeout_s: float = 1.0,
              floor: int | None = None) -> dict[str, Any]:
    """Poll usage every ``POLL_S`` (up to ``timeout_s``) after something was freed from ``high``.

    Problem: a delete or an owner's end returns before anything is freed.  Elements are freed after
    a grace period (6.18: a delete through ``call_rcu_tasks_trace()``; a socket's end through
    ``kfree_rcu()``, which drains up to ~500 pending objects per CPU only after ``KFREE_DRAIN_JIFFIES``,
    5 s), sometimes in several batches, and ``bpf_mem_alloc`` keeps what it cached while adding.
    So, without ``floor``, the wait ends once usage has fallen by at least ``expect / 2`` and then
    stayed put for ``SETTLE_S``; with ``floor`` (the level before the elements), once usage is back
    within a page of it (the per-CPU obj stock keeps up to a page charged).

    Returns ``dropped`` and ``final`` (bytes), ``free_ms``: when 90 % of the drop had happened (None:
    less than ``expect / 2`` fell within ``timeout_s``), ``back_ms``: when usage came back within a
    page of ``floor`` (None: not within ``timeout_s``, or no ``floor``).
    """
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = [(0.0, read())]
    last_change = 0.0
    back_ms = None
    while True:
        t, u = time.monotonic() - t0, read()
        if u != samples[-1][1]:
            last_change = t
        samples.append((t, u))
        if floor is not None and u <= floor + PAGE_SIZE:
            back_ms = t * 1000
            break
        if floor is None and high - u >= expect / 2 and t - last_change >= SETTLE_S:
            break
        if t >= timeout_s:
            break
        time.sleep(POLL_S)
    final = samples[-1][1]
    dropped = high - final
    free_ms = None
    if dropped >= expect / 2:
        free_ms = next(t for t, u in samples if high - u >= 0.9 * dropped) * 1000
    return {"dropped": dropped, "free_ms": free_ms, "back_ms": back_ms, "final": final}


def _pin() -> tuple[set[int], int]:
    """Pin the calling thread to one CPU (its allowed CPU with the lowest number): every update
    then takes from the same per-CPU ``bpf_mem_alloc`` cache and the same obj_cgroup stock."""
    old = os.sched_getaffinity(0)
    cpu = min(old)
    os.sched_setaffinity(0, {cpu})
    return old, cpu


def measure(kind: str, value_size: int, n: int, *, timeout_s: float = 1.0) -> dict[str, Any]:
    """Charge of a ``kind`` local storage map with one ``value_size`` element on each of ``n`` owners.

    Problem: usage read while adding elements is not the elements' charge.  Task and cgroup storage
    allocate from a per-map ``bpf_mem_alloc`` that refills its per-CPU cache ``batch`` objects at a
    time, and the memory cgroup counts pages while objects are charged in bytes through a per-CPU
    stock: both put a bounded error on any reading.  Deletes avoid the cache (6.18 frees a deleted
    element and an owner's emptied ``bpf_local_storage`` with ``bpf_mem_cache_raw_free()`` after
    ``call_rcu_tasks_trace()``; socket and inode storage ``kfree`` them), so the drop after deleting
    is the exact charge of what was deleted, to a page or two.

    Mechanism: a child process inside a fresh child memory cgroup creates the maps (``create_in``), so
    their ``objcg`` is that cgroup and every element is charged to it whoever updates; this process
    stays outside, pinned to one CPU, and reads the cgroup's kernel-memory usage.  Steps: create map
    A, add one element per owner (each owner's first: it also allocates the owner's
    ``bpf_local_storage``); create map B, add one element per owner (no new storage); delete B's
    elements and wait for the free, then A's; add fresh elements to A and end the owners (threads
    exit, sockets, files and cgroups closed and removed), wait; add elements to A on ``n`` new owners
    (reusing what the owners' end left in the map's allocator), delete them, wait; close both maps,
    wait.  Everything made is gone on return, exception or signal.

    Keys of the result (bytes unless named ``_ms``; per-owner and per-element values are floats;
    a ``_ms`` is None when less than half the expected drop came within ``timeout_s``):
      kind, value_size, owners, cpu           what ran, and the CPU this process ran on
      map_bytes, second_map_bytes             usage added by creating map A, map B
      first_bytes, first_slope                usage added by A's n elements (storages included);
                                              least-squares bytes per element while adding (``slope``)
      elem_bytes, elem_slope                  the same for B's n elements
      elem_freed, elem_free_ms                usage freed after deleting B's elements, and when
      first_freed, first_free_ms              the same for A's elements (they take the storages along)
      per_elem                                elem_freed / n: the charge of one element
      per_owner_first                         first_freed / n: an owner's first element with its storage
      owner_extra                             per_owner_first - per_elem: the storage's charge
      delete_ms                               time the n deletes of B took
      release_added, release_ms               fresh A elements; time ending the owners took (joins)
      release_freed, release_free_ms,         usage freed after the owners' end, and when (from the end
      release_back_ms, release_residual       of ``release()``); when usage was back within a page of the
                                              level before them (None: not in time); what it stayed above
      reuse_bytes                             usage added by A elements on n new owners after that
      reuse_freed, reuse_free_ms              usage freed after deleting those, and when
      close_freed, close_free_ms,             usage freed after closing both maps, when, when back within
      close_back_ms, close_residual           a page of the level before map A; what it stayed above
    """
    mtype = check_kind(kind)
    check_value_size(value_size)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1; got {n!r}")
    layout = memcg_layout()
    if layout is None:
        raise OSError(errno_mod.ENOENT, "no memory cgroup controller: cannot measure a charge")
    out: dict[str, Any] = {"kind": kind, "value_size": value_size, "owners": n}
    old_cpus, out["cpu"] = _pin()
    try:
        with contextlib.ExitStack() as stack:
            btf = stack.enter_context(local_storage_btf(value_size))
            cg = stack.enter_context(ChildMemcg(layout, "lstorage"))
            with deferred_signals():
                read = Usage(cg)
                stack.callback(read.close)
            maps: list[S.BpfMap] = []

            def make() -> int:
                """Create a map in ``cg``; return the usage it added."""
                before = read()
                fd = create_in(cg, lambda: create_local_storage(kind, value_size, btf=btf).release())
                with deferred_signals():
                    maps.append(S.BpfMap(fd, mtype, KEY_SIZE, value_size, 0, U.BPF_F_NO_PREALLOC))
                    stack.callback(maps[-1].close)
                return read() - before

            def free_wait(prefix: str, high: int, expect: int, floor: int | None = None) -> int:
                d = wait_drop(read, high, expect, timeout_s, floor)
                out[f"{prefix}_freed"], out[f"{prefix}_free_ms"] = d["dropped"], d["free_ms"]
                if floor is not None:
                    out[f"{prefix}_back_ms"] = d["back_ms"]
                return int(d["final"])

            base = read()
            own = stack.enter_context(owners(kind, n))
            keys = own.keys()
            out["map_bytes"] = make()
            u = read()
            ys = add_elements(maps[0], keys, read)
            out["first_bytes"], out["first_slope"] = ys[-1] - u, slope(ys)
            out["second_map_bytes"] = make()
            u = read()
            ys = add_elements(maps[1], keys, read)
            out["elem_bytes"], out["elem_slope"] = ys[-1] - u, slope(ys)

            high = read()
            t = time.monotonic()
            delete_elements(maps[1], keys)
            out["delete_ms"] = (time.monotonic() - t) * 1000
            high = free_wait("elem", high, out["elem_bytes"])
            delete_elements(maps[0], keys)
            free_wait("first", high, out["first_bytes"])
            out["per_elem"] = out["elem_freed"] / n
            out["per_owner_first"] = out["first_freed"] / n
            out["owner_extra"] = out["per_owner_first"] - out["per_elem"]

            low = read()
            ys = add_elements(maps[0], keys, read)
            out["release_added"] = ys[-1] - low
            t = time.monotonic()
            own.release()
            out["release_ms"] = (time.monotonic() - t) * 1000
            out["release_residual"] = free_wait("release", ys[-1], out["release_added"], low) - low

            with owners(kind, n) as fresh:
                u = read()
                ys = add_elements(maps[0], fresh.keys(), read)
                out["reuse_bytes"] = ys[-1] - u
                delete_elements(maps[0], fresh.keys())
                free_wait("reuse", ys[-1], out["first_freed"])
            high = read()
            while maps:
                maps.pop().close()
            out["close_residual"] = free_wait("close", high, high - base, base) - base
    finally:
        os.sched_setaffinity(0, old_cpus)
    return out
