"""``bpfmem whatif``: the seed's open questions about bpf_global_ma, the kernel beside each proposal."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..report.units import fmt_bytes
from .main import bench, cli, fail
from .params import Finite, html_option, option_of, write_html

DEFAULT_POLICIES = {"quiet": ("v6.18", "v6.18+drain"), "hotplug": ("v6.18", "v6.18+hotplug"),
                    "share": ("v6.18", "v6.18+share"), "pressure": ("v6.18", "v6.18+shrinker", "v6.18+memcg_owner")}
SHARE_CPUS = (8, 64)


@cli.command("whatif")
@click.argument("question", default="all", metavar="[quiet|hotplug|share|pressure|all]")
@click.option("--policy", "policies", multiple=True,
              help="A release v6.2..v6.19 or v7.0 with proposals, e.g. v6.18+drain+hotplug; repeat for several "
                   "(default: v6.18 and the question's proposal).")
@click.option("--cpus", type=click.IntRange(2, 256), default=8, show_default=True,
              help="Possible CPUs (CPUs); share runs at 8 and 64 unless given (an even number).")
@click.option("--objects", type=click.IntRange(1, 1 << 22), default=4096, show_default=True,
              help="Objects per bursting CPU (counts).")
@click.option("--size", type=click.IntRange(1, 4088), default=64, show_default=True,
              help="Bytes asked of bpf_obj_new per object.")
@click.option("--quiet-for", "quiet_s", type=Finite(0, 3600, min_open=True), default=60.0, show_default=True,
              help="Simulated seconds after the frees.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write one figure per question, DIR/whatif-<question>.png (DIR made if missing) [default: no plots].")
def whatif_cmd(question: str, policies: tuple[str, ...], cpus: int, objects: int, size: int, quiet_s: float,
               as_json: bool, plot_dir: str | None) -> None:
    """The seed's open questions about bpf_global_ma, each under a kernel release and the proposals composed onto
    it (modelled): freed objects on a CPU that goes quiet (quiet), a memory budget nothing charges (pressure), a
    CPU going offline (hotplug), allocation and free on different CPUs (share).  Proposals: +drain, +hotplug,
    +shrinker, +memcg_owner, +share, e.g. --policy v6.18+drain+hotplug."""
    from ..whatif import QUESTIONS, WhatIfConfig, run_whatif
    from ..whatif.questions import run_pressure, run_share
    if question != "all" and question not in QUESTIONS:
        fail("QUESTION", f"unknown question {question!r}; allowed: {', '.join(QUESTIONS)} or all")
    qs = QUESTIONS if question == "all" else (question,)
    results = []
    for q in qs:
        if q == "pressure":
            for pol in policies or DEFAULT_POLICIES[q]:
                try:
                    results.append(run_pressure(pol, cpus=cpus, size=size))
                except ValueError as e:
                    fail(option_of(str(e), "--policy"), str(e))
            continue
        if q == "share":
            given = click.get_current_context().get_parameter_source("cpus") != click.core.ParameterSource.DEFAULT
            for n in ((cpus,) if given else SHARE_CPUS):
                for pol in policies or DEFAULT_POLICIES[q]:
                    try:
                        results.append(run_share(n, pol))
                    except ValueError as e:
                        fail(option_of(str(e), "--policy"), str(e))
            continue
        for pol in policies or DEFAULT_POLICIES[q]:
            try:
                cfg = WhatIfConfig(q, pol, cpus, objects, size, quiet_s)
            except ValueError as e:
                fail(option_of(str(e), "--policy"), str(e))
            results.append(run_whatif(cfg))
    plots: list[str] = []
    if plot_dir is not None:
        from ..report.plot_whatif import plot_whatif
        try:
            plots = plot_whatif(results, plot_dir)
        except OSError as e:
            fail("--plot", f"cannot write plots into {plot_dir!r}: {e.strerror or e}")
    if as_json:
        click.echo(json.dumps({"tool": "bpfmem", "version": __version__, "command": "whatif", "results": results,
                               "plots": plots}, indent=1))
        return
    _print(results)
    for p in plots:
        click.echo(f"plot: {p}")


def _print_share(con: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="share: htab-mem add_del_on_diff_cpu, 1 s + 0.5 s idle (the map's memcg charge; modelled)")
    for c in ("policy", "CPUs", "peak", "steady", "per-prod-op", "locks/1k ops", "added/op"):
        t.add_column(c, justify="left" if c == "policy" else "right", no_wrap=c == "policy")
    for r in rows:
        cost = r["cost"]
        t.add_row(r["config"]["policy"], str(r["config"]["cpus"]), fmt_bytes(r["peak_bytes"]),
                  fmt_bytes(r["steady_bytes"]), f"{r['per_prod_op_k']:.2f}k/s",
                  "-" if not cost else f"{cost['locks_per_1k_ops']:g}",
                  "-" if not cost else f"{cost['added_ns_per_op']:g} ns")
    con.print(t)


def _print_pressure(con: Console, rows: list[dict[str, Any]]) -> None:
    c0 = rows[0]["config"]
    t = Table(title=f"pressure: CPU pairs, {c0['batch']:,} objects every 5 ms freed on the partner, slab budget "
                    f"{fmt_bytes(c0['budget_bytes'])}, {c0['duration_s']:g} s (modelled)")
    for c in ("policy", "peak", "allocations", "failed", "failure rate"):
        t.add_column(c, justify="left" if c == "policy" else "right", no_wrap=c == "policy")
    for r in rows:
        t.add_row(r["config"]["policy"], fmt_bytes(r["peak_bytes"]), f"{r['allocations']:,}", f"{r['failures']:,}",
                  f"{100 * r['failure_rate']:.1f} %")
    con.print(t)
    for r in rows:
        for name, p in r["proposals"].items():
            cost = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in p.items() if k != "mechanism")
            con.print(f"  +{name} ({p['mechanism']}): {cost}")


def _print(results: list[dict[str, Any]]) -> None:
    con = Console()
    for q in dict.fromkeys(r["config"]["question"] for r in results):
        rows = [r for r in results if r["config"]["question"] == q]
        if q == "share":
            _print_share(con, rows)
            continue
        if q == "pressure":
            _print_pressure(con, rows)
            continue
        c0 = rows[0]["config"]
        t = Table(title=f"{q}: {c0['objects']:,} objects of {c0['size']} B per bursting CPU, {c0['cpus']} CPUs, then "
                        f"{c0['quiet_s']:g} s quiet (bpf_global_ma, slab bytes above boot; modelled)")
        marks = [k for k in rows[0]["parked_at"] if k != "0.1s"]
        cols = ["policy", "burst", *[f"at {k}" for k in marks], "back after"]
        if q == "hotplug":
            cols.append("stranded offline")
        for c in cols:
            t.add_column(c, justify="left" if c == "policy" else "right", no_wrap=c == "policy")
        for r in rows:
            back = "never" if r["returned_after_s"] is None else f"{r['returned_after_s']:g} s"
            cells = [r["config"]["policy"], fmt_bytes(r["peak_bytes"]),
                     *[fmt_bytes(max(r["parked_at"][k], 0)) for k in marks], back]
            if q == "hotplug":
                cells.append(fmt_bytes(r["stranded_on_offline_cpu_bytes"]))
            t.add_row(*cells)
        con.print(t)
        for r in rows:
            for name, p in r["proposals"].items():
                cost = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in p.items() if k != "mechanism")
                con.print(f"  +{name} ({p['mechanism']}): {cost}")


@bench.command("obj")
@click.option("--producers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Producers, one per CPU (processes).")
@click.option("--objects", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Objects per round per producer (counts; at most 64 on the kernel).")
@click.option("--size", type=click.IntRange(1, 4088), default=128, show_default=True,
              help="Bytes asked of bpf_obj_new per object.")
@click.option("--rounds", type=click.IntRange(1, 10**7), default=5000, show_default=True,
              help="Measured rounds of allocate-all then free-all per producer (counts).")
@click.option("--warmup", type=click.IntRange(0, 10**7), default=1000, show_default=True,
              help="Rounds run before the measured ones (counts).")
@click.option("--cpus", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Possible CPUs of the model (CPUs); the kernel backend uses this machine's.")
@click.option("--policy", default="v6.18", show_default=True,
              help="Model: a release v6.2..v6.19/v7.0 with proposals (v6.18+drain); bpf_obj_drop frees with "
                   "bpf_mem_free_rcu from 6.8.")
@click.option("--kind", type=click.Choice(["obj", "percpu", "cpumask"]), default="obj", show_default=True,
              help="obj: bpf_obj_new/drop (bpf_global_ma); percpu: bpf_percpu_obj_new/drop (bpf_global_percpu_ma, "
                   "6.7+, --size <= 512); cpumask: bpf_cpumask_create/release (bpf_cpumask_ma; --size ignored).")
@click.option("--backend", type=click.Choice(["model", "kernel"]), default="model", show_default=True,
              help="kernel: the running kernel (root), the model beside it at the measured round time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@html_option
def bench_obj(producers: int, objects: int, size: int, rounds: int, warmup: int, cpus: int, policy: str,
              kind: str, backend: str, as_json: bool, html_path: str | None) -> None:
    """Hou Tao's bench bpf_ma: a batch of objects per round per CPU from a global allocator (bpf_obj_new, the
    percpu variant, or bpf_cpumask_create), then freed; kmallocs per round and the memory it keeps (modelled),
    on the kernel the same rounds measured."""
    from ..whatif.obj import run_obj
    kernel = None
    if backend == "kernel":
        kernel = _obj_kernel(producers, objects, size, rounds, warmup, kind)
        cpus = kernel["machine_cpus"]                  # the model gets this machine's CPUs
    try:
        r = run_obj(producers, objects, size, rounds, cpus, policy, warmup=warmup,
                    round_ns=int(kernel["us_per_round"] * 1000) if kernel else 100_000, kind=kind)
    except ValueError as e:
        fail(option_of(str(e), "--producers"), str(e))
    doc = {"tool": "bpfmem", "version": __version__, "command": "bench obj", "result": r}
    if kernel is not None:
        doc["kernel"] = kernel
    write_html(doc, html_path, not as_json)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    pub = r["published_mib"]
    click.echo(f"model ({policy}, {r['what']}): {producers} producer(s), {objects} x {r['size']} B per round, a "
               f"round every {r['round_us']:g} us: {r['kmallocs_per_round']} kmallocs per round, memory kept "
               f"{fmt_bytes(r['memory_bytes'])}, of it charged to a memcg {fmt_bytes(r['charged_bytes'])} "
               f"({r['charged_to']}; modelled)"
               + (f"; published {pub:g} MiB (root memory.stat: counts the charged bytes only)" if pub is not None
                  else ""))
    if kernel is not None:
        click.echo(f"kernel (measured): {kernel['kmallocs_per_round']} kmallocs per round, {kernel['us_per_round']:g} "
                   f"us per round ({kernel['ns_per_alloc_free']:g} ns per allocation + free, syscall included), "
                   f"{kernel['failed_allocations']} failed; memory kept: not measurable here (charged to nobody; "
                   f"the slab cache is shared, see --json)")


def _obj_kernel(producers: int, objects: int, size: int, rounds: int, warmup: int, kind: str) -> dict[str, Any]:
    """``bench obj`` on the running kernel, or exit 2 with the reason it cannot run here."""
    from ..kernel.obj_prog import run_obj_kernel
    try:
        return run_obj_kernel(producers, objects, size, rounds, warmup, kind)
    except ValueError as e:
        fail(option_of(str(e), "--producers"), str(e))
    except OSError as e:
        fail("--backend", f"bench obj cannot run on this kernel: {e}")
    raise AssertionError("unreachable")
