"""Explore the schedules of a scenario under a strategy; stop at a violation; replay it exactly.

Strategies (each says what it proves):

- ``random``: schedule *i* uses seed ``seed + i``; every choice uniform.
  Finds shallow bugs fast; proves nothing about the schedules it did not run.
- ``pct``: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010):
  random distinct priorities per program, ``depth - 1`` priority change
  points; the highest-priority runnable program runs.  A bug of depth *d* is
  found with probability ≥ 1/(n·k^(d-1)) per schedule (n programs, k steps).
- ``dfs``: every schedule with at most ``bound`` deviations from the default
  order (run the first runnable program to completion; a deviation is any other
  choice: a preemption, letting time pass, delivering an NMI).  Exhaustive
  within that bound, nothing beyond it.
- ``replay``: the choices of a replay string, exactly.

``jobs`` > 1 splits the schedule space over processes (random/pct by schedule
index, dfs by the first choice) and reports exactly what one job reports: the
violation of the lowest-numbered schedule.
"""

from __future__ import annotations

import base64
import json
import random
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..check import Violation
from ..sim import RandomScheduler, ReplayScheduler, Schedule
from .runtime import Run, RunResult
from .scenarios import FINAL_CHECKS, POLICIES, SCENARIOS, Scenario

STRATEGIES = ("random", "pct", "dfs")


class PctScheduler:
    """PCT over the runtime's ``next:<names>`` choices; other choices are seeded coin flips."""

    def __init__(self, seed: int, depth: int = 3, steps: int = 20) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.prio: dict[str, float] = {}
        self.change = sorted(self.rng.sample(range(1, steps + 1), min(max(depth - 1, 0), steps)))
        self.step = 0
        self.low = 0.0

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        if not label.startswith("next:"):
            return self.rng.randrange(n)
        names = label[5:].split(",")
        self.step += 1
        for nm in names:
            if nm not in self.prio:
                self.prio[nm] = 1.0 + self.rng.random()
        best = max(range(n), key=lambda i: self.prio[names[i]])
        if self.change and self.step == self.change[0]:
            self.change.pop(0)
            self.low -= 1.0
            self.prio[names[best]] = self.low
            best = max(range(n), key=lambda i: self.prio[names[i]])
        return best


class DfsScheduler:
    """Replays a prefix, then takes choice 0; records (choice, options) of every choice."""

    def __init__(self, prefix: list[int]) -> None:
        self.seed = 0
        self.prefix = prefix
        self.trace: list[tuple[int, int]] = []

    def choose(self, label: str, n: int) -> int:
        if n <= 1:
            return 0
        i = len(self.trace)
        c = self.prefix[i] if i < len(self.prefix) else 0
        self.trace.append((c, n))
        return c


@dataclass
class Finding:
    schedule: int
    violations: list[dict[str, Any]]
    steps: list[str]
    replay: str


@dataclass
class ExploreResult:
    scenario: str
    policy: str
    strategy: str
    schedules: int
    unaccepted: int
    found_kinds: dict[str, int]
    first: Finding | None
    exhausted: bool
    elapsed_s: float = 0.0
    proves: str = ""
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def encode_replay(scenario: str, policy: str, choices: list[int]) -> str:
    raw = json.dumps({"s": scenario, "p": policy, "c": choices}, separators=(",", ":")).encode()
    return "bpfmem1:" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode_replay(text: str) -> tuple[str, str, list[int]]:
    if not text.startswith("bpfmem1:"):
        raise ValueError("a replay string starts with 'bpfmem1:'")
    body = text[8:]
    try:
        d = json.loads(zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
        return str(d["s"]), str(d["p"]), [int(x) for x in d["c"]]
    except (ValueError, KeyError, zlib.error) as e:
        raise ValueError(f"not a valid replay string: {e}") from None


def run_once(sc: Scenario, policy: str, sched: Any, max_steps: int = 200) -> RunResult:
    run = Run(sc.ncpus, sched, sc.accepted, max_steps)
    sc.setup(run, policy)
    res = run.execute()
    check = FINAL_CHECKS.get(sc.name)
    if check is not None:
        check(run)
        res.violations = list(run.checker.violations)
    return res


def replay(text: str) -> tuple[str, str, RunResult]:
    scenario, policy, choices = decode_replay(text)
    sc = SCENARIOS[scenario]
    return scenario, policy, run_once(sc, policy, ReplayScheduler(Schedule(0, choices)))


def _finding(scenario: str, policy: str, index: int, res: RunResult) -> Finding:
    return Finding(index, [asdict(v) for v in res.violations], res.steps, encode_replay(scenario, policy, res.choices))


def _bad(res: RunResult, want: str) -> bool:
    """Does this run stop the exploration? ``want``: 'unaccepted' (default) or 'any'."""
    if want == "any":
        return bool(res.violations)
    return any(not v.accepted for v in res.violations)


def _explore_indices(scenario: str, policy: str, strategy: str, indices: list[int], seed: int, depth: int,
                     stop: str, keep_all: bool) -> list[tuple[int, list[str], bool, Finding | None]]:
    """Per schedule run: (index, violation kinds, stops the exploration, finding or None)."""
    sc = SCENARIOS[scenario]
    out: list[tuple[int, list[str], bool, Finding | None]] = []
    have_finding = False
    for i in indices:
        sched: Any = RandomScheduler(seed + i) if strategy == "random" else PctScheduler(seed + i, depth)
        res = run_once(sc, policy, sched)
        bad = _bad(res, stop)
        keep = res.violations and (keep_all or not have_finding or bad)
        out.append((i, [v.kind for v in res.violations], bad,
                    _finding(scenario, policy, i, res) if keep else None))
        have_finding = have_finding or bool(keep)
        if bad and not keep_all:
            break
    return out


def _dfs(scenario: str, policy: str, bound: int, limit: int, stop: str, keep_all: bool,
         first_choice: int | None = None) -> tuple[int, dict[str, int], list[Finding], int, bool]:
    sc = SCENARIOS[scenario]
    kinds: dict[str, int] = {}
    findings: list[Finding] = []
    unaccepted = 0
    prefix: list[int] = [first_choice] if first_choice is not None else []
    count = 0
    while count < limit:
        s = DfsScheduler(prefix)
        res = run_once(sc, policy, s)
        count += 1
        for v in res.violations:
            kinds[v.kind] = kinds.get(v.kind, 0) + 1
        if any(not v.accepted for v in res.violations):
            unaccepted += 1
        if res.violations and (keep_all or not findings):
            findings.append(_finding(scenario, policy, count - 1, res))
        if not keep_all and _bad(res, stop):
            return count, kinds, findings, unaccepted, False
        trace = s.trace
        nxt = None
        for pos in range(len(trace) - 1, -1 if first_choice is None else 0, -1):
            c, n = trace[pos]
            deviations = sum(1 for cc, _ in trace[:pos] if cc) + 1
            if c + 1 < n and deviations <= bound:
                nxt = [cc for cc, _ in trace[:pos]] + [c + 1]
                break
        if nxt is None:
            return count, kinds, findings, unaccepted, True
        prefix = nxt
    return count, kinds, findings, unaccepted, False


def _job(args: tuple[Any, ...]) -> Any:
    kind = args[0]
    if kind == "dfs":
        return _dfs(*args[1:])
    return _explore_indices(*args[1:])


def explore(scenario: str, policy: str, strategy: str = "random", schedules: int = 1000, *, seed: int = 0,
            depth: int = 3, bound: int = 3, jobs: int = 1, stop: str = "unaccepted",
            keep_all: bool = False) -> ExploreResult:
    """Run up to ``schedules`` schedules; stop at the first run with an unaccepted violation (or any
    violation with ``stop='any'``) unless ``keep_all``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    t0 = time.perf_counter()
    exhausted = False
    if strategy == "dfs":
        if jobs > 1:
            n0 = DfsScheduler([])
            run_once(SCENARIOS[scenario], policy, n0)
            width = n0.trace[0][1] if n0.trace else 1
            parts = _pool([("dfs", scenario, policy, bound, schedules, stop, keep_all, c) for c in range(width)], jobs)
            count, kinds, findings, unacc, exhausted = _merge_dfs(parts, keep_all)
        else:
            count, kinds, findings, unacc, exhausted = _dfs(scenario, policy, bound, schedules, stop, keep_all)
        proves = (f"exhaustive over schedules with at most {bound} deviations from the default order"
                  if exhausted else f"partial: stopped after {count} schedules")
    else:
        idx = list(range(schedules))
        if jobs > 1:
            parts = _pool([("idx", scenario, policy, strategy, idx[j::jobs], seed, depth, stop, keep_all)
                           for j in range(jobs)], jobs)
            per = sorted((r for part in parts for r in part), key=lambda r: r[0])
        else:
            per = _explore_indices(scenario, policy, strategy, idx, seed, depth, stop, keep_all)
        count, kinds, findings, unacc = _merge_idx(per, keep_all, SCENARIOS[scenario].accepted)
        proves = ("nothing beyond the schedules run (random)" if strategy == "random" else
                  f"probabilistic: a depth-{depth} bug is found with probability >= 1/(n*k^{depth - 1}) per schedule")
    first = min(findings, key=lambda f: f.schedule) if findings else None
    return ExploreResult(scenario, policy, strategy, count, unacc, dict(sorted(kinds.items())), first, exhausted,
                         round(time.perf_counter() - t0, 3), proves, sorted(findings, key=lambda f: f.schedule)
                         if keep_all else [])


def _pool(tasks: list[tuple[Any, ...]], jobs: int) -> list[Any]:
    import multiprocessing as mp
    with mp.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
        return pool.map(_job, tasks)


def _merge_idx(per: list[tuple[int, list[str], bool, Finding | None]], keep_all: bool,
               accepted: dict[str, bool]) -> tuple[int, dict[str, int], list[Finding], int]:
    """What one job in index order reports: everything up to (and including) the first stopping run."""
    if not keep_all:
        stops = [r[0] for r in per if r[2]]
        if stops:
            per = [r for r in per if r[0] <= stops[0]]
    kinds: dict[str, int] = {}
    for _i, ks, _b, _f in per:
        for k in ks:
            kinds[k] = kinds.get(k, 0) + 1
    findings = [f for *_x, f in per if f is not None]
    if not keep_all and findings:
        findings = [min(findings, key=lambda f: (not any(not v["accepted"] for v in f.violations), f.schedule))]
    unacc = sum(1 for _i, ks, _b, _f in per if any(not accepted.get(k, False) for k in ks))
    return len(per), kinds, findings, unacc


def _merge_dfs(parts: list[Any], keep_all: bool) -> tuple[int, dict[str, int], list[Finding], int, bool]:
    kinds: dict[str, int] = {}
    count = 0
    findings: list[Finding] = []
    unacc = 0
    exhausted = True
    for p in parts:                    # subtrees in the order one job visits them
        count += p[0]
        unacc += p[3]
        exhausted = exhausted and p[4]
        for k, v in p[1].items():
            kinds[k] = kinds.get(k, 0) + v
        findings.extend(p[2])
        if not keep_all and p[3]:
            exhausted = False
            break
    return count, kinds, findings, unacc, exhausted
