"""Impossible sizes are refused up front, naming the option and its limit — never an OOM of this machine."""

from __future__ import annotations

import re

import click
import pytest

from bpfmem.backend import footprint
from bpfmem.cli import main
from bpfmem.cli.main import check_footprint, workload_configs

GIB = 1 << 30


@pytest.fixture
def four_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(footprint, "available_bytes", lambda: 4 * GIB)


@pytest.mark.parametrize("args, option", [
    (["--cpus", "100000"], "--cpus"),
    (["--duration", "3600", "--sample-interval", "0.01"], "--duration"),
    (["--policy", "prealloc", "--max-entries", "1073741824"], "--max-entries"),
    (["--cpus", "256", "--batch", "1048576"], "--batch"),
])
def test_refused_up_front_with_one_line(args: list[str], option: str, four_gib: None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "htab-mem", "--quiet", *args])
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], err
    assert re.search(r"1<=x<=256|at most about [0-9.e+]+", lines[0]), lines[0]
    assert out == ""


def _suggested(message: str) -> float:
    return float(re.search(r"at most about ([0-9.e+]+)", message).group(1))    # type: ignore[union-attr]


def test_the_suggested_limits_pass_and_a_bit_more_fails(four_gib: None) -> None:
    # samples: the suggested duration fits, twice as much does not
    cfgs = list(workload_configs("all", 8, 8, None, 64, 200).values())
    with pytest.raises(click.BadParameter) as e:
        check_footprint(cfgs, 1, False, 3600.0, 0.01)
    most = _suggested(str(e.value))
    check_footprint(cfgs, 1, False, most, 0.01)
    with pytest.raises(click.BadParameter):
        check_footprint(cfgs, 1, False, 2 * most, 0.01)
    # preallocated elements
    big = list(workload_configs("overwrite", 8, 8, 1 << 30, 64, 200).values())
    with pytest.raises(click.BadParameter) as e:
        check_footprint(big, 1, True, 1.0, 10.0)
    n = int(_suggested(str(e.value)))
    check_footprint(list(workload_configs("overwrite", 8, 8, n, 64, 200).values()), 1, True, 1.0, 10.0)
    # keys
    with pytest.raises(click.BadParameter) as e:
        check_footprint(list(workload_configs("overwrite", 256, 8, None, 1 << 20, 200).values()), 1, False, 1.0, 10.0)
    b = int(_suggested(str(e.value)))
    check_footprint(list(workload_configs("overwrite", 256, 8, None, b, 200).values()), 1, False, 1.0, 10.0)


def test_the_default_run_fits_a_small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(footprint, "available_bytes", lambda: 1 * GIB)
    cfgs = list(workload_configs("all", 8, 8, None, 64, 200).values())
    check_footprint(cfgs, 6, True, 3.0, 10.0)


def test_the_price_is_not_below_a_real_run() -> None:
    """The per-key price covers what a run really holds (tracemalloc of the workload and map)."""
    import gc
    import tracemalloc

    from bpfmem.backend.model import ModelBackend
    from bpfmem.workloads import htab_mem
    cfg = workload_configs("overwrite", 4, 8, None, 20000, 0)["overwrite"]
    gc.collect()
    tracemalloc.start()
    try:
        wl = htab_mem(cfg)
        be = ModelBackend(4, "free_rcu")
        m = be.map_create(wl.map_spec)
        be.run(m, wl.producers, 2_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= cfg.key_count() * footprint.PER_KEY_BYTES, (peak, cfg.key_count())
