"""bpfmem size on the model: full charge, memlock, the limit that never refuses, elements at a limit."""

from __future__ import annotations

import json

import pytest
from bpfmem.sizing import SizeQuery, check_limit, fit_model, size_model
from bpfmem.cli import main
from bpfmem.mm import kmalloc_charge


@pytest.mark.parametrize("value", [8, 64, 1024])
def test_full_is_creation_plus_one_charge_per_element_plus_spares(value: int) -> None:
    q = SizeQuery("hash", 4, value, 5000, 2, "v6.18")
    r = size_model(q)
    unit = 48 + 8 + ((value + 7) // 8) * 8 + 8
    extra = r["full_bytes"] - r["create_bytes"] - 5000 * kmalloc_charge(unit)
    assert 0 <= extra <= 96 * kmalloc_charge(unit)          # CPU 0's free list after the last refill
    assert r["memlock_bytes"] < r["full_bytes"]              # fdinfo under-counts what memcg charges
    assert r["min_limit_bytes"] >= r["full_bytes"] + r["spare_bytes_max"]
    assert r["modelled"] is True


def test_parked_bytes_scale_with_the_delete_rate() -> None:
    a = size_model(SizeQuery("hash", 4, 64, 1000, 2, "v6.18", delete_rate=10_000))
    b = size_model(SizeQuery("hash", 4, 64, 1000, 2, "v6.18", delete_rate=20_000))
    assert a["parked_bytes_max"] > 0 and abs(b["parked_bytes_max"] - 2 * a["parked_bytes_max"]) <= 1
    pre = size_model(SizeQuery("hash", 4, 64, 1000, 2, "v6.18", no_prealloc=False, delete_rate=20_000))
    assert pre["parked_bytes_max"] == 0 and pre["spare_bytes_max"] == 0


def test_elements_at_a_limit_fill_it_and_deleted_ones_come_back_at_once() -> None:
    q = SizeQuery("hash", 4, 1024, 100_000, 2, "v6.18", memcg_limit=8 << 20)
    r = fit_model(q)
    create = size_model(SizeQuery("hash", 4, 1024, 100_000, 2, "v6.18"))["create_bytes"]
    per = kmalloc_charge(48 + 8 + 1024 + 8)
    assert r["stopped_by"] == "ENOMEM"
    # CPU 0's 4 prefilled elements are in the creation charge; the last refill (batch 9 for this unit) may
    # stop short of the limit by less than a batch
    fits = (q.memcg_limit - create) // per + 4
    assert fits - 9 <= r["elements"] <= fits
    assert r["readded"] == r["deleted"] == 1000 and r["usage_bytes"] <= q.memcg_limit


def test_a_limit_below_the_creation_charge_is_refused() -> None:
    assert "creation charge" in (check_limit(SizeQuery("hash", 4, 8, 1 << 20, 2, "v6.18", memcg_limit=4096)) or "")
    assert check_limit(SizeQuery("hash", 4, 8, 1024, 2, "v6.18", memcg_limit=1 << 20)) is None


@pytest.mark.parametrize("args,option", [
    (["--memcg-limit", "4k", "--max-entries", "1000000"], "--memcg-limit"), (["--kernel", "v5.10"], "--kernel"),
    (["--memcg-limit", "lots"], "--memcg-limit"), (["--map-type", "array"], "--map-type"),
    (["--backend", "kernel"], "--backend"), (["--value-size", "0"], "--value-size"),
])
def test_bad_input_exits_2_naming_the_option(args: list[str], option: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", *args]) == 2
    out, err = capsys.readouterr()
    assert option in err and len(err.strip().splitlines()) == 1, err


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", "--max-entries", "2000", "--cpus", "2", "--memcg-limit", "1M", "--delete-rate", "1000",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["at_limit"]["elements"] > 0 and d["at_limit"]["elements_low"] <= d["at_limit"]["elements"]
    assert d["parked_bytes_max"] > 0 and d["modelled"] is True
