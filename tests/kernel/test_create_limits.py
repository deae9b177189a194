"""BPF_MAP_CREATE limits: the model refuses exactly what the kernel refuses, with the same errno.

Kernel behaviour pinned (6.18, kernel/bpf/syscall.c ``map_create``, kernel/bpf/hashtab.c
``htab_map_alloc_check``/``htab_map_alloc``, kernel/bpf/arena.c ``arena_map_alloc``): the
boundary table of docs/kernel-map.md, row by row on both backends (``test_*_row``), and a
hypothesis differential test drawing attributes around every boundary (``test_*_differential``).

Safety: nothing here makes the kernel allocate much.  A preallocated map whose elements would
take more than ``SMALL`` bytes is drawn with BPF_F_NO_PREALLOC instead (decided from the
attributes alone, not from the model's answer), so the only large allocation left is the bucket
array (up to 2 GiB at max_entries 2^27); an example that could allocate more than ``SMALL`` runs in
a forked child inside a memory cgroup limited to ``LIMIT``, where the kernel answers ENOMEM
instead of allocating it, and counts as agreeing when the model accepts it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import time
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bpfmem.arena import arena as A
from bpfmem.maps import (BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH,
                         BPF_MAP_TYPE_PERCPU_HASH, ERRNO_NAMES, BpfError, BpfHtab, Creds, MapAttr,
                         htab_map_create_check)
from bpfmem.maps.base import bpf_obj_name_cpy, round_up, roundup_pow_of_two

from ..conftest import make_world
from . import require_bpf

pytestmark = pytest.mark.kernel

HASH, PERCPU, LRU, LRU_PERCPU, ARENA = (BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_HASH,
                                        BPF_MAP_TYPE_LRU_PERCPU_HASH, 33)
NO_PREALLOC, NO_COMMON_LRU, NUMA, RDONLY, WRONLY, ZERO_SEED = 1, 2, 4, 8, 16, 64
RDONLY_PROG, WRONLY_PROG, MMAPABLE, TOKEN_FD, SEGV, NO_USER_CONV = 1 << 7, 1 << 8, 1 << 10, 1 << 16, 1 << 17, 1 << 18
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
MAX_SUM = 4194255                      # largest key_size + value_size a hash map accepts
SMALL = 16 << 20                       # bytes an example may make the kernel allocate in this process
LIMIT = 64 << 20                       # memory cgroup limit for examples that could allocate more
G4 = 1 << 32
PAGE = 4096


def _possible_cpus() -> int:
    """num_possible_cpus(): the count of /sys/devices/system/cpu/possible (``0-1``, ``0,2-3``)."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        a, _, b = part.partition("-")
        n += int(b or a) - int(a) + 1
    return n


NCPUS = _possible_cpus()


def _nr_node_ids() -> int:
    try:
        possible = open("/sys/devices/system/node/possible").read().strip()
        online = open("/sys/devices/system/node/online").read().strip()
    except OSError:
        return 1
    if possible != online:
        pytest.skip(f"NUMA nodes possible {possible} but online {online}: the model takes all possible as online")
    return int(possible.replace(",", "-").split("-")[-1]) + 1


def name_of(err: int) -> str:
    return ERRNO_NAMES.get(err) or errno.errorcode.get(err, str(err))


# -- the two sides ------------------------------------------------------------------------------------------
def model_htab(t: int, k: int, v: int, m: int, f: int = 0, extra: int = 0, node: int = 0, name: Any = b"",
               creds: Creds = Creds(), nodes: int = 1, limit: int | None = None) -> str:
    """The model's answer: a real ``BpfHtab`` (in a memory cgroup limited to ``limit``) where that is cheap,
    else the same rules without allocating."""
    attr = MapAttr(t, k, v, m, f, extra, node, name)
    try:
        if t in (LRU, LRU_PERCPU) or (not f & NO_PREALLOC and m > 4096):
            assert limit is None
            htab_map_create_check(attr, NCPUS, creds, nodes)
        else:
            w = make_world(NCPUS)
            if limit is not None:
                w.memcg.limit = limit
            BpfHtab(w.m, w.mm, w.rcu, attr, w.memcg, creds=creds, nr_node_ids=nodes).close()
        return "OK"
    except BpfError as e:
        return name_of(e.errno)


def model_arena(m: int, f: int, extra: int = 0, k: int = 0, v: int = 0, node: int = 0, name: Any = b"",
                bpf_capable: bool = True, nodes: int = 1) -> str:
    try:
        A.BpfArena(m, f, extra, key_size=k, value_size=v, name=name, numa_node=node, nr_node_ids=nodes,
                   bpf_capable=bpf_capable).close()
        return "OK"
    except A.ArenaError as e:
        return name_of(e.errno)


def kernel_create(t: int, k: int, v: int, m: int, f: int = 0, extra: int = 0, node: int = 0, name: Any = b"") -> str:
    """The kernel's answer, creating in this process (close at once)."""
    from bpfmem.kernel.syscall import map_create
    try:
        map_create(t, k, v, m, f, name=name, map_extra=extra, numa_node=node).close()
        return "OK"
    except OSError as e:
        return name_of(e.errno or 0)


class Limited:
    """One memory cgroup limited to ``LIMIT`` for the test session; creations run in a forked child in it."""

    cg: Any = None

    @classmethod
    def create(cls, *args: Any, **kw: Any) -> str | None:
        from bpfmem.kernel.cgroup import ChildMemcg, create_in, memcg_layout
        from bpfmem.kernel.syscall import map_create
        if cls.cg is None:
            layout = memcg_layout()
            if layout is None:
                return None
            cls.cg = ChildMemcg(layout, "limits")
            cls.cg.set_limit(LIMIT)
        cls.settle()
        t, k, v, m, f, extra, node, name = args
        try:
            fd = create_in(cls.cg, lambda: map_create(t, k, v, m, f, name=name, map_extra=extra,
                                                      numa_node=node).release())
            os.close(fd)
            return "OK"
        except OSError as e:
            return name_of(e.errno or 0)

    @classmethod
    def settle(cls, below: int = 4 << 20, timeout_s: float = 5.0) -> None:
        """Wait until the maps closed before are freed (a workqueue frees them some ms later): each example
        starts with the whole limit."""
        total = "memory.usage_in_bytes" if cls.cg.layout.version == "v1" else "memory.current"
        deadline = time.monotonic() + timeout_s
        while cls.cg.read(total) > below and time.monotonic() < deadline:
            time.sleep(0.005)

    @classmethod
    def remove(cls) -> None:
        if cls.cg is not None:
            cls.cg.remove()
            cls.cg = None


@pytest.fixture(scope="module", autouse=True)
def _limited_cgroup() -> Any:
    yield
    Limited.remove()


def est_bytes(t: int, k: int, v: int, m: int, f: int) -> tuple[int, int]:
    """Upper bounds of what the kernel would allocate if every check passed: (charged to the creator's
    memory cgroup, charged to the root cgroup: per-CPU values of a preallocated per-CPU map)."""
    percpu = t in (PERCPU, LRU_PERCPU)
    elem = 48 + round_up(k, 8) + (8 if percpu else round_up(v, 8))
    charged = 4096 + 16 * roundup_pow_of_two(min(max(m, 1), 1 << 31))
    if not f & NO_PREALLOC:
        return charged + (m + NCPUS) * elem, (m + NCPUS) * round_up(v, 8) * NCPUS if percpu else 0
    return charged + 4 * NCPUS * (elem + 8 + (round_up(v, 8) * NCPUS if percpu else 0)), 0


# -- the boundary table (docs/kernel-map.md "creation limits") ---------------------------------------------------
MIB = 1 << 20
HTAB_ROWS: list[tuple[str, tuple[Any, ...], str]] = [
    ("key 0", (HASH, 0, 8, 16), "EINVAL"), ("value 0", (HASH, 4, 0, 16), "EINVAL"),
    ("max_entries 0", (HASH, 4, 8, 0), "EINVAL"),
    ("key 1", (HASH, 1, 8, 16), "OK"), ("key 512", (HASH, 512, 8, 16), "OK"), ("key 513", (HASH, 513, 8, 16), "OK"),
    ("key 4096", (HASH, 4096, 8, 16), "OK"), ("key 65536", (HASH, 65536, 8, 4), "OK"),
    ("key 1 MiB", (HASH, MIB, 8, 4, NO_PREALLOC), "OK"), ("key 1 MiB prealloc", (HASH, MIB, 8, 4), "OK"),
    ("key+value 4194255", (HASH, 4, MAX_SUM - 4, 1), "OK"),
    ("key+value 4194256", (HASH, 4, MAX_SUM - 3, 1), "E2BIG"),
    ("key+value 4194256 split", (HASH, MAX_SUM - 7, 8, 1, NO_PREALLOC), "E2BIG"),
    ("key 2^32-1 + value 1", (HASH, U32, 1, 16), "E2BIG"),
    ("percpu value 32768", (PERCPU, 4, 32768, 4), "OK"), ("percpu value 32769", (PERCPU, 4, 32769, 4), "E2BIG"),
    ("percpu value 32769 no prealloc", (PERCPU, 4, 32769, 4, NO_PREALLOC), "E2BIG"),
    ("hash value 32769", (HASH, 4, 32769, 4), "OK"),
    ("max 2^27+1", (HASH, 4, 8, (1 << 27) + 1, NO_PREALLOC), "E2BIG"),
    ("max 2^28", (HASH, 4, 8, 1 << 28, NO_PREALLOC), "E2BIG"),
    ("max 2^31", (HASH, 4, 8, 1 << 31, NO_PREALLOC), "E2BIG"),
    ("max 2^31+1", (HASH, 4, 8, (1 << 31) + 1, NO_PREALLOC), "E2BIG"),
    ("max 2^32-1", (HASH, 4, 8, U32, NO_PREALLOC), "E2BIG"),
    ("max 2^32-1 prealloc", (HASH, 4, 8, U32), "E2BIG"),
    ("percpu NUMA node 0", (PERCPU, 4, 8, 16, NUMA), "EINVAL"),
    ("percpu NUMA_NO_NODE", (PERCPU, 4, 8, 16, NUMA, 0, 0xFFFF_FFFF), "OK"),
    ("RDONLY|WRONLY", (HASH, 4, 8, 16, RDONLY | WRONLY), "EINVAL"),
    ("RDONLY_PROG|WRONLY_PROG", (HASH, 4, 8, 16, RDONLY_PROG | WRONLY_PROG), "EINVAL"),
    ("NUMA node 0", (HASH, 4, 8, 16, NUMA, 0, 0), "OK"),
    ("NUMA node 1", (HASH, 4, 8, 16, NUMA, 0, 1), "EINVAL"),
    ("NUMA node 2^31 (negative)", (HASH, 4, 8, 16, NUMA, 0, 1 << 31), "EINVAL"),
    ("node 1 without the flag", (HASH, 4, 8, 16, 0, 0, 1), "OK"),
    ("map_extra 1", (HASH, 4, 8, 16, 0, 1), "EINVAL"),
    ("map_extra before key 0", (HASH, 0, 8, 16, 0, 1), "EINVAL"),
    ("type 0", (0, 4, 8, 16), "EINVAL"), ("type 34", (34, 4, 8, 16), "EINVAL"),
    ("type 2^32-1", (U32, 4, 8, 16), "EINVAL"),
    ("TOKEN_FD", (HASH, 4, 8, 16, TOKEN_FD), "EINVAL"),
    ("TOKEN_FD after the size check", (HASH, 4, MAX_SUM, 16, TOKEN_FD | NO_PREALLOC), "E2BIG"),
    ("TOKEN_FD before htab_map_alloc", (HASH, 4, 8, 1 << 28, TOKEN_FD | NO_PREALLOC), "EINVAL"),
    ("ZERO_SEED as root", (HASH, 4, 8, 16, ZERO_SEED), "OK"),
    ("NO_COMMON_LRU on hash", (HASH, 4, 8, 16, NO_COMMON_LRU), "EINVAL"),
    ("name a.b", (HASH, 4, 8, 16, 0, 0, 0, "a.b"), "OK"), ("name a_b", (HASH, 4, 8, 16, 0, 0, 0, "a_b"), "OK"),
    ("name a-b", (HASH, 4, 8, 16, 0, 0, 0, "a-b"), "EINVAL"), ("name a b", (HASH, 4, 8, 16, 0, 0, 0, "a b"), "EINVAL"),
    ("name 15 chars", (HASH, 4, 8, 16, 0, 0, 0, "x" * 15), "OK"),
    ("name 16 chars", (HASH, 4, 8, 16, 0, 0, 0, "x" * 16), "EINVAL"),
    ("name 17 chars", (HASH, 4, 8, 16, 0, 0, 0, "x" * 17), "EINVAL"),
    ("name NUL then junk", (HASH, 4, 8, 16, 0, 0, 0, b"ab\x00-"), "OK"),
    ("name Latin-1 0xE9", (HASH, 4, 8, 16, 0, 0, 0, b"\xe9"), "OK"),
    ("name Latin-1 0xD7", (HASH, 4, 8, 16, 0, 0, 0, b"\xd7"), "EINVAL"),
    ("name UTF-8 e-acute", (HASH, 4, 8, 16, 0, 0, 0, "é"), "EINVAL"),
    ("bad name after E2BIG", (HASH, 4, MAX_SUM, 16, 0, 0, 0, "a-b"), "E2BIG"),
    ("bad name after max 2^28", (HASH, 4, 8, 1 << 28, NO_PREALLOC, 0, 0, "a" * 16), "E2BIG"),
    ("LRU", (LRU, 4, 8, 16), "OK"), ("LRU NO_PREALLOC", (LRU, 4, 8, 16, NO_PREALLOC), "ENOTSUPP"),
    ("LRU NO_COMMON_LRU", (LRU, 4, 8, 16, NO_COMMON_LRU), "OK"),
    ("LRU NO_COMMON_LRU|NO_PREALLOC", (LRU, 4, 8, 16, NO_COMMON_LRU | NO_PREALLOC), "ENOTSUPP"),
    ("LRU NO_COMMON_LRU|NUMA", (LRU, 4, 8, 16, NO_COMMON_LRU | NUMA), "EINVAL"),
    ("LRU NUMA node 0", (LRU, 4, 8, 16, NUMA), "OK"),
    ("LRU NO_COMMON_LRU max 2^31-1 (rounds up)", (LRU, 4, 8, (1 << 31) - 1, NO_COMMON_LRU), "E2BIG"),
    ("LRU max 2^28", (LRU, 4, 8, 1 << 28), "E2BIG"),
    ("LRU_PERCPU value 32769", (LRU_PERCPU, 4, 32769, 16), "E2BIG"),
    ("LRU_PERCPU NUMA", (LRU_PERCPU, 4, 8, 16, NUMA), "EINVAL"),
]
HASH_FLAG_BITS_OK = {0, 2, 3, 4, 6, 7, 8}


@pytest.mark.parametrize("label,args,want", HTAB_ROWS, ids=[r[0] for r in HTAB_ROWS])
def test_htab_row(label: str, args: tuple[Any, ...], want: str) -> None:
    """Each measured boundary of hash map creation, on the model and on the kernel."""
    assert model_htab(*args) == want
    require_bpf()
    assert kernel_create(*args) == want


@pytest.mark.parametrize("bit", range(32))
@pytest.mark.parametrize("t", [HASH, PERCPU], ids=["hash", "percpu_hash"])
def test_htab_flag_bit_row(t: int, bit: int) -> None:
    """Hash maps take flag bits 0, 2, 3, 4, 6, 7, 8 alone; bits 1, 5, 9-31 are EINVAL (per-CPU: bit 2 too)."""
    want = "OK" if bit in HASH_FLAG_BITS_OK and not (t == PERCPU and bit == 2) else "EINVAL"
    assert model_htab(t, 4, 8, 16, 1 << bit) == want
    require_bpf()
    assert kernel_create(t, 4, 8, 16, 1 << bit) == want


def test_2_to_the_27_entries_pass_every_check() -> None:
    """max_entries 2^27 is accepted (2 GiB of buckets): in a cgroup limited to 64 MiB the kernel gets as far as
    allocating the buckets and answers ENOMEM, as the model does under the same limit; 2^27+1 is E2BIG first."""
    assert htab_map_create_check(MapAttr(HASH, 4, 8, 1 << 27, NO_PREALLOC), NCPUS) == (1 << 27, 1 << 27)
    w = make_world(NCPUS)
    w.memcg.limit = LIMIT
    with pytest.raises(BpfError) as e:
        BpfHtab(w.m, w.mm, w.rcu, MapAttr(HASH, 4, 8, 1 << 27, NO_PREALLOC), w.memcg)
    assert e.value.errno == errno.ENOMEM and w.memcg.usage == 0
    require_bpf()
    got = Limited.create(HASH, 4, 8, 1 << 27, NO_PREALLOC, 0, 0, b"")
    if got is None:
        pytest.skip("no memory cgroup controller to bound the allocation")
    assert got == "ENOMEM"
    assert Limited.create(HASH, 4, 8, (1 << 27) + 1, NO_PREALLOC, 0, 0, b"") == "E2BIG"


ARENA_ROWS: list[tuple[str, tuple[Any, ...], str]] = [
    ("max 1", (1, MMAPABLE), "OK"), ("max 2^20", (1 << 20, MMAPABLE), "OK"),
    ("max 2^20+1", ((1 << 20) + 1, MMAPABLE), "E2BIG"), ("max 2^32-1", (U32, MMAPABLE), "E2BIG"),
    ("max 0", (0, MMAPABLE), "EINVAL"), ("map_extra 0x1001", (16, MMAPABLE, 0x1001), "EINVAL"),
    ("crossing 4 GiB", (16, MMAPABLE, G4 - PAGE), "ERANGE"), ("ending at 4 GiB", (16, MMAPABLE, G4 - 16 * PAGE), "OK"),
    ("crossing at the top of u64", (2, MMAPABLE, U64 + 1 - PAGE), "ERANGE"),
    ("NUMA node 0", (16, MMAPABLE | NUMA), "EINVAL"),
    ("RDONLY|WRONLY", (16, MMAPABLE | RDONLY | WRONLY), "EINVAL"),
    ("TOKEN_FD", (16, MMAPABLE | TOKEN_FD), "EINVAL"),
    ("TOKEN_FD before E2BIG", ((1 << 20) + 1, MMAPABLE | TOKEN_FD), "EINVAL"),
    ("all three flags", (16, MMAPABLE | SEGV | NO_USER_CONV), "OK"),
    ("name a-b", (16, MMAPABLE, 0, 0, 0, 0, "a-b"), "EINVAL"),
    ("name 16 chars", (16, MMAPABLE, 0, 0, 0, 0, "x" * 16), "EINVAL"),
    ("name 15 chars", (16, MMAPABLE, 0, 0, 0, 0, "x" * 15), "OK"),
    ("bad name after ERANGE", (16, MMAPABLE, G4 - PAGE, 0, 0, 0, "a-b"), "ERANGE"),
    ("bad name after E2BIG", ((1 << 20) + 1, MMAPABLE, 0, 0, 0, 0, "a b"), "E2BIG"),
]


def kernel_arena(m: int, f: int, extra: int = 0, k: int = 0, v: int = 0, node: int = 0, name: Any = b"") -> str:
    return kernel_create(ARENA, k, v, m, f, extra, node, name)


@pytest.mark.parametrize("label,args,want", ARENA_ROWS, ids=[r[0] for r in ARENA_ROWS])
def test_arena_row(label: str, args: tuple[Any, ...], want: str) -> None:
    """Arena creation boundaries (more in tests/arena/test_rules.py), on the model and on the kernel."""
    assert model_arena(*args) == want
    require_bpf()
    assert kernel_arena(*args) == want


@pytest.mark.parametrize("field,value", [("max_entries", 1 << 32), ("key_size", 1 << 32), ("value_size", 1 << 40),
                                         ("max_entries", -1), ("map_flags", 1 << 32), ("numa_node", 1 << 32)])
def test_values_no_attr_field_can_hold_are_refused_alike(field: str, value: int) -> None:
    """A __u32 field cannot carry 2^32: neither backend truncates it, both refuse it before any syscall with the
    same ValueError (the kernel wrapper used to pass 2^32 as 0: arena --max-entries 4294967296 gave EINVAL)."""
    from bpfmem.kernel.syscall import map_create
    kw = {"key_size": 4, "value_size": 8, "max_entries": 16, "map_flags": 0, "numa_node": 0, field: value}
    with pytest.raises(ValueError) as model_err:
        MapAttr(HASH, kw["key_size"], kw["value_size"], kw["max_entries"], kw["map_flags"], 0, kw["numa_node"])
    with pytest.raises(ValueError) as kernel_err:
        map_create(HASH, kw["key_size"], kw["value_size"], kw["max_entries"], kw["map_flags"],
                   numa_node=kw["numa_node"])
    assert str(model_err.value) == str(kernel_err.value)
    assert str(model_err.value).startswith(f"{field}={value} does not fit attr.{field} (__u32")
    akw = {"key_size": 0, "value_size": 0, "max_entries": 16, "map_flags": MMAPABLE, "numa_node": 0, field: value}
    with pytest.raises(ValueError) as arena_err:
        A.BpfArena(akw["max_entries"], akw["map_flags"], key_size=akw["key_size"], value_size=akw["value_size"],
                   numa_node=akw["numa_node"])
    with pytest.raises(ValueError) as karena_err:
        from bpfmem.kernel.arena import arena_create
        arena_create(akw["max_entries"], akw["map_flags"], key_size=akw["key_size"], value_size=akw["value_size"],
                     numa_node=akw["numa_node"])
    assert str(arena_err.value) == str(karena_err.value) == str(model_err.value)


def test_map_extra_beyond_u64_is_refused_alike() -> None:
    from bpfmem.kernel.syscall import map_create
    with pytest.raises(ValueError) as a:
        A.BpfArena(16, MMAPABLE, 1 << 64)
    with pytest.raises(ValueError) as b:
        map_create(ARENA, 0, 0, 16, MMAPABLE, map_extra=1 << 64)
    assert str(a.value) == str(b.value)


# -- capabilities: a forked child drops them ---------------------------------------------------------------------
CAP_SYS_ADMIN, CAP_BPF = 21, 39


def _drop_caps(caps: list[int]) -> None:
    """capset(2) without ``caps`` in the effective and permitted sets (this process only)."""
    class Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    hdr, data = Hdr(0x20080522, 0), (Data * 2)()
    if libc.syscall(125, ctypes.byref(hdr), data) != 0:                  # capget
        raise OSError(ctypes.get_errno(), "capget")
    for c in caps:
        data[c // 32].effective &= ~(1 << (c % 32))
        data[c // 32].permitted &= ~(1 << (c % 32))
    if libc.syscall(126, ctypes.byref(hdr), data) != 0:                  # capset
        raise OSError(ctypes.get_errno(), "capset")


def in_child_without(caps: list[int], cases: list[tuple[Any, ...]]) -> list[str]:
    """Create each case in a forked child that dropped ``caps``; the answers in order."""
    import platform
    if platform.machine() != "x86_64":
        pytest.skip("capget/capset numbers are x86-64's here")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(r)
            _drop_caps(caps)
            out = [kernel_create(*c) for c in cases]
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return json.loads(text)


CAP_CASES: list[tuple[list[int], tuple[Any, ...], str]] = [
    ([CAP_SYS_ADMIN], (HASH, 4, 8, 16, ZERO_SEED), "EPERM"),
    ([CAP_SYS_ADMIN], (HASH, 4, 8, 16, ZERO_SEED | 1 << 5), "EPERM"),      # before the flag mask
    ([CAP_SYS_ADMIN], (HASH, 4, 8, 16), "OK"),
    ([CAP_SYS_ADMIN], (LRU, 4, 8, 16), "OK"),
    ([CAP_SYS_ADMIN], (ARENA, 0, 0, 16, MMAPABLE), "OK"),
    ([CAP_BPF], (LRU, 4, 8, 16), "OK"),                                       # CAP_SYS_ADMIN implies CAP_BPF
    ([CAP_BPF, CAP_SYS_ADMIN], (LRU, 4, 8, 16), "EPERM"),
    ([CAP_BPF, CAP_SYS_ADMIN], (LRU, 4, 8, 16, NO_PREALLOC), "ENOTSUPP"),   # map_alloc_check comes first
    ([CAP_BPF, CAP_SYS_ADMIN], (HASH, 4, 8, 16), "EPERM"),                  # unprivileged_bpf_disabled
    ([CAP_BPF, CAP_SYS_ADMIN], (HASH, 0, 8, 16), "EINVAL"),
    ([CAP_BPF, CAP_SYS_ADMIN], (HASH, 4, 8, 16, TOKEN_FD), "EINVAL"),       # the token check too
    ([CAP_BPF, CAP_SYS_ADMIN], (ARENA, 0, 0, 16, MMAPABLE), "EPERM"),
    ([CAP_BPF, CAP_SYS_ADMIN], (ARENA, 0, 0, 16, 1 << 5), "EPERM"),          # no arena check before the caps
    ([CAP_BPF, CAP_SYS_ADMIN], (ARENA, 0, 0, 16, MMAPABLE | TOKEN_FD), "EINVAL"),
]


def _model_with_caps(dropped: list[int], case: tuple[Any, ...], sysctl: int) -> str:
    creds = Creds(cap_bpf=CAP_BPF not in dropped, cap_sys_admin=CAP_SYS_ADMIN not in dropped,
                  unprivileged_bpf_disabled=sysctl)
    t, *rest = case
    if t == ARENA:
        k, v, m, f = rest[:4]
        return model_arena(m, f, 0, k, v, bpf_capable=creds.bpf_capable())
    return model_htab(t, *rest, creds=creds)


def test_capabilities() -> None:
    """ZERO_SEED needs CAP_SYS_ADMIN (EPERM before the flag mask); LRU and arena need CAP_BPF, which
    CAP_SYS_ADMIN implies; with unprivileged BPF disabled every map needs it; map_alloc_check and the token
    check come before the capability checks."""
    sysctl = int(open("/proc/sys/kernel/unprivileged_bpf_disabled").read())
    if not sysctl:
        pytest.skip("kernel.unprivileged_bpf_disabled is 0 here: the table assumes it is set")
    wants = [want for _c, _case, want in CAP_CASES]
    assert [_model_with_caps(c, case, sysctl) for c, case, _w in CAP_CASES] == wants
    require_bpf()
    got = []
    for dropped in ([CAP_SYS_ADMIN], [CAP_BPF], [CAP_BPF, CAP_SYS_ADMIN]):
        cases = [case for c, case, _w in CAP_CASES if c == dropped]
        got += in_child_without(dropped, cases)
    order = [i for dropped in ([CAP_SYS_ADMIN], [CAP_BPF], [CAP_BPF, CAP_SYS_ADMIN])
             for i, (c, _case, _w) in enumerate(CAP_CASES) if c == dropped]
    assert [got[order.index(i)] for i in range(len(CAP_CASES))] == wants
    assert model_htab(HASH, 4, 8, 16, creds=Creds(False, False, sysctl)) == "EPERM"
    assert model_htab(HASH, 4, 8, 16, creds=Creds(False, False, 0)) == "OK"


def test_name_rules_agree_between_maps_and_arena() -> None:
    """arena.py carries its own copy of bpf_obj_name_cpy (layering); both accept and refuse the same bytes."""
    for b in range(256):
        for name in (bytes([b]), bytes([b]) * 16, b"a" + bytes([b]) + b"\x00-"):
            try:
                m = bpf_obj_name_cpy(name).hex()
            except BpfError as e:
                m = name_of(e.errno)
            try:
                a = A.bpf_obj_name_cpy(name).hex()
            except A.ArenaError as e:
                a = name_of(e.errno)
            assert m == a, name


# -- hypothesis: the differential test ------------------------------------------------------------------------
RUN = settings(max_examples=400, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def near(*points: int, spread: int = 2, top: int = U32) -> st.SearchStrategy[int]:
    return st.sampled_from(sorted({p + d for p in points for d in range(-spread, spread + 1) if 0 <= p + d <= top}))


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], times: int = 3) -> st.SearchStrategy[Any]:
    """``common`` about ``times`` times as often as ``rare``: the deep checks need the early ones passed
    (``one_of`` would not do: it draws its branches about equally whatever is repeated)."""
    return st.sampled_from([True] * times + [False]).flatmap(lambda c: common if c else rare)


SIZES = st.one_of(near(0, 1, 8, 512, 4096, 32768, 65536, 1 << 20, MAX_SUM, U32), near(32768, spread=9),
                  st.integers(1, 64), st.integers(1, 1 << 16), st.integers(0, U32))
ENTRIES = st.one_of(near(0, 1, 16, 1 << 20, 1 << 26, 1 << 27, 1 << 28, 1 << 31, U32), st.integers(1, 4096),
                    st.integers(1, 4096), st.integers(0, U32))
BITS = st.integers(0, 31).map(lambda b: 1 << b)
HTAB_BITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18]
NOTABLE = [TOKEN_FD, NUMA, RDONLY, WRONLY, RDONLY | WRONLY, RDONLY_PROG | WRONLY_PROG, ZERO_SEED, NO_COMMON_LRU,
           NO_PREALLOC, 1 << 5, MMAPABLE, SEGV, NO_USER_CONV]
FLAGS = mostly(st.sampled_from([0, NO_PREALLOC]),
               st.one_of(st.sampled_from(NOTABLE).map(lambda f: f | NO_PREALLOC), st.sampled_from(NOTABLE),
                         BITS, BITS.map(lambda f: f | NO_PREALLOC), st.integers(0, U32),
                         st.lists(st.sampled_from(HTAB_BITS), max_size=3).map(lambda bs: sum({1 << b for b in bs}))),
               times=2)
EXTRA = mostly(st.just(0), st.one_of(st.sampled_from([1, PAGE, G4]), st.integers(0, U64)), times=6)
NODES = mostly(st.just(0), st.one_of(st.sampled_from([1, 2, 0x7FFF_FFFF, 1 << 31, U32]), st.integers(0, U32)))
GOOD_NAMES = st.one_of(st.sampled_from(["", "bpfmem", "a.b", "a_b", "x" * 15, b"\xe9", b"a\x00-"]),
                       st.from_regex(r"\A[A-Za-z0-9_.]{0,15}\Z"))
BAD_NAMES = st.one_of(st.sampled_from(["a-b", "a b", "x" * 16, "x" * 17, "é", "ÿ", b"\xd7", b"\xf7", "a\x00b c"]),
                      st.text(max_size=18), st.binary(max_size=17))
NAMES = mostly(GOOD_NAMES, BAD_NAMES, times=4)


@st.composite
def htab_attrs(draw: Callable[..., Any]) -> tuple[Any, ...]:
    t = draw(mostly(st.sampled_from([HASH, PERCPU]), st.sampled_from([0, 34, U32]), times=8))
    k = draw(SIZES)
    v = draw(st.one_of(SIZES, near(MAX_SUM - k, spread=2) if k <= MAX_SUM else SIZES))
    m = draw(ENTRIES)
    f = draw(FLAGS)
    extra = draw(EXTRA)
    node = draw(NODES)
    name = draw(NAMES)
    charged, root = est_bytes(t, k, v, m, f)
    if not f & NO_PREALLOC and max(charged, root) > SMALL:
        f |= NO_PREALLOC                  # decided from the attributes, never from the model's answer
    return t, k, v, m, f, extra, node, name


@pytest.mark.slow
@RUN
@given(htab_attrs())
def test_htab_create_differential(args: tuple[Any, ...]) -> None:
    """Hash and per-CPU hash creation: the model's errno (or success) equals the kernel's for every draw."""
    require_bpf()
    nodes = _nr_node_ids()
    t, k, v, m, f, extra, node, name = args
    if est_bytes(t, k, v, m, f)[0] <= SMALL:
        want = model_htab(t, k, v, m, f, extra, node, name, nodes=nodes)
        event(f"model {want}")
        got = kernel_create(*args)
    else:                                 # both sides in a memory cgroup limited to LIMIT
        want = model_htab(t, k, v, m, f, extra, node, name, nodes=nodes, limit=LIMIT)
        event(f"model {want} (large: in a limited memory cgroup)")
        got_limited = Limited.create(*args)
        if got_limited is None:
            return                        # no memory cgroup to bound a large allocation: not tried
        got = got_limited
    assert got == want, f"kernel {got}, model {want} for {args}"


@st.composite
def arena_attrs(draw: Callable[..., Any]) -> tuple[Any, ...]:
    m = draw(st.one_of(near(0, 1, 16, 1 << 20), st.integers(1, 4096), st.integers(0, U32)))
    base = draw(st.sampled_from([MMAPABLE, MMAPABLE, MMAPABLE | SEGV, MMAPABLE | NO_USER_CONV,
                                 MMAPABLE | SEGV | NO_USER_CONV, 0]))
    f = base | draw(mostly(st.just(0), st.one_of(st.sampled_from(NOTABLE), BITS, st.integers(0, U32))))
    g = draw(st.integers(0, 0xFFFF))                               # a 4 GiB region
    extra = draw(st.one_of(st.just(0), st.just(0),
                           st.integers(0, 1 << 20).map(lambda p: g * G4 + p * PAGE),               # from a boundary
                           st.integers(0, 1 << 20).map(lambda p: max(0, (g + 1) * G4 - p * PAGE)),  # up to the next
                           st.integers(0, U64)))
    k = draw(mostly(st.just(0), SIZES, times=6))
    v = draw(mostly(st.just(0), SIZES, times=6))
    node = draw(NODES)
    name = draw(NAMES)
    return m, f, extra, k, v, node, name


@settings(RUN, max_examples=250)
@given(arena_attrs())
def test_arena_create_differential(args: tuple[Any, ...]) -> None:
    """Arena creation: the model's errno (or success) equals the kernel's for every draw."""
    require_bpf()
    nodes = _nr_node_ids()
    want = model_arena(*args, nodes=nodes)
    event(f"model {want}")
    got = kernel_arena(*args)
    assert got == want, f"kernel {got}, model {want} for {args}"
