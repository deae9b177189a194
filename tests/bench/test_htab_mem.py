"""bench htab-mem on the model: the must-holds of the model issue, and the real kernel's §1 rows."""

from __future__ import annotations

import pytest

from bpfmem.backend.model import ModelBackend
from bpfmem.bench import HtabMemResult, run_htab_mem
from bpfmem.rcu import GpModel
from bpfmem.workloads import HtabMemConfig, htab_mem

MS = 1_000_000
KIB = 1024


def run(use_case: str, policy: str = "v6.6", cpus: int = 4, duration: float = 1.0, idle: float = 1.0,
        seed: int = 0, fast_forward: bool = True, **cfg: object) -> HtabMemResult:
    be = ModelBackend(cpus, policy, seed=seed, fast_forward=fast_forward,
                      **{k: v for k, v in cfg.items() if k == "tasks_trace_model"})  # type: ignore[arg-type]
    wl = htab_mem(HtabMemConfig(use_case, cpus, **{k: v for k, v in cfg.items() if k != "tasks_trace_model"}))
    return run_htab_mem(be, wl, policy, duration_ns=int(duration * 1e9), idle_ns=int(idle * 1e9))


def run_samples(r: HtabMemResult, phase: str = "run") -> list[float]:
    """Charges sampled in the run phase after its first quarter."""
    start = next(t for name, t in r.phases if name == phase)
    stop = next((t for name, t in r.phases if t > start), r.series[-1][0])
    warm = start + (stop - start) / 4
    return [b for t, b in r.series if warm <= t < stop]


@pytest.mark.parametrize("use_case", ["overwrite", "batch_add_batch_del"])
def test_single_cpu_use_cases_are_flat_at_live_set_plus_spare(use_case: str) -> None:
    """Steady memory = map + live set + at most a high watermark (96) of spare objects per CPU."""
    cpus = 4
    r = run(use_case, cpus=cpus)
    vals = run_samples(r)
    assert max(vals) - min(vals) <= cpus * 48 * 104        # no growth beyond one refill batch per CPU
    live = 64 * cpus * 104
    assert max(vals) <= r.create_bytes + live + cpus * (96 + 48) * 104
    assert r.steady_bytes >= r.create_bytes + (live if use_case == "overwrite" else 0)
    assert not r.errors


def test_v6_1_batched_alloc_free_grows_with_gp_latency() -> None:
    """6.1 refilled only from slab: freed objects pile up for a whole GP (the '14 GB' problem)."""
    r61 = run("batch_add_batch_del", "v6.1", cpus=2, duration=0.6)
    r62 = run("batch_add_batch_del", "v6.2", cpus=2, duration=0.6)
    assert r61.peak_bytes > 50 * r62.peak_bytes


def test_add_del_on_diff_cpu_is_bounded_with_the_tgt_hint() -> None:
    """v6.6: frees on the deleting CPU flow back to the adding CPU's cache (docs/measurements.md §1 item 3)."""
    short = run("add_del_on_diff_cpu", "v6.6", cpus=4, duration=0.5)
    long = run("add_del_on_diff_cpu", "v6.6", cpus=4, duration=2.0)
    assert max(run_samples(long)) <= max(run_samples(short)) + 48 * 104   # no growth over time
    assert long.steady_bytes < long.create_bytes + 4 * 300 * 104


@pytest.mark.slow
def test_add_del_on_diff_cpu_without_hint_holds_free_rate_times_gp_latency() -> None:
    """v6.2: the adder kmallocs while the deleter's trims wait for tasks-trace GPs, so held memory
    scales with free rate x GP latency (published htab-mem tables B.4/B.5: hundreds of MiB).  Before
    6.6 call_rcu_tasks_trace() is not lazy: a trim waits on average half a GP behind the one callback
    in flight, then a whole GP, plus the kthread's sleep between GPs; the lazy delay plays no part."""
    slow = GpModel(gp_min_ns=25 * MS, gp_max_ns=25 * MS, lazy_delay_ns=250 * MS, gp_sleep_ns=4 * MS)
    fast = GpModel(gp_min_ns=12 * MS, gp_max_ns=12 * MS, lazy_delay_ns=125 * MS, gp_sleep_ns=2 * MS)
    held = {}
    for name, gp in (("slow", slow), ("fast", fast)):
        r = run("add_del_on_diff_cpu", "v6.2", cpus=2, duration=1.5, tasks_trace_model=gp)
        held[name] = r.steady_bytes - r.create_bytes
        rate = r.ops_per_sec / 2                        # frees per second
        latency = 1.5 * (gp.gp_min_ns + gp.gp_sleep_ns) / 1e9
        assert 0.75 < held[name] / (rate * latency * 104) < 1.33
    assert 1.6 < held["slow"] / held["fast"] < 2.4
    not_lazy = run("add_del_on_diff_cpu", "v6.2", cpus=2, duration=1.5,
                   tasks_trace_model=GpModel(gp_min_ns=25 * MS, gp_max_ns=25 * MS, gp_sleep_ns=4 * MS))
    assert not_lazy.steady_bytes - not_lazy.create_bytes == held["slow"]
    r66 = run("add_del_on_diff_cpu", "v6.6", cpus=2, duration=1.5)
    assert held["fast"] > 100 * (r66.steady_bytes - r66.create_bytes)


@pytest.mark.parametrize("use_case", ["overwrite", "batch_add_batch_del", "add_del_on_diff_cpu"])
@pytest.mark.parametrize("policy", ["v6.2", "v6.6", "prealloc"])
def test_fast_forward_changes_no_number(use_case: str, policy: str) -> None:
    a = run(use_case, policy, cpus=2, duration=0.4, idle=0.4, fast_forward=True)
    b = run(use_case, policy, cpus=2, duration=0.4, idle=0.4, fast_forward=False)
    assert a.series == b.series
    assert (a.ops, a.per_prod_op, a.peak_bytes, a.steady_bytes, a.after_idle_bytes, a.after_poke_bytes) == \
        (b.ops, b.per_prod_op, b.peak_bytes, b.steady_bytes, b.after_idle_bytes, b.after_poke_bytes)
    assert sum((a.breakdown or {}).values()) == sum((b.breakdown or {}).values())


def test_same_seed_same_result_other_seeds_differ_only_by_gp_lengths() -> None:
    a = run("add_del_on_diff_cpu", "v6.2", cpus=2, duration=0.5, seed=1).to_json()
    b = run("add_del_on_diff_cpu", "v6.2", cpus=2, duration=0.5, seed=1).to_json()
    c = run("add_del_on_diff_cpu", "v6.2", cpus=2, duration=0.5, seed=2).to_json()
    assert a == b
    assert a["series"] != c["series"]                      # grace periods lasted differently
    for k in ("create_bytes", "ops", "memlock_bytes", "after_close_bytes"):
        assert a[k] == c[k]


# docs/measurements.md §1, one CPU, N keys added/overwritten per run (KiB above the pre-create level)
KERNEL_ROWS = [
    # use case, N, steady (run1, run2), after idle, after poke
    ("overwrite", 10_000, (1268, 1272), (1276, 1280), (288, 288)),
    ("batch_add_batch_del", 10_000, (1272, 1276), (1284, 1284), (284, 284)),
    ("overwrite", 1_000, (120, 124), (128, 128), (44, 48)),
    ("batch_add_batch_del", 1_000, (116, 116), (128, 132), (40, 44)),
]


@pytest.mark.parametrize("use_case,n,steady,idle,poke", KERNEL_ROWS)
def test_parking_reproduces_the_kernel_on_one_cpu(use_case: str, n: int, steady: tuple[int, int],
                                                  idle: tuple[int, int], poke: tuple[int, int]) -> None:
    """Deletes park memory until a poke; the poke releases the pile ~270-340 ms later."""
    r = run(use_case, cpus=1, duration=2.0, batch=n, max_entries=n)
    # the kernel charges kmem in pages through a per-CPU byte stock: up to 4 KiB per CPU (2 CPUs) of slack
    slack = 8
    assert abs(r.steady_bytes / KIB - sum(steady) / 2) <= 0.05 * sum(steady) / 2 + slack
    assert abs(r.after_idle_bytes / KIB - sum(idle) / 2) <= 0.05 * sum(idle) / 2 + slack
    assert abs(r.after_poke_bytes / KIB - sum(poke) / 2) <= slack
    assert r.poke_release_ms is not None and 270 <= r.poke_release_ms <= 340
    assert r.after_close_bytes == 0


@pytest.mark.slow
@pytest.mark.parametrize("use_case,steady,idle,poke", [
    ("overwrite", (12204, 12204), (12208, 12208), (2072, 2076)),
    ("batch_add_batch_del", (12208, 12204), (12216, 12212), (2076, 2072)),
])
def test_parking_reproduces_the_kernel_at_100k(use_case: str, steady: tuple[int, int], idle: tuple[int, int],
                                               poke: tuple[int, int]) -> None:
    test_parking_reproduces_the_kernel_on_one_cpu(use_case, 100_000, steady, idle, poke)
