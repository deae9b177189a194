"""The real kernel's arena: per-page charge, memlock 0, what frees pages; the seed's table from Python."""

from __future__ import annotations

import os

from bpfmem.arena import BPF_F_MMAPABLE, BpfArena, UserSpace
from bpfmem.mm import MemCgroup
from bpfmem.userspace.arena_api import PageFragAllocator, UserSide
from bpfmem.userspace.arena_htab import ArenaHtab

from ..kernel import require_kernel_backend

PAGE = 4096
N = 1024


def kernel_arena_in_cgroup(pages: int):  # type: ignore[no-untyped-def]
    from bpfmem.kernel import syscall as S
    from bpfmem.kernel.arena import KernelArena, arena_create
    from bpfmem.kernel.cgroup import ChildMemcg, create_in, memcg_layout
    cg = ChildMemcg(memcg_layout(), "arena")  # type: ignore[arg-type]
    fd = create_in(cg, lambda: arena_create(pages, BPF_F_MMAPABLE).release())
    bmap = S.BpfMap(fd, 33, 0, 0, pages, BPF_F_MMAPABLE)
    return cg, KernelArena(pages, BPF_F_MMAPABLE, bmap=bmap)


def model_arena(task_in_map_cgroup: bool) -> tuple[BpfArena, MemCgroup]:
    root = MemCgroup()
    cg = root.child("map")
    a = BpfArena(4 * N, BPF_F_MMAPABLE, memcg=cg, user=UserSpace(memcg=cg if task_in_map_cgroup else root))
    a.mmap(0, 4 * N * PAGE)
    return a, cg


def test_pages_touched_from_outside_cost_the_map_creator_4096_bytes_each() -> None:
    require_kernel_backend()
    from bpfmem.kernel.syscall import fdinfo
    cg, ka = kernel_arena_in_cgroup(4 * N)
    try:
        base = cg.usage()
        addr = ka.mmap()
        assert fdinfo(ka.map)["memlock"] == "0"
        for i in range(N):
            ka.user_write(addr + i * PAGE, b"\x5b")
        per_page = (cg.usage() - base) / N
        ka.madvise_dontneed()
        after_dontneed = cg.usage() - base
        assert ka.user_read(addr, 1) == b"\x5b"                  # data survives MADV_DONTNEED
        ka.munmap()
        after_munmap = cg.usage() - base
    finally:
        ka.close()
    m, mcg = model_arena(task_in_map_cgroup=False)
    for i in range(N):
        m.user_write(m.user_vm_start + i * PAGE, b"\x5b")
    assert abs(per_page - 4096) <= 8 and mcg.usage / N == 4096
    assert after_dontneed >= N * PAGE and after_munmap >= N * PAGE   # pages stay charged
    m.munmap()
    assert mcg.usage == N * PAGE
    cg.remove()


def test_pages_touched_from_inside_the_cgroup_cost_4104_bytes_each() -> None:
    """With the touching task in the map's cgroup, its page tables land there too (measured 4104 B/page)."""
    require_kernel_backend()
    cg, ka = kernel_arena_in_cgroup(4 * N)
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    base = cg.usage()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            with open(os.path.join(cg.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            addr = ka.mmap()
            for i in range(N):
                ka.user_write(addr + i * PAGE, b"\x01")
            os.write(w, b"t")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(r, 1) == b"t"
        per_page = (cg.usage() - base) / N
    finally:
        os.write(go_w, b"g")
        os.waitpid(pid, 0)
        ka.close()
        cg.remove()
    m, mcg = model_arena(task_in_map_cgroup=True)
    for i in range(N):
        m.user_write(m.user_vm_start + i * PAGE, b"\x01")
    assert mcg.usage / N == 4104
    assert 4096 + 4 <= per_page <= 4104 + 16, per_page


def test_user_space_builds_the_seed_table_in_a_real_arena_and_reads_it_back() -> None:
    require_kernel_backend()
    cg, ka = kernel_arena_in_cgroup(1 << 14)
    try:
        ka.mmap()
        side = UserSide(ka)  # type: ignore[arg-type]
        h = ArenaHtab.create(side, PageFragAllocator(side), 128)
        for k in range(2000):
            h.update(k, 3 * k)
        h.delete(10)
        again = ArenaHtab(side, PageFragAllocator(side), h.ptr)
        got = dict(again.items())
        assert len(got) == 1999 and got[1999] == 5997 and 10 not in got
        # the same bytes read through the model's layout agree: pointers are full user addresses
        assert all(v >> 32 == ka.user_vm_start >> 32 for v in (h.ptr,))
        assert cg.usage() > 0
    finally:
        ka.close()
        cg.remove()


def test_a_sleepable_program_allocates_pages_with_the_kfunc_and_python_reads_them() -> None:
    """bpf_arena_alloc_pages called from a hand-assembled SYSCALL program; the address it returns and the
    marker it wrote through an address-space cast are read from Python; SEGV_ON_FAULT then lets user space
    read exactly those pages; the pages are charged to the map creator."""
    require_kernel_backend()
    from bpfmem.kernel import syscall as S
    from bpfmem.kernel.arena import ArenaFault, KernelArena, arena_create
    from bpfmem.kernel.cgroup import ChildMemcg, create_in, memcg_layout
    flags = BPF_F_MMAPABLE | (1 << 17)
    cg = ChildMemcg(memcg_layout(), "arena")  # type: ignore[arg-type]
    fd = create_in(cg, lambda: arena_create(64, flags).release())
    ka = KernelArena(64, flags, bmap=S.BpfMap(fd, 33, 0, 0, 64, flags))
    try:
        addr = ka.mmap()
        base = cg.usage()
        got = ka.bpf_arena_alloc_pages(0, 3, marker=0x1122334455667788)
        assert got == addr                                  # first fit: the arena's first page
        assert ka.user_read(got, 8) == (0x1122334455667788).to_bytes(8, "little")
        assert ka.user_read(got + 2 * PAGE, 8) == bytes(8)
        assert abs((cg.usage() - base) - 3 * PAGE) <= 8
        again = ka.bpf_arena_alloc_pages(addr + PAGE, 1)
        assert again == 0                                   # taken
        try:
            ka.user_read(addr + 10 * PAGE, 1)
            raise AssertionError("a never-allocated page must be refused under SEGV_ON_FAULT")
        except ArenaFault:
            pass
        m = BpfArena(64, flags, memcg=MemCgroup())
        m.mmap(0, 64 * PAGE)
        assert m.bpf_arena_alloc_pages(0, 3) == m.user_vm_start and m.bpf_arena_alloc_pages(m.user_vm_start + PAGE, 1) == 0
    finally:
        ka.close()
        cg.remove()


def test_arena_vs_htab_model_agrees_with_the_kernel(capsys) -> None:  # type: ignore[no-untyped-def]
    require_kernel_backend()
    import json

    from bpfmem.cli import main
    assert main(["bench", "arena-vs-htab", "--backend", "both", "--elements", "5000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    by = {(r["structure"].split()[0], r["backend"]): r for r in rows}
    for kind in ("htab", "arena"):
        m, k = by[(kind, "model")], by[(kind, "kernel")]
        assert m["structure"] == k["structure"]                 # the same path on both (user space builds it)
        assert abs(m["bytes_per_element"] - k["bytes_per_element"]) <= 0.03 * k["bytes_per_element"], (m, k)
    arena = by[("arena", "model")]
    assert arena["peak_bytes"] == by[("arena", "kernel")]["peak_bytes"]
    assert main(["arena", "example", "--backend", "kernel", "--direction", "user-to-bpf", "--elements", "400",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["correct"]


def test_faults_on_reserved_pages_and_past_max_entries_are_charged_alike() -> None:
    """A user fault on a reserved page, and one past max_entries in a longer mapping, each allocate a page
    charged 4096 B to the map creator: on the kernel (6.18.44) and on the model."""
    require_kernel_backend()
    cg, ka = kernel_arena_in_cgroup(2)
    root = MemCgroup()
    mcg = root.child("map")
    m = BpfArena(2, BPF_F_MMAPABLE, memcg=mcg, user=UserSpace(memcg=root))
    try:
        for a, usage in ((ka, cg.usage), (m, lambda: mcg.usage)):
            addr = a.mmap(0, 16 * PAGE)
            assert a.bpf_arena_reserve_pages(addr + PAGE, 1) == 0
            base = usage()
            a.user_write(addr + PAGE, b"r")                  # reserved: allocated anyway
            a.user_write(addr + 8 * PAGE, b"p")              # past max_entries (2 pages)
            assert abs((usage() - base) - 2 * PAGE) <= 8, (a, usage() - base)
            assert a.user_read(addr + PAGE, 1) == b"r" and a.user_read(addr + 8 * PAGE, 1) == b"p"
    finally:
        ka.close()
        cg.remove()
        m.close()
