"""Charge per element: the slope of the map's charge over two fills (any backend).

The method of docs/measurements.md §3: insert K keys, read the charge, insert K
more, read again; the slope is the memcg charge of one element (slab class +
the obj_cgroup pointer), free of creation and free-list effects.
"""

from __future__ import annotations

from ..backend.protocol import BPF_ANY, Backend, Invocation, MapSpec, Op


def element_charge(backend: Backend, value_size: int, k: int = 20_000, *, no_prealloc: bool = True) -> float:
    """Bytes charged per additional element of a hash map with 4-byte keys."""
    spec = MapSpec("hash", 4, value_size, 4 * k, no_prealloc=no_prealloc)
    m = backend.map_create(spec)
    try:
        backend.execute(m, (Invocation(0, (Op("update", tuple(range(k)), BPF_ANY),)),), "fill1")
        a = backend.sample(m, "fill1").charged
        backend.execute(m, (Invocation(0, (Op("update", tuple(range(k, 2 * k)), BPF_ANY),)),), "fill2")
        b = backend.sample(m, "fill2").charged
    finally:
        backend.map_close(m)
    return (b - a) / k
