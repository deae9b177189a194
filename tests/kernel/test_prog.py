"""MapOpProgram against the running kernel: counts, errnos and the map's contents after each op."""

from __future__ import annotations

import errno
import struct
import time
from typing import Iterator

import pytest

from bpfmem.kernel import uapi as U
from bpfmem.kernel.prog import MapOpProgram
from bpfmem.kernel.syscall import BpfMap, map_create, map_lookup_elem

from . import require_bpf

pytestmark = pytest.mark.kernel


def _hash(value_size: int = 8, max_entries: int = 4096, key_size: int = 4) -> BpfMap:
    return map_create(U.BPF_MAP_TYPE_HASH, key_size, value_size, max_entries, U.BPF_F_NO_PREALLOC, name="t_prog")


@pytest.fixture
def htab() -> Iterator[BpfMap]:
    require_bpf()
    with _hash() as m:
        yield m


def _k(i: int) -> bytes:
    return struct.pack("<I", i)


def test_update_noexist_delete_cycle(htab: BpfMap) -> None:
    keys = list(range(1000))
    with MapOpProgram(htab) as mp:
        assert mp.run("update", keys) == (1000, 0, 0)
        assert all(map_lookup_elem(htab, _k(i)) == bytes(8) for i in (0, 1, 500, 999))
        assert map_lookup_elem(htab, _k(1000)) is None
        assert mp.run("update", keys, flags=U.BPF_NOEXIST) == (0, 1000, errno.EEXIST)
        assert mp.run("lookup", list(range(1010))) == (1000, 10, errno.ENOENT)
        assert mp.run("delete", keys) == (1000, 0, 0)
        assert map_lookup_elem(htab, _k(0)) is None
        assert mp.run("delete", keys) == (0, 1000, errno.ENOENT)
        assert mp.run("update", []) == (0, 0, 0)


def test_full_map_reports_e2big(htab: BpfMap) -> None:
    with MapOpProgram(htab) as mp:
        assert mp.run("update", list(range(4097))) == (4096, 1, errno.E2BIG)


def test_large_values() -> None:
    require_bpf()
    with _hash(value_size=4000) as m, MapOpProgram(m) as mp:
        assert mp.run("update", list(range(1000))) == (1000, 0, 0)
        assert map_lookup_elem(m, _k(999)) == bytes(4000)
        assert mp.run("delete", list(range(1000))) == (1000, 0, 0)


def test_chunks_beyond_capacity_and_loop_fallback(htab: BpfMap) -> None:
    keys = list(range(3000, 4000))
    with MapOpProgram(htab, capacity=64) as mp:
        assert mp.run("update", keys) == (1000, 0, 0)
        mp._batch_ok = False  # the per-element write path gives the same result
        assert mp.run("delete", keys) == (1000, 0, 0)
    assert map_lookup_elem(htab, _k(3999)) is None


def test_rejects_bad_arguments_and_closes(htab: BpfMap) -> None:
    with _hash(key_size=8) as k8, pytest.raises(ValueError, match="key_size is 8"):
        MapOpProgram(k8)
    with MapOpProgram(htab, capacity=16) as mp:
        with pytest.raises(ValueError, match="op must be"):
            mp.run("upsert", [1])
        with pytest.raises(ValueError, match="u32"):
            mp.run("update", [1 << 32])
        owned = [mp.keys, mp.ctrl, mp.zero, mp.prog]
    assert all(fd.closed for fd in owned)


def test_throughput_100k() -> None:
    """Prints ops/s (wall, including writing the keys) and the kernel's ns per run; speed is not asserted."""
    require_bpf()
    n = 100_000
    keys = list(range(n))
    with _hash(max_entries=n) as m, MapOpProgram(m) as mp:
        for op in ("update", "lookup", "delete"):
            t = time.perf_counter()
            assert mp.run(op, keys) == (n, 0, 0)
            dt = time.perf_counter() - t
            print(f"\n{op}: {n / dt:,.0f} ops/s wall, {mp.last_ns_per_op} ns/op in program")
