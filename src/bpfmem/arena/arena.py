"""bpf_arena: sparse memory shared by BPF programs and user space, with real bytes.

Models: kernel/bpf/arena.c @ v6.18 (``arena_map_alloc``,
``arena_get_unmapped_area``, ``arena_map_mmap``, ``arena_vm_fault``,
``arena_alloc_pages``, ``arena_free_pages``, ``arena_reserve_pages``,
``compute_pgoff``, ``arena_map_mem_usage``).

Problem: an arena is up to 4 GiB of address space of which only touched pages
cost memory, and a pointer stored in it must work on both sides.  The kernel
maps the arena twice: in user space at ``user_vm_start`` (one VMA, never
crossing a 4 GiB boundary) and in a 4 GiB + guard kernel area where the BPF
program's 32-bit pointer ``p`` means ``kern_vm_start + p``.  Because the user
range does not cross 4 GiB, the low 32 bits of a user pointer *are* the BPF
pointer::

    user   0x7f95_ca8f_1000 ───┐ low 32 bits: 0xca8f_1000 = BPF pointer
    kernel kern_vm_start + 0xca8f_1000
    page offset (pgoff) = (u32)(uaddr - (u32)user_vm_start) >> 12

Real bytes: the model backs the arena with one sparse anonymous mapping of
the arena's size (MAP_NORESERVE), so a 4 GiB arena costs host memory only for
the pages actually touched; both the "BPF side" and user space read and write
those bytes.

Charges: each page is charged 4096 B to the map creator's memcg
(``bpf_map_alloc_pages``); a user fault also builds user page tables, charged
to the faulting task (one 4 KiB PTE page per 2 MiB touched: 8 B per page, the
measured 4104 B/page when the task is in the same cgroup).  fdinfo
``memlock`` is 0 (``arena_map_mem_usage``).  munmap and MADV_DONTNEED free no
arena page; closing the map frees all.

Creation (``BpfArena.__init__``) refuses what ``map_create`` + ``arena_map_alloc``
refuse, in their order: RDONLY|WRONLY, a bad NUMA node, BPF_F_TOKEN_FD (EINVAL),
no CAP_BPF (EPERM), then the arena's EINVAL / E2BIG / ERANGE, then the name
(EINVAL, after the allocation).  Fields are ``__u32`` (``map_extra`` ``__u64``):
values outside cannot reach the kernel and are refused with ``ValueError``.

User faults (``arena_vm_fault``): a page with no page behind it is allocated
and charged whatever the range tree says — ``range_tree_clear()`` of a clear
(reserved or already taken) range returns 0 — so reservations stop only
program-side allocation, and with ``map_extra`` 0 an mmap longer than
``max_entries`` pages faults in pages past it (the range tree only ever held
``max_entries``).  Only ``BPF_F_SEGV_ON_FAULT``, a memcg refusal or an address
outside the VMA is a SIGSEGV.  A second ``MAP_FIXED`` mmap over the mapping
replaces it (the old VMA closes, the new one has the same start and end).  The
VMA is ``VM_DONTCOPY`` and refuses a split (6.18: ``arena_vm_may_split``): a
forked child has no arena mapping (``child_read`` is a SIGSEGV) and a partial
munmap is EINVAL.  All verified on 6.18.44 (tests/arena/test_rules.py).

Deviations: one user process (``UserSpace``; a fork is ``child_read``);
kernel-side faults are recorded in ``faults`` (6.17+ reports them to the
program's stderr stream).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

from ..mm import PAGE_SIZE, MemCgroup
from .range_tree import RangeTree

BPF_MAP_TYPE_ARENA = 33
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_MMAPABLE = 1 << 10
BPF_F_SEGV_ON_FAULT = 1 << 17
BPF_F_NO_USER_CONV = 1 << 18
ALLOWED_FLAGS = BPF_F_SEGV_ON_FAULT | BPF_F_MMAPABLE | BPF_F_NO_USER_CONV
BPF_F_NUMA_NODE, BPF_F_RDONLY, BPF_F_WRONLY, BPF_F_TOKEN_FD = 1 << 2, 1 << 3, 1 << 4, 1 << 16
BPF_OBJ_NAME_LEN = 16
SZ_4G = 1 << 32
PAGE_SHIFT = 12
MAX_PAGES = SZ_4G // PAGE_SIZE
GUARD_SZ = 1 << 16
KERN_VM_AREA = 0xFFFF_C900_0000_0000     # a vmalloc-area address where get_vm_area() put the arena
PTE_SPAN = 512 * PAGE_SIZE               # one page-table page maps 2 MiB

EPERM, ENOENT, E2BIG, ENOMEM, EBUSY, EEXIST, EINVAL, ERANGE = 1, 2, 7, 12, 16, 17, 22, 34

PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_FIXED_NOREPLACE = 0x01, 0x02, 0x10, 0x100000
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux value; the mmap module lacks it before 3.12


class ArenaError(OSError):
    """A syscall-level failure with the kernel's errno (map create, mmap)."""


class ArenaFault(RuntimeError):
    """What would be SIGSEGV for the user process (bad address, SEGV_ON_FAULT, unmapped)."""


def check_attr_range(field: str, value: int, bits: int = 32) -> None:
    """``ValueError`` unless ``value`` fits ``attr.{field}`` (``__u{bits}``); the text is
    ``bpfmem.maps.base.check_attr_range``'s and the kernel wrapper's (arena may not import maps)."""
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field}={value} does not fit attr.{field} (__u{bits}, 0..{(1 << bits) - 1}): "
                         "bpf(2) cannot pass it")


def bpf_obj_name_cpy(name: bytes | str) -> bytes:
    """``bpf_obj_name_cpy()`` as in ``bpfmem.maps.base`` (a test checks they agree): up to the NUL,
    ``isalnum`` (Latin-1 ctype), ``_`` or ``.``; 16 bytes without a NUL is -EINVAL."""
    raw = (name.encode() if isinstance(name, str) else bytes(name))[:BPF_OBJ_NAME_LEN]
    out = bytearray()
    for b in raw:
        if b == 0:
            return bytes(out)
        if not (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in (0x5F, 0x2E)
                or (b >= 0xC0 and b not in (0xD7, 0xF7))):
            raise ArenaError(EINVAL, f"bpf_obj_name_cpy: byte 0x{b:02x} in map name {raw!r}")
        out.append(b)
    if len(raw) == BPF_OBJ_NAME_LEN:
        raise ArenaError(EINVAL, f"bpf_obj_name_cpy: map name {raw!r} has no NUL within 16 bytes")
    return bytes(out)


def arena_map_create_prologue(map_flags: int, numa_node: int, nr_node_ids: int, bpf_capable: bool) -> int:
    """What ``map_create()`` (kernel/bpf/syscall.c, 6.18) refuses for an arena before ``arena_map_alloc()``
    (the arena has no ``map_alloc_check``); returns the flags with BPF_F_TOKEN_FD cleared."""
    token = map_flags & BPF_F_TOKEN_FD
    map_flags &= ~BPF_F_TOKEN_FD
    if map_flags & BPF_F_RDONLY and map_flags & BPF_F_WRONLY:               # bpf_get_file_flag()
        raise ArenaError(EINVAL, "map_create: BPF_F_RDONLY with BPF_F_WRONLY")
    if map_flags & BPF_F_NUMA_NODE and numa_node != 0xFFFF_FFFF and numa_node >= nr_node_ids:
        raise ArenaError(EINVAL, f"map_create: NUMA node {numa_node} >= nr_node_ids {nr_node_ids}")
    if token:                                                                # map_token_fd 0 is no token
        raise ArenaError(EINVAL, "map_create: BPF_F_TOKEN_FD without a token (map_token_fd 0)")
    if not bpf_capable:
        raise ArenaError(EPERM, "map_create: an arena needs CAP_BPF")
    return map_flags


def clear_lo32(x: int) -> int:
    return x & ~0xFFFF_FFFF


def u32(x: int) -> int:
    return x & 0xFFFF_FFFF


@dataclass
class UserSpace:
    """A user process's address space, enough for arena placement (``mm_get_unmapped_area``)."""

    top: int = 0x7FFF_F7FF_F000
    vmas: list[tuple[int, int]] = field(default_factory=list)
    memcg: MemCgroup | None = None

    def is_free(self, start: int, length: int) -> bool:
        return all(start + length <= s or start >= e for s, e in self.vmas)

    def get_unmapped_area(self, addr: int, length: int, flags: int) -> int:
        """Top-down search below the lowest mapping; a free hint is honoured; MAP_FIXED is taken as is."""
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            return addr
        if addr and self.is_free(addr, length):
            return addr
        low = min([s for s, _ in self.vmas] + [self.top])
        return ((low - length) // PAGE_SIZE) * PAGE_SIZE


@dataclass
class ArenaStats:
    max_entries: int
    user_vm_start: int
    user_vm_end: int
    pages: int
    reserved: int
    free: int
    charged_bytes: int
    page_table_bytes: int
    memlock: int
    mapped: bool


class BpfArena:
    """``struct bpf_arena`` with real bytes behind it."""

    def __init__(self, max_entries: int, map_flags: int, map_extra: int = 0, *, memcg: MemCgroup | None = None,
                 key_size: int = 0, value_size: int = 0, user: UserSpace | None = None, name: bytes | str = b"",
                 numa_node: int = 0, nr_node_ids: int = 1, bpf_capable: bool = True) -> None:
        """``BPF_MAP_CREATE`` of an arena: ``map_create()`` around ``arena_map_alloc()``; raises
        ``ArenaError`` with the kernel's errno, ``ValueError`` for a value no attr field can hold."""
        for attr_field, v in (("key_size", key_size), ("value_size", value_size), ("max_entries", max_entries),
                              ("map_flags", map_flags), ("numa_node", numa_node)):
            check_attr_range(attr_field, v)
        check_attr_range("map_extra", map_extra, 64)
        map_flags = arena_map_create_prologue(map_flags, numa_node, nr_node_ids, bpf_capable)
        if (key_size or value_size or max_entries == 0 or not map_flags & BPF_F_MMAPABLE
                or map_flags & ~ALLOWED_FLAGS):
            raise ArenaError(EINVAL, "arena: key/value size must be 0, max_entries > 0, BPF_F_MMAPABLE set, "
                                     "only SEGV_ON_FAULT | MMAPABLE | NO_USER_CONV allowed")
        if map_extra & (PAGE_SIZE - 1):
            raise ArenaError(EINVAL, "arena: map_extra must be page aligned")
        vm_range = max_entries * PAGE_SIZE
        if vm_range > SZ_4G:
            raise ArenaError(E2BIG, "arena: more than 4 GiB")
        if (map_extra >> 32) != (((map_extra + vm_range - 1) & (1 << 64) - 1) >> 32):   # u64 arithmetic
            raise ArenaError(ERANGE, "arena: user range would cross a 4 GiB boundary")
        bpf_obj_name_cpy(name)      # map_create() checks the name after arena_map_alloc(); nothing to free here
        self.max_entries = max_entries
        self.map_flags = map_flags
        self.nr_node_ids = nr_node_ids
        self.memcg = memcg
        self.user = user or UserSpace()
        self.user_vm_start = map_extra
        self.user_vm_end = map_extra + vm_range if map_extra else 0
        self.kern_vm_start = KERN_VM_AREA + GUARD_SZ // 2
        self.rt = RangeTree()
        self.rt.set(0, max_entries)
        self.pages: set[int] = set()                 # pgoffs with a page in the kernel area
        self.user_ptes: set[int] = set()             # pgoffs mapped in the user VMA
        self._pt_pages: set[int] = set()             # 2 MiB regions with a user PTE page
        self.vma: tuple[int, int] | None = None
        self.faults: list[str] = []
        # backing bytes for the whole 32-bit page offset space (a user mapping may be longer than max_entries);
        # MAP_NORESERVE: only touched pages cost host memory
        self._mem = mmap.mmap(-1, SZ_4G, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        self.closed = False

    # -- address translation ----------------------------------------------------------------------
    def compute_pgoff(self, uaddr: int) -> int:
        """``compute_pgoff()``: (u32)(uaddr - (u32)user_vm_start) >> PAGE_SHIFT."""
        return u32(uaddr - u32(self.user_vm_start)) >> PAGE_SHIFT

    def cast_kern(self, uptr: int) -> int:
        """User (64-bit) pointer -> BPF arena pointer (32-bit)."""
        return u32(uptr)

    def cast_user(self, ptr32: int) -> int:
        """BPF arena pointer -> the value stored for user space (identity with BPF_F_NO_USER_CONV)."""
        if self.map_flags & BPF_F_NO_USER_CONV:
            return u32(ptr32)
        return clear_lo32(self.user_vm_start) | u32(ptr32) if ptr32 else 0

    def kern_addr(self, ptr32: int) -> int:
        """Where the kernel (JIT) accesses BPF pointer ``ptr32``: kern_vm_start + (u32)ptr."""
        return self.kern_vm_start + u32(ptr32)

    def user_addr_of_pgoff(self, pgoff: int) -> int:
        return clear_lo32(self.user_vm_start) + u32(self.user_vm_start + pgoff * PAGE_SIZE)

    # -- memory accounting ----------------------------------------------------------------------------
    def _charge_page(self) -> bool:
        return self.memcg.try_charge(PAGE_SIZE) if self.memcg is not None else True

    def _uncharge_page(self) -> None:
        if self.memcg is not None:
            self.memcg.uncharge(PAGE_SIZE)

    def _page_index(self, pgoff: int) -> int:
        return pgoff * PAGE_SIZE

    def _zero_page(self, pgoff: int) -> None:
        off = self._page_index(pgoff)
        self._mem[off:off + PAGE_SIZE] = bytes(PAGE_SIZE)
        try:
            self._mem.madvise(mmap.MADV_DONTNEED, off, PAGE_SIZE)   # give the host page back too
        except (AttributeError, OSError):
            pass

    # -- the BPF side (kfuncs, any program) -------------------------------------------------------------
    def page_cnt_max(self) -> int:
        return (self.user_vm_end - self.user_vm_start) >> PAGE_SHIFT

    def bpf_arena_alloc_pages(self, addr: int, page_cnt: int, node_id: int = -1, flags: int = 0) -> int:
        """``bpf_arena_alloc_pages()`` -> ``arena_alloc_pages()``: full user address, or 0 (NULL).  A node that
        is neither NUMA_NO_NODE (-1) nor a possible node gets NULL (6.18.44, measured: node 1000)."""
        if flags or page_cnt <= 0 or not self.user_vm_end:
            return 0
        if node_id != -1 and not 0 <= node_id < self.nr_node_ids:
            return 0
        cnt_max = self.page_cnt_max()
        if page_cnt > cnt_max:
            return 0
        if addr:
            if addr & (PAGE_SIZE - 1):
                return 0
            pgoff = self.compute_pgoff(addr)
            if pgoff > cnt_max - page_cnt:
                return 0
            if not self.rt.is_set(pgoff, page_cnt):
                return 0
        else:
            pgoff = self.rt.find(page_cnt)
            if pgoff < 0:
                return 0
        charged = 0
        for _ in range(page_cnt):
            if not self._charge_page():
                for _ in range(charged):
                    self._uncharge_page()
                return 0
            charged += 1
        self.rt.clear(pgoff, page_cnt)
        for p in range(pgoff, pgoff + page_cnt):
            self.pages.add(p)
        uaddr32 = u32(self.user_vm_start + pgoff * PAGE_SIZE)
        return clear_lo32(self.user_vm_start) + uaddr32

    def bpf_arena_free_pages(self, ptr: int, page_cnt: int) -> None:
        """``bpf_arena_free_pages()`` -> ``arena_free_pages()``: only the low 32 bits count; a NULL ``ptr`` (or
        ``page_cnt`` 0) does nothing — so when ``user_vm_start``'s low 32 bits are 0, page 0's BPF pointer is 0
        and that page can never be freed by a program."""
        if not ptr or page_cnt <= 0:
            return
        uaddr = u32(ptr) & ~(PAGE_SIZE - 1)
        full = clear_lo32(self.user_vm_start) + uaddr
        end = min(self.user_vm_end, full + page_cnt * PAGE_SIZE)
        if full >= end:
            return
        page_cnt = (end - full) >> PAGE_SHIFT
        pgoff = self.compute_pgoff(uaddr)
        self.rt.set(pgoff, page_cnt)
        for p in range(pgoff, pgoff + page_cnt):
            self.user_ptes.discard(p)                    # zap_pages()
            if p in self.pages:
                self.pages.discard(p)
                self._zero_page(p)
                self._uncharge_page()

    def bpf_arena_reserve_pages(self, ptr: int, page_cnt: int) -> int:
        """``bpf_arena_reserve_pages()`` (≈6.17): 0, -EINVAL (out of range) or -EBUSY (allocated).  An
        unaligned ``ptr`` returns 0 and reserves nothing (6.18.44, measured)."""
        if ptr & (PAGE_SIZE - 1):
            return 0
        pgoff = self.compute_pgoff(ptr)
        if pgoff + page_cnt > self.page_cnt_max():
            return -EINVAL
        if not self.rt.is_set(pgoff, page_cnt):
            return -EBUSY
        self.rt.clear(pgoff, page_cnt)
        return 0

    def _kern_pgoff(self, ptr32: int) -> int | None:
        """pgoff of a BPF pointer, or None outside the arena's user range."""
        if not self.user_vm_end:
            return None
        pgoff = self.compute_pgoff(ptr32)
        return pgoff if pgoff < self.page_cnt_max() else None

    def bpf_load(self, ptr32: int, size: int) -> bytes:
        """A program's load through an arena pointer (PROBE_MEM32): an unmapped page reads as zeros."""
        out = bytearray()
        for chunk_ptr, n in _page_chunks(u32(ptr32), size):
            pgoff = self._kern_pgoff(chunk_ptr)
            if pgoff is None or pgoff not in self.pages:
                self.faults.append(f"Arena READ access at unmapped address 0x{u32(chunk_ptr):x}")
                out += bytes(n)
                continue
            off = self._page_index(pgoff) + (chunk_ptr & (PAGE_SIZE - 1))
            out += self._mem[off:off + n]
        return bytes(out)

    def bpf_store(self, ptr32: int, data: bytes) -> None:
        """A program's store: skipped (and reported) on an unmapped page."""
        pos = 0
        for chunk_ptr, n in _page_chunks(u32(ptr32), len(data)):
            pgoff = self._kern_pgoff(chunk_ptr)
            if pgoff is None or pgoff not in self.pages:
                self.faults.append(f"Arena WRITE access at unmapped address 0x{u32(chunk_ptr):x}")
            else:
                off = self._page_index(pgoff) + (chunk_ptr & (PAGE_SIZE - 1))
                self._mem[off:off + n] = data[pos:pos + n]
            pos += n

    # -- the user side ------------------------------------------------------------------------------------
    def mmap(self, addr: int, length: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED,
             pgoff: int = 0) -> int:
        """``mmap(map_fd)``: ``arena_get_unmapped_area`` (its errors first), then ``bpf_map_mmap`` (VM_SHARED),
        then ``arena_map_mmap``; raises ``ArenaError``."""
        if pgoff:
            raise ArenaError(EINVAL, "arena mmap needs offset 0")
        if length > SZ_4G:
            raise ArenaError(E2BIG, "arena mmap longer than 4 GiB")
        if self.user_vm_start:
            if length > self.user_vm_end - self.user_vm_start:
                raise ArenaError(E2BIG, "longer than the arena's user range")
            if length != self.user_vm_end - self.user_vm_start:
                raise ArenaError(EINVAL, "length must equal the arena's user range")
            if addr != self.user_vm_start:
                raise ArenaError(EINVAL, f"address must be user_vm_start 0x{self.user_vm_start:x}")
        replacing = (flags & MAP_FIXED and self.vma is not None and addr == self.vma[0]
                     and addr + length == self.vma[1])
        if replacing:                                 # MAP_FIXED over our own mapping: the old VMA goes first
            self.munmap()
        ret = self.user.get_unmapped_area(addr, length * 2, flags)
        if (ret >> 32) != ((ret + length - 1) >> 32):
            ret = -(-ret // SZ_4G) * SZ_4G           # round_up(ret, SZ_4G), even under MAP_FIXED
        if flags & MAP_FIXED_NOREPLACE and not self.user.is_free(ret, length):
            raise ArenaError(EEXIST, f"MAP_FIXED_NOREPLACE: 0x{ret:x} is already mapped")
        if not (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) and not self.user.is_free(ret, length):
            ret = self.user.get_unmapped_area(0, length * 2, 0)
        if not flags & MAP_SHARED:                    # bpf_map_mmap(), after get_unmapped_area
            raise ArenaError(EINVAL, "arena mmap needs MAP_SHARED")
        if self.vma is not None or (self.user_vm_start and self.user_vm_start != ret):
            raise ArenaError(EBUSY, "arena already mapped at another address")
        if self.user_vm_end and self.user_vm_end != ret + length:
            raise ArenaError(EBUSY, "every mapping must have the same size")
        self.user_vm_start, self.user_vm_end = ret, ret + length
        self.vma = (ret, ret + length)
        self.user.vmas.append(self.vma)
        return ret

    def munmap(self, addr: int | None = None, length: int | None = None) -> None:
        """Pages stay (and stay charged); only user page tables go.  Only the whole VMA: a partial range is
        EINVAL (``arena_vm_may_split``, 6.18)."""
        if self.vma is None:
            return
        if (addr is not None and addr != self.vma[0]) or (length is not None and length != self.vma[1] - self.vma[0]):
            raise ArenaError(EINVAL, "arena VMAs cannot be split: munmap the whole mapping")
        self.user.vmas.remove(self.vma)
        self.vma = None
        self.user_ptes.clear()
        if self.user.memcg is not None:
            self.user.memcg.uncharge(len(self._pt_pages) * PAGE_SIZE)
        self._pt_pages.clear()

    def madvise_dontneed(self) -> None:
        """MADV_DONTNEED on the VMA: user PTEs go, arena pages (and data) stay."""
        self.user_ptes.clear()

    def _user_fault(self, uaddr: int) -> int:
        """``arena_vm_fault()``: the pgoff now mapped at ``uaddr`` (raises ``ArenaFault`` for SIGSEGV)."""
        if self.vma is None or not self.vma[0] <= uaddr < self.vma[1]:
            raise ArenaFault(f"SIGSEGV: 0x{uaddr:x} is not inside the arena's mapping")
        pgoff = self.compute_pgoff(uaddr)
        if pgoff not in self.pages:
            if self.map_flags & BPF_F_SEGV_ON_FAULT:
                raise ArenaFault(f"SIGSEGV: page 0x{uaddr & ~(PAGE_SIZE - 1):x} was never allocated "
                                 "(BPF_F_SEGV_ON_FAULT)")
            if not self._charge_page():
                raise ArenaFault("SIGSEGV: page allocation failed (memcg limit)")
            self.rt.clear(pgoff, 1)
            self.pages.add(pgoff)
        if pgoff not in self.user_ptes:
            self.user_ptes.add(pgoff)
            region = (uaddr - self.vma[0]) // PTE_SPAN
            if region not in self._pt_pages:
                self._pt_pages.add(region)
                if self.user.memcg is not None:
                    self.user.memcg.try_charge(PAGE_SIZE)
        return pgoff

    def child_read(self, uaddr: int, size: int) -> bytes:
        """A read by a forked child: the VMA is ``VM_DONTCOPY``, so the child has no mapping there."""
        raise ArenaFault(f"SIGSEGV: 0x{uaddr:x}: a forked child has no arena mapping (VM_DONTCOPY)")

    def user_read(self, uaddr: int, size: int) -> bytes:
        out = bytearray()
        for a, n in _page_chunks(uaddr, size):
            pgoff = self._user_fault(a)
            off = self._page_index(pgoff) + (a & (PAGE_SIZE - 1))
            out += self._mem[off:off + n]
        return bytes(out)

    def user_write(self, uaddr: int, data: bytes) -> None:
        pos = 0
        for a, n in _page_chunks(uaddr, len(data)):
            pgoff = self._user_fault(a)
            off = self._page_index(pgoff) + (a & (PAGE_SIZE - 1))
            self._mem[off:off + n] = data[pos:pos + n]
            pos += n

    # -- lifetime -------------------------------------------------------------------------------------------
    def mem_usage(self) -> int:
        """``arena_map_mem_usage()``: 0, so fdinfo shows ``memlock: 0``."""
        return 0

    def close(self) -> None:
        """Map free: every page goes back, everything is uncharged."""
        if self.closed:
            return
        self.munmap()
        for _ in self.pages:
            self._uncharge_page()
        self.pages.clear()
        self._mem.close()
        self.closed = True

    def statistics(self) -> ArenaStats:
        free = self.rt.free_pages()
        return ArenaStats(self.max_entries, self.user_vm_start, self.user_vm_end, len(self.pages),
                          self.max_entries - free - len(self.pages), free, len(self.pages) * PAGE_SIZE,
                          len(self._pt_pages) * PAGE_SIZE, self.mem_usage(), self.vma is not None)


def _page_chunks(addr: int, size: int) -> list[tuple[int, int]]:
    """Split [addr, addr+size) at page boundaries."""
    out = []
    while size > 0:
        n = min(size, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
        out.append((addr, n))
        addr += n
        size -= n
    return out
