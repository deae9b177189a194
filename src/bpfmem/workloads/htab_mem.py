"""The htab-mem workloads of the kernel's selftests bench, backend-agnostic.

Models: tools/testing/selftests/bpf/benchs/bench_htab_mem.c and
progs/htab_mem_bench.c (merged as fd283ab196a8, 6.6 cycle).

- map: ``BPF_MAP_TYPE_HASH`` (or, as an addition, a per-CPU or LRU hash map), key 4 B, ``BPF_F_NO_PREALLOC`` unless
  preallocated, ``max_entries = max(8192, 64 * cpus)``.
- each program run walks ``OP_BATCH`` = 64 keys ``from + i * step`` with
  ``bpf_loop``; with ``-a`` producer *i* runs on CPU *i*.
- ``overwrite``: every CPU updates its own 64 keys (``from = cpu``,
  ``step = cpus``); +1 hit per run.
- ``batch_add_batch_del``: the same 64 keys added, then deleted; +2 per run.
- ``add_del_on_diff_cpu``: CPU pairs (2k adds, 2k+1 deletes) share keys
  ``k + i * cpus/2``; the adder adds 64 (``BPF_NOEXIST``), then the deleter
  deletes them (barrier between; RFC v2 of 2023-04 had none: ``add_del_sync``); +1 per run.

Additions for memory studies (docs/measurements.md §1): ``batch`` keys per run
instead of 64, a final delete of every key (``drain``), and a ``poke``: each
CPU adds and deletes ``poke`` fresh keys after an idle phase, which makes a
free burst that releases parked objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend.protocol import BPF_ANY, BPF_NOEXIST, MAP_TYPES, Invocation, MapSpec, Op, Producer

USE_CASES: tuple[str, ...] = ("overwrite", "batch_add_batch_del", "add_del_on_diff_cpu")
OP_BATCH = 64
POKE_KEY_BASE = 1 << 30


class WorkloadError(ValueError):
    """A workload configuration that cannot run; ``param`` names the parameter to change."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class HtabMemConfig:
    use_case: str
    cpus: int
    value_size: int = 8
    max_entries: int | None = None
    batch: int = OP_BATCH
    preallocated: bool = False
    poke: int = 200
    key_size: int = 4
    map_type: str = "hash"          # hash, percpu_hash, lru_hash, lru_percpu_hash (LRU: always preallocated)
    add_del_sync: bool = True       # False: RFC v2's add_del_on_diff_cpu, adder and deleter without barriers

    def entries(self) -> int:
        return self.max_entries if self.max_entries is not None else max(8192, 64 * self.cpus)

    def key_count(self) -> int:
        """Distinct keys the workload's programs hold (producers' keys and the poke's), without building them."""
        if self.use_case == "add_del_on_diff_cpu":
            return self.batch * (self.cpus // 2) + self.poke * 2 * (self.cpus // 2)
        return self.batch * self.cpus + self.poke * self.cpus


@dataclass(frozen=True)
class HtabMemWorkload:
    config: HtabMemConfig
    map_spec: MapSpec
    producers: tuple[Producer, ...]
    drain: tuple[Invocation, ...]
    poke: tuple[Invocation, ...]

    @property
    def producer_cnt(self) -> int:
        """``env.producer_cnt``: one producer thread per CPU."""
        return self.config.cpus


def htab_mem(cfg: HtabMemConfig) -> HtabMemWorkload:
    """Build the workload for ``cfg``; raises ``WorkloadError`` naming the bad parameter."""
    if cfg.use_case not in USE_CASES:
        raise WorkloadError("use_case", f"use_case must be one of {', '.join(USE_CASES)}, got {cfg.use_case!r}")
    if cfg.cpus < 1:
        raise WorkloadError("cpus", f"cpus must be >= 1, got {cfg.cpus}")
    if not 1 <= cfg.value_size <= 4096:
        raise WorkloadError("value_size", f"value_size must be 1..4096 (the bench's limit), got {cfg.value_size}")
    if cfg.batch < 1:
        raise WorkloadError("batch", f"batch must be >= 1, got {cfg.batch}")
    if cfg.poke < 0:
        raise WorkloadError("poke", f"poke must be >= 0, got {cfg.poke}")
    if cfg.map_type not in MAP_TYPES:
        raise WorkloadError("map_type", f"map_type must be one of {', '.join(MAP_TYPES)}, got {cfg.map_type!r}")
    entries = cfg.entries()
    if entries < 1:
        raise WorkloadError("max_entries", f"max_entries must be >= 1, got {entries}")
    n, b = cfg.cpus, cfg.batch
    producers: list[Producer] = []
    drain: list[Invocation] = []
    if cfg.use_case == "add_del_on_diff_cpu":
        if n % 2:
            raise WorkloadError("cpus", f"add_del_on_diff_cpu needs an even number of cpus, got {n}")
        half = n // 2
        if b * half > entries:
            raise WorkloadError("batch", f"batch x cpus/2 = {b * half} keys exceed max_entries {entries}: lower batch or raise max_entries")
        for k in range(half):
            keys = tuple(k + i * half for i in range(b))
            add = Invocation(2 * k, (Op("update", keys, BPF_NOEXIST),), hits=1)
            dele = Invocation(2 * k + 1, (Op("delete", keys),), hits=1)
            if cfg.add_del_sync:
                producers.append(Producer(f"pair{k}", (add, dele)))
            else:                       # each side loops on its own CPU: adds meet EEXIST, deletes ENOENT
                producers += [Producer(f"pair{k}-add", (add,)), Producer(f"pair{k}-del", (dele,))]
            drain.append(Invocation(2 * k + 1, (Op("delete", keys),)))
    else:
        if b * n > entries:
            raise WorkloadError("batch", f"batch x cpus = {b * n} keys exceed max_entries {entries}: lower batch or raise max_entries")
        for cpu in range(n):
            keys = tuple(cpu + i * n for i in range(b))
            if cfg.use_case == "overwrite":
                inv = Invocation(cpu, (Op("update", keys, BPF_ANY),), hits=1)
            else:
                inv = Invocation(cpu, (Op("update", keys, BPF_ANY), Op("delete", keys)), hits=2)
            producers.append(Producer(f"cpu{cpu}", (inv,)))
            drain.append(Invocation(cpu, (Op("delete", keys),)))
    poke = []
    if cfg.poke:
        if cfg.poke > entries:
            raise WorkloadError("poke", f"poke {cfg.poke} exceeds max_entries {entries}")
        cpus_used = sorted({inv.cpu for p in producers for inv in p.steps})
        for cpu in cpus_used:
            keys = tuple(POKE_KEY_BASE + cpu * cfg.poke + i for i in range(cfg.poke))
            poke.append(Invocation(cpu, (Op("update", keys, BPF_NOEXIST), Op("delete", keys))))
    spec = MapSpec(cfg.map_type, cfg.key_size, cfg.value_size, entries, no_prealloc=not cfg.preallocated)
    return HtabMemWorkload(cfg, spec, tuple(producers), tuple(drain), tuple(poke))
