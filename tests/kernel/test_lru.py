"""LRU hash maps, model against kernel: the same return codes, the same keys left after evictions.

Random sequences of updates (BPF_ANY/NOEXIST/EXIST), deletes and lookups — from a program (sets the
ref bit) or a syscall (does not) — on random CPUs, against both LRU map types with and without
BPF_F_NO_COMMON_LRU, small enough that most updates evict.  Which key an update evicts depends on the
local lists, the ref bits, the rotation and ``target_free`` (6.16+): all of it has to match.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from bpfmem.backend.model import ModelBackend
from bpfmem.backend.protocol import Invocation, MapSpec, Op
from bpfmem.maps import BpfHtab, MapAttr
from bpfmem.maps.base import BPF_F_NO_COMMON_LRU
from bpfmem.mm import Mm
from bpfmem.rcu import RCU_DEFAULT, TASKS_TRACE_DEFAULT, Rcu
from bpfmem.sim import Machine

from . import require_kernel_backend


def kernel_keys(bm: Any) -> set[int]:
    from bpfmem.kernel import syscall as S
    out: set[int] = set()
    k = None
    while True:
        k = S.map_get_next_key(bm, k)
        if k is None:
            return out
        out.add(int.from_bytes(k, "little"))


@pytest.mark.parametrize("seed", range(12))
def test_lru_eviction_matches_the_kernel(seed: int) -> None:
    require_kernel_backend()
    from bpfmem.kernel import syscall as S
    from bpfmem.kernel.probe import possible_cpus
    from bpfmem.kernel.prog import MapOpProgram
    rnd = random.Random(seed)
    mtype = (9, 10)[seed % 2]
    flags = BPF_F_NO_COMMON_LRU if seed % 4 >= 2 else 0
    n = rnd.choice([4, 16, 50, 100])
    cpus = sorted(os.sched_getaffinity(0))
    mach = Machine(possible_cpus())
    mm = Mm(mach)
    h = BpfHtab(mach, mm, Rcu(mach, RCU_DEFAULT, TASKS_TRACE_DEFAULT), MapAttr(mtype, 4, 8, n, flags),
                mm.root_memcg.child("t"))
    bm = S.map_create(mtype, 4, 8, n, flags)
    prog = MapOpProgram(bm, capacity=64)
    old = os.sched_getaffinity(0)
    try:
        for i in range(800):
            cpu = rnd.choice(cpus) if rnd.random() < 0.3 else cpus[0]
            kind = rnd.choices(["update", "delete", "prog_lookup", "sys_lookup"], [6, 2, 1, 1])[0]
            key, fl = rnd.randrange(3 * n), rnd.choice([0, 0, 1, 2])
            os.sched_setaffinity(0, {cpu})
            c = mach.cpus[cpu]
            kr = mr = 0
            if kind == "update":
                try:
                    S.map_update_elem(bm, key.to_bytes(4, "little"), bytes(bm.value_stride), fl)
                except S.BpfSyscallError as e:
                    kr = -e.errno
                mr = h.update(c, key, fl)
            elif kind == "delete":
                try:
                    S.map_delete_elem(bm, key.to_bytes(4, "little"))
                except S.BpfSyscallError as e:
                    kr = -e.errno
                mr = h.delete(c, key)
            elif kind == "prog_lookup":
                prog.run("lookup", [key])
                h.lookup(c, key)
            else:
                S.map_lookup_elem(bm, key.to_bytes(4, "little"))
                h.lookup(c, key, sys=True)
            assert kr == mr, f"op {i}: {kind} key {key} flags {fl} on CPU {cpu}: kernel {kr}, model {mr}"
        assert kernel_keys(bm) == set(h.table)
        assert h.elems.evicted > 0          # type: ignore[union-attr]  (the sequence did exercise eviction)
    finally:
        os.sched_setaffinity(0, old)
        prog.close()
        bm.close()


@pytest.mark.parametrize("kind", ["model", "kernel"])
@pytest.mark.parametrize("map_type", ["lru_hash", "lru_percpu_hash"])
def test_a_full_lru_map_takes_every_update_and_its_charge_stays(kind: str, map_type: str) -> None:
    if kind == "model":
        be: Any = ModelBackend(2, "v6.6")
    else:
        require_kernel_backend()
        from bpfmem.kernel.backend import KernelBackend
        be = KernelBackend(2)
    try:
        m = be.map_create(MapSpec(map_type, 4, 8, 1000))
        created = be.sample(m).charged
        errors = be.execute(m, (Invocation(0, (Op("update", tuple(range(5000))),)),)).errors
        assert dict(errors) == {}
        res = 0 if be.modelled else 4096 * 2
        assert abs(be.sample(m).charged - created) <= res
        be.map_close(m)
    finally:
        if hasattr(be, "close"):
            be.close()
