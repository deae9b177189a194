"""Arena creation and mmap rules (docs/measurements.md §5): the same test on the model and the kernel."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from bpfmem.arena import arena as M

from ..kernel import require_kernel_backend

G4 = 1 << 32
PAGE = 4096
MMAPABLE, SEGV, NO_USER_CONV, NO_PREALLOC = 1 << 10, 1 << 17, 1 << 18, 1


class _Side:
    """What the rules need of an arena; the model's and the kernel's arenas share these method names."""

    def mmap(self, a: Any, addr: int, length: int, flags: int = M.MAP_SHARED) -> int:
        return a.mmap(addr, length, flags=flags)

    def munmap(self, a: Any) -> None:
        a.munmap()

    def write(self, a: Any, addr: int, data: bytes) -> None:
        a.user_write(addr, data)

    def read(self, a: Any, addr: int, n: int) -> bytes:
        return a.user_read(addr, n)

    def close(self, a: Any) -> None:
        a.close()


class ModelSide(_Side):
    name = "model"

    def __init__(self) -> None:
        self.user = M.UserSpace()

    def create(self, n: int, flags: int, map_extra: int = 0, key: int = 0, value: int = 0) -> Any:
        return M.BpfArena(n, flags, map_extra, key_size=key, value_size=value, user=self.user)


class KernelSide(_Side):
    name = "kernel"

    def __init__(self) -> None:
        require_kernel_backend()
        from bpfmem.kernel import arena as K
        self.K = K
        self.live: list[Any] = []

    def create(self, n: int, flags: int, map_extra: int = 0, key: int = 0, value: int = 0) -> Any:
        a = self.K.KernelArena(n, flags, map_extra, bmap=self.K.arena_create(n, flags, map_extra, key, value))
        self.live.append(a)
        return a


@pytest.fixture(params=["model", "kernel"])
def side(request: pytest.FixtureRequest) -> Any:
    s = ModelSide() if request.param == "model" else KernelSide()
    yield s
    for a in getattr(s, "live", []):
        a.close()


def outcome(fn: Any, *args: Any) -> str:
    try:
        fn(*args)
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]


CREATE = [
    ((1, MMAPABLE), "OK"), ((1 << 20, MMAPABLE), "OK"), (((1 << 20) + 1, MMAPABLE), "E2BIG"),
    ((0, MMAPABLE), "EINVAL"), ((16, 0), "EINVAL"), ((16, MMAPABLE | NO_PREALLOC), "EINVAL"),
    ((16, MMAPABLE, 0, 4, 0), "EINVAL"), ((16, MMAPABLE, 0, 0, 8), "EINVAL"),
    ((16, MMAPABLE | SEGV), "OK"), ((16, MMAPABLE | NO_USER_CONV), "OK"),
    ((16, MMAPABLE, 0x10001), "EINVAL"), ((16, MMAPABLE, 0x7F00_0000_0000 - PAGE), "ERANGE"),
    ((16, MMAPABLE, 0x7F00_0000_0000), "OK"), ((16, MMAPABLE, 0x10000), "OK"),
]


@pytest.mark.parametrize("args,want", CREATE)
def test_creation_rules(side: Any, args: tuple[int, ...], want: str) -> None:
    assert outcome(side.create, *args) == want


def test_map_private_is_refused_and_lengths_up_to_4g_are_taken(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    assert outcome(side.mmap, a, 0, 16 * PAGE, M.MAP_PRIVATE) == "EINVAL"
    assert outcome(side.mmap, a, 0, G4 + PAGE) == "E2BIG"
    b = side.create(16, MMAPABLE)
    addr = side.mmap(b, 0, 32 * PAGE)                 # twice max_entries: accepted
    assert addr % PAGE == 0 and (addr >> 32) == ((addr + 32 * PAGE - 1) >> 32)
    c = side.create(16, MMAPABLE)
    assert outcome(side.mmap, c, 0, 8 * PAGE) == "OK"  # half: accepted


def test_first_mmap_pins_the_address(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    addr = side.mmap(a, 0, 16 * PAGE)
    side.write(a, addr + 100, b"kept")
    assert outcome(side.mmap, a, addr, 16 * PAGE) == "EBUSY"     # still mapped: a second mapping
    side.munmap(a)
    assert outcome(side.mmap, a, 0, 16 * PAGE) == "EINVAL"       # no hint: refused
    assert side.mmap(a, addr, 16 * PAGE) == addr                 # the same hint: same place, same data
    assert side.read(a, addr + 100, 4) == b"kept"


def test_map_extra_fixes_the_address(side: Any) -> None:
    extra = 0x7E00_0000_0000
    a = side.create(16, MMAPABLE, extra)
    assert outcome(side.mmap, a, 0, 16 * PAGE) == "EINVAL"
    assert side.mmap(a, extra, 16 * PAGE) == extra


def test_placement_never_crosses_4g_and_a_full_arena_is_4g_aligned(side: Any) -> None:
    a = side.create(4096, MMAPABLE)
    addr = side.mmap(a, 0, 4096 * PAGE)
    assert (addr >> 32) == ((addr + 4096 * PAGE - 1) >> 32)
    b = side.create(1 << 20, MMAPABLE)
    assert side.mmap(b, 0, G4) % G4 == 0


def test_map_fixed_across_a_4g_boundary_moves_to_the_boundary(side: Any) -> None:
    """MAP_FIXED is silently moved up to the boundary; MAP_FIXED_NOREPLACE too, or EEXIST when that is taken."""
    boundary = 0x7D00_0000_0000
    a = side.create(16, MMAPABLE)
    assert side.mmap(a, boundary - 4 * PAGE, 16 * PAGE, M.MAP_SHARED | M.MAP_FIXED) == boundary
    b = side.create(16, MMAPABLE)
    assert outcome(side.mmap, b, boundary - 4 * PAGE, 16 * PAGE, M.MAP_SHARED | M.MAP_FIXED_NOREPLACE) == "EEXIST"
    c = side.create(16, MMAPABLE)
    assert side.mmap(c, boundary + G4 - 4 * PAGE, 16 * PAGE, M.MAP_SHARED | M.MAP_FIXED_NOREPLACE) == boundary + G4


# -- 6.18.44 re-check: user faults, NULL frees, reservations, mmap replacement, fork and split ----------------

def _alloc(side: Any, a: Any, addr: int, n: int = 1, node: int = -1) -> int:
    return int(a.bpf_arena_alloc_pages(addr, n, node_id=node))


def test_a_user_fault_on_a_reserved_page_allocates_it(side: Any) -> None:
    """``arena_vm_fault``: ``range_tree_clear`` of a clear range returns 0, so the page is allocated; a
    reservation stops only program-side allocation."""
    a = side.create(16, MMAPABLE)
    addr = side.mmap(a, 0, 16 * PAGE)
    assert a.bpf_arena_reserve_pages(addr + 9 * PAGE, 1) == 0
    assert _alloc(side, a, addr + 9 * PAGE) == 0                     # reserved: no program allocation
    assert side.read(a, addr + 9 * PAGE, 8) == bytes(8)              # no signal: a zeroed page
    side.write(a, addr + 9 * PAGE, b"mine")
    assert side.read(a, addr + 9 * PAGE, 4) == b"mine"
    assert _alloc(side, a, addr + 9 * PAGE) == 0                     # now taken by the fault


def test_an_mmap_longer_than_max_entries_faults_in_pages_past_it(side: Any) -> None:
    a = side.create(2, MMAPABLE)
    addr = side.mmap(a, 0, 16 * PAGE)
    side.write(a, addr + 8 * PAGE, b"past")
    assert side.read(a, addr + 8 * PAGE, 4) == b"past"
    assert _alloc(side, a, addr + 12 * PAGE) == 0                    # programs only get max_entries pages
    assert _alloc(side, a, 0) != 0


def test_reserving_an_unaligned_address_returns_0_and_reserves_nothing(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    addr = side.mmap(a, 0, 16 * PAGE)
    assert a.bpf_arena_reserve_pages(addr + 5 * PAGE + 7, 1) == 0
    assert _alloc(side, a, addr + 5 * PAGE) == addr + 5 * PAGE


def test_freeing_null_does_nothing_so_a_page_whose_bpf_pointer_is_0_stays(side: Any) -> None:
    """With user_vm_start's low 32 bits 0, page 0's pointer in 32-bit form is 0, which ``bpf_arena_free_pages``
    takes for NULL: the page stays allocated (only its full 64-bit address frees it)."""
    base = 0x7C00_0000_0000
    a = side.create(16, MMAPABLE, base)
    assert side.mmap(a, base, 16 * PAGE) == base
    if side.name == "kernel":
        assert a.bpf_arena_alloc_pages(base, 1, marker=0x55) == base     # the program writes 'U' there
    else:
        assert _alloc(side, a, base) == base
        a.bpf_store(0, b"U")
    a.bpf_arena_free_pages(0, 1)
    assert _alloc(side, a, base) == 0 and side.read(a, base, 1) == b"U"
    a.bpf_arena_free_pages(base, 1)
    assert _alloc(side, a, base) == base


def test_an_invalid_numa_node_gets_null(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    side.mmap(a, 0, 16 * PAGE)
    assert _alloc(side, a, 0, node=1000) == 0
    assert _alloc(side, a, 0, node=0) != 0


def test_map_private_longer_than_4g_is_e2big_first(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    assert outcome(side.mmap, a, 0, G4 + PAGE, M.MAP_PRIVATE) == "E2BIG"     # get_unmapped_area runs first


def test_a_second_map_fixed_mmap_over_the_mapping_replaces_it(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    addr = side.mmap(a, 0, 16 * PAGE)
    side.write(a, addr + 100, b"kept")
    assert side.mmap(a, addr, 16 * PAGE, M.MAP_SHARED | M.MAP_FIXED) == addr
    assert side.read(a, addr + 100, 4) == b"kept"                   # the pages belong to the map, not the VMA


def test_a_forked_child_has_no_arena_and_a_partial_munmap_is_einval(side: Any) -> None:
    a = side.create(16, MMAPABLE)
    addr = side.mmap(a, 0, 16 * PAGE)
    side.write(a, addr + 3 * PAGE, b"x")
    with pytest.raises(M.ArenaFault if side.name == "model" else Exception, match="SIGSEGV"):
        a.child_read(addr + 3 * PAGE, 1)
    partial = (lambda: a.munmap(addr, PAGE)) if side.name == "model" else (lambda: a.munmap_range(addr, PAGE))
    assert outcome(partial) == "EINVAL"
    assert side.read(a, addr + 3 * PAGE, 1) == b"x"
