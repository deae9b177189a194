"""The seam between workloads and what runs them: the model or the real kernel.

A workload is data: which map to create and which BPF-program invocations to
run on which CPU.  A backend runs it and measures memory.  Workloads import
only this module, so one workload definition runs unchanged on either side.

- ``MapSpec``: the map to create.
- ``Op``: one map operation applied to a sequence of keys (a ``bpf_loop``).
- ``Invocation``: one program run on one CPU (ops in order, no preemption
  between them at this level); ``hits`` is what the selftests bench adds to
  ``op_cnt`` for it.
- ``Producer``: invocations run back to back, cyclically; each waits for the
  previous one (the bench's barrier pairs).
- ``MemorySample``: what a backend measures at an instant.  ``modelled`` says
  whether the numbers come from the model or were measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

OP_KINDS = ("update", "delete", "lookup")
MAP_TYPES = ("hash", "percpu_hash", "lru_hash", "lru_percpu_hash")
LRU_MAP_TYPES = ("lru_hash", "lru_percpu_hash")       # always preallocated: no_prealloc does not apply


@dataclass(frozen=True)
class MapSpec:
    map_type: str
    key_size: int
    value_size: int
    max_entries: int
    no_prealloc: bool = True

    def __post_init__(self) -> None:
        if self.map_type not in MAP_TYPES:
            raise ValueError(f"map_type must be one of {MAP_TYPES}, got {self.map_type!r}")


@dataclass(frozen=True)
class Op:
    kind: str
    keys: tuple[int, ...]
    flags: int = BPF_ANY

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"op kind must be one of {OP_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Invocation:
    cpu: int
    ops: tuple[Op, ...]
    hits: int = 0

    @property
    def nops(self) -> int:
        return sum(len(op.keys) for op in self.ops)


@dataclass(frozen=True)
class Producer:
    name: str
    steps: tuple[Invocation, ...]


@dataclass
class RunCounts:
    """What a run did: map operations, bench hits, errors by errno name."""

    ops: int = 0
    hits: int = 0
    invocations: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_ns: int = 0
    skipped_invocations: int = 0

    def add_error(self, name: str, n: int = 1) -> None:
        self.errors[name] = self.errors.get(name, 0) + n

    def errors_total(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: RunCounts) -> None:
        self.ops += other.ops
        self.hits += other.hits
        self.invocations += other.invocations
        for k, v in other.errors.items():
            self.add_error(k, v)


@dataclass(frozen=True)
class MemorySample:
    t_ns: int
    charged: int
    memlock: int
    breakdown: dict[str, int] | None
    phase: str = ""


class MapHandle(Protocol):
    spec: MapSpec


class Backend(Protocol):
    """What a workload needs from whatever runs it."""

    name: str
    ncpus: int
    modelled: bool

    def map_create(self, spec: MapSpec) -> MapHandle: ...
    def run(self, m: MapHandle, producers: tuple[Producer, ...], duration_ns: int, phase: str = "run") -> RunCounts: ...
    def execute(self, m: MapHandle, invocations: tuple[Invocation, ...], phase: str = "") -> RunCounts: ...
    def idle(self, m: MapHandle, duration_ns: int, phase: str = "idle") -> None: ...
    def sample(self, m: MapHandle, phase: str = "") -> MemorySample: ...
    def samples(self, m: MapHandle) -> list[MemorySample]: ...
    def peak(self, m: MapHandle) -> int: ...
    def map_close(self, m: MapHandle) -> MemorySample: ...
    def now_ns(self) -> int: ...
    def describe(self) -> dict[str, object]: ...
