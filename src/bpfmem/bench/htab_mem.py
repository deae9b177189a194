"""``bench htab-mem``: run the htab-mem workloads on a backend and measure memory.

Phases (all on the backend's clock; simulated time on the model)::

    create -> run (duration) -> drain (delete every key) -> idle -> poke -> idle -> close

Reported like the selftests bench (``per-prod-op`` k/s per producer, mean
memory, peak) plus what it cannot show:

- ``steady_bytes``: mean charge over the second half of the run phase (the
  first half is warm-up), like the bench's ``memory usage``;
- ``peak_bytes``: the cgroup's peak from creation on (``memory.peak``);
- ``at_last_delete_bytes``, ``after_idle_bytes``, ``after_poke_bytes``,
  ``after_close_bytes``: the parking study of docs/measurements.md §1;
- ``memlock_bytes``: fdinfo ``memlock`` at the end of the run phase;
- ``breakdown``: bytes per list at the end of the run phase (model only);
- ``uncharged``: bytes the map holds that no cgroup is charged for (model only);
- ``series``: (time s, bytes) samples of every phase, and per list.

All byte counts are the map's own memcg charge (the bench's cgroup also holds
its threads' stacks and pages; ours holds the map alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..backend.protocol import Backend, MemorySample
from ..workloads import HtabMemWorkload

NSEC_PER_SEC = 1_000_000_000


@dataclass
class HtabMemResult:
    use_case: str
    policy: str
    backend: str
    modelled: bool
    cpus: int
    value_size: int
    max_entries: int
    batch: int
    duration_s: float
    ops: int
    ops_per_sec: float
    per_prod_op: float
    errors: dict[str, int]
    create_bytes: int
    steady_bytes: float
    peak_bytes: int
    at_last_delete_bytes: int
    after_idle_bytes: int
    after_poke_bytes: int
    after_close_bytes: int
    poke_release_ms: float | None
    memlock_bytes: int
    breakdown: dict[str, int] | None
    series: list[list[float]] = field(default_factory=list)
    breakdown_series: dict[str, list[int]] | None = None
    phases: list[list[Any]] = field(default_factory=list)
    uncharged: dict[str, int] | None = None     # model only: bytes no cgroup pays for (not in the charge)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def steady_mean(samples: list[MemorySample], t0: int, t1: int) -> float:
    """Mean charge of the samples in [t0, t1] (the bench's ``memory usage``)."""
    vals = [s.charged for s in samples if t0 <= s.t_ns <= t1]
    return sum(vals) / len(vals) if vals else 0.0


def release_delay_ms(samples: list[MemorySample], t_poke: int, t_stop: int) -> float | None:
    """Time from the poke to the first drop of the charge (docs/measurements.md's "poke -> drop")."""
    high = None
    for s in samples:
        if not t_poke <= s.t_ns <= t_stop:
            continue
        if high is not None and s.charged < high:
            return (s.t_ns - t_poke) / 1e6
        high = s.charged if high is None else max(high, s.charged)
    return None


def run_htab_mem(backend: Backend, wl: HtabMemWorkload, policy: str, *, duration_ns: int, idle_ns: int,
                 progress: Callable[[str], None] | None = None) -> HtabMemResult:
    """Run every phase of one (use case, policy) on ``backend``."""
    say = progress or (lambda _msg: None)
    cfg = wl.config
    say("create")
    m = backend.map_create(wl.map_spec)
    create = backend.sample(m, "create")
    t_run = backend.now_ns()
    say("run")
    counts = backend.run(m, wl.producers, duration_ns, "run")
    t_end = backend.now_ns()
    end_sample = backend.sample(m, "run")
    steady = steady_mean(backend.samples(m), t_run + duration_ns // 2, t_end)
    say("drain")
    backend.execute(m, wl.drain, "drain")
    last_delete = backend.sample(m, "drain")
    say("idle")
    backend.idle(m, idle_ns, "idle")
    after_idle = backend.sample(m, "idle")
    t_poke = backend.now_ns()
    say("poke")
    poke = backend.execute(m, wl.poke, "poke")
    backend.idle(m, idle_ns, "after_poke")
    after_poke = backend.sample(m, "after_poke")
    peak = backend.peak(m)
    uncharged_of = getattr(backend, "uncharged", None)
    uncharged = uncharged_of(m) if uncharged_of is not None else None
    say("close")
    closed = backend.map_close(m)
    samples = backend.samples(m)
    for k, v in poke.errors.items():   # drain meets absent keys by design (ENOENT); the poke must not fail
        counts.add_error(f"{k}(poke)", v)
    dur_s = duration_ns / NSEC_PER_SEC
    t0 = create.t_ns
    keys = sorted({k for s in samples if s.breakdown for k in s.breakdown})
    bseries = {k: [(s.breakdown or {}).get(k, 0) for s in samples] for k in keys} if keys else None
    phases: list[list[Any]] = []
    for s in samples:
        if not phases or phases[-1][0] != s.phase:
            phases.append([s.phase, round((s.t_ns - t0) / 1e9, 6)])
    return HtabMemResult(
        use_case=cfg.use_case, policy=policy, backend=backend.name, modelled=backend.modelled, cpus=cfg.cpus,
        value_size=cfg.value_size, max_entries=wl.map_spec.max_entries, batch=cfg.batch, duration_s=dur_s,
        ops=counts.ops, ops_per_sec=counts.ops / dur_s if dur_s else 0.0,
        per_prod_op=counts.hits / wl.producer_cnt / dur_s / 1000 if dur_s else 0.0,
        errors=dict(sorted(counts.errors.items())), create_bytes=create.charged, steady_bytes=steady,
        peak_bytes=peak, at_last_delete_bytes=last_delete.charged, after_idle_bytes=after_idle.charged,
        after_poke_bytes=after_poke.charged, after_close_bytes=closed.charged,
        poke_release_ms=release_delay_ms(samples, t_poke, after_poke.t_ns),
        memlock_bytes=end_sample.memlock, breakdown=end_sample.breakdown,
        series=[[round((s.t_ns - t0) / 1e9, 6), s.charged] for s in samples],
        breakdown_series=bseries, phases=phases, uncharged=uncharged,
    )
