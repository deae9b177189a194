"""map_create's syscall-level rules on the model alone (the kernel comparison: tests/kernel/test_create_limits.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfmem.maps import (BPF_F_NO_PREALLOC, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_HASH,
                         E2BIG, EINVAL, ENOMEM, ENOTSUPP, EPERM, BpfError, BpfHtab, Creds, MapAttr, bpf_obj_name_cpy,
                         htab_map_alloc_limits, htab_map_create_check, map_create_check)

from ..conftest import make_world

HASH, PERCPU, LRU = BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_HASH


def errno_of(fn: object, *args: object, **kw: object) -> int:
    try:
        fn(*args, **kw)  # type: ignore[operator]
        return 0
    except BpfError as e:
        return e.errno


def test_name_bytes_follow_the_kernels_latin1_ctype() -> None:
    """bpf_obj_name_cpy(): isalnum() of lib/ctype.c (0xC0-0xFF are letters but 0xD7 and 0xF7), '_' and '.'."""
    ok = {b for b in range(256) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_.")}
    ok |= set(range(0xC0, 0x100)) - {0xD7, 0xF7}
    for b in range(1, 256):
        assert errno_of(bpf_obj_name_cpy, bytes([b])) == (0 if b in ok else EINVAL), hex(b)
    assert bpf_obj_name_cpy(b"ab\x00-!") == b"ab"          # the C string ends at the NUL
    assert bpf_obj_name_cpy("x" * 15) == b"x" * 15
    assert errno_of(bpf_obj_name_cpy, "x" * 16) == EINVAL   # no NUL within BPF_OBJ_NAME_LEN
    assert errno_of(bpf_obj_name_cpy, "x" * 40) == EINVAL   # a longer name is its first 16 bytes
    assert errno_of(bpf_obj_name_cpy, "é") == EINVAL        # UTF-8 0xC3 0xA9: 0xA9 is punctuation


def test_syscall_rules_come_in_the_kernels_order() -> None:
    """map_create(): map_extra, then RDONLY|WRONLY, then the NUMA node, then the map type."""
    def message(attr: MapAttr) -> str:
        with pytest.raises(BpfError) as e:
            map_create_check(attr)
        assert e.value.errno == EINVAL
        return str(e.value)
    assert "map_extra" in message(MapAttr(99, 4, 8, 16, 0x18 | 4, 1, 5))
    assert "RDONLY" in message(MapAttr(99, 4, 8, 16, 0x18 | 4, 0, 5))
    assert "NUMA" in message(MapAttr(99, 4, 8, 16, 4, 0, 5))
    assert "map type" in message(MapAttr(99, 4, 8, 16, 0, 0, 5))           # node ignored without the flag
    attr, token = map_create_check(MapAttr(HASH, 4, 8, 16, 1 << 16 | 1, 0, 0xFFFF_FFFF))
    assert token and attr.map_flags == 1


def test_attr_fields_are_u32() -> None:
    for args in ((HASH, 1 << 32, 8, 16), (HASH, 4, 8, -1), (1 << 32, 4, 8, 16), (HASH, 4, 8, 16, 1 << 32)):
        with pytest.raises(ValueError, match="does not fit attr"):
            MapAttr(*args)
    with pytest.raises(ValueError, match=r"map_extra=.*__u64"):
        MapAttr(HASH, 4, 8, 16, 0, 1 << 64)


def test_capabilities() -> None:
    """CAP_SYS_ADMIN implies CAP_BPF; ZERO_SEED needs CAP_SYS_ADMIN; LRU needs CAP_BPF; plain hash maps need it
    only while unprivileged BPF is disabled."""
    only_bpf, nobody = Creds(True, False), Creds(False, False)
    assert errno_of(htab_map_create_check, MapAttr(HASH, 4, 8, 16, 1 << 6), 2, only_bpf) == EPERM
    assert errno_of(htab_map_create_check, MapAttr(HASH, 4, 8, 16, 1 << 6 | 1 << 5), 2, only_bpf) == EPERM
    assert errno_of(htab_map_create_check, MapAttr(LRU, 4, 8, 16), 2, Creds(False, True)) == 0
    assert errno_of(htab_map_create_check, MapAttr(LRU, 4, 8, 16), 2, Creds(False, False, 0)) == EPERM
    assert errno_of(htab_map_create_check, MapAttr(HASH, 4, 8, 16), 2, Creds(False, False, 0)) == 0
    assert errno_of(htab_map_create_check, MapAttr(HASH, 4, 8, 16), 2, nobody) == EPERM
    assert errno_of(htab_map_create_check, MapAttr(HASH, 0, 8, 16), 2, nobody) == EINVAL


def test_no_common_lru_rounds_max_entries_to_the_cpus() -> None:
    """htab_map_alloc(): roundup(max_entries, num_possible_cpus()) in u32, rounddown when that wraps; then the
    2^31 and bucket limits apply to the rounded value (2^31 - 1 entries on 2 CPUs become 2^31: E2BIG)."""
    assert htab_map_alloc_limits(MapAttr(LRU, 4, 8, 5, 2), 4) == (8, 8)
    assert htab_map_alloc_limits(MapAttr(LRU, 4, 8, 5, 0), 4) == (5, 8)
    for m, ncpus in (((1 << 31) - 1, 2), ((1 << 32) - 1, 2), ((1 << 32) - 1, 3)):
        with pytest.raises(BpfError) as e:
            htab_map_alloc_limits(MapAttr(LRU, 4, 8, m, 2), ncpus)
        assert e.value.errno == E2BIG


def test_lru_maps_are_preallocated_and_refuse_no_prealloc() -> None:
    w = make_world(2)
    h = BpfHtab(w.m, w.mm, w.rcu, MapAttr(LRU, 4, 8, 16), w.memcg)
    assert h.lru and h.prealloc and h.elems_kind == "prealloc"
    with pytest.raises(BpfError) as e:
        BpfHtab(w.m, w.mm, w.rcu, MapAttr(LRU, 4, 8, 16, BPF_F_NO_PREALLOC), w.memcg)
    assert e.value.errno == ENOTSUPP


def test_a_bad_name_frees_the_map_it_was_checked_after() -> None:
    """map_create() checks the name after htab_map_alloc(): the map is built, then freed (map_free)."""
    w = make_world(2)
    with pytest.raises(BpfError) as e:
        BpfHtab(w.m, w.mm, w.rcu, MapAttr(HASH, 4, 8, 1000, BPF_F_NO_PREALLOC, map_name="a-b"), w.memcg)
    assert e.value.errno == EINVAL and w.memcg.peak > 16 * 1024
    w.run_ms(1000)
    assert w.memcg.usage == 0
    w.memcg.limit = 4096                               # allocation fails first: ENOMEM, not the name's EINVAL
    with pytest.raises(BpfError) as e:
        BpfHtab(w.m, w.mm, w.rcu, MapAttr(HASH, 4, 8, 1000, BPF_F_NO_PREALLOC, map_name="a-b"), w.memcg)
    assert e.value.errno == ENOMEM


U32 = (1 << 32) - 1


@settings(max_examples=300, deadline=None, database=None)
@given(t=st.sampled_from([HASH, PERCPU, 0, 34]), k=st.sampled_from([0, 1, 8, 512, 4194247, 4194248, U32]),
       v=st.sampled_from([0, 1, 8, 32768, 32769, U32]), m=st.sampled_from([0, 1, 100, (1 << 27) + 1, U32]),
       f=st.sampled_from([0, 1, 2, 4, 5, 0x18, 0x180, 1 << 9, 1 << 16, 1 << 16 | 1]),
       extra=st.sampled_from([0, 1]), node=st.sampled_from([0, 1, U32]),
       name=st.sampled_from(["", "ok", "a-b", "x" * 16]))
def test_the_map_refuses_what_the_pure_check_refuses(t: int, k: int, v: int, m: int, f: int, extra: int, node: int,
                                                     name: str) -> None:
    """BpfHtab.__init__ (allocating) and htab_map_create_check (not allocating) give the same errno."""
    attr = MapAttr(t, k, v, m, f, extra, node, name)
    want = errno_of(htab_map_create_check, attr, 2)
    w = make_world(2)
    try:
        BpfHtab(w.m, w.mm, w.rcu, attr, w.memcg).close()
        got = 0
    except BpfError as e:
        got = e.errno
    assert got == want
