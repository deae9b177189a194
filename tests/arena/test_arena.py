"""The arena model: pages, pointers, faults, charges and real (sparse) bytes."""

from __future__ import annotations

import pytest

from bpfmem.arena import BPF_F_MMAPABLE, BPF_F_NO_USER_CONV, BPF_F_SEGV_ON_FAULT, ArenaFault, BpfArena, UserSpace
from bpfmem.mm import MemCgroup
from bpfmem.userspace.arena_api import (ArenaBoundsError, ArenaNullPointerError, BpfSide, PageFragAllocator,
                                        UserSide)
from bpfmem.userspace.arena_htab import ArenaHtab

PAGE = 4096
G4 = 1 << 32


def mapped(n: int = 1 << 20, flags: int = BPF_F_MMAPABLE, extra: int = 0) -> tuple[BpfArena, MemCgroup, MemCgroup]:
    root = MemCgroup()
    map_cg, task_cg = root.child("map"), root.child("task")
    a = BpfArena(n, flags, extra, memcg=map_cg, user=UserSpace(memcg=task_cg))
    a.mmap(extra, n * PAGE)
    return a, map_cg, task_cg


def test_pointers_low_32_bits_are_the_bpf_pointer() -> None:
    a, _, _ = mapped(16, extra=0x7F12_3456_0000)
    p = a.bpf_arena_alloc_pages(0, 1)
    assert p == 0x7F12_3456_0000
    assert a.cast_kern(p) == 0x3456_0000
    assert a.cast_user(0x3456_0010) == 0x7F12_3456_0010
    assert a.kern_addr(0x3456_0010) == a.kern_vm_start + 0x3456_0010
    assert a.compute_pgoff(p + 3 * PAGE + 5) == 3
    b, _, _ = mapped(16, BPF_F_MMAPABLE | BPF_F_NO_USER_CONV, extra=0x7F12_3456_0000)
    assert b.cast_user(0x3456_0010) == 0x3456_0010          # stored pointers stay in BPF form


def test_alloc_free_reserve_pages() -> None:
    a, cg, _ = mapped(64)
    base = a.user_vm_start
    assert a.bpf_arena_alloc_pages(0, 4, flags=1) == 0       # flags must be 0
    assert a.bpf_arena_alloc_pages(0, 65) == 0               # more than the arena
    assert a.bpf_arena_alloc_pages(base + 1, 1) == 0         # not page aligned
    p = a.bpf_arena_alloc_pages(base + 8 * PAGE, 2)
    assert p == base + 8 * PAGE and cg.usage == 2 * PAGE
    assert a.bpf_arena_alloc_pages(base + 9 * PAGE, 1) == 0  # already taken
    assert a.bpf_arena_reserve_pages(base + 8 * PAGE, 1) == -16     # EBUSY: allocated
    assert a.bpf_arena_reserve_pages(base + 63 * PAGE, 2) == -22    # EINVAL: out of range
    assert a.bpf_arena_reserve_pages(base + 20 * PAGE, 2) == 0
    assert a.bpf_arena_alloc_pages(base + 20 * PAGE, 1) == 0        # reserved pages are not free
    first = a.bpf_arena_alloc_pages(0, 1)
    assert first == base                                            # first fit
    a.bpf_arena_free_pages(a.cast_kern(p), 2)                       # only the low 32 bits count
    assert cg.usage == PAGE and a.statistics().pages == 1


def test_user_faults_allocate_pages_unless_segv_on_fault() -> None:
    a, cg, task = mapped(1024)
    a.user_write(a.user_vm_start + 5 * PAGE + 7, b"x")
    assert a.statistics().pages == 1 and cg.usage == PAGE and task.usage == PAGE   # page + one PTE page
    assert a.bpf_load(a.cast_kern(a.user_vm_start + 5 * PAGE + 7), 1) == b"x"
    s, _, _ = mapped(16, BPF_F_MMAPABLE | BPF_F_SEGV_ON_FAULT)
    with pytest.raises(ArenaFault, match="SEGV_ON_FAULT"):
        s.user_read(s.user_vm_start, 1)
    p = s.bpf_arena_alloc_pages(0, 1)
    assert s.user_read(p, 4) == bytes(4)                            # a program's page is readable
    with pytest.raises(ArenaFault, match="not inside"):
        s.user_read(s.user_vm_end, 1)


def test_kernel_side_access_to_an_unmapped_page_reads_zero_and_is_reported() -> None:
    a, _, _ = mapped(16)
    assert a.bpf_load(a.cast_kern(a.user_vm_start + PAGE), 8) == bytes(8)
    a.bpf_store(a.cast_kern(a.user_vm_start + PAGE), b"lost")
    assert a.statistics().pages == 0
    assert [f.split(" at ")[0] for f in a.faults] == ["Arena READ access", "Arena WRITE access"]


def test_per_page_charges_memlock_and_what_frees_them() -> None:
    """Map creator pays 4096 B per page; the faulting task pays 8 B/page of page tables (4104 B together,
    as measured with the task in the map's cgroup); munmap/MADV_DONTNEED free no page; close frees all."""
    root = MemCgroup()
    cg = root.child("both")
    a = BpfArena(4096, BPF_F_MMAPABLE, memcg=cg, user=UserSpace(memcg=cg))
    a.mmap(0, 4096 * PAGE)
    assert a.mem_usage() == 0 and cg.usage == 0
    for i in range(1024):
        a.user_write(a.user_vm_start + i * PAGE, b"\x5b")
    assert cg.usage / 1024 == 4104
    a.madvise_dontneed()
    assert a.user_read(a.user_vm_start, 1) == b"\x5b" and a.statistics().pages == 1024
    a.munmap()
    assert cg.usage == 1024 * PAGE                                   # only the page tables went
    a.close()
    assert cg.usage == 0


def test_a_4g_arena_costs_host_memory_only_for_touched_pages() -> None:
    """1,000 touched pages of a 4 GiB model arena use about 1,000 pages of real memory."""
    def rss() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")
    a, _, _ = mapped(1 << 20)
    before = rss()
    for i in range(1000):
        a.user_write(a.user_vm_start + i * 4 * PAGE, b"\xff" * 64)
    grown = rss() - before
    assert a.statistics().pages == 1000
    assert 900 * PAGE <= grown <= 1300 * PAGE, grown
    a.close()


def test_the_seed_hash_table_both_directions() -> None:
    a, _, _ = mapped(1 << 20)                                   # 4 GiB: user_vm_start is 4 GiB aligned
    bpf = BpfSide(a)
    alloc = PageFragAllocator(bpf)
    h = ArenaHtab.create(bpf, alloc, 64)
    assert alloc.null_pages_skipped, "the first page's BPF pointer is 0: the allocator must skip it"
    for k in range(500):
        h.update(k, k * k)
    user = UserSide(a, first_page=1 << 19)
    seen = dict(ArenaHtab(user, PageFragAllocator(user), a.cast_user(h.ptr)).items())
    assert seen == {k: k * k for k in range(500)}
    uh = ArenaHtab.create(user, PageFragAllocator(user), 16)
    for k in range(200):
        uh.update(k, -k)
    uh.delete(5)
    back = ArenaHtab(bpf, alloc, uh.ptr & 0xFFFF_FFFF)
    assert back.lookup(7) == -7 and back.lookup(5) is None and len(dict(back.items())) == 199


def test_no_user_conv_pointers_cannot_be_followed_from_user_space() -> None:
    a, _, _ = mapped(1 << 20, BPF_F_MMAPABLE | BPF_F_NO_USER_CONV)
    bpf = BpfSide(a)
    h = ArenaHtab.create(bpf, PageFragAllocator(bpf), 8)
    h.update(1, 2)
    user = UserSide(a, first_page=1 << 19)
    with pytest.raises(ArenaBoundsError, match="NO_USER_CONV"):
        dict(ArenaHtab(user, PageFragAllocator(user), a.cast_user(h.ptr) | (a.user_vm_start & ~0xFFFF_FFFF)).items())


def test_page_frag_allocator_frees_pages_with_their_last_object() -> None:
    a, cg, _ = mapped(64, extra=0x7F00_0001_0000)
    bpf = BpfSide(a)
    al = PageFragAllocator(bpf)
    objs = [al.alloc(1000) for _ in range(8)]                      # 4 per page
    assert al.pages_allocated == 2 and not al.null_pages_skipped
    for o in objs[:4]:
        al.free(o)
    assert al.pages_freed == 1 and cg.usage == PAGE
    with pytest.raises(ArenaBoundsError):
        UserSide(a).read(a.user_vm_end - 4, 8)
    assert ArenaNullPointerError.__mro__[1] is ValueError
