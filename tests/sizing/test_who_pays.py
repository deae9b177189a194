"""bpfmem memcg: who pays per release, and what happens at the limit (modelled)."""

from __future__ import annotations

import json

import pytest

from bpfmem.cli import main
from bpfmem.sizing.who_pays import CHARGE_RULES, DEFAULT, Scenario, Update, htab_cost_5_10, who_pays


def _rule(out: dict, name: str) -> dict:
    return next(r for r in out["rules"] if r["rule"] == name)


def test_daniels_case_per_release() -> None:
    """A hook in /orch/app updates the agent's map: only the unmerged v7/v8 rule charges the container;
    5.11-5.19 force the charge past the agent's limit (GFP_ATOMIC); 6.0+ fail with ENOMEM."""
    out = who_pays(DEFAULT, list(CHARGE_RULES))
    rfc, v511, v60, v618 = (_rule(out, n) for n in ("rfc-v8", "v5.11", "v6.0", "v6.18"))
    assert rfc["updates"][0]["charged_to"] == "/orch/app" and rfc["updates"][1]["charged_to"] == "/monitor"
    assert rfc["cgroups"]["/orch/app"]["usage_bytes"] > 4 << 20          # forced past the container's limit
    for r in (v511, v60, v618):
        assert {u["charged_to"] for u in r["updates"]} == {"/monitor"}
        assert r["cgroups"]["/orch/app"]["usage_bytes"] == 0
    assert v511["cgroups"]["/monitor"]["usage_bytes"] > 8 << 20 and all(u["failed"] == 0 for u in v511["updates"])
    for r in (v60, v618):
        assert r["cgroups"]["/monitor"]["usage_bytes"] <= 8 << 20
        assert r["updates"][1]["failed"] > 0 and r["updates"][0]["failed"] == 0
        assert any("OOM kill: a process in /monitor" in o for o in r["outcomes"])
    assert _rule(out, "v5.10")["memlock"]["create"].startswith("EPERM")


def test_memlock_of_5_10_and_its_two_defaults() -> None:
    small = Scenario({"/a": None}, "/a", [Update("softirq", 10)], value_size=8, max_entries=256)
    r = _rule(who_pays(small, ["v5.10"]), "v5.10")
    # buckets 256 x 16 + elements 256 x (48 + 8 + 8) + one extra element per CPU (4 x 64) = 20736 -> pages
    assert r["memlock"]["cost_bytes"] == htab_cost_5_10(4, 8, 256, 4) == 24576
    assert r["memlock"]["create"] == "ok" and r["updates"][0]["charged_to"].startswith("nobody")
    mid = Scenario({"/a": None}, "/a", [Update("softirq", 10)], value_size=64, max_entries=20000)
    assert _rule(who_pays(mid, ["v5.10"]), "v5.10")["memlock"]["under_defaults"] == {"64 KiB": "EPERM",
                                                                                       "8192 KiB": "ok"}


def test_without_a_limit_nothing_limits_the_map() -> None:
    sc = Scenario({"/a": None, "/b": None}, "/a", [Update("process", 1000, "/b")])
    r = _rule(who_pays(sc, ["v6.18"]), "v6.18")
    assert any("nothing limits this map" in o for o in r["outcomes"])


def test_a_parent_limit_refuses_a_child_cgroup_charge() -> None:
    sc = Scenario({"/p": 2 << 20, "/p/agent": None}, "/p/agent", [Update("softirq", 40_000)], max_entries=1 << 16)
    r = _rule(who_pays(sc, ["v6.18"]), "v6.18")
    assert r["updates"][0]["failed"] > 0 and r["cgroups"]["/p"]["at_limit"]
    assert any("OOM kill: a process in /p/agent" in o for o in r["outcomes"])


@pytest.mark.parametrize("text", ["irq=5", "process=5", "softirq:/a=5", "hook:/a", "nmi=0"])
def test_bad_update_specs(text: str) -> None:
    with pytest.raises(ValueError):
        Update.parse(text)


@pytest.mark.parametrize("args,option", [
    (["--kernel", "v4.19"], "--kernel"), (["--cgroup", "/a=lots", "--map-in", "/a", "--update", "nmi=1"], "--cgroup"),
    (["--cgroup", "/a", "--update", "nmi=1"], "--map-in"), (["--cgroup", "/a", "--map-in", "/a"], "--update"),
    (["--cgroup", "/a", "--map-in", "/b", "--update", "nmi=1"], "--map-in"),
    (["--cgroup", "/a", "--map-in", "/a", "--update", "irq=1"], "--update"),
])
def test_bad_input_exits_2_naming_the_option(args: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memcg", *args]) == 2
    err = capsys.readouterr().err
    assert option in err and len(err.strip().splitlines()) == 1, err


def test_json_and_terminal_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memcg", "--kernel", "v6.18,rfc-v8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["rule"] for r in d["rules"]] == ["v6.18", "rfc-v8"] and d["builtin_example"] and d["modelled"]
    assert main(["memcg", "--kernel", "v6.0"]) == 0
    text = capsys.readouterr().out
    assert "built-in example" in text and "ENOMEM" in text and "modelled" in text
