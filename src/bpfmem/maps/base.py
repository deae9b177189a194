"""What every BPF map shares: attributes, errno, flags, and the syscall.c helpers.

Models: include/uapi/linux/bpf.h (flags), kernel/bpf/syscall.c
(``map_create``, ``bpf_get_file_flag``, ``bpf_obj_name_cpy``,
``bpf_map_area_alloc``, ``bpf_map_kmalloc_node``, ``bpf_map_save_memcg``),
v6.18.

Creation (``BPF_MAP_CREATE``), in the kernel's order::

    map_create_check      map_extra, RDONLY|WRONLY, NUMA node, map_type      EINVAL
    ops->map_alloc_check  per type (htab_map_alloc_check)                    EPERM/EINVAL/ENOTSUPP/E2BIG
    bpf_map_token_check   BPF_F_TOKEN_FD (fd 0 is never a token here)        EINVAL
    bpf_map_capable       unprivileged_bpf_disabled, CAP_BPF types           EPERM
    ops->map_alloc        per type (htab_map_alloc, arena_map_alloc)         E2BIG/ERANGE/ENOMEM
    bpf_obj_name_cpy      after the allocation: a bad name loses to E2BIG    EINVAL

Attribute fields are ``__u32`` (``map_extra`` ``__u64``): a value outside that
range cannot be passed to bpf(2) at all, so ``MapAttr`` refuses it with
``ValueError`` (the kernel wrapper refuses it the same way, word for word).

Charging: the map's memory belongs to the memcg of the task that created it.
``bpf_map_area_alloc`` runs in the creating syscall and charges that task
(kmalloc up to ``PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER`` = 32 KiB, else vmalloc
pages).  ``bpf_map_alloc_percpu`` called from ``map_alloc`` runs before
``map->objcg`` is saved, so it charges the root cgroup, i.e. nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..mm import GFP_USER, PAGE_SIZE, __GFP_ACCOUNT, __GFP_NORETRY, __GFP_NOWARN, __GFP_ZERO, MemCgroup, MemObj, Mm

EPERM, ENOENT, E2BIG, ENOMEM, EBUSY, EEXIST, EINVAL, ERANGE, ENOTSUPP = 1, 2, 7, 12, 16, 17, 22, 34, 524
ERRNO_NAMES = {EPERM: "EPERM", ENOENT: "ENOENT", E2BIG: "E2BIG", ENOMEM: "ENOMEM", EBUSY: "EBUSY",
               EEXIST: "EEXIST", EINVAL: "EINVAL", ERANGE: "ERANGE", ENOTSUPP: "ENOTSUPP"}

BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4

# map_flags (enum in include/uapi/linux/bpf.h)
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_ZERO_SEED = 1 << 6
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10
BPF_F_TOKEN_FD = 1 << 16
BPF_F_SEGV_ON_FAULT = 1 << 17
BPF_F_NO_USER_CONV = 1 << 18
BPF_F_ACCESS_MASK = BPF_F_RDONLY | BPF_F_RDONLY_PROG | BPF_F_WRONLY | BPF_F_WRONLY_PROG

# enum bpf_map_type: the types the model knows; __MAX_BPF_MAP_TYPE of 6.18 (ARENA = 33 is the last)
BPF_MAP_TYPE_UNSPEC = 0
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_BLOOM_FILTER = 30
BPF_MAP_TYPE_ARENA = 33
MAX_BPF_MAP_TYPE = 34
# map types map_create() lets only bpf_capable() callers create (of those the model knows)
CAP_BPF_MAP_TYPES = frozenset({BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_BLOOM_FILTER,
                               BPF_MAP_TYPE_ARENA})

NUMA_NO_NODE = -1
BPF_OBJ_NAME_LEN = 16
PAGE_ALLOC_COSTLY_ORDER = 3


class BpfError(Exception):
    """A BPF operation failed with ``errno`` (what the syscall would return as -errno)."""

    def __init__(self, errno: int, what: str) -> None:
        self.errno = errno
        super().__init__(f"{what}: {ERRNO_NAMES.get(errno, errno)}")


def check_attr_range(field: str, value: int, bits: int = 32) -> None:
    """``ValueError`` unless ``value`` fits the ``__u{bits}`` field ``attr.{field}`` (same text as
    ``bpfmem.kernel.syscall``: both backends refuse the value before any syscall, none truncates it)."""
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field}={value} does not fit attr.{field} (__u{bits}, 0..{(1 << bits) - 1}): "
                         "bpf(2) cannot pass it")


def name_bytes(name: bytes | str) -> bytes:
    """The bytes of ``attr.map_name``: UTF-8 of a ``str``, at most ``BPF_OBJ_NAME_LEN`` (the field's size;
    a longer name keeps its first 16 bytes, which then hold no NUL and the kernel refuses them)."""
    raw = name.encode() if isinstance(name, str) else bytes(name)
    return raw[:BPF_OBJ_NAME_LEN]


@dataclass(frozen=True)
class MapAttr:
    """The ``BPF_MAP_CREATE`` attributes the model uses (``union bpf_attr``)."""

    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    map_extra: int = 0
    numa_node: int = 0              # read only with BPF_F_NUMA_NODE
    map_name: bytes | str = b""     # a C string in 16 bytes: bpf_obj_name_cpy() decides

    def __post_init__(self) -> None:
        for f in ("map_type", "key_size", "value_size", "max_entries", "map_flags", "numa_node"):
            check_attr_range(f, getattr(self, f))
        check_attr_range("map_extra", self.map_extra, 64)


@dataclass(frozen=True)
class Creds:
    """What ``map_create`` asks of the caller: ``capable(CAP_BPF)``, ``capable(CAP_SYS_ADMIN)`` and the
    ``kernel.unprivileged_bpf_disabled`` sysctl (2 with CONFIG_BPF_UNPRIV_DEFAULT_OFF, as here)."""

    cap_bpf: bool = True
    cap_sys_admin: bool = True
    unprivileged_bpf_disabled: int = 2

    def bpf_capable(self) -> bool:
        """``bpf_token_capable(NULL, CAP_BPF)``: CAP_SYS_ADMIN implies CAP_BPF."""
        return self.cap_bpf or self.cap_sys_admin


ROOT = Creds()


def bpf_map_attr_numa_node(attr: MapAttr) -> int:
    """``bpf_map_attr_numa_node()``: the node as an ``int`` with BPF_F_NUMA_NODE, else NUMA_NO_NODE."""
    if not attr.map_flags & BPF_F_NUMA_NODE:
        return NUMA_NO_NODE
    n = attr.numa_node
    return n - (1 << 32) if n >= 1 << 31 else n


def bpf_get_file_flag(flags: int) -> None:
    """``bpf_get_file_flag()``: BPF_F_RDONLY together with BPF_F_WRONLY is -EINVAL."""
    if flags & BPF_F_RDONLY and flags & BPF_F_WRONLY:
        raise BpfError(EINVAL, "map_create: BPF_F_RDONLY with BPF_F_WRONLY")


def bpf_map_flags_access_ok(flags: int) -> bool:
    """``bpf_map_flags_access_ok()``: not both BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG."""
    both = BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG
    return flags & both != both


def map_create_check(attr: MapAttr, nr_node_ids: int = 1) -> tuple[MapAttr, bool]:
    """``map_create()`` (kernel/bpf/syscall.c, 6.18) before ``ops->map_alloc_check``.

    Returns the attributes with BPF_F_TOKEN_FD cleared (as the kernel clears it
    before any per-type check) and whether it was set.  Nodes
    ``0..nr_node_ids-1`` are taken to be online.  Not modelled: BTF ids,
    ``map_ifindex`` (offload), ``CHECK_ATTR`` on fields after ``map_extra``.
    """
    token = bool(attr.map_flags & BPF_F_TOKEN_FD)
    if token:
        attr = replace(attr, map_flags=attr.map_flags & ~BPF_F_TOKEN_FD)
    if attr.map_type not in (BPF_MAP_TYPE_BLOOM_FILTER, BPF_MAP_TYPE_ARENA) and attr.map_extra:
        raise BpfError(EINVAL, "map_create: map_extra is only for bloom filters and arenas")
    bpf_get_file_flag(attr.map_flags)
    node = bpf_map_attr_numa_node(attr)
    if node != NUMA_NO_NODE and node & 0xFFFF_FFFF >= nr_node_ids:
        raise BpfError(EINVAL, f"map_create: NUMA node {attr.numa_node} >= nr_node_ids {nr_node_ids}")
    if attr.map_type >= MAX_BPF_MAP_TYPE or attr.map_type == BPF_MAP_TYPE_UNSPEC:
        raise BpfError(EINVAL, f"map_create: no map type {attr.map_type}")
    return attr, token


def bpf_map_token_check(token: bool) -> None:
    """``bpf_token_get_from_fd(attr->map_token_fd)``: the model never passes a token, so with
    BPF_F_TOKEN_FD the fd is 0, which is not a BPF token: -EINVAL (-EBADF if fd 0 were closed)."""
    if token:
        raise BpfError(EINVAL, "map_create: BPF_F_TOKEN_FD without a token (map_token_fd 0)")


def bpf_map_capable(map_type: int, creds: Creds) -> None:
    """``map_create()``'s permission checks: -EPERM."""
    if creds.unprivileged_bpf_disabled and not creds.bpf_capable():
        raise BpfError(EPERM, "map_create: unprivileged BPF is disabled and the caller lacks CAP_BPF")
    if map_type in CAP_BPF_MAP_TYPES and not creds.bpf_capable():
        raise BpfError(EPERM, f"map_create: map type {map_type} needs CAP_BPF")


def map_create_prologue(attr: MapAttr, alloc_check: Callable[[MapAttr, Creds], None] | None, creds: Creds = ROOT,
                        nr_node_ids: int = 1) -> MapAttr:
    """Everything ``map_create()`` refuses before ``ops->map_alloc()``, in order; returns the attributes
    ``map_alloc`` sees (BPF_F_TOKEN_FD cleared)."""
    attr, token = map_create_check(attr, nr_node_ids)
    if alloc_check is not None:
        alloc_check(attr, creds)
    bpf_map_token_check(token)
    bpf_map_capable(attr.map_type, creds)
    return attr


def bpf_obj_name_cpy(name: bytes | str) -> bytes:
    """``bpf_obj_name_cpy()``: the name up to its NUL; -EINVAL for a byte that is not ``isalnum``
    (the kernel's Latin-1 ctype: ASCII letters and digits, 0xC0-0xFF but 0xD7 and 0xF7), ``_``
    or ``.``, or for 16 bytes without a NUL.  ``map_create`` runs it after ``ops->map_alloc``."""
    raw = name_bytes(name)
    out = bytearray()
    for b in raw:
        if b == 0:
            return bytes(out)
        if not (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or b in (0x5F, 0x2E)
                or (b >= 0xC0 and b not in (0xD7, 0xF7))):
            raise BpfError(EINVAL, f"bpf_obj_name_cpy: byte 0x{b:02x} in map name {raw!r}")
        out.append(b)
    if len(raw) == BPF_OBJ_NAME_LEN:
        raise BpfError(EINVAL, f"bpf_obj_name_cpy: map name {raw!r} has no NUL within 16 bytes")
    return bytes(out)


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
