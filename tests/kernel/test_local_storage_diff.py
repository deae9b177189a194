"""Local storage, the model against this kernel: per-element and per-owner charge, delete -> free delay,
and what an owner's end gives back (task storage keeps it in the map's allocator; socket storage frees it)."""

from __future__ import annotations

import pytest

from . import require_kernel_backend

pytestmark = pytest.mark.kernel
MS = 1_000_000
N = 2048


def model_measure(kind: str, value: int, n: int, release_ms: float = 0.0) -> dict[str, float]:
    """The kernel ``measure()``'s steps on the model (one CPU adding, the shipped grace-period profile)."""
    from bpfmem.backend.profile import load_profile
    from bpfmem.maps.local_storage import BpfLocalStorageMap, Owner, bpf_local_storage_destroy, profile_for_release
    from bpfmem.mm import Mm
    from bpfmem.rcu import Rcu
    from bpfmem.sim import Machine, RandomScheduler
    prof = load_profile(None)
    m = Machine(2, RandomScheduler(0))
    mm = Mm(m)
    rcu = Rcu(m, prof.rcu, prof.tasks_trace)
    cg = mm.root_memcg.child("lstorage")
    cpu = m.cpus[0]
    p = profile_for_release("v6.18")
    a = BpfLocalStorageMap(m, mm, rcu, kind, value, cg, p)
    owners = [Owner(kind, str(i)) for i in range(n)]
    from bpfmem.kernel.local_storage import slope
    ys = []
    for o in owners:
        assert a.update(cpu, o) == 0
        ys.append(cg.usage)
    first_slope = slope(ys)
    b = BpfLocalStorageMap(m, mm, rcu, kind, value, cg, p)
    ys = []
    for o in owners:
        assert b.update(cpu, o) == 0
        ys.append(cg.usage)
    elem_slope = slope(ys)
    before = cg.usage
    t0 = m.engine.now
    for o in owners:
        b.delete(cpu, o)
    first_drop = None
    while m.engine.peek() is not None and m.engine.now - t0 < 1000 * MS:
        m.engine.run(until=m.engine.peek())
        if first_drop is None and cg.usage < before:
            first_drop = (m.engine.now - t0) / MS
    elem_freed = before - cg.usage
    # owners' end: fresh elements on A, then destroy (reuse_now)
    fresh = [Owner(kind, f"f{i}") for i in range(n)]
    for o in fresh:
        a.update(cpu, o)
    before = cg.usage
    # the owners end spread over the time the kernel's threads took to end (``release_ms``), then 1 s passes
    step = release_ms * MS / n
    t0 = m.engine.now
    for i, o in enumerate(fresh):
        m.engine.run(until=t0 + int(i * step))
        bpf_local_storage_destroy(cpu, o)
    m.engine.run(until=m.engine.now + 1000 * MS)
    release_freed = before - cg.usage
    return {"per_elem": elem_freed / n, "elem_slope": elem_slope, "owner_extra": first_slope - elem_slope,
            "elem_free_ms": first_drop, "release_fraction": release_freed / (n * first_slope)}


@pytest.mark.parametrize("kind,value", [("task", 64), ("socket", 56), pytest.param("task", 8, marks=pytest.mark.slow),
                                        pytest.param("task", 512, marks=pytest.mark.slow),
                                        pytest.param("task", 2000, marks=pytest.mark.slow),
                                        pytest.param("socket", 512, marks=pytest.mark.slow)])
def test_charges_delete_delay_and_owner_end_agree(kind: str, value: int) -> None:
    """The kernel's slopes over 2,048 owners move by a few bytes between invocations (slab pages land
    between samples: the owner's extra measured 196.0 once where the model has 200.0 and earlier runs came
    within 4):
    a second measurement when the first disagrees, both shown on failure."""
    require_kernel_backend()
    from bpfmem.kernel.local_storage import measure
    mo = model_measure(kind, value, N)                                   # every owner ends at once
    assert mo["elem_free_ms"] is not None
    tries = []
    for _ in range(2):
        k = measure(kind, value, N)
        spread = model_measure(kind, value, N, k["release_ms"] or 0.0)   # ends spread over the kernel's joins
        bad = _disagreements(kind, k, mo, spread)
        tries.append((bad, k))
        if not bad:
            break
    assert not bad, (mo, tries)


def _disagreements(kind: str, k: dict, mo: dict, spread: dict) -> list[tuple]:
    """What of one kernel measurement ``k`` disagrees with the model (``mo``: owners end at once; ``spread``:
    over the kernel's joins)."""
    bad: list[tuple] = []
    for key, tol, what in (("elem_slope", 2, "bytes per element"), ("per_elem", 2, "what a delete gives back"),
                           ("owner_extra", 4, "the owner's bpf_local_storage")):
        if abs(mo[key] - k[key]) > tol:
            bad.append((key, what, mo[key], k[key]))
    if k["elem_free_ms"] is None or not 0.5 * k["elem_free_ms"] <= mo["elem_free_ms"] <= 2 * k["elem_free_ms"]:
        bad.append(("elem_free_ms", mo["elem_free_ms"], k["elem_free_ms"]))
    kernel_release = k["release_freed"] / max(1, k["release_added"])
    if kind == "task":
        # back into the map's bpf_mem_alloc; trims reach slab one batch per grace period, so what is freed
        # within the second depends on how fast the threads really ended, which the joins only bound: the
        # kernel's fraction lies between the model's for exits all at once and exits spread over the joins
        lo, hi = mo["release_fraction"], spread["release_fraction"]
        if not (lo < 0.1 and lo - 0.05 <= kernel_release <= hi + 0.1):   # at once: parked, as measured
            bad.append(("release_fraction", kernel_release, lo, hi, k["release_ms"]))
    elif not (kernel_release > 0.8 and mo["release_fraction"] > 0.99):
        # kfree_rcu: freed (the kernel may hold a kfree_rcu tail back for seconds)
        bad.append(("release_fraction", kernel_release, mo["release_fraction"]))
    return bad


def test_a_disagreement_is_found() -> None:
    """The check can fail: a kernel owner 8 bytes lighter, or socket storage that is never freed."""
    mo = {"elem_slope": 4104.0, "per_elem": 4104.0, "owner_extra": 200.0, "elem_free_ms": 45.9,
          "release_fraction": 1.0}
    k = {"elem_slope": 4104.0, "per_elem": 4104.0, "owner_extra": 200.0, "elem_free_ms": 40.0, "release_freed": 100,
         "release_added": 100, "release_ms": 5.0}
    assert _disagreements("socket", k, mo, mo) == []
    assert [b[0] for b in _disagreements("socket", {**k, "owner_extra": 192.0}, mo, mo)] == ["owner_extra"]
    assert [b[0] for b in _disagreements("socket", {**k, "release_freed": 0}, mo, mo)] == ["release_fraction"]
