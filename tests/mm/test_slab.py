"""kmalloc size classes and memcg charges as measured on the 6.18 reference machine."""

from __future__ import annotations

import pytest

from bpfmem.mm import GFP_KERNEL, GFP_NOWAIT, __GFP_ACCOUNT, Mm, kmalloc_charge, kmalloc_size_class, pcpu_obj_full_size
from bpfmem.mm.memcg import MemCgroup
from bpfmem.mm.slab import UseAfterFreeError
from bpfmem.sim import Machine


@pytest.mark.parametrize("size,cls", [(1, 8), (8, 8), (9, 16), (72, 96), (96, 96), (97, 128), (160, 192),
                                      (193, 256), (264, 512), (576, 1024), (1088, 2048), (2064, 4096),
                                      (4104, 8192), (8192, 8192), (8193, 16384), (16384, 16384), (20000, 32768)])
def test_size_classes(size: int, cls: int) -> None:
    """x86-64 SLUB: no 8-byte gap above 64 (96, 192 exist); above 8 KiB whole page orders."""
    assert kmalloc_size_class(size) == cls


def test_charge_is_class_plus_objcg_pointer_for_slab_and_pages_above() -> None:
    assert kmalloc_charge(72) == 104        # measured 103.8 B/elem
    assert kmalloc_charge(4104) == 8200     # measured 8201.8
    assert kmalloc_charge(16384) == 16384   # kmalloc_large: pages, no obj_cgroup pointer


def test_percpu_charge() -> None:
    """pcpu_obj_full_size: size x possible CPUs + one obj_cgroup pointer per 4-byte unit."""
    assert pcpu_obj_full_size(8, 2) == 8 * 2 + 2 * 8
    assert pcpu_obj_full_size(5, 4) == 8 * 4 + 2 * 8


def test_accounted_allocations_charge_the_given_cgroup_and_its_parents() -> None:
    mm = Mm(Machine(1))
    a = mm.root_memcg.child("a")
    b = a.child("b")
    obj = mm.slab.kmalloc_node(100, GFP_KERNEL | __GFP_ACCOUNT, b)
    assert obj is not None and obj.charge == 136
    assert (b.usage, a.usage, mm.root_memcg.usage) == (136, 136, 136)
    plain = mm.slab.kmalloc_node(100, GFP_KERNEL, b)   # no __GFP_ACCOUNT: not charged
    assert plain is not None and b.usage == 136
    mm.slab.kfree(obj)
    assert (b.usage, a.usage, b.peak) == (0, 0, 136)
    with pytest.raises(UseAfterFreeError):
        mm.slab.kfree(obj)


def test_a_limit_anywhere_up_the_tree_fails_the_charge_and_counts_failcnt() -> None:
    mm = Mm(Machine(1))
    parent = mm.root_memcg.child("p", limit=300)
    child = parent.child("c")
    got = [mm.slab.kmalloc_node(72, GFP_NOWAIT | __GFP_ACCOUNT, child) for _ in range(4)]
    assert [g is not None for g in got] == [True, True, False, False]
    assert parent.failcnt == 2 and child.failcnt == 0 and child.usage == 208
    v1, v2 = child.files("v1"), parent.files("v2")
    assert v1["memory.kmem.usage_in_bytes"] == 208 and v1["memory.kmem.max_usage_in_bytes"] == 208
    assert v2["memory.max"] == 300 and v2["memory.events.max"] == 2 and v2["memory.current"] == 208
    with pytest.raises(ValueError):
        child.files("v3")


def test_failure_injection() -> None:
    mm = Mm(Machine(1))
    mm.slab.fail_after = 1
    assert mm.slab.kmalloc_node(8, GFP_KERNEL, None) is not None
    assert mm.slab.kmalloc_node(8, GFP_KERNEL, None) is None
    assert mm.slab.statistics().failures == 1


def test_uncharge_below_zero_is_a_model_bug() -> None:
    cg = MemCgroup()
    with pytest.raises(AssertionError):
        cg.uncharge(1)
