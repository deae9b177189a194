"""Commands that touch the running kernel: probe, compare, calibrate."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..bench import run_htab_mem
from ..bench.elem_cost import element_charge
from ..report.units import fmt_bytes
from .main import (NSEC_PER_SEC, KernelUnavailableError, build_workloads, cli, fail, kernel_policies, load_model_profile, model_backend,
                   open_kernel, progress_bar, workload_options)

COMPARED = (("create_bytes", "bytes"), ("steady_bytes", "bytes"), ("peak_bytes", "bytes"),
            ("at_last_delete_bytes", "bytes"), ("after_idle_bytes", "bytes"), ("after_poke_bytes", "bytes"),
            ("poke_release_ms", "ms"), ("ops_per_sec", "ops"))


@cli.group("kernel")
def kernel_group() -> None:
    """The running kernel: what it allows."""


@kernel_group.command("probe")
@click.option("--json", "as_json", is_flag=True)
def kernel_probe(as_json: bool) -> None:
    """Kernel version, privilege, usable map and program types, test-run, arena, memcg, CPUs."""
    from ..kernel.probe import probe
    r = probe()
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=1))
    else:
        t = Table(title=f"Linux {r.kernel} ({r.machine}), {r.cpus} CPUs, euid {r.euid}")
        t.add_column("feature", no_wrap=True)
        t.add_column("usable")
        t.add_column("detail")
        for i in r.items:
            t.add_row(i.name, "[green]yes[/green]" if i.ok else "[red]no[/red]", i.detail)
        Console().print(t)
    if not r.ok("bpf"):
        raise KernelUnavailableError(f"bpf: {r.reason('bpf')}")


def _summary(model_v: float | None, kernel_vs: list[float | None], resolution: float = 0.0) -> dict[str, Any]:
    """Model value against the kernel runs; ``inside`` uses the kernel's range widened by its resolution."""
    ks = [v for v in kernel_vs if v is not None]
    out: dict[str, Any] = {"model": model_v, "kernel": kernel_vs}
    if not ks or model_v is None:
        out.update(kernel_mean=None, kernel_min=None, kernel_max=None, rel_error=None, inside=None)
        return out
    mean = statistics.fmean(ks)
    out.update(kernel_mean=mean, kernel_min=min(ks), kernel_max=max(ks), resolution=resolution,
               rel_error=(model_v - mean) / mean if mean else None,
               inside=min(ks) - resolution <= model_v <= max(ks) + resolution)
    return out


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        return fmt_bytes(v)
    if unit == "ms":
        return f"{v:.0f} ms"
    return f"{v / 1e6:.2f} M/s"


@cli.command("compare")
@click.option("--policy", type=click.Choice(["v6.6", "prealloc", "all"]), default="v6.6", show_default=True,
              help="The running kernel's allocator (v6.6 profile) or preallocated maps.")
@workload_options
@click.option("--repeat", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Kernel runs per case (their spread is shown).")
@click.option("--elem-charge/--no-elem-charge", default=True, show_default=True,
              help="Also measure the charge per element on both backends.")
def compare(policy: str, use_case: str, cpus: int | None, value_size: int, max_entries: int | None, batch: int,
            duration: float, idle: float, poke: int, seed: int, profile_path: str | None, driver: str,
            as_json: bool, repeat: int, elem_charge: bool) -> None:
    """Run the same workload on the model and on the kernel, side by side, with the model's error."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    workloads = build_workloads(use_case, cpus, value_size, max_entries, batch, poke)
    policies = kernel_policies(policy)
    profile = load_model_profile(profile_path)
    dur, idl = int(duration * NSEC_PER_SEC), int(idle * NSEC_PER_SEC)
    from ..kernel.probe import possible_cpus
    ncpu_possible = possible_cpus()
    cases = []
    runs = [(uc, pol) for uc in workloads for pol in policies]
    kinfo: dict[str, Any] = {}
    with progress_bar(sys.stderr.isatty()) as prog:
        task = prog.add_task("compare", total=len(runs) * (repeat + 1) + (2 if elem_charge else 0))
        for uc, pol in runs:
            prog.update(task, description=f"{uc} / {pol}: model")
            # the model gets the kernel's possible CPUs: every one of them has a prefilled cache
            mres = run_htab_mem(model_backend(max(cpus, ncpu_possible), pol, seed, profile), workloads[uc], pol,
                                duration_ns=dur, idle_ns=idl)
            prog.advance(task)
            kres = []
            for i in range(repeat):
                prog.update(task, description=f"{uc} / {pol}: kernel run {i + 1}/{repeat}")
                with open_kernel(cpus, driver, pol) as kb:
                    kres.append(run_htab_mem(kb, workloads[uc], pol, duration_ns=dur, idle_ns=idl))
                    kinfo = kb.describe()
                prog.advance(task)
            # kmem moves in pages through a per-CPU byte stock: each reading is good to 4 KiB per CPU
            res = {"bytes": 4096.0 * ncpu_possible, "ms": 1.0, "ops": 0.0}   # ms: the 1 ms sampling interval
            metrics = {name: _summary(getattr(mres, name), [getattr(k, name) for k in kres], res[unit])
                       for name, unit in COMPARED}
            cases.append({"use_case": uc, "policy": pol, "metrics": metrics,
                          "kernel_errors": [k.errors for k in kres], "model_errors": mres.errors})
        elem = None
        if elem_charge:
            prog.update(task, description="charge per element")
            with open_kernel(1, "syscall", "v6.6") as kb:
                kc = element_charge(kb, value_size)
            prog.advance(task)
            mc = element_charge(model_backend(ncpu_possible, "v6.6", seed, profile), value_size)
            prog.advance(task)
            elem = {"value_size": value_size, "model": mc, "kernel": kc, "model_rounded": round(mc),
                    "kernel_rounded": round(kc), "exact": round(mc) == round(kc)}
    doc = {"tool": "bpfmem", "version": __version__, "command": "compare",
           "params": {"use_case": use_case, "policy": policy, "cpus": cpus, "value_size": value_size,
                      "max_entries": max_entries, "batch": batch, "duration_s": duration, "idle_s": idle,
                      "poke": poke, "seed": seed, "repeat": repeat, "driver": driver},
           "model": {"profile": profile.name, "source": profile.source}, "kernel": kinfo,
           "cases": cases, "element_charge": elem}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    console = Console(width=None if sys.stdout.isatty() else 140)
    units = dict(COMPARED)
    for case in cases:
        t = Table(title=f"{case['use_case']} / {case['policy']}: model vs kernel ({repeat} kernel runs, "
                        f"{cpus} CPUs, value {value_size} B)")
        for c in ("metric", "model", "kernel mean", "kernel min–max", "model error", "in kernel range ±res"):
            t.add_column(c, justify="left" if c == "metric" else "right", no_wrap=c == "metric")
        for name, s in case["metrics"].items():
            u = units[name]
            rng = "-" if s["kernel_min"] is None else f"{_fmt(s['kernel_min'], u)} – {_fmt(s['kernel_max'], u)}"
            err = "-" if s["rel_error"] is None else f"{100 * s['rel_error']:+.1f} %"
            inside = "-" if s["inside"] is None else ("yes" if s["inside"] else "no")
            label = name.replace("_bytes", "").replace("_", " ") + (" (modelled)" if name == "ops_per_sec" else "")
            t.add_row(label, _fmt(s["model"], u), _fmt(s["kernel_mean"], u), rng, err, inside)
        console.print(t)
        if any(case["kernel_errors"]) or case["model_errors"]:
            console.print(f"errors: model {case['model_errors']}, kernel {case['kernel_errors']}")
    if elem:
        console.print(f"charge per element (value {value_size} B): model {elem['model']:.1f} B, "
                      f"kernel {elem['kernel']:.1f} B ({'equal' if elem['exact'] else 'DIFFERENT'})")
    console.print(f"[dim]model profile: {profile.name} ({profile.source}); kernel: Linux {platform.release()}, "
                  f"driver {driver}[/dim]")


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


def _llc_bytes() -> int:
    """Size of the largest CPU cache level (sysfs), else 32 MiB."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for d in os.listdir(base):
            try:
                text = open(os.path.join(base, d, "size")).read().strip()
            except OSError:
                continue
            mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KM")) * mult)
    except OSError:
        pass
    return best or 32 << 20


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


@cli.command("calibrate")
@click.option("--driver", type=click.Choice(["syscall", "prog"]), default="syscall", show_default=True,
              help="How the kernel runs map operations while being measured.")
@click.option("--repeat", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, writable=True), default="bpfmem-profile.json",
              show_default=True, help="Profile file to write (load it with --profile).")
@click.option("--json", "as_json", is_flag=True)
def calibrate(driver: str, repeat: int, out: str, as_json: bool) -> None:
    """Fit the model's profile (operation costs, tasks-trace delay) to this machine's kernel."""
    from ..backend.protocol import BPF_ANY, Invocation, MapSpec, Op
    from ..workloads import HtabMemConfig, htab_mem
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        fail("--out", f"directory {d} does not exist")
    lazy = _lazy_ms()
    releases: list[float] = []
    per_op: dict[str, list[float]] = {}
    with progress_bar(sys.stderr.isatty()) as prog:
        task = prog.add_task("calibrate", total=repeat * 8 + 1)
        for _ in range(repeat):
            # grace-period timing: the poke's pile is freed lazy + one tasks-trace GP later
            wl = htab_mem(HtabMemConfig("batch_add_batch_del", 1, batch=1000, max_entries=8192))
            with open_kernel(1, driver, "v6.6") as kb:
                r = run_htab_mem(kb, wl, "v6.6", duration_ns=NSEC_PER_SEC // 5, idle_ns=NSEC_PER_SEC // 2)
            if r.poke_release_ms is not None:
                releases.append(r.poke_release_ms)
            prog.advance(task)
            # per-operation times: ops/s of single-CPU loops at two batch sizes
            for name, uc, n, pol, vs in (("replace64", "overwrite", 64, "v6.6", 8),
                                         ("replace1k", "overwrite", 1024, "v6.6", 8),
                                         ("replace1k_4000", "overwrite", 1024, "v6.6", 4000),
                                         ("adddel1k", "batch_add_batch_del", 1024, "v6.6", 8),
                                         ("prealloc1k", "overwrite", 1024, "prealloc", 8)):
                wl = htab_mem(HtabMemConfig(uc, 1, value_size=vs, batch=n, max_entries=max(8192, n), poke=0))
                with open_kernel(1, driver, pol) as kb:
                    m = kb.map_create(wl.map_spec)
                    try:
                        kb.execute(m, wl.producers[0].steps)       # warm: elements exist, caches filled
                        c = kb.run(m, wl.producers, NSEC_PER_SEC // 2)
                    finally:
                        kb.map_close(m)
                per_op.setdefault(name, []).append(c.elapsed_ns / max(c.ops, 1))
                prog.advance(task)
            # filling fresh maps: every update kmallocs (the refill's cost per object and per KiB)
            for name, vs in (("fill_8", 8), ("fill_4000", 4000)):
                keys = tuple(range(20_000))
                with open_kernel(1, driver, "v6.6") as kb:
                    m = kb.map_create(MapSpec("hash", 4, vs, 20_000))
                    try:
                        c = kb.execute(m, (Invocation(0, (Op("update", keys, BPF_ANY),)),))
                    finally:
                        kb.map_close(m)
                per_op.setdefault(name, []).append(c.elapsed_ns / len(keys))
                prog.advance(task)
        # a map far larger than the cache: overwrite of 100k elements of 4000 B (about 400 MiB), once
        wl = htab_mem(HtabMemConfig("overwrite", 1, value_size=4000, batch=100_000, max_entries=100_000, poke=0))
        with open_kernel(1, driver, "v6.6") as kb:
            m = kb.map_create(wl.map_spec)
            try:
                kb.execute(m, wl.producers[0].steps)
                big_charge = kb.sample(m).charged
                c = kb.run(m, wl.producers, 2 * NSEC_PER_SEC)
            finally:
                kb.map_close(m)
        per_op["replace100k_4000"] = [c.elapsed_ns / max(c.ops, 1)]
        prog.advance(task)
    med = {k: statistics.median(v) for k, v in per_op.items()}
    # per invocation = a + b*N: from N=64 and N=1024
    b_replace = (med["replace1k"] * 1024 - med["replace64"] * 64) / (1024 - 64)
    a_inv = max(med["replace64"] * 64 - b_replace * 64, 0.0)
    b_adddel = max(med["adddel1k"] - a_inv / 2048, 1.0)
    copy_per_kb = max((med["replace1k_4000"] - med["replace1k"]) / (3992 / 1024), 0.0)
    update_new = b_adddel * 1.1
    # a fresh fill: update_new + copy + one kmalloc per element (unit 72 B resp. 4064 B)
    kmalloc = max(med["fill_8"] - update_new, 0.0)
    kmalloc_per_kb = max((med["fill_4000"] - med["fill_8"] - copy_per_kb * 3992 / 1024) / (4064 / 1024), 0.0)
    llc = _llc_bytes()
    small = b_replace + copy_per_kb * 3992 / 1024 + a_inv / 100_000
    frac = max(1 - llc / big_charge, 0.01) if big_charge > llc else 1.0
    miss = max((med["replace100k_4000"] - small) / frac, 0.0)
    costs = {"invocation_ns": round(a_inv), "update_replace_ns": round(b_replace),
             "llc_bytes": llc, "miss_ns": round(miss, 1),
             "update_new_ns": round(update_new), "delete_ns": round(b_adddel * 0.9),
             "kmalloc_ns": round(kmalloc), "kmalloc_ns_per_kb": round(kmalloc_per_kb, 1),
             "value_copy_ns_per_kb": round(copy_per_kb, 1),
             "prealloc_factor": round(max(min(med["prealloc1k"] / med["replace1k"], 1.5), 0.1), 3),
             "source": (f"bpfmem calibrate --driver {driver} on Linux {platform.release()}, "
                        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")}
    gp = sorted(x - lazy for x in releases)
    tasks_trace = {"lazy_ms": round(lazy, 3), "gp_min_ms": round(max(gp[0], 1.0), 1) if gp else 20,
                   "gp_max_ms": round(max(gp[-1], gp[0], 1.0), 1) if gp else 35, "lazy_lim": 32, "gp_sleep_ms": 4}
    profile = {"source": costs["source"], "costs": costs, "tasks_trace": tasks_trace,
               "rcu": {"gp_min_ms": 4, "gp_max_ms": 20},
               "measured": {"poke_release_ms": releases, "ns_per_op": per_op,
                            "notes": "update_new/delete split 1.1:0.9 of the add+delete mean (not separable "
                                     "from these runs); normal RCU GP not measured (assumed 4-20 ms)"}}
    with open(out, "w") as f:
        json.dump(profile, f, indent=1)
    if as_json:
        click.echo(json.dumps(profile, indent=1))
        return
    console = Console()
    console.print_json(json.dumps({k: profile[k] for k in ("costs", "tasks_trace")}))
    console.print(f"profile written to {out}; use it with --profile {out}")
