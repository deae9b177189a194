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
    invocation_ns: int = 400        # syscall entry + tracepoint + bpf_loop setup
    update_new_ns: int = 190
    update_replace_ns: int = 210
    delete_ns: int = 150
    lookup_ns: int = 60
    error_ns: int = 60
    kmalloc_ns: int = 90            # per object allocated in a refill
    kmalloc_ns_per_kb: float = 0.0  # extra per KiB of object (zeroing, slab pages)
    value_copy_ns_per_kb: float = 0.0  # per KiB of value copied by an update
    prealloc_factor: float = 0.6    # preallocated maps skip the allocator
    llc_bytes: int = 32 << 20       # last-level cache: maps larger than this miss in it
    miss_ns: float = 0.0            # extra ns per map op when the whole map misses the cache
    handoff_ns: int = 2_000         # barrier wake-up of the other thread of a pair
    source: str = "estimate for a 2-CPU 6.18 VM from docs/measurements.md §2, §7 (not fitted)"

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"cost {k} must be >= 0, got {v}")


DEFAULT_COSTS = CostModel()
