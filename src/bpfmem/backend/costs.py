"""The model's cost profile: how long simulated operations take.

Problem: the model reports throughput as well as memory, and how much memory
waits for a grace period depends on how fast a CPU frees; so each operation
advances its CPU's clock by a cost.  Costs are profile data, never measured
from the host running the model.

The shipped default is an estimate for the reference machine kind (2-CPU VM,
6.18): docs/measurements.md §7 measured 5.1-6.1 M ops/s for add-N/delete-N from a
BPF program (≈ 180 ns per map operation) and §2 shows preallocated maps
≈ 1.7× faster at small sizes.  Every ops/s figure the model prints is
*modelled* from these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CostModel:
    invocation_ns: int = 400        # fixed part of one invocation (a program run, the driver's loop step)
    update_batch_ns: int = 0        # fixed part of one batch of updates (a BPF_MAP_UPDATE_BATCH syscall)
    delete_batch_ns: int = 0        # fixed part of one batch of deletes (a BPF_MAP_DELETE_BATCH syscall)
    update_new_ns: int = 190
    update_replace_ns: int = 210
    delete_ns: int = 150
    lookup_ns: int = 60
    error_ns: int = 60
    kmalloc_ns: int = 90            # per object allocated in a refill
    kmalloc_ns_per_kb: float = 0.0  # extra per KiB of object (zeroing, slab pages)
    value_copy_ns_per_kb: float = 0.0  # per KiB of value copied by an update
    prealloc_factor: float = 0.6    # preallocated maps skip the allocator
    l2_bytes: int = 512 << 10       # per-core cache: maps larger than this miss in it
    l2_miss_ns: float = 0.0         # extra ns per map op when the whole map misses the per-core cache
    l2_miss_ns_per_kb: float = 0.0  # and per KiB of value (a large value is many cache lines)
    llc_bytes: int = 32 << 20       # last-level cache: maps larger than this miss in it
    miss_ns: float = 0.0            # extra ns per map op when the whole map misses the last-level cache
    handoff_ns: int = 2_000         # barrier wake-up of the other thread of a pair
    lock_ns: int = 60               # a proposal's spin lock taken from irq_work (cache line from another CPU)
    source: str = "estimate for a 2-CPU 6.18 VM from docs/measurements.md §2, §7 (not fitted)"

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"cost {k} must be >= 0, got {v}")


DEFAULT_COSTS = CostModel()


def _line(points: list[tuple[float, float]], relative: bool = False) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b x; ``relative``: of the relative errors (weights 1/y²),
    so a point ten times larger does not count a hundred times more."""
    w = [1 / (y * y) if relative and y else 1.0 for _, y in points]
    n = sum(w)
    mx = sum(wi * x for wi, (x, _) in zip(w, points)) / n
    my = sum(wi * y for wi, (_, y) in zip(w, points)) / n
    sxx = sum(wi * (x - mx) ** 2 for wi, (x, _) in zip(w, points))
    b = sum(wi * (x - mx) * (y - my) for wi, (x, y) in zip(w, points)) / sxx if sxx else 0.0
    return my - b * mx, b


def fit_costs(m: dict[str, float], batches: tuple[int, ...], caches: tuple[int, int],
              ws: dict[str, float], bd_large_miss_ns: float | None = None) -> dict[str, float]:
    """Operation costs from kernel measurements (``bpfmem calibrate``).

    ``m`` holds medians: ``ow<N>`` / ``bd<N>``: ns per invocation of overwrite / batch_add_batch_del with
    ``N`` keys (one batch operation / two per invocation), for every ``N`` in ``batches`` (the largest
    one far beyond the per-core cache); ``ow64_1024`` and ``ow10000_1024`` (overwrite of 1 KiB values,
    inside and beyond the per-core cache), ``pre1024`` (preallocated overwrite); ns per key of a fresh
    fill (``fill_8``, ``fill_4000``) and of deleting it (``delete_8``); ``big`` (ns per key, overwrite of
    100k x 4000 B); ``ad64`` (ns per add+delete pair cycle of add_del_on_diff_cpu on two CPUs), if
    measured.  ``caches`` = (per-core, last-level) cache bytes; ``ws`` the map's charge (its working set)
    for every loop and ``big``.

    Per invocation ``T(N) = sum of the batches' fixed costs + N * (per_key + l2_miss * f2 + miss * f3)``
    with ``f = max(0, 1 - cache / ws)``: the batches that fit in the per-core cache give a line per use case
    (overwrite: one update batch; batch_add_batch_del: an update and a delete batch), whose intercepts are
    the fixed costs and slopes the costs per key; the largest batch gives the per-core miss cost, the
    400 MiB map the last-level one; the preallocated map's factor is relative to what the model charges
    the same overwrite at that map's size.  The syscall driver's whole fixed cost is per batch
    (``invocation_ns`` = 0).  The hand-off is what a pair cycle takes beyond its two batches.

    The add+delete line from small batches alone is a slope extrapolated tenfold, and the kernel's small
    batch_add_batch_del loops drift by 30 % between rounds (docs/measurements.md §10): a fit from them
    missed the measured large batch by 20 %.  Given ``bd_large_miss_ns`` -- what the cache misses add to
    one invocation of the largest batch in the model fitted without it -- the line is fitted through that
    measurement less its misses too, on relative errors, so no batch size outweighs the others.
    """
    l2, llc = caches
    small = [n for n in batches if ws[f"ow{n}"] <= l2] or list(batches[:2])
    large = max(batches)
    a1, b1 = _line([(n, m[f"ow{n}"]) for n in small])
    bd_points = [(n, m[f"bd{n}"]) for n in small]
    if bd_large_miss_ns is not None and large not in small:
        bd_points.append((large, m[f"bd{large}"] - bd_large_miss_ns))
    a2, b2 = _line(bd_points, relative=bd_large_miss_ns is not None)
    update_batch = max(a1, 0.0)
    delete_batch = max(a2 - update_batch, 0.0)

    def frac(size: float, w: float) -> float:
        return max(0.0, 1 - size / w) if w > 0 else 0.0
    f2 = frac(l2, ws[f"ow{large}"])
    excess = m[f"ow{large}"] / large - b1 - update_batch / large
    l2_miss = max(excess / f2, 0.0) if f2 > 0.05 else 0.0
    delete = min(max(m["delete_8"], 1.0), b2 * 0.95)
    update_new = max(b2 - delete, 1.0)
    kb = 1016 / 1024                                        # the 1 KiB loops copy 1016 B more than the 8-B ones
    copy_per_kb = max((m["ow64_1024"] - m["ow64"]) / 64 / kb, 0.0)
    f2v = frac(l2, ws["ow10000_1024"])
    excess_v = m["ow10000_1024"] / 10_000 - b1 - update_batch / 10_000 - copy_per_kb * kb - l2_miss * f2v
    l2_miss_kb = max(excess_v / (f2v * 1024 / 1024), 0.0) if f2v > 0.05 else 0.0
    kmalloc = max(m["fill_8"] - update_new, 0.0)
    kmalloc_per_kb = max((m["fill_4000"] - m["fill_8"] - copy_per_kb * 3992 / 1024) / (4064 / 1024), 0.0)
    big_small = (b1 + copy_per_kb * 3992 / 1024
                 + frac(l2, ws["big"]) * (l2_miss + l2_miss_kb * 4000 / 1024))
    f3 = frac(llc, ws["big"])
    # the preallocated map holds all max_entries elements, so it may miss the per-core cache where the
    # same overwrite of a kmalloc'ed map does not: the factor is taken against the model's own cost of it
    pre_as_ow = update_batch + 1024 * (b1 + l2_miss * frac(l2, ws.get("pre1024", 0.0)))
    out = {"invocation_ns": 0, "update_batch_ns": round(update_batch), "delete_batch_ns": round(delete_batch),
           "update_replace_ns": round(max(b1, 1.0)),
           "update_new_ns": round(update_new), "delete_ns": round(delete),
           "kmalloc_ns": round(kmalloc), "kmalloc_ns_per_kb": round(kmalloc_per_kb, 1),
           "value_copy_ns_per_kb": round(copy_per_kb, 1),
           "prealloc_factor": round(max(min(m["pre1024"] / pre_as_ow, 1.5), 0.1), 3),
           "l2_bytes": l2, "l2_miss_ns": round(l2_miss, 1), "l2_miss_ns_per_kb": round(l2_miss_kb, 1),
           "llc_bytes": llc, "miss_ns": round(max((m["big"] - big_small) / f3, 0.0), 1) if f3 > 0.05 else 0.0}
    if "ad64" in m:
        per_pair = update_batch + delete_batch + 64 * (update_new + delete)
        out["handoff_ns"] = round(max((m["ad64"] - per_pair) / 2, 0.0))
    return out
