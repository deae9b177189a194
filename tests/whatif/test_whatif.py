"""bpfmem whatif: the seed's claims about bpf_global_ma reproduced, and what +drain and +hotplug do about them."""

from __future__ import annotations

import json

import pytest

from bpfmem.cli import main
from bpfmem.whatif import WhatIfConfig, parse_policy, run_whatif

GP_S = 0.25 + 0.06          # lazy tasks-trace batching + a tasks-trace grace period (shipped profile, generous)


def test_objects_freed_on_a_cpu_that_goes_quiet_stay_parked_for_a_minute() -> None:
    """Seed 000: "will not be freed if there is no free operations on this CPU afterwards"."""
    r = run_whatif(WhatIfConfig("quiet", "v6.18"))
    assert r["returned_after_s"] is None
    assert r["parked_at"]["60s"] >= 0.9 * r["peak_bytes"] > 0


def test_drain_returns_them_within_its_period_and_a_grace_period() -> None:
    r = run_whatif(WhatIfConfig("quiet", "v6.18+drain", sample_ms=10))
    assert r["returned_after_s"] is not None and r["returned_after_s"] <= 1.25 + GP_S
    assert r["parked_at"]["60s"] <= 0
    cost = r["proposals"]["drain"]
    assert cost["timer_expiries"] > 0 and cost["drains"] > 0          # its price is reported


def test_an_offline_cpu_strands_its_objects_and_hotplug_returns_them_within_a_grace_period() -> None:
    base = run_whatif(WhatIfConfig("hotplug", "v6.18", sample_ms=10))
    assert base["stranded_on_offline_cpu_bytes"] > 0.5 * base["peak_bytes"] and base["returned_after_s"] is None
    hp = run_whatif(WhatIfConfig("hotplug", "v6.18+hotplug", sample_ms=10))
    offline_s = 0.1 - 0.01                                  # offline at 100 ms, frees at 10 ms
    assert hp["returned_after_s"] is not None and hp["returned_after_s"] <= offline_s + GP_S
    assert hp["stranded_on_offline_cpu_bytes"] == 0
    assert hp["proposals"]["hotplug"]["objects_prefilled_at_online"] > 0


def test_one_seed_one_result() -> None:
    a = run_whatif(WhatIfConfig("quiet", "v6.18+drain+hotplug", quiet_s=3))
    b = run_whatif(WhatIfConfig("quiet", "v6.18+drain+hotplug", quiet_s=3))
    assert a["series"] == b["series"]
    assert 3.0 <= a["series"][-1][0] <= 3.02                 # simulated seconds, as every bench's series


@pytest.mark.parametrize("policy,msg", [("v6.18+share2", r"unknown proposal \+share2"),
                                        ("v6.18+drain+drain", r"\+drain given twice")])
def test_bad_proposals(policy: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_policy(policy)


@pytest.mark.parametrize("args,option", [(["sometimes"], "QUESTION"), (["quiet", "--policy", "v6.18+nope"], "--policy"),
                                         (["quiet", "--policy", "v6.1+drain"], "--policy"),
                                         (["quiet", "--policy", "v6.6+share"], "--policy"),
                                         (["pressure", "--policy", "prealloc+shrinker"], "--policy"),
                                         (["hotplug", "--cpus", "1"], "--cpus")])
def test_bad_input_exits_2(args: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", *args]) == 2
    err = capsys.readouterr().err
    assert option in err and len(err.strip().splitlines()) == 1, err


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "quiet", "--quiet-for", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["config"]["policy"] for r in d["results"]] == ["v6.18", "v6.18+drain"]
    assert all(r["modelled"] for r in d["results"])


def test_share_lowers_the_cross_cpu_peak_and_its_cost_is_reported() -> None:
    from bpfmem.whatif.questions import run_share
    base, share = run_share(8, "v6.18", 0.5), run_share(8, "v6.18+share", 0.5)
    assert share["peak_bytes"] < 0.8 * base["peak_bytes"]
    assert share["cost"]["lock_acquisitions"] > 0 and share["cost"]["added_ns_per_op"] > 0
    assert base["cost"] == {}
    assert abs(share["per_prod_op_k"] - base["per_prod_op_k"]) / base["per_prod_op_k"] < 0.05


def test_under_pressure_a_shrinker_that_must_wait_for_a_grace_period_makes_it_worse() -> None:
    """The allocator's refills are GFP_NOWAIT: no direct reclaim; a background shrinker can only send objects
    through the grace period, which takes reusable objects away: more allocations fail, and it says so."""
    from bpfmem.whatif.questions import run_pressure
    base = run_pressure("v6.18", duration_s=0.5)
    sh = run_pressure("v6.18+shrinker", duration_s=0.5)
    assert base["failures"] > 0 and base["peak_bytes"] <= base["config"]["budget_bytes"]
    assert sh["proposals"]["shrinker"]["scans"] > 0
    assert sh["failures"] > base["failures"]


def test_memcg_owner_makes_the_owner_pay_and_its_limit_apply() -> None:
    from bpfmem.whatif.questions import run_pressure
    r = run_pressure("v6.18+memcg_owner", duration_s=0.5)
    cost = r["proposals"]["memcg_owner"]
    assert cost["owner_usage_bytes"] <= r["config"]["budget_bytes"] and cost["owner_failcnt"] > 0
    assert r["failures"] > 0 and "owner" in r["charged_to"]


def test_bench_obj_before_6_8_keeps_a_few_spares_per_producer() -> None:
    """6.2-6.7: bpf_obj_drop is bpf_mem_free (immediate reuse): memory grows with the producers (spares per
    CPU), not with the rounds."""
    from bpfmem.whatif.obj import run_obj
    one, eight = run_obj(1, rounds=200, policy="v6.7"), run_obj(8, rounds=200, policy="v6.7")
    longer = run_obj(1, rounds=800, policy="v6.7")
    assert 0 < one["memory_bytes"] < eight["memory_bytes"] <= 8 * one["memory_bytes"] + 4096
    assert longer["memory_bytes"] == one["memory_bytes"]


def test_bench_obj_from_6_8_holds_what_waits_for_a_grace_period() -> None:
    """6.8+ (649924b76ab1): bpf_obj_drop is bpf_mem_free_rcu; what a CPU frees waits for an RCU GP before
    reuse, so the faster the rounds the more slab the allocator holds and the more it kmallocs."""
    from bpfmem.whatif.obj import run_obj
    fast = run_obj(1, rounds=2000, policy="v6.18", round_ns=50_000)
    slow = run_obj(1, rounds=2000, policy="v6.18", round_ns=500_000)
    old = run_obj(1, rounds=2000, policy="v6.7", round_ns=50_000)
    assert fast["memory_bytes"] > 4 * slow["memory_bytes"] > 0
    assert fast["memory_bytes"] > 50 * old["memory_bytes"]
    assert fast["kmallocs_per_round"] > old["kmallocs_per_round"]


def test_bench_obj_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "obj", "--policy", "v6.1"]) == 2
    assert "958cf2e273f0" in capsys.readouterr().err
    assert main(["bench", "obj", "--producers", "9"]) == 2
    assert "--producers" in capsys.readouterr().err


def test_drain_timer_stops_when_idle_and_the_refill_irq_work_rearms_it() -> None:
    from bpfmem.alloc import bpf_mem_alloc
    from bpfmem.whatif.proposals import Drain
    from bpfmem.whatif.questions import bpf_obj_drop, global_world
    base, _ = parse_policy("v6.18")
    m, mm, ma = global_world(2, base)
    d = Drain(100.0)
    d.attach(ma)
    boot = mm.slab.live_bytes

    def burst(at_s: float) -> None:
        cpu = m.cpus[0]
        objs = [bpf_mem_alloc(ma, cpu, 64) for _ in range(500)]
        for o in objs:
            bpf_obj_drop(base, ma, cpu, o)
        m.engine.run(until=int(at_s * 1e9))

    burst(3.0)
    assert mm.slab.live_bytes == boot and d.arms == 1
    expiries = d.timers
    m.engine.run(until=int(6e9))
    assert d.timers == expiries                     # stopped: an idle system is not woken
    burst(9.0)
    assert d.arms == 2 and d.drains >= 2 and mm.slab.live_bytes == boot


@pytest.mark.parametrize("policy", ["v6.2", "v6.6", "v6.7", "v7.0"])
def test_the_seed_claim_holds_on_every_release_with_the_global_allocator(policy: str) -> None:
    r = run_whatif(WhatIfConfig("quiet", policy, quiet_s=5))
    assert r["returned_after_s"] is None and r["parked_at"]["1s"] >= 0.9 * r["peak_bytes"] > 0


@pytest.mark.parametrize("policy,msg", [("v6.2+drain", r"contradicts itself: \+drain"),
                                        ("v6.6+share", r"contradicts itself: \+share"),
                                        ("free_rcu+drain", "is a policy, not a kernel release"),
                                        ("v6.1", "no bpf_global_ma"), ("v9.9+drain", "unknown release")])
def test_proposals_onto_a_release_without_what_they_patch_are_refused(policy: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_policy(policy)


def test_proposals_compose_onto_earlier_releases() -> None:
    r = run_whatif(WhatIfConfig("quiet", "v6.6+drain+hotplug", quiet_s=3, sample_ms=10))
    assert r["returned_after_s"] is not None and r["returned_after_s"] <= 1.25 + GP_S


def test_share_composes_onto_a_release_and_refuses_global_proposals() -> None:
    from bpfmem.whatif.questions import run_share
    r = run_share(8, "v6.8+share", 0.3)
    assert r["cost"]["lock_acquisitions"] > 0
    with pytest.raises(ValueError, match=r"\+drain act on bpf_global_ma"):
        run_share(8, "v6.18+drain", 0.3)


def test_share_honours_cpus_and_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "share", "--cpus", "3"]) == 2
    assert "--cpus" in capsys.readouterr().err


def test_plot_writes_one_figure_per_question(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    out = os.path.join(str(tmp_path), "plots")
    assert main(["whatif", "quiet", "--quiet-for", "2", "--plot", out, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["plots"] == [os.path.join(out, "whatif-quiet.png")]
    with open(d["plots"][0], "rb") as f:
        head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(d["plots"][0]) > 20_000


def test_6_7_percpu_global_allocator_prefill_costs_what_kirill_measured() -> None:
    """6.7-rc1 set up bpf_global_percpu_ma at boot with every size class prefilled on every CPU (41a5db8d8161):
    on a 288-CPU VM per-CPU memory went from 111 MB to 969 MB (Kirill A. Shutemov, lore
    20231109154934.4saimljtqx625l3v@box.shutemov.name); 1fda5bb66ad8 moved the same prefill to the first
    program that uses bpf_percpu_obj_new, charged to its loader; 6.8 prefills one unit size at a time."""
    from bpfmem.whatif.questions import global_world
    base, _ = parse_policy("v6.7")
    _, mm, ma = global_world(288, base, "percpu")
    assert mm.slab.live_bytes / 1e6 == pytest.approx(969 - 111, rel=0.1)
    assert ma.objcg is not None and ma.objcg.usage >= mm.slab.live_bytes        # the loader pays it


@pytest.mark.parametrize("policy", ["v6.7", "v6.8", "v6.18"])
def test_who_pays_for_the_global_allocators(policy: str) -> None:
    """bpf_global_ma (objcg NULL from boot) is charged to nobody on every release, so the published root
    memory.stat cannot see its objects; bpf_global_percpu_ma is charged to the program's loader on 6.7
    (bpf_mem_alloc_init's objcg of current) and to nobody from 6.8 (c39aa3b289e9)."""
    from bpfmem.whatif.obj import run_obj
    obj = run_obj(2, rounds=300, policy=policy)
    assert obj["memory_bytes"] > 0 and obj["charged_bytes"] == 0 and obj["charged_to"].startswith("nobody")
    pc = run_obj(2, rounds=300, policy=policy, kind="percpu")
    assert pc["memory_bytes"] > 0
    if policy == "v6.7":
        assert pc["charged_bytes"] >= pc["memory_bytes"] and "loader" in pc["charged_to"]
    else:
        assert pc["charged_bytes"] == 0


def test_bench_obj_kinds_follow_their_releases() -> None:
    from bpfmem.whatif.obj import run_obj
    with pytest.raises(ValueError, match="predates it"):
        run_obj(1, rounds=10, policy="v6.6", kind="percpu")
    with pytest.raises(ValueError, match="predates it"):
        run_obj(1, rounds=10, policy="v6.2", kind="cpumask")
    with pytest.raises(ValueError, match="--size must be 1..512"):
        run_obj(1, rounds=10, kind="percpu", size=513)
    # bpf_cpumask_release: bpf_mem_free (6.3) reuses at once; call_rcu (6.4-6.5) holds each for a GP
    v63, v64 = run_obj(1, rounds=300, policy="v6.3", kind="cpumask"), run_obj(1, rounds=300, policy="v6.4", kind="cpumask")
    assert v64["memory_bytes"] > 10 * v63["memory_bytes"] > 0 and v63["size"] == 40
    pc = run_obj(1, rounds=300, kind="percpu")
    assert pc["memory_bytes"] > 0 and pc["failed_allocations"] == 0
