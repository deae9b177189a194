"""Every release 6.1 .. 6.19 names the profile that models it; before 6.6 tasks-trace RCU is not lazy."""

from __future__ import annotations

import json

import pytest

from bpfmem.backend.model import ModelBackend
from bpfmem.cli import main
from bpfmem.maps.policies import RELEASES, get_policy


def test_every_release_from_6_1_to_6_19_has_a_profile() -> None:
    assert list(RELEASES) == [f"v6.{n}" for n in range(1, 20)] + ["v7.0"]
    assert {r: get_policy(r).name for r in ("v6.1", "v6.3", "v6.4", "v6.5", "v6.6", "v6.7", "v6.8", "v6.15",
                                            "v6.16", "v6.18", "v7.0")} == \
        {"v6.1": "v6.1", "v6.3": "v6.2", "v6.4": "v6.4", "v6.5": "v6.4", "v6.6": "v6.6", "v6.7": "v6.7",
         "v6.8": "v6.8", "v6.15": "v6.8", "v6.16": "v6.16", "v6.18": "v6.16", "v7.0": "v7.0"}
    with pytest.raises(ValueError, match="v6.1..v6.19"):
        get_policy("v6.20")


def test_tasks_trace_is_lazy_from_6_6_only() -> None:
    lazy = {r: ModelBackend(2, r).rcu.tasks_trace.lazy for r in ("v6.1", "v6.2", "v6.5", "v6.6", "v6.18")}
    assert lazy == {"v6.1": False, "v6.2": False, "v6.5": False, "v6.6": True, "v6.18": True}


def _doc(capsys: pytest.CaptureFixture[str], policy: str) -> dict:
    assert main(["bench", "htab-mem", "--policy", policy, "--use-case", "add_del_on_diff_cpu", "--cpus", "2",
                 "--duration", "0.05", "--idle", "0.05", "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_release_name_runs_its_profile(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _doc(capsys, "v6.18"), _doc(capsys, "v6.6")
    ra, rb = a["results"][0], b["results"][0]
    assert ra.pop("policy") == "v6.18" and rb.pop("policy") == "v6.6"
    assert ra == rb
    assert a["policies"]["v6.18"]["profile"] == "v6.16"
    c = _doc(capsys, "v6.3")["results"][0]
    assert c["series"] != rb["series"]                     # a different profile, different numbers


def test_policies_lists_the_releases_with_their_commits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rel = {r["name"]: r for r in rows if r["kind"] == "release"}
    assert set(rel) == set(RELEASES)
    assert "d119357d0743" in rel["v6.6"]["description"] and rel["v6.6"]["profile"] == "v6.6"


@pytest.mark.parametrize("map_type", ["hash", "percpu_hash"])
def test_memlock_before_6_4_is_the_map_footprint(map_type: str) -> None:
    """6.1-6.3 fdinfo memlock: bpf_map_memory_footprint(), the same whatever the map holds; 6.4+:
    htab_map_mem_usage(), which counts the elements (304849a27b34)."""
    from bpfmem.backend.protocol import Invocation, MapSpec, Op
    spec = MapSpec(map_type, 4, 12, 1000, no_prealloc=True)
    shown = {}
    for policy in ("v6.1", "v6.3", "v6.4", "v6.6"):
        be = ModelBackend(4, policy)
        m = be.map_create(spec)
        empty = be.sample(m).memlock
        be.execute(m, (Invocation(0, (Op("update", tuple(range(500))),)),))
        shown[policy] = (empty, be.sample(m).memlock)
    value = 16 * 4 if map_type == "percpu_hash" else 12          # round_up(12, 8) per possible CPU
    footprint = -(-1000 * ((4 + value + 7) // 8 * 8) // 4096) * 4096
    assert shown["v6.1"] == shown["v6.3"] == (footprint, footprint)
    assert shown["v6.6"][0] < shown["v6.6"][1]                  # 6.4+: grows with the elements
    assert shown["v6.4"] == shown["v6.6"]                       # the 6.2 allocator, 6.4's memlock


def test_6_4_and_6_5_run_the_6_2_allocator_with_only_the_memlock_changed(capsys: pytest.CaptureFixture[str]) -> None:
    """Between 6.2 and 6.5 only fdinfo memlock changed (304849a27b34, 6.4): memory, speed and every list
    are the same; the memlock column is not."""
    a, b = _doc(capsys, "v6.5")["results"][0], _doc(capsys, "v6.3")["results"][0]
    assert a["memlock_bytes"] != b["memlock_bytes"]
    for r in (a, b):
        for k in ("policy", "memlock_bytes"):
            r.pop(k)
    assert a == b


def test_the_7_0_prediction_runs_tasks_trace_on_srcu_fast() -> None:
    from bpfmem.rcu import RCU_DEFAULT
    now, nxt = ModelBackend(2, "v6.18"), ModelBackend(2, "v7.0")
    assert get_policy("v7.0").prediction and not get_policy("v6.18").prediction
    assert now.rcu.tasks_trace.lazy and not nxt.rcu.tasks_trace.lazy
    m = nxt.rcu.tasks_trace.model
    assert m.gp_min_ns >= 2 * RCU_DEFAULT.gp_min_ns and m.gp_max_ns >= 2 * RCU_DEFAULT.gp_max_ns
    assert m.gp_sleep_ns == 0


def test_the_7_0_prediction_releases_parked_memory_sooner_and_says_it_is_a_prediction(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "htab-mem", "--policy", "next", "--use-case", "batch_add_batch_del", "--cpus", "4",
            "--duration", "0.5", "--idle", "0.5", "--value-size", "1024", "--batch", "1000"]
    assert main([*args, "--json", "--quiet"]) == 0
    res = {r["policy"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert set(res) == {"v6.16", "v7.0"}
    # the poke's freed objects wait for the lazy timer (~250 ms) today, for a ~2-RCU-GP grace period on SRCU-fast
    assert res["v6.16"]["poke_release_ms"] > 250 and res["v7.0"]["poke_release_ms"] < 100, \
        (res["v6.16"]["poke_release_ms"], res["v7.0"]["poke_release_ms"])
    # the steady footprint does not move: since 6.6 refills reuse objects still waiting for the GP
    assert res["v7.0"]["steady_bytes"] == pytest.approx(res["v6.16"]["steady_bytes"], rel=0.05)
    assert main([*args, "--quiet"]) == 0
    assert "v7.0 is a prediction" in capsys.readouterr().out


@pytest.mark.parametrize("release,low,prefill,target", [("v6.6", 32, 4, 128), ("v6.7", 32, 4, 128),
                                                        ("v6.8", 1, 1, 128), ("v6.15", 1, 1, 128),
                                                        ("v6.16", 1, 1, 25), ("v6.18", 1, 1, 25)])
def test_each_release_has_its_per_cpu_caches_and_lru_free_target(release: str, low: int, prefill: int,
                                                                   target: int) -> None:
    """0e2ba9f96f9b/5b95e638f134 (6.8): per-CPU caches 1/3/1, prefill 1; d4adf1c9ee77 (6.16): LRU target_free."""
    from bpfmem.backend.protocol import MapSpec
    be = ModelBackend(2, release)
    m = be.map_create(MapSpec("percpu_hash", 4, 8, 100))
    c = m.htab.elems.pcpu_ma.cache[0]
    assert (c.low_watermark, c.free_cnt) == (low, prefill)
    lru = be.map_create(MapSpec("lru_hash", 4, 8, 100))
    assert lru.htab.elems.lru.target_free == target
