"""Schedule exploration: verdicts per scenario and policy, planted bugs that need the scheduler, strategies
that keep their promises (PCT, DFS, jobs), exact and checked replay, and the granularity of a step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bpfmem.cli import main
from bpfmem.explore import explore as explore_mod
from bpfmem.explore.explore import decode_replay, encode_replay, explore, replay, run_once
from bpfmem.explore.runtime import Env, Run, Thread
from bpfmem.explore.scenarios import SCENARIOS, WHATIF_POLICIES, Scenario
from bpfmem.explore.strategies import DfsScheduler, RandomWalkScheduler, ReplayDivergence

CASES = [(s, p) for s in SCENARIOS for p in SCENARIOS[s].policies if p not in WHATIF_POLICIES]
# whatif's proposals (free+drain, free+hotplug, free+shrinker, free+memcg_owner) promise free's verdict on
# htab_reuse, qp_trie, cpumask_aba and nmi_reentrancy: checked the same way, with the slow tests
WHATIF_CASES = [(s, p) for s in SCENARIOS for p in SCENARIOS[s].policies if p in WHATIF_POLICIES]
E = frozenset


def _kinds(r: Any) -> set[str]:
    return set(r.found_kinds)


@pytest.mark.parametrize("scenario,policy", CASES + [pytest.param(*c, marks=pytest.mark.slow) for c in WHATIF_CASES])
def test_expected_verdict(scenario: str, policy: str) -> None:
    """Kinds the scenario must show under the policy are found by random walks and by DFS within 2
    deviations; 'none' means no run the kernel would call a bug in either (a claim about those runs)."""
    sc = SCENARIOS[scenario]
    want = sc.expect[policy]
    for r in (explore(scenario, policy, "random", 1500, keep_all=True),
              explore(scenario, policy, "dfs", 100_000, bound=2, keep_all=True)):
        assert want <= _kinds(r), (r.strategy, r.found_kinds, want)
        if not want:
            assert r.unaccepted == 0, (r.strategy, r.found_kinds)
        if policy != "bug_free_rcu_no_gp":
            assert {k for k in r.found_kinds if not sc.accepted.get(k)} <= want, (r.strategy, r.found_kinds)


# budgets within which each strategy must find each planted bug (measured: random <= 110, pct <= 50,
# dfs <= 1,200 schedules at bound 3); the sequential schedule never shows it
PLANTED_BUDGET = {"random": 2000, "pct": 2000}


@pytest.mark.parametrize("scenario", [pytest.param(s, marks=pytest.mark.slow) if s.startswith("htab_churn") else s
                                      for s in SCENARIOS])
def test_planted_bug_needs_the_scheduler_and_every_strategy_finds_it(scenario: str) -> None:
    sc = SCENARIOS[scenario]
    seq = explore(scenario, sc.planted_policy, "dfs", 10, bound=0, planted=True)
    assert seq.schedules == 1 and seq.exhausted and seq.unaccepted == 0, seq.found_kinds
    for strategy, budget in PLANTED_BUDGET.items():
        r = explore(scenario, sc.planted_policy, strategy, budget, planted=True)
        assert r.first is not None, strategy
        assert sc.planted_expect & {v["kind"] for v in r.first.violations}, (strategy, r.first.violations)
    d = explore(scenario, sc.planted_policy, "dfs", 200_000, bound=3, planted=True)
    assert d.first is not None and sc.planted_expect & {v["kind"] for v in d.first.violations}
    # the same scenario without the planted bug: nothing unaccepted within the same DFS bound
    clean = explore(scenario, sc.planted_policy, "dfs", 200_000, bound=3, keep_all=True)
    assert clean.exhausted
    assert not (sc.planted_expect & _kinds(clean)), clean.found_kinds


@pytest.mark.parametrize("policies", [("free",), pytest.param(("free_rcu", "call_rcu_free"), marks=pytest.mark.slow)])
def test_the_seed_question_two_version_qp_trie(policies: tuple[str, ...]) -> None:
    """Hou Tao's two-version scheme (with its barriers) has no wrong result within 3 deviations under immediate
    reuse; without the writer's smp_wmb it does (the version check passes on a reused node)."""
    for policy in policies:
        r = explore("qp_trie_versions", policy, "dfs", 1_000_000, bound=3, keep_all=True)
        assert r.exhausted and r.unaccepted == 0 and "wrong_result" not in r.found_kinds, (policy, r.found_kinds)
    v = explore("qp_trie_versions", "free", "dfs", 1_000_000, bound=3, keep_all=True)
    assert v.found_kinds.get("reused_read", 0) > 0          # it does read reused nodes, and its check catches them
    bad = explore("qp_trie_versions", "free", "dfs", 1_000_000, bound=3, planted=True)
    assert bad.first is not None
    steps = "\n".join(bad.first.steps)
    assert "wrong_result" in steps and "reached the leaf of" in steps
    plain = explore("qp_trie", "free", "dfs", 1_000_000, bound=2)
    assert plain.first is not None and any(x["kind"] == "wrong_result" for x in plain.first.violations)


def test_uaf_for_a_reader_outside_rcu_and_none_inside() -> None:
    """The trip to slab: an RCU reader and a sleepable reader are safe over every schedule within 3
    deviations; reading after rcu_read_unlock() hits memory back in slab."""
    for scenario in ("slab_trim_rcu", "slab_trim_sleepable"):
        for policy in SCENARIOS[scenario].policies:
            r = explore(scenario, policy, "dfs", 1_000_000, bound=3, keep_all=True)
            assert r.exhausted and "uaf" not in r.found_kinds, (scenario, policy, r.found_kinds)
    bad = explore("slab_trim_rcu", "free", "dfs", 1_000_000, bound=3, planted=True)
    assert bad.first is not None and bad.first.violations[0]["kind"] == "uaf"
    assert any("rcu_read_unlock" in s for s in bad.first.steps)


def test_the_slab_path_is_reached() -> None:
    """Small watermarks and a forced trim: free_bulk runs, objects go back to slab (kfree) in the shipped
    scenarios, and free_bulk's labelled point is a scheduling point."""
    sc = SCENARIOS["slab_trim_rcu"]
    kfrees = 0
    after_pop = 0
    for seed in range(200):
        res = run_once(sc, "free", False, RandomWalkScheduler(seed))
        after_pop += sum(1 for lb in res.labels if lb.endswith("@free_bulk:after_pop"))
        run = Run(sc.ncpus, RandomWalkScheduler(seed), sc.accepted)
        sc.setup(run, "free", False)
        run.execute()
        kfrees += run.mm.slab.kfree_calls
    assert kfrees > 0 and after_pop > 0


def test_allocator_points_are_scheduling_points_without_nmis() -> None:
    """In a 2-CPU scenario with no NMI program, another CPU can run at the allocator's labelled points."""
    points: set[str] = set()
    for seed in range(300):
        res = run_once(SCENARIOS["htab_reuse"], "free_rcu", False, RandomWalkScheduler(seed))
        points |= {lb.split("@", 1)[1] for lb in res.labels if lb.startswith("next:") and "@" in lb}
    assert {"unit_alloc:irqs_off", "unit_alloc:active", "htab_update:locked", "htab_delete:locked",
            "htab_lookup", "unit_free_rcu:active"} <= points, points


def test_each_access_is_a_step() -> None:
    """DFS with one preemption can switch CPUs before every load and store of the first program."""
    sc = SCENARIOS["qp_trie"]
    res = run_once(sc, "free_rcu", False, DfsScheduler([]))
    first = [e for e in res.raw_steps if not isinstance(e, str) and e[0].name == "lookup"]
    switch_points = sum(1 for lb in res.labels if lb.startswith("next:lookup,"))
    assert len(first) >= 4 and switch_points >= len(first) - 1


def test_cpumask_release_frees_only_at_refcount_zero() -> None:
    for policy in SCENARIOS["cpumask_aba"].policies:
        for seed in range(100):
            res = run_once(SCENARIOS["cpumask_aba"], policy, False, RandomWalkScheduler(seed))
            steps = res.steps
            for i, s in enumerate(steps):
                if ("bpf_mem_cache_free" in s or "call_rcu(" in s) and "rcu callback" not in s:
                    who = s.split(":")[0]
                    prev = [x for x in steps[:i] if x.startswith(who) and "refcount_dec_and_test" in x]
                    assert prev and prev[-1].endswith("1 -> 0"), (policy, seed, steps[:i + 1])


def test_refcount_inc_not_zero_is_one_atomic_step() -> None:
    """Never "acquired a dead object" with the kernel's atomic RMW; the planted load+store split does."""
    ok = explore("cpumask_aba", "free_rcu", "dfs", 1_000_000, bound=3, keep_all=True)
    assert ok.exhausted and "last_ref" not in ok.found_kinds
    res = run_once(SCENARIOS["cpumask_aba"], "free", False, DfsScheduler([]))
    assert sum("refcount_inc_not_zero" in s for s in res.steps) == 1


def test_nmi_programs_are_rcu_readers() -> None:
    seen: list[Any] = []

    def setup(run: Run, policy: str, planted: bool) -> None:
        from bpfmem.explore.scenarios import new_ma
        ma = new_ma(run, policy)

        def task(env: Env, t: Thread) -> None:
            a = env.bpf_mem_cache_alloc(t, ma)
            if a is not None:
                env.bpf_mem_cache_free(t, ma, a)

        def nmi(env: Env, t: Thread) -> None:
            seen.append(t.reader)
        run.spawn("task", 0, task)
        run.nmi("nmi", 0, nmi)
    sc = Scenario("t", "", 1, setup, {}, {"free": E()}, "", "free", E(), final=None)
    for seed in range(50):
        run_once(sc, "free", False, RandomWalkScheduler(seed))
    assert seen and all(tok is not None for tok in seen)


def test_replay_is_exact_and_checked() -> None:
    r = explore("cpumask_aba", "free", "random", 2000)
    assert r.first is not None
    scenario, policy, planted, res = replay(r.first.replay)
    assert (scenario, policy, planted) == ("cpumask_aba", "free", False)
    assert res.steps == r.first.steps
    assert [v.kind for v in res.violations] == [v["kind"] for v in r.first.violations]
    s, p, x, c, n, h = decode_replay(r.first.replay)
    assert len(c) == len(n) and h is not None
    # another choice, extra choices, missing choices, other questions: each fails loudly
    changed = list(c)
    i = next(j for j, opts in enumerate(n) if opts > 1 and c[j] == 0)
    changed[i] = 1
    with pytest.raises(ReplayDivergence):
        replay(encode_replay(s, p, changed, x, n, [""]))
    with pytest.raises(ReplayDivergence):
        replay(encode_replay(s, p, c + [0], x, n + [2]))
    with pytest.raises(ReplayDivergence):
        replay(encode_replay(s, p, c[:-1], x, n[:-1]))
    with pytest.raises(ReplayDivergence):
        replay(encode_replay(s, p, c, x, [k + 1 for k in n]))
    with pytest.raises(ValueError):
        decode_replay("bpfmem2:not-base64!!")
    with pytest.raises(ValueError, match="explore again"):
        decode_replay("bpfmem1:abc")


def test_every_choice_goes_through_the_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    """With grace periods of variable length, their lengths are recorded choices and replay exactly."""
    from bpfmem.explore import runtime
    from bpfmem.rcu import GpModel
    monkeypatch.setattr(runtime, "EXPLORE_RCU", GpModel(gp_min_ns=1_000_000, gp_max_ns=3_000_000))
    for seed in range(40):
        r = explore("htab_reuse", "free_rcu", "random", 1, seed=seed, stop="any", keep_all=True)
        res = run_once(SCENARIOS["htab_reuse"], "free_rcu", False, RandomWalkScheduler(seed))
        if any(lb.startswith("rcu:gp_len") for lb in res.labels):
            text = encode_replay("htab_reuse", "free_rcu", res.choices, False, res.options, res.labels)
            assert replay(text)[3].steps == res.steps
            assert r.schedules == 1
            return
    raise AssertionError("no run chose a grace-period length")


@pytest.mark.parametrize("strategy", ["random", "pct", "dfs"])
def test_jobs_give_exactly_the_one_job_result(strategy: str) -> None:
    bounds = (0, 1, 2) if strategy == "dfs" else (3,)
    for bound in bounds:
        for limit in (5, 40, 400):
            for stop in ("unaccepted", "any"):
                for keep_all in (False, True):
                    kw = dict(bound=bound, stop=stop, keep_all=keep_all)
                    one = explore("qp_trie", "free", strategy, limit, jobs=1, **kw)  # type: ignore[arg-type]
                    two = explore("qp_trie", "free", strategy, limit, jobs=3, **kw)  # type: ignore[arg-type]
                    a = (one.schedules, one.found_kinds, one.unaccepted, one.exhausted, one.stopped,
                         one.first and (one.first.schedule, one.first.replay),
                         [(f.schedule, f.replay) for f in one.findings])
                    b = (two.schedules, two.found_kinds, two.unaccepted, two.exhausted, two.stopped,
                         two.first and (two.first.schedule, two.first.replay),
                         [(f.schedule, f.replay) for f in two.findings])
                    assert a == b, (bound, limit, stop, keep_all)


def test_dfs_reports_the_run_that_stopped_the_search() -> None:
    """An accepted-only run comes first in DFS order; the reported run is the one with the bug."""
    r = explore("qp_trie_versions", "free", "dfs", 100_000, bound=3, planted=True)
    assert r.stopped and r.first is not None
    assert any(not v["accepted"] for v in r.first.violations)
    every = explore("qp_trie_versions", "free", "dfs", r.schedules, bound=3, keep_all=True, planted=True)
    assert every.findings[0].schedule < r.first.schedule      # an earlier run had only accepted kinds
    assert all(v["accepted"] for v in every.findings[0].violations)
    assert replay(r.first.replay)[3].steps == r.first.steps


def test_pct_measures_k_and_time_never_starves_programs() -> None:
    """PCT's k is the scenario's own step count; 300 PCT schedules per scenario end without a livelock."""
    for scenario, sc in SCENARIOS.items():
        policy = "free_rcu" if "free_rcu" in sc.policies else sc.policies[0]
        r = explore(scenario, policy, "pct", 300, keep_all=True)
        assert "livelock" not in r.found_kinds, scenario
        longest = max(run_once(sc, policy, False, RandomWalkScheduler(s)).sched_steps for s in range(5))
        assert r.pct_k is not None and r.pct_k >= 4 and "k = " in r.proves
        assert r.pct_k >= min(longest, r.pct_k)


def test_the_step_limit_reports_a_livelock(monkeypatch: pytest.MonkeyPatch) -> None:
    def setup(run: Run, policy: str, planted: bool) -> None:
        x = run.env.static("flag")

        def spin(env: Env, t: Thread) -> None:
            while not env.READ_ONCE(t, x, "go"):                 # nobody ever sets it
                pass
        run.spawn("spinner", 0, spin)
        run.spawn("other", 1, lambda env, t: env.READ_ONCE(t, x, "go"))
    sc = Scenario("spin", "", 2, setup, {}, {"free": E()}, "", "free", E(), final=None)
    monkeypatch.setitem(explore_mod.SCENARIOS, "spin", sc)
    r = explore("spin", "free", "random", 3, max_steps=500)
    assert r.first is not None and r.first.violations[0]["kind"] == "livelock" and not r.first.violations[0]["accepted"]


def test_cli_explore_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "cpumask_aba", "--policy", "free", "--json"]) == 1      # a bug: exit 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["first"] and doc["unaccepted"] == 1 and doc["stopped"]
    assert main(["replay", doc["first"]["replay"], "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["steps"] == doc["first"]["steps"]
    assert main(["explore", "qp_trie_versions", "--planted", "--strategy", "pct", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["planted"] is True
    assert main(["explore", "qp_trie_versions", "--policy", "free_rcu", "--schedules", "50"]) == 0
    assert "no violation found" in capsys.readouterr().out
    assert main(["explore", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in rows} == set(SCENARIOS) and all(r["planted"]["bug"] for r in rows)
    assert main(["explore", "nope"]) == 2
    assert main(["explore", "htab_reuse", "--policy", "call_rcu_free"]) == 2
    assert main(["replay", "garbage"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "call_rcu_free" in err[1], err
    assert main(["explore", "slab_trim_rcu", "--planted", "--strategy", "dfs"]) == 1
    out = capsys.readouterr().out
    assert "uaf" in out and "replay: bpfmem replay bpfmem2:" in out


@pytest.mark.slow
@pytest.mark.parametrize("proposal", ["drain", "hotplug", "shrinker", "memcg_owner"])
@pytest.mark.parametrize("scenario", ["htab_reuse", "qp_trie", "cpumask_aba", "nmi_reentrancy"])
def test_whatif_proposals_add_no_violation_kind_to_free(scenario: str, proposal: str) -> None:
    """whatif's proposals send objects to slab only through the tasks-trace grace period: under random schedules
    with the proposal acting inside them, each finds no kind that plain ``free`` does not (no uaf, no
    reuse_before_gp); test_expected_verdict checks that the kinds ``free`` must show are still found."""
    from bpfmem.explore.explore import run_once
    from bpfmem.explore.strategies import RandomWalkScheduler
    from bpfmem.explore import scenarios as scn
    sc = SCENARIOS[scenario]
    policy = f"free+{proposal}"
    found: set[str] = set()
    scn.DRAINS.clear()
    for seed in range(400):
        res = run_once(sc, policy, False, RandomWalkScheduler(seed))
        found |= {v.kind for v in res.violations}
    acted = sum(sum(v for v in d.cost().values() if isinstance(v, int)) for d in scn.DRAINS)
    if proposal == "memcg_owner" or (proposal == "hotplug" and sc.ncpus == 1):
        assert acted == 0          # nothing to act: charging only; the last online CPU cannot go down
    else:
        assert acted > 0           # the proposal acted inside the schedules
    assert not found & {"uaf", "reuse_before_gp", "invariant", "livelock", "double_free", "leak"}, found
    assert found <= set(sc.expect["free"]) | {k for k, ok in sc.accepted.items() if ok}, found


@pytest.mark.parametrize("proposal", ["hotplug", "shrinker"])
def test_whatif_proposal_verdict_on_htab_reuse(proposal: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI runs a proposal's explorer policy and checks it against free's verdict (exit 0: as promised)."""
    assert main(["explore", "htab_reuse", "--policy", f"free+{proposal}", "--schedules", "150", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["policy"] == f"free+{proposal}"
