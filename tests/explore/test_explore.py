"""Schedule exploration: each scenario's verdict per policy, the planted bug, exact replay, jobs, DFS."""

from __future__ import annotations

import json

import pytest

from bpfmem.cli import main
from bpfmem.explore.explore import decode_replay, encode_replay, explore, replay
from bpfmem.explore.scenarios import POLICIES, SCENARIOS

CASES = [(s, p) for s in SCENARIOS for p in POLICIES]


@pytest.mark.parametrize("scenario,policy", CASES)
def test_expected_verdict(scenario: str, policy: str) -> None:
    """Kinds the scenario must show under the policy are found; 'none' means no bug in 1,500 random
    schedules (the claim is about those schedules only)."""
    r = explore(scenario, policy, "random", 1500, keep_all=True)
    want = SCENARIOS[scenario].expect[policy]
    assert want <= set(r.found_kinds), (r.found_kinds, want)
    if not want:
        assert r.unaccepted == 0, r.found_kinds                    # nothing the kernel would call a bug
    if policy == "free_rcu" and scenario != "nmi_reentrancy":
        assert not r.found_kinds, r.found_kinds                    # readers in RCU sections never see reuse


def test_the_planted_bug_is_found_and_stops_the_search() -> None:
    """bpf_mem_cache_free_rcu that skips the grace period: found by random, PCT and DFS."""
    for strategy in ("random", "pct", "dfs"):
        r = explore("htab_reuse", "bug_free_rcu_no_gp", strategy, 5000)
        assert r.first is not None and r.unaccepted == 1, strategy
        assert any(v["kind"] == "reuse_before_gp" and not v["accepted"] for v in r.first.violations)


def test_replay_is_exact() -> None:
    r = explore("cpumask_aba", "free", "random", 2000)
    assert r.first is not None
    scenario, policy, res = replay(r.first.replay)
    assert (scenario, policy) == ("cpumask_aba", "free")
    assert res.steps == r.first.steps
    assert [v.kind for v in res.violations] == [v["kind"] for v in r.first.violations]
    s, p, c = decode_replay(encode_replay("x", "y", [1, 0, 2]))
    assert (s, p, c) == ("x", "y", [1, 0, 2])
    with pytest.raises(ValueError):
        decode_replay("bpfmem1:not-base64!!")


@pytest.mark.parametrize("strategy", ["random", "pct", "dfs"])
def test_jobs_give_the_same_result_as_one_job(strategy: str) -> None:
    for keep_all in (False, True):
        one = explore("qp_trie", "free", strategy, 600, jobs=1, keep_all=keep_all)
        two = explore("qp_trie", "free", strategy, 600, jobs=2, keep_all=keep_all)
        assert (one.schedules, one.found_kinds, one.unaccepted) == (two.schedules, two.found_kinds, two.unaccepted)
        assert (one.first and one.first.replay) == (two.first and two.first.replay)


def test_dfs_is_exhaustive_within_its_bound() -> None:
    """The version-number qp-trie: no wrong result in every schedule with up to 3 deviations, and the
    plain one has a counterexample within the same bound."""
    v = explore("qp_trie_versions", "free", "dfs", 200_000, bound=3, keep_all=True)
    assert v.exhausted and v.unaccepted == 0 and "wrong_result" not in v.found_kinds
    assert "reused_read" in v.found_kinds          # it does read reused nodes, and its check catches them
    p = explore("qp_trie", "free", "dfs", 200_000, bound=3)
    assert p.first is not None and any(x["kind"] == "wrong_result" for x in p.first.violations)


def test_cli_explore_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "cpumask_aba", "--policy", "free", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["first"] and doc["unaccepted"] == 1
    assert main(["replay", doc["first"]["replay"], "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["steps"] == doc["first"]["steps"]
    assert main(["explore", "--list", "--json"]) == 0
    assert {s["name"] for s in json.loads(capsys.readouterr().out)} == set(SCENARIOS)
    assert main(["explore", "nope"]) == 2
    assert main(["replay", "garbage"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_interrupts_can_arrive_at_the_labelled_points_of_the_kernel_paths() -> None:
    """An NMI program can run at each labelled point; the lists stay consistent wherever it lands."""
    from bpfmem.explore.runtime import Run
    from bpfmem.explore.scenarios import setup_htab
    from bpfmem.sim import RandomScheduler
    seen: set[str] = set()
    for seed in range(300):
        run = Run(2, RandomScheduler(seed), {})
        setup_htab(run, "free_rcu")
        for cpu in run.m.cpus:
            def hook(c, label, inner=cpu.point_hook):  # type: ignore[no-untyped-def]
                seen.add(label)
                if inner is not None:
                    inner(c, label)
            cpu.point_hook = hook
        run.execute()
    want = {"unit_alloc:irqs_off", "unit_alloc:active", "unit_free_rcu:active", "htab_update:locked",
            "htab_delete:locked", "htab_lookup"}
    assert want <= seen, want - seen
    r = explore("nmi_reentrancy", "free", "random", 3000, keep_all=True)
    assert r.unaccepted == 0 and "invariant" not in r.found_kinds and "leak" not in r.found_kinds
