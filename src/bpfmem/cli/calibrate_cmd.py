"""``bpfmem calibrate``: fit the model's costs and grace periods to this machine's kernel.

Problem: the model's ops/s and its memory over time follow from per-operation costs, and those
depend on the machine (and on the day: a shared VM's speed varies).  The bench's own batch size
(64 keys a run) is dominated by fixed costs per run, large batches by per-key costs, and the
add/delete pairs on two CPUs by the hand-off between them: each needs its own term.

Mechanism: time single-CPU loops of overwrite and batch_add_batch_del at three batch sizes (a line
per use case: intercept = fixed costs, slope = cost per key), fresh fills and deletes (the refill's
kmalloc per object and per KiB), a 4000-B overwrite (copy cost), a preallocated overwrite, a map
far larger than the cache, add_del_on_diff_cpu on two CPUs (hand-off), and the tasks-trace
delay; fit with ``backend.costs.fit_costs``; write a profile that ``--profile`` loads.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dataclasses import asdict

from ..backend.costs import CostModel, fit_costs
from ..backend.profile import Profile, load_profile, profile_from_dict
from ..bench import run_htab_mem
from ..report.units import plural
from .main import NSEC_PER_SEC, cli, open_kernel
from .progress import progress
from .params import check_output_path

BATCHES = (64, 256, 1024, 10_000)      # the bench's batch, two more inside the per-core cache, one far beyond
RUN_S = 0.5


def _hz() -> int:
    """CONFIG_HZ of the running kernel (from /proc/config.gz or /boot/config-*), else 250."""
    import gzip
    for path in ("/proc/config.gz", f"/boot/config-{platform.release()}"):
        try:
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt") as f:  # type: ignore[operator]
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=")[1])
        except OSError:
            continue
    return 250


def _cache_bytes() -> tuple[int, int]:
    """(per-core, last-level) cache sizes from sysfs: the level-2 unified cache and the largest one;
    512 KiB and 32 MiB when sysfs does not say."""
    levels: dict[int, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            try:
                text = open(os.path.join(base, d, "size")).read().strip()
                level = int(open(os.path.join(base, d, "level")).read())
                kind = open(os.path.join(base, d, "type")).read().strip()
            except (OSError, ValueError):
                continue
            if kind not in ("Unified", "Data"):
                continue
            mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            levels[level] = max(levels.get(level, 0), int(text.rstrip("KM")) * mult)
    except OSError:
        pass
    l2 = levels.get(2, 512 << 10)
    return l2, max(levels.values(), default=32 << 20) if levels else 32 << 20


def _lazy_ms() -> float:
    """rcupdate.rcu_tasks_trace_lazy_ms (-1 means HZ/4)."""
    try:
        v = int(open("/sys/module/rcupdate/parameters/rcu_tasks_trace_lazy_ms").read())
    except (OSError, ValueError):
        v = -1
    if v < 0:
        hz = _hz()
        return 1000.0 * -(-hz // 4) / hz
    return float(v)


LOOPS: tuple[tuple[str, str, int, str, int, int], ...] = (
    *((f"ow{n}", "overwrite", n, "v6.6", 8, 1) for n in BATCHES),
    *((f"bd{n}", "batch_add_batch_del", n, "v6.6", 8, 1) for n in BATCHES),
    ("ow64_1024", "overwrite", 64, "v6.6", 1024, 1), ("ow10000_1024", "overwrite", 10_000, "v6.6", 1024, 1),
    ("pre1024", "overwrite", 1024, "prealloc", 8, 1))
PAIR_LOOP = ("ad64", "add_del_on_diff_cpu", 64, "v6.6", 8, 2)     # measured when the machine has 2 CPUs


def _loop_on(backend: Any, use_case: str, batch: int, value: int, cpus: int) -> tuple[float, int]:
    """ns per invocation (per add+delete pair cycle for add_del_on_diff_cpu) of a warm loop on ``backend``,
    and the map's charge (its working set)."""
    from ..workloads import HtabMemConfig, htab_mem
    wl = htab_mem(HtabMemConfig(use_case, cpus, value_size=value, batch=batch,
                                max_entries=max(8192, batch * cpus), poke=0))
    m = backend.map_create(wl.map_spec)
    try:
        for p in wl.producers:
            backend.execute(m, p.steps)                 # warm: elements exist, caches are filled
        charged = backend.sample(m).charged
        c = backend.run(m, wl.producers, int(RUN_S * NSEC_PER_SEC))
    finally:
        backend.map_close(m)
    per = c.elapsed_ns / max(c.invocations, 1)
    return (per * 2 if use_case == "add_del_on_diff_cpu" else per), charged


def _loop_ns(driver: str, use_case: str, batch: int, policy: str, value: int, cpus: int) -> tuple[float, int]:
    """A calibration loop on the running kernel (see ``_loop_on``)."""
    with open_kernel(cpus, driver, policy) as kb:
        return _loop_on(kb, use_case, batch, value, cpus)


def model_residuals(profile: Profile, measured: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Each calibration loop in ``measured`` (ns per invocation or pair cycle) run on the model with
    ``profile``: (model ns, relative error).  A fit that cannot reproduce its own measurements is wrong
    whatever the kernel does later; this is the check that separates the two."""
    from ..backend.model import ModelBackend
    out: dict[str, tuple[float, float]] = {}
    for name, uc, n, pol, vs, cpus in (*LOOPS, PAIR_LOOP):
        if name not in measured:
            continue
        be = ModelBackend(cpus, pol, costs=profile.costs, rcu_model=profile.rcu,
                          tasks_trace_model=profile.tasks_trace, breakdown=False)
        ns = _loop_on(be, uc, n, vs, cpus)[0]
        out[name] = (ns, ns / measured[name] - 1)
    return out


def _fill_ns(driver: str, value: int, n: int = 20_000) -> tuple[float, float]:
    """ns per key of filling a fresh map with ``n`` keys in one batch, and of deleting them all."""
    from ..backend.protocol import BPF_ANY, Invocation, MapSpec, Op
    keys = tuple(range(n))
    with open_kernel(1, driver, "v6.6") as kb:
        m = kb.map_create(MapSpec("hash", 4, value, n))
        try:
            fill = kb.execute(m, (Invocation(0, (Op("update", keys, BPF_ANY),)),))
            dele = kb.execute(m, (Invocation(0, (Op("delete", keys),)),))
        finally:
            kb.map_close(m)
    return fill.elapsed_ns / n, dele.elapsed_ns / n


@cli.command("calibrate")
@click.option("--driver", type=click.Choice(["syscall", "prog"]), default="syscall", show_default=True,
              help="How the kernel runs map operations while being measured.")
@click.option("--repeat", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Rounds of measurements; each cost is fitted to the median of its rounds.")
@click.option("--out", type=click.Path(dir_okay=False), default="bpfmem-profile.json", show_default=True,
              help="Profile file to write, .json (load it with --profile).")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as one JSON document.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def calibrate(driver: str, repeat: int, out: str, as_json: bool, quiet: bool) -> None:
    """Fit the model's profile (operation costs, hand-off, tasks-trace delay) to this machine's kernel."""
    from ..workloads import HtabMemConfig, htab_mem
    check_output_path("--out", out, (".json",))
    cpus_here = len(os.sched_getaffinity(0))
    lazy = _lazy_ms()
    releases: list[float] = []
    per: dict[str, list[float]] = {}
    ws: dict[str, float] = {}
    loops = [*LOOPS, PAIR_LOOP] if cpus_here >= 2 else list(LOOPS)
    with progress(quiet, as_json) as prog:
        task = prog.add_task("calibrate", total=repeat * (len(loops) + 3) + 1)
        for r in range(repeat):
            prog.update(task, description=f"calibrate: round {r + 1}/{repeat}")
            # grace-period timing: the poke's pile is freed lazy + one tasks-trace GP later
            wl = htab_mem(HtabMemConfig("batch_add_batch_del", 1, batch=1000, max_entries=8192))
            with open_kernel(1, driver, "v6.6") as kb:
                res = run_htab_mem(kb, wl, "v6.6", duration_ns=NSEC_PER_SEC // 5, idle_ns=NSEC_PER_SEC // 2)
            if res.poke_release_ms is not None:
                releases.append(res.poke_release_ms)
            prog.advance(task)
            for name, uc, n, pol, vs, cpus in loops:
                prog.update(task, description=f"calibrate: {name}")
                ns, ws[name] = _loop_ns(driver, uc, n, pol, vs, cpus)
                per.setdefault(name, []).append(ns)
                prog.advance(task)
            for vs in (8, 4000):
                f, d = _fill_ns(driver, vs)
                per.setdefault(f"fill_{vs}", []).append(f)
                if vs == 8:
                    per.setdefault("delete_8", []).append(d)
                prog.advance(task)
        # a map far larger than the cache: overwrite of 100k elements of 4000 B (about 400 MiB), once
        wl = htab_mem(HtabMemConfig("overwrite", 1, value_size=4000, batch=100_000, max_entries=100_000, poke=0))
        with open_kernel(1, driver, "v6.6") as kb:
            m = kb.map_create(wl.map_spec)
            try:
                kb.execute(m, wl.producers[0].steps)
                ws["big"] = kb.sample(m).charged
                c = kb.run(m, wl.producers, 2 * NSEC_PER_SEC)
            finally:
                kb.map_close(m)
        per["big"] = [c.elapsed_ns / max(c.ops, 1)]
        prog.advance(task)
    source = (f"bpfmem calibrate --driver {driver} on Linux {platform.release()}, {plural(cpus_here, 'CPU')}, "
              f"{time.strftime('%Y-%m-%d')}")
    profile = make_profile(per, ws, releases, lazy, source, _cache_bytes())
    with open(out, "w") as f:
        json.dump(profile, f, indent=1)
    if as_json:
        click.echo(json.dumps(profile, indent=1))
        return
    _print_old_vs_new(profile, out)


def _bd_large_miss_ns(profile: Profile) -> float:
    """What the cache misses add to one invocation of the largest batch_add_batch_del loop in the model
    with ``profile`` (the loop run with and without its miss costs; see ``fit_costs``)."""
    from dataclasses import replace

    from ..backend.model import ModelBackend
    bare = replace(profile.costs, l2_miss_ns=0.0, l2_miss_ns_per_kb=0.0, miss_ns=0.0)
    _, uc, n, pol, vs, cpus = next(loop for loop in LOOPS if loop[0] == f"bd{max(BATCHES)}")
    ns = [_loop_on(ModelBackend(cpus, pol, costs=c, rcu_model=profile.rcu, tasks_trace_model=profile.tasks_trace,
                                breakdown=False), uc, n, vs, cpus)[0] for c in (profile.costs, bare)]
    return ns[0] - ns[1]


def make_profile(per: dict[str, list[float]], ws: dict[str, float], releases: list[float], lazy: float,
                 source: str, caches: tuple[int, int]) -> dict[str, Any]:
    """The profile fitted to calibration rounds ``per`` (name -> one value per round), with the
    measurements and the fitted model's run of every loop (``model_residuals``).  Two passes: the
    second puts the add+delete line through the largest batch less the misses the first pass models."""
    med = {k: statistics.median(v) for k, v in per.items()}
    gp = sorted(x - lazy for x in releases)
    tasks_trace = {"lazy_ms": round(lazy, 3), "gp_min_ms": round(max(gp[0], 1.0), 1) if gp else 20,
                   "gp_max_ms": round(max(gp[-1], gp[0], 1.0), 1) if gp else 35, "lazy_lim": 32, "gp_sleep_ms": 4}
    miss: float | None = None
    for _ in range(2):
        fitted = fit_costs(med, BATCHES, caches, ws, miss)
        defaults = {k: v for k, v in asdict(CostModel()).items() if k != "source" and k not in fitted}
        costs: dict[str, Any] = {**fitted, **defaults, "source": source}
        profile = {"source": source, "costs": costs, "tasks_trace": tasks_trace,
                   "rcu": {"gp_min_ms": 4, "gp_max_ms": 20},
                   "measured": {"poke_release_ms": releases, "ns_per_invocation_or_key": per, "map_charge": ws,
                                "notes": "ow<N>/bd<N>/ow64_1024/ow10000_1024/pre1024: ns per invocation; ad64: ns per "
                                         "pair cycle; fill_*/delete_8/big: ns per key. Normal RCU GP not measured "
                                         "(assumed 4-20 ms). Not measured, bpfmem's defaults: "
                                         + (", ".join(defaults) or "none")}}
        if miss is None:
            miss = _bd_large_miss_ns(profile_from_dict(profile, "the first pass's profile"))
    residuals = model_residuals(profile_from_dict(profile, "the fitted profile"), med)
    profile["measured"]["model_residuals"] = {k: {"model_ns": round(ns), "error": round(err, 4)}
                                              for k, (ns, err) in residuals.items()}
    return profile


def _print_old_vs_new(profile: dict[str, Any], out: str) -> None:
    """Each cost: the shipped profile's value, the new one, and the change."""
    from ..backend.profile import ProfileError
    try:
        old = load_profile(None)
    except ProfileError:                       # a shipped profile of an older layout: show the new one alone
        old = None
    if old is None:
        Console().print_json(json.dumps({k: profile[k] for k in ("costs", "tasks_trace")}))
        Console().print(f"profile written to {out}; use it with --profile {out}", highlight=False, soft_wrap=True)
        return
    t = Table(title=f"fitted costs (old: the shipped profile, {old.source})")
    for c in ("cost", "old", "new", "change"):
        t.add_column(c, justify="left" if c == "cost" else "right")
    for k, v in profile["costs"].items():
        if k == "source":
            continue
        o = getattr(old.costs, k)
        change = f"{(v - o) / o:+.0%}" if o else ("new" if v else "-")
        t.add_row(k, f"{o:,}" if isinstance(o, int) else f"{o:,.1f}", f"{v:,}" if isinstance(v, int) else f"{v:,.1f}",
                  change)
    tt = profile["tasks_trace"]
    for k, ov in (("lazy_ms", old.tasks_trace.lazy_delay_ns / 1e6), ("gp_min_ms", old.tasks_trace.gp_min_ns / 1e6),
                  ("gp_max_ms", old.tasks_trace.gp_max_ns / 1e6)):
        t.add_row(f"tasks_trace.{k}", f"{ov:g}", f"{tt[k]:g}", f"{(tt[k] - ov) / ov:+.0%}" if ov else "-")
    con = Console()
    con.print(t)
    r = Table(title="the fitted model run on each calibration loop (ns per invocation; ad64: per pair cycle)")
    for c in ("loop", "kernel (median)", "model", "error"):
        r.add_column(c, justify="left" if c == "loop" else "right")
    measured = {k: statistics.median(v) for k, v in profile["measured"]["ns_per_invocation_or_key"].items()}
    for k, v in profile["measured"]["model_residuals"].items():
        r.add_row(k, f"{measured[k]:,.0f}", f"{v['model_ns']:,}", f"{v['error']:+.1%}")
    con.print(r)
    con.print(f"profile written to {out}; use it with --profile {out}", highlight=False, soft_wrap=True)
