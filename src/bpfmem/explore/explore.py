"""Explore the schedules of a scenario under a strategy; stop at a violation; replay it exactly.

Strategies (each says what it proves):

- ``random``: schedule *i* is a random walk seeded ``seed + i``
  (``strategies.RandomWalkScheduler``: per schedule, random odds of preempting,
  of stale reads and of NMIs).  Proves nothing about the schedules it did not run.
- ``pct``: probabilistic concurrency testing (``strategies.PctScheduler``), with
  ``k`` measured from the scenario's own step counts before exploring.
- ``dfs``: every schedule with at most ``bound`` deviations from the default
  (the running program goes on, time passes only when nothing else can run,
  no NMI, every load reads the newest write).  Exhaustive within that bound,
  nothing beyond it.
- ``replay``: the choices of a replay string, exactly, checked.

``jobs`` > 1 splits the schedules over processes (random/pct by index, dfs by
the first choice) and merges the per-schedule records in the order one job
visits them, so the result is exactly one job's: same schedules, same counts,
same first finding, for every limit and stop mode.
"""

from __future__ import annotations

import base64
import json
import random
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..report.units import plural
from ..sim import RandomScheduler
from .runtime import MAX_STEPS, Run, RunResult
from .scenarios import SCENARIOS, Scenario
from .strategies import (CheckedReplayScheduler, DfsScheduler, PctScheduler, RandomWalkScheduler, ReplayDivergence,
                         labels_digest, next_prefix)

STRATEGIES = ("random", "pct", "dfs")
STOP_MODES = ("unaccepted", "any")
PCT_CALIBRATION_RUNS = 16


@dataclass
class Finding:
    schedule: int
    violations: list[dict[str, Any]]
    steps: list[str]
    replay: str


@dataclass
class Record:
    """What one schedule contributes to a result (cheap to send between processes)."""

    index: int
    kinds: tuple[tuple[str, bool], ...]          # (kind, accepted) of each violation
    finding: Finding | None

    def bad(self, stop: str) -> bool:
        return bool(self.kinds) if stop == "any" else any(not a for _k, a in self.kinds)


@dataclass
class ExploreResult:
    scenario: str
    policy: str
    strategy: str
    planted: bool
    schedules: int
    unaccepted: int
    found_kinds: dict[str, int]
    first: Finding | None
    exhausted: bool
    elapsed_s: float = 0.0
    proves: str = ""
    findings: list[Finding] = field(default_factory=list)
    stopped: bool = False
    pct_k: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- replay strings ----------------------------------------------------------------------------------

def encode_replay(scenario: str, policy: str, choices: list[int], planted: bool = False,
                  options: list[int] | None = None, labels: list[str] | None = None) -> str:
    d: dict[str, Any] = {"s": scenario, "p": policy, "x": int(planted), "c": choices}
    if options is not None:
        d["n"] = options
    if labels is not None:
        d["h"] = labels_digest(labels)
    raw = json.dumps(d, separators=(",", ":")).encode()
    return "bpfmem2:" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode_replay(text: str) -> tuple[str, str, bool, list[int], list[int] | None, int | None]:
    """(scenario, policy, planted, choices, options or None, label digest or None)."""
    if text.startswith("bpfmem1:"):
        raise ValueError("a bpfmem1: replay string comes from an explorer that ran whole helper calls as one "
                         "step; it cannot replay here: explore again to get a bpfmem2: string")
    if not text.startswith("bpfmem2:"):
        raise ValueError("a replay string starts with 'bpfmem2:'")
    body = text[8:]
    try:
        d = json.loads(zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
        opts = [int(x) for x in d["n"]] if "n" in d else None
        return (str(d["s"]), str(d["p"]), bool(d.get("x", 0)), [int(x) for x in d["c"]], opts,
                int(d["h"]) if "h" in d else None)
    except (ValueError, KeyError, TypeError, zlib.error) as e:
        raise ValueError(f"not a valid replay string: {e}") from None


def run_once(sc: Scenario, policy: str, planted: bool, sched: Any, max_steps: int = MAX_STEPS) -> RunResult:
    run = Run(sc.ncpus, sched, sc.accepted, max_steps)
    sc.setup(run, policy, planted)
    res = run.execute()
    if sc.final is not None:
        sc.final(run)
        res.violations = list(run.checker.violations)
    return res


def replay(text: str) -> tuple[str, str, bool, RunResult]:
    """Run a replay string; ``ReplayDivergence`` if the run does not ask what the string recorded."""
    scenario, policy, planted, choices, options, digest = decode_replay(text)
    sc = SCENARIOS.get(scenario)
    if sc is None:
        raise ValueError(f"the replay string names scenario {scenario!r}, which this bpfmem does not have")
    if policy not in sc.policies:
        raise ValueError(f"the replay string names policy {policy!r}, which {scenario} does not run under")
    sched = CheckedReplayScheduler(choices, options)
    res = run_once(sc, policy, planted, sched)
    sched.finish(res.labels, digest)
    return scenario, policy, planted, res


# -- one schedule -> one record ------------------------------------------------------------------------

def _record(sc: Scenario, policy: str, planted: bool, index: int, res: RunResult, keep: bool) -> Record:
    kinds = tuple((v.kind, v.accepted) for v in res.violations)
    finding = None
    if keep and kinds:
        finding = Finding(index, [asdict(v) for v in res.violations], res.steps,
                          encode_replay(sc.name, policy, res.choices, planted, res.options, res.labels))
    return Record(index, kinds, finding)


class _Keeper:
    """Which runs of one job keep their full finding: the first with a violation, the first that stops
    the search, and (``keep_all``) the first of each distinct set of violation kinds."""

    def __init__(self, keep_all: bool, stop: str) -> None:
        self.keep_all, self.stop = keep_all, stop
        self.any = False
        self.bad = False
        self.sets: set[frozenset[str]] = set()

    def wants(self, res: RunResult) -> bool:
        if not res.violations:
            return False
        kinds = frozenset(v.kind for v in res.violations)
        bad = any(not v.accepted for v in res.violations) if self.stop != "any" else True
        want = not self.any or (bad and not self.bad) or (self.keep_all and kinds not in self.sets)
        self.any = True
        self.bad = self.bad or bad
        self.sets.add(kinds)
        return want


def _indexed(scenario: str, policy: str, planted: bool, strategy: str, indices: list[int], seed: int,
             depth: int, k: int, stop: str, keep_all: bool, max_steps: int) -> list[Record]:
    sc = SCENARIOS[scenario]
    keeper = _Keeper(keep_all, stop)
    out: list[Record] = []
    for i in indices:
        sched: Any = RandomWalkScheduler(seed + i) if strategy == "random" else PctScheduler(seed + i, depth, k)
        res = run_once(sc, policy, planted, sched, max_steps)
        rec = _record(sc, policy, planted, i, res, keeper.wants(res))
        out.append(rec)
        if rec.bad(stop) and not keep_all:
            break
    return out


def _dfs_subtree(scenario: str, policy: str, planted: bool, bound: int, limit: int, stop: str, keep_all: bool,
                 first: int, max_steps: int) -> tuple[list[Record], bool]:
    """Every schedule whose first choice is ``first``, in DFS order; (records, exhausted)."""
    sc = SCENARIOS[scenario]
    keeper = _Keeper(keep_all, stop)
    out: list[Record] = []
    prefix: list[int] = [first]
    while len(out) < limit:
        s = DfsScheduler(prefix)
        res = run_once(sc, policy, planted, s, max_steps)
        rec = _record(sc, policy, planted, len(out), res, keeper.wants(res))
        out.append(rec)
        if rec.bad(stop) and not keep_all:
            return out, False
        nxt = next_prefix(s.trace, bound, 1)
        if nxt is None:
            return out, True
        prefix = nxt
    return out, False


def _job(args: tuple[Any, ...]) -> Any:
    if args[0] == "dfs":
        return _dfs_subtree(*args[1:])
    return _indexed(*args[1:])


def _pool(tasks: list[tuple[Any, ...]], jobs: int) -> list[Any]:
    import multiprocessing as mp
    with mp.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
        return pool.map(_job, tasks)


def measure_k(sc: Scenario, policy: str, planted: bool, seed: int, max_steps: int = MAX_STEPS) -> int:
    """PCT's ``k``: the most scheduling steps seen in the default schedule and in
    ``PCT_CALIBRATION_RUNS`` random ones (seeds derived from ``seed``, so every job agrees)."""
    ks = [run_once(sc, policy, planted, DfsScheduler([]), max_steps).sched_steps]
    rng = random.Random(seed ^ 0x5CA1AB1E)
    for _ in range(PCT_CALIBRATION_RUNS):
        ks.append(run_once(sc, policy, planted, RandomScheduler(rng.getrandbits(63)), max_steps).sched_steps)
    return max(max(ks), 1)


def summarise(records: list[Record], limit: int, stop: str, keep_all: bool
              ) -> tuple[int, dict[str, int], int, Finding | None, list[Finding], bool]:
    """What one job visiting ``records`` in this order reports: (schedules, kinds, runs with a bug,
    first finding, kept findings, stopped)."""
    recs = records[:limit]
    stopped = False
    if not keep_all:
        for j, r in enumerate(recs):
            if r.bad(stop):
                recs = recs[:j + 1]
                stopped = True
                break
    kinds: dict[str, int] = {}
    unacc = 0
    for r in recs:
        for k, _a in r.kinds:
            kinds[k] = kinds.get(k, 0) + 1
        if any(not a for _k, a in r.kinds):
            unacc += 1
    if stopped:
        first = recs[-1].finding
    else:
        first = next((r.finding for r in recs if r.kinds), None)
    findings: list[Finding] = []
    if keep_all:
        seen: set[frozenset[str]] = set()
        for r in recs:
            ks = frozenset(k for k, _a in r.kinds)
            if r.kinds and ks not in seen and r.finding is not None:
                seen.add(ks)
                findings.append(r.finding)
    return len(recs), dict(sorted(kinds.items())), unacc, first, findings, stopped


def explore(scenario: str, policy: str, strategy: str = "random", schedules: int = 1000, *, seed: int = 0,
            depth: int = 3, bound: int = 3, jobs: int = 1, stop: str = "unaccepted", keep_all: bool = False,
            planted: bool = False, max_steps: int = MAX_STEPS) -> ExploreResult:
    """Run up to ``schedules`` schedules; stop at the first run with an unaccepted violation (or any
    violation with ``stop='any'``) unless ``keep_all``."""
    sc = SCENARIOS.get(scenario)
    if sc is None:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if policy not in sc.policies:
        raise ValueError(f"{scenario} does not run under policy {policy!r}; allowed: {', '.join(sc.policies)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if stop not in STOP_MODES:
        raise ValueError(f"unknown stop mode {stop!r}; known: {', '.join(STOP_MODES)}")
    if schedules < 1:
        raise ValueError(f"schedules must be >= 1, got {schedules}")
    t0 = time.perf_counter()
    exhausted = False
    k = None
    if strategy == "dfs":
        root = DfsScheduler([])
        run_once(sc, policy, planted, root, max_steps)
        width = root.trace[0][1] if root.trace else 1
        firsts = [c for c in range(width) if c == 0 or bound >= 1]
        if not root.trace:
            firsts = [0]
        if jobs > 1 and len(firsts) > 1:
            parts = _pool([("dfs", scenario, policy, planted, bound, schedules, stop, keep_all, c, max_steps)
                           for c in firsts], jobs)
        else:
            parts = []
            for c in firsts:
                left = schedules - sum(len(p[0]) for p in parts)
                if left <= 0:
                    parts.append(([], False))
                    continue
                recs, done = _dfs_subtree(scenario, policy, planted, bound, left, stop, keep_all, c, max_steps)
                parts.append((recs, done))
                if not keep_all and recs and recs[-1].bad(stop):
                    break
        records: list[Record] = []
        for recs, _done in parts:
            for r in recs:
                records.append(Record(len(records), r.kinds,
                                      None if r.finding is None else
                                      Finding(len(records), r.finding.violations, r.finding.steps, r.finding.replay)))
        count, kinds, unacc, first, findings, stopped = summarise(records, schedules, stop, keep_all)
        total = sum(len(p[0]) for p in parts)
        exhausted = (not stopped and len(parts) == len(firsts) and all(d for _r, d in parts)
                     and total <= schedules)
        proves = (f"exhaustive over every schedule with at most {bound} deviations from the default order "
                  f"({plural(count, 'schedule')})" if exhausted else
                  f"partial: stopped after {plural(count, 'schedule')}" + (" at a violation" if stopped else ""))
    else:
        if strategy == "pct":
            k = measure_k(sc, policy, planted, seed, max_steps)
        idx = list(range(schedules))
        args = (scenario, policy, planted, strategy)
        if jobs > 1:
            parts = _pool([("idx", *args, idx[j::jobs], seed, depth, k or 1, stop, keep_all, max_steps)
                           for j in range(jobs)], jobs)
            records = sorted((r for part in parts for r in part), key=lambda r: r.index)
        else:
            records = _indexed(*args, idx, seed, depth, k or 1, stop, keep_all, max_steps)
        count, kinds, unacc, first, findings, stopped = summarise(records, schedules, stop, keep_all)
        if strategy == "random":
            proves = "nothing beyond the schedules run (random)"
        else:
            n = sum(1 for _ in _threads(sc, policy, planted)) + 1
            proves = (f"probabilistic: a bug of depth d <= {depth} is found with probability >= 1/(n*k^(d-1)) "
                      f"per schedule, n = {n} (programs and time), k = {k} steps (measured)")
    return ExploreResult(scenario, policy, strategy, planted, count, unacc, kinds, first, exhausted,
                         round(time.perf_counter() - t0, 3), proves, findings, stopped, k)


def _threads(sc: Scenario, policy: str, planted: bool) -> list[str]:
    run = Run(sc.ncpus, DfsScheduler([]), sc.accepted)
    sc.setup(run, policy, planted)
    return [t.name for t in run.threads]


__all__ = ["STRATEGIES", "STOP_MODES", "ExploreResult", "Finding", "ReplayDivergence", "decode_replay",
           "encode_replay", "explore", "replay", "run_once", "summarise"]
