"""Updates that copy in place allocate nothing: a per-CPU hash map's existing key, and BPF_F_LOCK.

``__htab_percpu_map_update_elem`` copies the new value into the old element (``pcpu_copy_value``), so a
full map can be overwritten and a no-prealloc map does not grow however often its keys are rewritten;
``htab_map_update_elem`` refuses BPF_F_LOCK when the value has no ``bpf_spin_lock`` and per-CPU maps
refuse it always (flags > BPF_EXIST).  Each rule is checked on the model and, where this machine can, on
the kernel with the same invocations: the same return codes, and charges that do not move.
"""

from __future__ import annotations

from typing import Any

import pytest

from bpfmem.backend.model import ModelBackend
from bpfmem.backend.protocol import BPF_ANY, Invocation, MapSpec, Op

from . import require_kernel_backend

BPF_NOEXIST, BPF_F_LOCK = 1, 4
N = 2000


def backends() -> list[Any]:
    return ["model", "kernel"]


def open_backend(kind: str) -> Any:
    if kind == "model":
        return ModelBackend(2, "v6.6")
    require_kernel_backend()
    from bpfmem.kernel.backend import KernelBackend
    return KernelBackend(2)


def run(be: Any, m: Any, op: str, keys: range, flags: int = BPF_ANY) -> dict[str, int]:
    return dict(be.execute(m, (Invocation(0, (Op(op, tuple(keys), flags),)),)).errors)


def resolution(be: Any) -> int:
    """The kernel's memcg moves in pages through a per-CPU byte stock: 4 KiB per possible CPU."""
    if be.modelled:
        return 0
    from bpfmem.kernel.probe import possible_cpus
    return 4096 * possible_cpus()


def closing(be: Any) -> Any:
    return be if hasattr(be, "__enter__") else _Null(be)


class _Null:
    def __init__(self, be: Any) -> None:
        self.be = be

    def __enter__(self) -> Any:
        return self.be

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("kind", backends())
def test_a_percpu_map_overwritten_three_times_does_not_grow(kind: str) -> None:
    with closing(open_backend(kind)) as be:
        m = be.map_create(MapSpec("percpu_hash", 4, 8, N, no_prealloc=True))
        assert run(be, m, "update", range(N)) == {}
        filled = be.sample(m).charged
        for _ in range(3):
            assert run(be, m, "update", range(N)) == {}
        assert abs(be.sample(m).charged - filled) <= resolution(be), (filled, be.sample(m).charged)
        be.map_close(m)


@pytest.mark.parametrize("kind", backends())
def test_a_full_preallocated_percpu_map_can_be_overwritten(kind: str) -> None:
    with closing(open_backend(kind)) as be:
        m = be.map_create(MapSpec("percpu_hash", 4, 8, N, no_prealloc=False))
        assert run(be, m, "update", range(N)) == {}
        assert run(be, m, "update", range(N)) == {}                 # in place: no free element needed
        assert run(be, m, "update", range(N, N + 5)) == {"E2BIG": 5}  # a new key needs one
        be.map_close(m)


@pytest.mark.parametrize("kind", backends())
def test_bpf_f_lock_needs_a_spin_lock_and_is_refused_by_percpu_maps(kind: str) -> None:
    with closing(open_backend(kind)) as be:
        for spec in (MapSpec("hash", 4, 8, 64, no_prealloc=True), MapSpec("percpu_hash", 4, 8, 64, no_prealloc=True)):
            m = be.map_create(spec)
            assert run(be, m, "update", range(8)) == {}
            assert run(be, m, "update", range(8), BPF_F_LOCK) == {"EINVAL": 8}
            assert run(be, m, "update", range(8, 12), BPF_F_LOCK | BPF_NOEXIST) == {"EINVAL": 4}
            be.map_close(m)


def test_the_model_copies_in_place_without_touching_the_allocator() -> None:
    be = ModelBackend(2, "v6.6", identity=True)
    m = be.map_create(MapSpec("percpu_hash", 4, 8, 64, no_prealloc=True))
    run(be, m, "update", range(10))
    before = dict(m.htab.table)
    allocs = be.mm.slab.stats()["allocs"] if hasattr(be.mm.slab, "stats") else None
    run(be, m, "update", range(10))
    assert {k: id(v) for k, v in m.htab.table.items()} == {k: id(v) for k, v in before.items()}
    if allocs is not None:
        assert be.mm.slab.stats()["allocs"] == allocs
    # and a plain hash map still replaces the element (a new one, the old one freed)
    m2 = be.map_create(MapSpec("hash", 4, 8, 64, no_prealloc=True))
    run(be, m2, "update", range(10))
    old = {k: id(v) for k, v in m2.htab.table.items()}
    run(be, m2, "update", range(10))
    assert all(id(v) != old[k] for k, v in m2.htab.table.items())


def test_bpf_f_lock_copies_in_place_when_the_value_has_a_spin_lock() -> None:
    be = ModelBackend(1, "v6.6", identity=True)
    m = be.map_create(MapSpec("hash", 4, 8, 64, no_prealloc=True))
    m.htab.spin_lock = True
    run(be, m, "update", range(10))
    ids = {k: id(v) for k, v in m.htab.table.items()}
    assert run(be, m, "update", range(10), BPF_F_LOCK) == {}
    assert {k: id(v) for k, v in m.htab.table.items()} == ids
    assert run(be, m, "update", range(10, 12), BPF_F_LOCK) == {}      # absent keys: added as usual
    assert len(m.htab.table) == 12
