"""The real kernel's BPF arena from user space: create, mmap, read and write, safely.

``KernelArena`` creates a ``BPF_MAP_TYPE_ARENA`` map and maps it with libc's
``mmap`` (Python's mmap module cannot pass an address hint).  It offers the
user half of the arena protocol (``user_read``/``user_write``) with bounds
checks; with ``BPF_F_SEGV_ON_FAULT`` a touch of a page no program allocated
would kill the process, so such accesses are refused with ``ArenaFault``
instead of being attempted.  The BPF half (``bpf_load``...) needs a loaded
program and is not offered here.
"""

from __future__ import annotations

import ctypes as C
import os
from typing import Any, Callable

from . import syscall as S
from . import uapi as U

PAGE_SIZE = 4096
BPF_F_SEGV_ON_FAULT = 1 << 17
BPF_F_NO_USER_CONV = 1 << 18
PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_FIXED_NOREPLACE = 0x01, 0x02, 0x10, 0x100000
MADV_DONTNEED = 4

_libc = C.CDLL(None, use_errno=True)
_libc.mmap.restype = C.c_void_p
_libc.mmap.argtypes = [C.c_void_p, C.c_size_t, C.c_int, C.c_int, C.c_int, C.c_long]
_libc.munmap.argtypes = [C.c_void_p, C.c_size_t]
_libc.madvise.argtypes = [C.c_void_p, C.c_size_t, C.c_int]
MAP_FAILED = C.c_void_p(-1).value


class ArenaFault(RuntimeError):
    """An access that would SIGSEGV the process (refused before it happens)."""


def arena_create(max_entries: int, flags: int, map_extra: int = 0, key_size: int = 0,
                 value_size: int = 0, *, name: str | bytes = "bpfmem_arena", numa_node: int = 0) -> S.BpfMap:
    """``BPF_MAP_CREATE`` of an arena; raises ``BpfSyscallError`` with the kernel's errno, or
    ``ValueError`` (before the call) for a value no attr field can hold (max_entries >= 2^32...)."""
    return S.map_create(U.BPF_MAP_TYPE_ARENA, key_size, value_size, max_entries, flags, name=name,
                        map_extra=map_extra, numa_node=numa_node)


def raw_mmap(fd: int, addr: int, length: int, prot: int, flags: int) -> int:
    """mmap(2); returns the address or raises OSError with errno."""
    ret = _libc.mmap(C.c_void_p(addr or None), length, prot, flags, fd, 0)
    if ret is None or ret == MAP_FAILED:
        err = C.get_errno()
        raise OSError(err, f"mmap(addr=0x{addr:x}, len={length}, flags=0x{flags:x}): {os.strerror(err)}")
    return int(ret)


def raw_munmap(addr: int, length: int) -> None:
    if _libc.munmap(C.c_void_p(addr), length) != 0:
        err = C.get_errno()
        raise OSError(err, os.strerror(err))


class KernelArena:
    """An arena map of the running kernel with its user mapping."""

    def __init__(self, max_entries: int, flags: int = U.BPF_F_MMAPABLE, map_extra: int = 0,
                 bmap: S.BpfMap | None = None) -> None:
        self.map = bmap if bmap is not None else arena_create(max_entries, flags, map_extra)
        self.max_entries = max_entries
        self.map_flags = flags
        self.user_vm_start = 0
        self.user_vm_end = 0
        self.length = 0
        self.allocated: set[int] = set()     # pages known to exist (user faults, program allocations)
        self._prog: object | None = None

    def mmap(self, addr: int = 0, length: int | None = None, flags: int = MAP_SHARED,
             prot: int = PROT_READ | PROT_WRITE) -> int:
        n = self.max_entries * PAGE_SIZE if length is None else length
        a = raw_mmap(self.map.fd, addr, n, prot, flags)
        self.user_vm_start, self.user_vm_end, self.length = a, a + n, n
        return a

    def munmap(self) -> None:
        if self.length:
            raw_munmap(self.user_vm_start, self.length)
            self.length = 0

    def madvise_dontneed(self) -> None:
        if self.length and _libc.madvise(C.c_void_p(self.user_vm_start), self.length, MADV_DONTNEED) != 0:
            raise OSError(C.get_errno(), "madvise")

    def _check(self, uaddr: int, size: int) -> None:
        if not self.length:
            raise ArenaFault("the arena is not mapped in this process")
        if not (self.user_vm_start <= uaddr and uaddr + size <= self.user_vm_start + self.length):
            raise ArenaFault(f"SIGSEGV: 0x{uaddr:x}+{size} is outside the arena's mapping")
        if self.map_flags & BPF_F_SEGV_ON_FAULT:
            first, last = (uaddr - self.user_vm_start) // PAGE_SIZE, (uaddr + size - 1 - self.user_vm_start) // PAGE_SIZE
            missing = [p for p in range(first, last + 1) if p not in self.allocated]
            if missing:
                raise ArenaFault(f"SIGSEGV: page {missing[0]} was not allocated by a program (BPF_F_SEGV_ON_FAULT)")

    def user_read(self, uaddr: int, size: int) -> bytes:
        self._check(uaddr, size)
        return C.string_at(uaddr, size)

    def user_write(self, uaddr: int, data: bytes) -> None:
        self._check(uaddr, len(data))
        C.memmove(uaddr, data, len(data))
        first, last = (uaddr - self.user_vm_start) // PAGE_SIZE, (uaddr + len(data) - 1 - self.user_vm_start) // PAGE_SIZE
        self.allocated.update(range(first, last + 1))

    def cast_user(self, ptr32: int) -> int:
        if self.map_flags & BPF_F_NO_USER_CONV:
            return ptr32 & 0xFFFF_FFFF
        return (self.user_vm_start & ~0xFFFF_FFFF) | (ptr32 & 0xFFFF_FFFF) if ptr32 else 0

    def _program(self) -> Any:
        if not self.length:
            raise ArenaFault("mmap the arena first: a program needs its user address")
        if self._prog is None:
            from .arena_prog import ArenaAllocProgram
            self._prog = ArenaAllocProgram(self.map)
        return self._prog

    def bpf_arena_alloc_pages(self, addr: int, page_cnt: int, node_id: int = -1, flags: int = 0,
                              marker: int = 0) -> int:
        """Run the real kfunc from a sleepable program (``arena_prog``); it writes ``marker`` to the
        first page.  Returns the full user address or 0."""
        if flags:
            raise ValueError("the program passes flags 0")
        got = int(self._program().alloc(addr, page_cnt, marker, node_id))
        if got:
            first = (got - self.user_vm_start) // PAGE_SIZE
            self.allocated.update(range(first, first + page_cnt))
        return got

    def bpf_arena_free_pages(self, ptr: int, page_cnt: int) -> None:
        """The real ``bpf_arena_free_pages`` kfunc, from the same program."""
        self._program().free(ptr, page_cnt)

    def bpf_arena_reserve_pages(self, ptr: int, page_cnt: int) -> int:
        """The real ``bpf_arena_reserve_pages`` kfunc (≈6.17): 0 or a negative errno."""
        return int(self._program().reserve(ptr, page_cnt))

    def munmap_range(self, addr: int, length: int) -> None:
        """``munmap(addr, length)`` of part (or all) of the mapping; ``OSError`` with the kernel's errno."""
        raw_munmap(addr, length)
        if addr == self.user_vm_start and length == self.length:
            self.length = 0

    def child_read(self, uaddr: int, size: int) -> bytes:
        """Read ``size`` bytes at ``uaddr`` in a forked child; ``ArenaFault`` if the child dies of SIGSEGV."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                      # the child: read, report, exit (no Python cleanup)
            try:
                import faulthandler
                faulthandler.disable()                    # its SIGSEGV is the expected outcome, not a crash
                os.close(r)
                os.write(w, C.string_at(uaddr, size))
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            raise ArenaFault(f"SIGSEGV: the forked child died of signal {os.WTERMSIG(status)} reading 0x{uaddr:x}")
        return data

    def _no_program(self, *_a: object) -> int:
        raise NotImplementedError("program-side loads and stores on a kernel arena are not driven "
                                  "from Python; see docs/arena.md")

    bpf_load: Callable[..., bytes] = _no_program  # type: ignore[assignment]
    bpf_store: Callable[..., None] = _no_program  # type: ignore[assignment]

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
            self._prog = None
        self.munmap()
        self.map.close()

    def __enter__(self) -> KernelArena:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

