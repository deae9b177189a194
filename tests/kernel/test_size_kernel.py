"""bpfmem size --backend kernel: elements that fit under a memcg limit, the model against this kernel.

The map is charged to a limited child cgroup this process is not in (updates then fail with ENOMEM; a process
inside would be OOM-killed instead).  The model charges exact bytes; the kernel also keeps up to one CPU's
memcg charge stock (64 pages) on the CPU that created the map, which the limits here make < 1 %.
"""

from __future__ import annotations

import os

import pytest

from . import require_kernel_backend

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("value,limit_mib", [(1024, 64), pytest.param(64, 64, marks=pytest.mark.slow),
                                             pytest.param(256, 32, marks=pytest.mark.slow)])
def test_elements_before_enomem_within_2_percent(value: int, limit_mib: int) -> None:
    require_kernel_backend()
    from bpfmem.kernel.lifecycle import leftovers
    from bpfmem.sizing import SizeQuery, fit_model, size_kernel
    before = leftovers()
    q = SizeQuery("hash", 4, value, 1 << 20, len(os.sched_getaffinity(0)), "v6.18", memcg_limit=limit_mib << 20)
    k = size_kernel(q)
    m = fit_model(q)
    assert k["stopped_by"] == m["stopped_by"] == "ENOMEM"
    assert abs(m["elements"] / k["elements"] - 1) <= 0.02, (m["elements"], k["elements"])
    # deleted elements wait in the per-CPU caches, still charged: re-adding them needs no new charge
    assert k["readded"] == k["deleted"] == m["readded"] == m["deleted"] == 1000
    assert leftovers() == before
