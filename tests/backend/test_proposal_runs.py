"""The proposals run by runs of quiet keys (maps/batch.py) exactly as call by call: every number of a bench
run is the same with runs on and off, for every proposal and use case."""

from __future__ import annotations

import pytest

from bpfmem.backend.model import ModelBackend
from bpfmem.bench import run_htab_mem
from bpfmem.maps.policies import GROUPS, get_policy
from bpfmem.workloads import USE_CASES, HtabMemConfig, htab_mem

NS = 1_000_000_000


def _run(policy: str, use_case: str, batching: bool) -> dict:
    wl = htab_mem(HtabMemConfig(use_case, 2, batch=64, max_entries=8192))
    be = ModelBackend(2, policy, breakdown=True)
    be.machine.batching = batching
    res = run_htab_mem(be, wl, policy, duration_ns=NS // 20, idle_ns=NS // 5)
    return vars(res)


@pytest.mark.parametrize("policy", [p for p in GROUPS["proposals"] if p != "delayed_free"])
@pytest.mark.parametrize("use_case", USE_CASES)
def test_runs_change_nothing(policy: str, use_case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = type(get_policy(policy).make_profile())
    calls = [0]
    real = cls.unit_free_run

    def counted(self: object, c: object, objs: list) -> None:
        calls[0] += 1
        real(self, c, objs)  # type: ignore[arg-type]
    monkeypatch.setattr(cls, "unit_free_run", counted)
    on = _run(policy, use_case, True)
    assert calls[0] > 0, "no run was taken: the comparison would be vacuous"
    off = _run(policy, use_case, False)
    assert on == off
    assert on["ops"] > 0


@pytest.mark.parametrize("use_case", USE_CASES)
def test_delayed_free_coalesced_callbacks_match_one_call_rcu_per_element(use_case: str) -> None:
    """Counted objects share one call_rcu queue entry per CPU and run (RcuFlavour.call_coalesced); with
    object identities every element has its own: every number is the same."""
    wl = htab_mem(HtabMemConfig(use_case, 2, batch=64, max_entries=8192))
    out = []
    for identity in (False, True):
        be = ModelBackend(2, "delayed_free", breakdown=True, identity=identity)
        out.append(vars(run_htab_mem(be, wl, "delayed_free", duration_ns=NS // 20, idle_ns=NS // 5)))
        entries = be.rcu.rcu.calls
        assert entries > 0
    assert out[0] == out[1]
    assert out[0]["ops"] > 0
