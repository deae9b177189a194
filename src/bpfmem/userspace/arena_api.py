"""Working with an arena from Python: C-like structs, an object allocator, pointers both ways.

Problem: an arena holds linked data structures that BPF programs and user
space both follow.  In memory a pointer is the *user* form (64-bit, the
arena's user address) unless the arena has ``BPF_F_NO_USER_CONV``; a BPF
program holds the 32-bit form (the low 32 bits).  This module lets Python
code be either side without caring which arena (model or real kernel) is
behind it.

- ``ArenaMemory``: what an arena must offer (the model's ``BpfArena`` and
  the kernel's ``KernelArena`` both do).
- ``Side``: how one side reads, writes and spells pointers.  ``UserSide``
  uses 64-bit user addresses and user-space accesses (faults allocate pages,
  or raise ``ArenaFault`` with ``BPF_F_SEGV_ON_FAULT``); ``BpfSide`` uses
  32-bit pointers, the program's loads/stores (an unmapped page reads as 0)
  and ``cast_user`` when it stores a pointer.
- ``Struct``: a ctypes ``Structure`` at an arena address, read and written
  through a ``Side`` with bounds checks, so Python never touches a wild
  address.
- ``PageFragAllocator``: objects carved from whole pages like the
  selftests' ``bpf_arena_alloc.h``: allocation goes downward from the end
  of the current page; the last 8 bytes of a page count its live objects;
  the page is freed when the count drops to zero.  Address 0 of the arena
  is never handed out (its BPF pointer would be NULL).
"""

from __future__ import annotations

import ctypes as C
import struct
from typing import Protocol, TypeVar

PAGE_SIZE = 4096


class ArenaNullPointerError(ValueError):
    """An object whose BPF pointer would be 0: indistinguishable from NULL on the BPF side."""


class ArenaBoundsError(ValueError):
    """An access outside the arena's user range (would be a wild pointer)."""


class ArenaMemory(Protocol):
    user_vm_start: int
    user_vm_end: int
    map_flags: int

    def user_read(self, uaddr: int, size: int) -> bytes: ...
    def user_write(self, uaddr: int, data: bytes) -> None: ...
    def bpf_load(self, ptr32: int, size: int) -> bytes: ...
    def bpf_store(self, ptr32: int, data: bytes) -> None: ...
    def bpf_arena_alloc_pages(self, addr: int, page_cnt: int, node_id: int = -1, flags: int = 0) -> int: ...
    def bpf_arena_free_pages(self, ptr: int, page_cnt: int) -> None: ...
    def cast_user(self, ptr32: int) -> int: ...


NO_USER_CONV = 1 << 18


class Side(Protocol):
    """One side's view of the arena."""

    arena: ArenaMemory

    def read(self, ptr: int, size: int) -> bytes: ...
    def write(self, ptr: int, data: bytes) -> None: ...
    def stored(self, ptr: int) -> int: ...
    def loaded(self, value: int) -> int: ...
    def alloc_pages(self, page_cnt: int) -> int: ...
    def free_pages(self, ptr: int, page_cnt: int) -> None: ...


class UserSide:
    """User space: 64-bit pointers; pages come from a user-managed region and fault in when written."""

    def __init__(self, arena: ArenaMemory, first_page: int = 0) -> None:
        self.arena = arena
        self._next_page = arena.user_vm_start + first_page * PAGE_SIZE

    def _check(self, ptr: int, size: int) -> None:
        a = self.arena
        if not (a.user_vm_start <= ptr and ptr + size <= a.user_vm_end):
            raise ArenaBoundsError(f"0x{ptr:x}+{size} is outside the arena [0x{a.user_vm_start:x}, "
                                   f"0x{a.user_vm_end:x})")

    def read(self, ptr: int, size: int) -> bytes:
        self._check(ptr, size)
        return self.arena.user_read(ptr, size)

    def write(self, ptr: int, data: bytes) -> None:
        self._check(ptr, len(data))
        self.arena.user_write(ptr, data)

    def stored(self, ptr: int) -> int:
        """What user space stores for pointer ``ptr``: the user address itself."""
        return ptr

    def loaded(self, value: int) -> int:
        """A stored pointer as this side uses it (a BPF program may have stored the 32-bit form
        with NO_USER_CONV; user space can then not follow it)."""
        if value and value < (1 << 32) and self.arena.user_vm_start >= (1 << 32):
            raise ArenaBoundsError(f"stored pointer 0x{value:x} is in BPF (32-bit) form: the arena has "
                                   "BPF_F_NO_USER_CONV, user space cannot follow it")
        return value

    def alloc_pages(self, page_cnt: int) -> int:
        """A bump pointer over the arena (user space has no page allocator kfunc)."""
        ptr = self._next_page
        if ptr + page_cnt * PAGE_SIZE > self.arena.user_vm_end:
            return 0
        self._next_page += page_cnt * PAGE_SIZE
        self.arena.user_write(ptr, bytes(8))        # touch: the fault allocates the page
        return ptr

    def free_pages(self, ptr: int, page_cnt: int) -> None:
        """User space cannot give pages back (munmap/MADV_DONTNEED keep them): a no-op."""


class BpfSide:
    """A BPF program: 32-bit pointers, PROBE_MEM32 loads/stores, kfunc page allocation."""

    def __init__(self, arena: ArenaMemory) -> None:
        self.arena = arena

    def read(self, ptr: int, size: int) -> bytes:
        return self.arena.bpf_load(ptr, size)

    def write(self, ptr: int, data: bytes) -> None:
        self.arena.bpf_store(ptr, data)

    def stored(self, ptr: int) -> int:
        """What a program stores for pointer ``ptr``: ``cast_user`` (the verifier inserts it)."""
        return self.arena.cast_user(ptr)

    def loaded(self, value: int) -> int:
        return value & 0xFFFF_FFFF

    def alloc_pages(self, page_cnt: int) -> int:
        """The kfunc returns the full user address (never 0 for a page it gave); the program keeps the low 32
        bits.  A page at the arena's 4 GiB-aligned start has 32-bit pointer 0: stored in the arena it reads back
        as NULL, and ``bpf_arena_free_pages`` of it is a no-op (``!ptr__ign``), so the page can never be freed."""
        full = self.arena.bpf_arena_alloc_pages(0, page_cnt, -1, 0)
        if full and not full & 0xFFFF_FFFF:
            raise ArenaNullPointerError(f"bpf_arena_alloc_pages returned 0x{full:x}: its 32-bit arena pointer "
                                        "is 0, which reads back as NULL and which bpf_arena_free_pages ignores")
        return full & 0xFFFF_FFFF

    def free_pages(self, ptr: int, page_cnt: int) -> None:
        self.arena.bpf_arena_free_pages(ptr, page_cnt)


S = TypeVar("S", bound=C.Structure)


def load_struct(side: Side, cls: type[S], ptr: int) -> S:
    """Read a ctypes structure at ``ptr`` (never dereferences Python memory)."""
    if not ptr:
        raise ValueError(f"NULL {cls.__name__} pointer")
    return cls.from_buffer_copy(side.read(ptr, C.sizeof(cls)))


def store_struct(side: Side, ptr: int, obj: C.Structure) -> None:
    if not ptr:
        raise ValueError(f"store to a NULL {type(obj).__name__} pointer")
    side.write(ptr, bytes(obj))


class PageFragAllocator:
    """``bpf_alloc``/``bpf_free`` of the selftests' bpf_arena_alloc.h, on either side."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.cur_page = 0
        self.cur_offset = 0
        self.pages_allocated = 0
        self.pages_freed = 0
        self.null_pages_skipped: list[str] = []

    def _count_ptr(self, page: int) -> int:
        return page + PAGE_SIZE - 8

    def alloc(self, size: int) -> int:
        """An 8-aligned object of ``size`` bytes, or 0 when the arena is full."""
        size = (size + 7) & ~7
        if size >= PAGE_SIZE - 8:
            raise ValueError(f"object of {size} B does not fit a page fragment")
        offset = self.cur_offset
        page = self.cur_page
        if not page or offset < size:
            try:
                page = self.side.alloc_pages(1)
            except ArenaNullPointerError as e:   # keep that page as padding and take the next one
                self.null_pages_skipped.append(str(e))
                page = self.side.alloc_pages(1)
            if not page:
                return 0
            self.pages_allocated += 1
            self.side.write(self._count_ptr(page), struct.pack("<q", 0))
            self.cur_page = page
            offset = PAGE_SIZE - 8
        offset -= size
        obj = page + offset
        if obj & 0xFFFF_FFFF == 0:        # the seed's pitfall: this object's BPF pointer would be NULL
            if offset < size:
                raise ArenaNullPointerError("an object at the arena's first byte has BPF pointer 0 (NULL)")
            offset -= size               # leave the first bytes of the arena unused: pad, as advised
            obj = page + offset
        self.cur_offset = offset
        cnt = struct.unpack("<q", self.side.read(self._count_ptr(page), 8))[0]
        self.side.write(self._count_ptr(page), struct.pack("<q", cnt + 1))
        return obj

    def free(self, obj: int) -> None:
        """Drop an object; its page goes back when its last object does."""
        if not obj:
            return
        page = obj & ~(PAGE_SIZE - 1)
        cnt = struct.unpack("<q", self.side.read(self._count_ptr(page), 8))[0] - 1
        self.side.write(self._count_ptr(page), struct.pack("<q", cnt))
        if cnt == 0:
            if page == self.cur_page:
                self.cur_page = 0
                self.cur_offset = 0
            self.side.free_pages(page, 1)
            self.pages_freed += 1
