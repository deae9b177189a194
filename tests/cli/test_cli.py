"""The command line: exit codes, one-line errors, JSON schema and determinism, plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bpfmem.cli import main

RESULT_KEYS = {"use_case", "policy", "backend", "cpus", "value_size", "max_entries", "ops_per_sec", "per_prod_op",
               "steady_bytes", "peak_bytes", "after_idle_bytes", "after_poke_bytes", "memlock_bytes", "breakdown",
               "series"}
QUICK = ["--cpus", "2", "--duration", "0.2", "--idle", "0.3"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args,option", [
    (["bench", "htab-mem", "--cpus", "0"], "--cpus"),
    (["bench", "htab-mem", "--policy", "v5.0"], "--policy"),
    (["bench", "htab-mem", "--use-case", "nope"], "--use-case"),
    (["bench", "htab-mem", "--duration", "0"], "--duration"),
    (["bench", "htab-mem", "--value-size", "5000"], "--value-size"),
    (["bench", "htab-mem", "--batch", "9000", "--cpus", "2", "--max-entries", "8192"], "--batch"),
    (["bench", "htab-mem", "--use-case", "add_del_on_diff_cpu", "--cpus", "3"], "--cpus"),
    (["bench", "htab-mem", "--plot", "x.txt"], "--plot"),
    (["bench", "htab-mem", "--map-type", "array"], "--map-type"),
    (["bench", "htab-mem", "--backend", "kernel", "--policy", "v7.0"], "--policy"),    # a prediction: model only
    (["bench", "htab-mem", "--plot", "/no/such/dir/x.png"], "--plot"),
])
def test_bad_options_exit_2_with_one_line_naming_the_option(args: list[str], option: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and lines[0].startswith("bpfmem:")


def test_json_document_has_the_promised_keys(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["bench", "htab-mem", "--policy", "all", "--use-case", "overwrite", *QUICK, "--json"], capsys)
    assert rc == 0
    doc = json.loads(out)
    assert {r["policy"] for r in doc["results"]} == {"v6.1", "v6.2", "v6.6", "free_rcu", "prealloc", "kmalloc_rcu"}
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r)
        assert r["backend"] == "model" and r["modelled"] is True
        assert r["series"] and all(len(p) == 2 for p in r["series"])
        assert sum(r["breakdown"].values()) > 0
    assert doc["backend"]["seed"] == 0


@pytest.mark.parametrize("map_type", ["percpu_hash", "lru_hash", "lru_percpu_hash"])
def test_map_type_runs_that_map_and_says_so(map_type: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["bench", "htab-mem", "--map-type", map_type, "--use-case", "overwrite", *QUICK, "--json"],
                         capsys)
    assert rc == 0
    doc = json.loads(out)
    assert doc["params"]["map_type"] == map_type
    (r,) = doc["results"]
    assert not r["errors"]
    if map_type.startswith("lru"):          # preallocated: the charge is made at creation and never moves
        assert r["peak_bytes"] == r["create_bytes"] and "lru_lists" in r["breakdown"]
        assert r["uncharged"]["lru_lists"] > 0
    else:
        assert r["peak_bytes"] > r["create_bytes"]
    rc, out, _ = run_cli(["bench", "htab-mem", "--map-type", map_type, "--use-case", "overwrite", *QUICK], capsys)
    assert rc == 0 and f"Map type {map_type}" in out


def test_same_seed_gives_byte_identical_json() -> None:
    cmd = [sys.executable, "-m", "bpfmem", "bench", "htab-mem", "--use-case", "add_del_on_diff_cpu", "--policy",
           "v6.2", *QUICK, "--seed", "5", "--json"]
    a = subprocess.run(cmd, capture_output=True, check=True).stdout
    b = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert a == b and len(a) > 1000


def test_human_output_reads_like_the_kernel_bench(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["bench", "htab-mem", "--use-case", "overwrite", *QUICK], capsys)
    assert rc == 0
    assert "overwrite per-prod-op:" in out and "avg mem:" in out and "peak mem:" in out
    assert "free_llist/cpu0" in out and "modelled, not measured" in out


def test_plot_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "mem.png"
    rc, _, _ = run_cli(["bench", "htab-mem", "--use-case", "overwrite", "--policy", "v6.1", *QUICK,
                        "--plot", str(png), "--json"], capsys)
    assert rc == 0 and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_policies_and_bench_self(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["policies", "--json"], capsys)
    assert rc == 0 and {p["name"] for p in json.loads(out)} >= {"v6.1", "v6.2", "v6.6", "prealloc"}
    rc, out, _ = run_cli(["bench", "self", "--cpus", "2", "--policy", "v6.1", "--duration", "0.05", "--raw",
                          "--no-matrix", "--json"], capsys)
    doc = json.loads(out)
    assert rc == 0 and len(doc["results"]) == 3 and doc["matrix"] is None
    assert len(doc["local_storage"]) == 6 and all(r["ops"] > 0 and r["realtime_factor"] > 0
                                                 for r in doc["local_storage"])
    for r in doc["results"]:
        assert r["ops"] > 0 and r["ops"] == r["raw"]["ops"]          # the fast paths are exact
        assert r["realtime_factor"] == pytest.approx(0.05 / r["wall_s"], rel=0.05)
        assert r["peak_rss_bytes"] > 10 << 20
    bad = [r for r in doc["results"] if r["use_case"] == "batch_add_batch_del"][0]
    from bpfmem.backend.speed import MIN_PARKED
    assert bad["parked_max"] > 10_000                     # v6.1 parks until a grace period
    assert (bad["bytes_per_parked"] is None) == (bad["parked_max"] < MIN_PARKED)
