"""What every BPF map shares: attributes, errno, flags, and the syscall.c helpers.

Models: include/uapi/linux/bpf.h (flags), kernel/bpf/syscall.c
(``bpf_map_area_alloc``, ``bpf_map_kmalloc_node``, ``bpf_map_save_memcg``),
v6.18.

Charging: the map's memory belongs to the memcg of the task that created it.
``bpf_map_area_alloc`` runs in the creating syscall and charges that task
(kmalloc up to ``PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER`` = 32 KiB, else vmalloc
pages).  ``bpf_map_alloc_percpu`` called from ``map_alloc`` runs before
``map->objcg`` is saved, so it charges the root cgroup, i.e. nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..mm import GFP_USER, PAGE_SIZE, __GFP_ACCOUNT, __GFP_NORETRY, __GFP_NOWARN, __GFP_ZERO, MemCgroup, MemObj, Mm

EPERM, ENOENT, E2BIG, ENOMEM, EBUSY, EEXIST, EINVAL, ERANGE, ENOTSUPP = 1, 2, 7, 12, 16, 17, 22, 34, 524
ERRNO_NAMES = {EPERM: "EPERM", ENOENT: "ENOENT", E2BIG: "E2BIG", ENOMEM: "ENOMEM", EBUSY: "EBUSY",
               EEXIST: "EEXIST", EINVAL: "EINVAL", ERANGE: "ERANGE", ENOTSUPP: "ENOTSUPP"}

BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4

BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_ZERO_SEED = 1 << 6
BPF_F_MMAPABLE = 1 << 10
BPF_F_SEGV_ON_FAULT = 1 << 17
BPF_F_NO_USER_CONV = 1 << 18

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_PERCPU_HASH = 5

PAGE_ALLOC_COSTLY_ORDER = 3


class BpfError(Exception):
    """A BPF operation failed with ``errno`` (what the syscall would return as -errno)."""

    def __init__(self, errno: int, what: str) -> None:
        self.errno = errno
        super().__init__(f"{what}: {ERRNO_NAMES.get(errno, errno)}")


@dataclass(frozen=True)
class MapAttr:
    """The ``BPF_MAP_CREATE`` attributes the model uses."""

    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    map_extra: int = 0


def roundup_pow_of_two(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def round_up(n: int, a: int) -> int:
    return -(-n // a) * a


def bpf_map_area_alloc(mm: Mm, size: int, memcg: MemCgroup | None) -> MemObj | None:
    """``__bpf_map_area_alloc()``: kmalloc up to 32 KiB, else (or on failure) vmalloc."""
    gfp = __GFP_NOWARN | __GFP_ZERO | __GFP_ACCOUNT
    if size <= (PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER):
        obj = mm.slab.kmalloc_node(size, GFP_USER | __GFP_NORETRY | gfp, memcg)
        if obj is not None:
            return obj
    return mm.slab.alloc_pages(size, gfp, memcg, kind="vmalloc")


def bpf_map_area_free(mm: Mm, obj: MemObj | None) -> None:
    if obj is not None:
        mm.slab.kfree(obj)
