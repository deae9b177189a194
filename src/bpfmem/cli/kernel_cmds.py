"""Commands that touch the running kernel: probe, cleanup, compare (calibrate: ``calibrate_cmd``)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..bench import run_htab_mem
from ..bench.elem_cost import element_charge
from ..maps.policies import DEFAULT_RELEASE
from ..report.units import fmt_bytes, plural
from .main import (NSEC_PER_SEC, Finding, KernelUnavailableError, build_workloads, cli, kernel_policies, load_model_profile,
                   model_backend, open_kernel, workload_options)
from .progress import progress

# the same names as bench htab-mem's table
LABELS = {"create_bytes": "create", "steady_bytes": "steady", "peak_bytes": "peak", "at_last_delete_bytes": "last delete",
          "after_idle_bytes": "after idle", "after_poke_bytes": "after poke", "poke_release_ms": "poke→drop",
          "ops_per_sec": "map ops/s"}
CHECK_BYTES = 0.05
CHECK_OPS = 0.15
COMPARED = (("create_bytes", "bytes"), ("steady_bytes", "bytes"), ("peak_bytes", "bytes"),
            ("at_last_delete_bytes", "bytes"), ("after_idle_bytes", "bytes"), ("after_poke_bytes", "bytes"),
            ("poke_release_ms", "ms"), ("ops_per_sec", "ops"))


@cli.group("kernel")
def kernel_group() -> None:
    """The running kernel: what it allows."""


@kernel_group.command("probe")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def kernel_probe(as_json: bool) -> None:
    """Kernel version, privilege, usable map and program types, test-run, arena, memcg, CPUs."""
    from ..kernel.probe import probe
    r = probe()
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=1))
    else:
        t = Table(title=f"Linux {r.kernel} ({r.machine}), {plural(r.cpus, 'CPU')}, euid {r.euid}")
        t.add_column("feature", no_wrap=True)
        t.add_column("usable")
        t.add_column("detail")
        for i in r.items:
            t.add_row(i.name, "[green]yes[/green]" if i.ok else "[red]no[/red]", i.detail)
        Console().print(t)
    if not r.ok("bpf"):
        raise KernelUnavailableError(f"bpf: {r.reason('bpf')}")


@kernel_group.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def kernel_cleanup(dry_run: bool, as_json: bool) -> None:
    """Remove what killed bpfmem runs left behind: memory cgroups named bpfmem-* whose process is gone.

    A run that exits, fails or gets SIGINT/SIGTERM/SIGHUP removes everything itself, and its workers die
    with it (PR_SET_PDEATHSIG); only SIGKILL or a crash of the whole machine can leave cgroups.  Maps need
    no cleanup: they go when the last process holding them exits, and bpfmem pins none."""
    from ..kernel.lifecycle import clean, leftovers
    try:
        found = leftovers()
    except OSError as e:
        raise KernelUnavailableError(f"cannot read the memory cgroup hierarchy: {e}") from None
    failed = [] if dry_run else clean(found)
    if as_json:
        click.echo(json.dumps({"tool": "bpfmem", "version": __version__, "command": "kernel cleanup",
                               "dry_run": dry_run, "found": [lo.__dict__ for lo in found], "failed": failed},
                              indent=1))
    else:
        con = Console(stderr=False)
        if not found:
            con.print("no leftovers of earlier bpfmem runs")
        for lo in found:
            verb = "would remove" if dry_run else "removed"
            con.print(f"{verb} {lo.path} (made by pid {lo.pid}: {lo.reason})", highlight=False, soft_wrap=True)
        for f in failed:
            con.print(f"[red]could not remove[/red] {f}", highlight=False, soft_wrap=True)
    if failed:
        raise KernelUnavailableError(f"{len(failed)} leftover(s) could not be removed")


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
@click.option("--policy", type=click.Choice([DEFAULT_RELEASE, "v6.6", "prealloc", "all"]), default=DEFAULT_RELEASE,
              show_default=True,
              help=f"The running kernel's allocator (release {DEFAULT_RELEASE[1:]}, its profile on the model; v6.6: "
                   "the name it had before release-exact profiles) or preallocated maps.")
@workload_options
@click.option("--repeat", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Kernel runs per case (their spread is shown).")
@click.option("--elem-charge/--no-elem-charge", default=True, show_default=True,
              help="Also measure the charge per element on both backends.")
@click.option("--check", is_flag=True,
              help=f"Exit 1 if the model is outside its tolerance: steady/peak bytes outside the kernel's range "
                   f"(± its resolution) and more than {CHECK_BYTES:.0%} off, or map ops/s more than "
                   f"{CHECK_OPS:.0%} off.")
def compare(policy: str, use_case: str, map_type: str, cpus: int | None, value_size: int, max_entries: int | None, batch: int,
            duration: float, idle: float, poke: int, seed: int, profile_path: str | None, driver: str,
            as_json: bool, quiet: bool, repeat: int, elem_charge: bool, check: bool) -> None:
    """Run the same workload on the model and on the kernel, side by side, with the model's error."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    policies = kernel_policies(policy)
    workloads = build_workloads(use_case, cpus, value_size, max_entries, batch, poke, map_type=map_type,
                                runs_per_use_case=len(policies) * (repeat + 1),
                                preallocated="prealloc" in policies, simulated_s=duration + 2 * idle,
                                sample_interval_ms=1.0)
    profile = load_model_profile(profile_path)
    dur, idl = int(duration * NSEC_PER_SEC), int(idle * NSEC_PER_SEC)
    from ..kernel.probe import possible_cpus
    ncpu_possible = possible_cpus()
    cases = []
    runs = [(uc, pol) for uc in workloads for pol in policies]
    kinfo: dict[str, Any] = {}
    with progress(quiet, as_json) as prog:
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
            with open_kernel(1, "syscall", DEFAULT_RELEASE) as kb:
                kc = element_charge(kb, value_size)
            prog.advance(task)
            mc = element_charge(model_backend(ncpu_possible, DEFAULT_RELEASE, seed, profile), value_size)
            prog.advance(task)
            elem = {"value_size": value_size, "model": mc, "kernel": kc, "model_rounded": round(mc),
                    "kernel_rounded": round(kc), "exact": round(mc) == round(kc)}
    doc = {"tool": "bpfmem", "version": __version__, "command": "compare",
           "params": {"use_case": use_case, "map_type": map_type, "policy": policy, "cpus": cpus, "value_size": value_size,
                      "max_entries": max_entries, "batch": batch, "duration_s": duration, "idle_s": idle,
                      "poke": poke, "seed": seed, "repeat": repeat, "driver": driver},
           "model": {"profile": profile.name, "source": profile.source}, "kernel": kinfo,
           "cases": cases, "element_charge": elem}
    doc["outside_tolerance"] = outside = _outside(cases) if check else []
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        _print_compare(doc, profile.name, profile.source, driver, repeat, cpus, value_size)
    if outside:
        raise Finding(f"the model is outside its tolerance: {'; '.join(outside)}")


def _outside(cases: list[dict[str, Any]]) -> list[str]:
    out = []
    for case in cases:
        for name in ("steady_bytes", "peak_bytes", "ops_per_sec"):
            s = case["metrics"][name]
            if s["rel_error"] is None:
                continue
            tol = CHECK_OPS if name == "ops_per_sec" else CHECK_BYTES
            if abs(s["rel_error"]) > tol and not (name != "ops_per_sec" and s["inside"]):
                out.append(f"{case['use_case']}/{case['policy']} {name} {100 * s['rel_error']:+.1f} %")
    return out


def _print_compare(doc: dict[str, Any], profile_name: str, profile_source: str, driver: str, repeat: int,
                   cpus: int, value_size: int) -> None:
    cases, elem = doc["cases"], doc["element_charge"]
    console = Console(width=None if sys.stdout.isatty() else 200)
    units = dict(COMPARED)
    for case in cases:
        mt = doc["params"].get("map_type", "hash")
        t = Table(title=f"{case['use_case']} / {case['policy']}: model vs kernel ({plural(repeat, 'kernel run')}, "
                        f"{plural(cpus, 'CPU')}, {mt}, value {value_size} B)")
        for c in ("metric", "model", "kernel mean", "kernel min–max", "model error", "in kernel range ±res"):
            t.add_column(c, justify="left" if c == "metric" else "right", no_wrap=c == "metric")
        for name, s in case["metrics"].items():
            u = units[name]
            rng = "-" if s["kernel_min"] is None else f"{_fmt(s['kernel_min'], u)} – {_fmt(s['kernel_max'], u)}"
            err = "-" if s["rel_error"] is None else f"{100 * s['rel_error']:+.1f} %"
            inside = "-" if s["inside"] is None else ("yes" if s["inside"] else "no")
            label = LABELS[name]
            t.add_row(label, _fmt(s["model"], u), _fmt(s["kernel_mean"], u), rng, err, inside)
        console.print(t)
        if any(case["kernel_errors"]) or case["model_errors"]:
            def errs(d: dict[str, int]) -> str:
                return ", ".join(f"{k} ×{v}" for k, v in d.items()) or "none"
            runs = "; ".join(f"run {i + 1}: {errs(e)}" for i, e in enumerate(case["kernel_errors"]))
            console.print(f"failed operations: model {errs(case['model_errors'])}; kernel {runs}", highlight=False)
    if elem:
        console.print(f"charge per element (value {value_size} B): model {elem['model']:.1f} B, "
                      f"kernel {elem['kernel']:.1f} B ({'equal' if elem['exact'] else 'DIFFERENT'})")
    console.print(f"[dim]model: profile {profile_name} ({profile_source}); kernel: measured on Linux "
                  f"{platform.release()}, {cpus} CPU{'' if cpus == 1 else 's'}, driver {driver}, "
                  f"{repeat} run{'' if repeat == 1 else 's'}[/dim]", highlight=False)


