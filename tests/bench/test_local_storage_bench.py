"""bench local-storage on the model: the destroy and delete paths per release, deterministic, nothing left."""

from __future__ import annotations

import json

import pytest

from bpfmem.backend.local_storage import LocalStorageConfig, run_local_storage
from bpfmem.cli import main
from bpfmem.mm import kmalloc_charge

QUICK = dict(cpus=2, owners=64, rate=5000.0, duration_s=0.2, idle_s=0.1)


def test_destroy_path_reuses_the_maps_own_objects_on_bpf_ma() -> None:
    """6.4-6.18 task storage: an ending owner's element and storage go back to the map's bpf_mem_alloc and the
    next owner takes them: memory stays flat and almost nothing reaches kmalloc."""
    r = run_local_storage(LocalStorageConfig("task", "create_destroy", **QUICK))
    assert r["allocator"] == "bpf_ma" and r["kmallocs_per_create"] < 0.2
    assert r["series"][-1][0] == pytest.approx(0.3, abs=0.011)       # simulated seconds, as htab-mem's series
    run = [b for t, b in r["series"] if t < 0.2]
    assert max(run) - min(run) <= 2 * 96 * kmalloc_charge(72 + 64 + 8)
    assert r["after_close_bytes"] == 0


@pytest.mark.parametrize("kind,release", [("socket", "v6.18"), ("task", "v6.2"), ("task", "v6.19")])
def test_kmalloc_kinds_allocate_element_and_storage_per_create(kind: str, release: str) -> None:
    r = run_local_storage(LocalStorageConfig(kind, "create_destroy", release=release, **QUICK))
    assert r["allocator"] in ("kzalloc", "kmalloc_nolock") and r["kmallocs_per_create"] == 2.0
    assert r["after_close_bytes"] == 0


def test_delete_path_waits_for_a_tasks_trace_gp() -> None:
    """Deleted elements are raw-freed only after a tasks-trace GP: memory climbs above the live set while
    deletes run and falls back after the run."""
    r = run_local_storage(LocalStorageConfig("task", "delete_recreate", **QUICK))
    live = 2 * 64 * (kmalloc_charge(72 + 64 + 8) + kmalloc_charge(176 + 8))
    assert r["peak_bytes"] > 2 * live
    assert r["breakdown_series"]["waiting for GP (selems)"] and max(r["breakdown_series"]["waiting for GP (selems)"]) > 0
    assert r["after_close_bytes"] == 0


def test_one_seed_one_result() -> None:
    cfg = LocalStorageConfig("task", "cross_cpu_exit", **QUICK)
    a, b = run_local_storage(cfg), run_local_storage(cfg)
    assert a["series"] == b["series"] and a["breakdown_series"] == b["breakdown_series"]


@pytest.mark.parametrize("args,option", [
    (["--storage-type", "thread"], "--storage-type"), (["--kernel", "v5.4"], "--kernel"),
    (["--use-case", "cross_cpu_exit", "--cpus", "1"], "--cpus"), (["--plot", "x.txt"], "--plot"),
])
def test_bad_input(args: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "local-storage", *args]) == 2
    err = capsys.readouterr().err
    assert option in err and len(err.strip().splitlines()) == 1, err


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "local-storage", "--storage-type", "socket", "--use-case", "create_destroy", "--cpus", "2",
                 "--owners", "16", "--rate", "2000", "--duration", "0.05", "--idle", "0.05", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["results"][0]["modelled"] and d["results"][0]["creates"] > 0


@pytest.mark.parametrize("kind,release,low,high", [
    ("task", "v6.18", 0.0, 0.2),      # bpf_mem_alloc: the batch's ends feed the next batch's creates
    ("task", "v6.2", 2.0, 2.0),       # kzalloc: element + the owner's bpf_local_storage
    ("task", "v6.19", 2.0, 2.0),      # kmalloc_nolock
    ("socket", "v6.18", 2.0, 2.0),    # sockets never moved to bpf_mem_alloc
])
def test_create_bench_storage_kmallocs_per_create(kind: str, release: str, low: float, high: float) -> None:
    from bpfmem.backend.local_storage import run_create_model
    r = run_create_model(kind, 32, 2, release, rounds=50)
    assert r["creates"] == 2 * 32 * 50 and low <= r["storage_kmallocs_per_create"] <= high


@pytest.mark.parametrize("kind,use_case,release", [
    ("socket", "create_destroy", "v6.18"), ("inode", "delete_recreate", "v6.18"), ("task", "cross_cpu_exit", "v6.19"),
    ("task", "delete_recreate", "v6.2"), ("cgroup", "create_destroy", "v7.0"),
    ("task", "create_destroy", "v6.18"), ("task", "delete_recreate", "v6.18"), ("cgroup", "cross_cpu_exit", "v6.4"),
])
def test_count_mode_gives_every_number_of_the_object_mode(kind: str, use_case: str, release: str) -> None:
    """Counted owners (kmalloc'd storage, or bpf_mem_alloc caches moved by quiet runs; no limit) against owners
    made one by one: the same series, breakdown and counters, sample for sample."""
    cfg = LocalStorageConfig(kind, use_case, release=release, **QUICK)
    a, b = run_local_storage(cfg, count_mode=True), run_local_storage(cfg, count_mode=False)
    assert a["count_mode"] and not b["count_mode"]
    for key in ("series", "breakdown_series", "creates", "deletes", "destroys", "kmallocs", "peak_bytes",
                "after_idle_bytes", "after_close_bytes"):
        assert a[key] == b[key], key


def test_count_mode_is_refused_where_it_would_change_a_number() -> None:
    r = run_local_storage(LocalStorageConfig("socket", "create_destroy", release="v6.1", **QUICK))  # 6.1's chain
    assert not r["count_mode"]
