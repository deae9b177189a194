"""``bpfmem bench local-storage``: task/cgroup/socket/inode storage churn on the model."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..report.units import fmt_bytes
from .main import bench, fail
from .params import Finite, check_output_path, html_option, option_of, write_html

USE_CASES = ("create_destroy", "delete_recreate", "cross_cpu_exit")
KINDS = ("task", "cgroup", "socket", "inode")


@bench.command("local-storage")
@click.option("--storage-type", type=click.Choice(KINDS + ("all",)), default="task", show_default=True,
              help="Which local storage (all: the four).")
@click.option("--use-case", type=click.Choice(USE_CASES + ("all",)), default="all", show_default=True,
              help="create_destroy: owners end (destroy path); delete_recreate: elements deleted and created again "
                   "(delete path); cross_cpu_exit: owners end on another CPU.")
@click.option("--kernel", "release", default="v6.18", show_default=True,
              help="Kernel release whose local storage runs (v6.1 .. v6.19, v7.0).")
@click.option("--cpus", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Producers, one per CPU (CPUs).")
@click.option("--value-size", type=click.IntRange(1, 65407), default=64, show_default=True, help="Value size in bytes.")
@click.option("--owners", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
              help="Live owners per producer (elements).")
@click.option("--rate", type=Finite(1, 1e7), default=20000.0, show_default=True,
              help="Operations per simulated second per producer (an input: local storage speed is not modelled; "
                   "counts per s).")
@click.option("--duration", type=Finite(0, 60, min_open=True), default=1.0, show_default=True,
              help="Simulated seconds of churn.")
@click.option("--idle", type=Finite(0, 60), default=0.5, show_default=True, help="Simulated seconds idle after it.")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write memory over time, stacked by where it sits, to this PNG/SVG/PDF (default: no plot).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@html_option
def bench_local_storage(storage_type: str, use_case: str, release: str, cpus: int, value_size: int, owners: int,
                        rate: float, duration: float, idle: float, plot: str | None, as_json: bool,
                        html_path: str | None) -> None:
    """Local storage churn on the model: where each byte of the map sits over time, per release (modelled)."""
    from ..backend.local_storage import LocalStorageConfig, run_local_storage
    from .progress import progress
    check_output_path("--plot", plot, (".png", ".svg", ".pdf"))
    kinds = KINDS if storage_type == "all" else (storage_type,)
    cases = USE_CASES if use_case == "all" else (use_case,)
    try:
        configs = [LocalStorageConfig(k, uc, cpus, release, value_size, owners, rate, duration, idle)
                   for k in kinds for uc in cases]
    except ValueError as e:
        fail(option_of(str(e), "--kernel"), str(e))
    results = []
    with progress(False, as_json, unit="runs") as prog:
        task = prog.add_task("local-storage", total=len(configs))
        for cfg in configs:
            def say(phase: str, c: LocalStorageConfig = cfg) -> None:
                prog.update(task, description=f"{c.use_case} / {c.kind}: {phase}")
            results.append(run_local_storage(cfg, progress=say))
            prog.advance(task)
    if plot:
        from ..report.plot_local_storage import plot_local_storage
        plot_local_storage(results, plot)
    doc = {"tool": "bpfmem", "version": __version__, "command": "bench local-storage", "results": results}
    write_html(doc, html_path, not as_json)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    _print(results)
    if plot:
        click.echo(f"plot: {plot}", err=True)


def _print(results: list[dict[str, Any]]) -> None:
    con = Console()
    for r in results:
        c = r["config"]
        con.print(f"{c['use_case']} {c['kind']}: creates {r['creates']:,}, peak {fmt_bytes(r['peak_bytes'])}, "
                  f"steady {fmt_bytes(r['steady_bytes'])}, after idle {fmt_bytes(r['after_idle_bytes'])}, after close "
                  f"{fmt_bytes(r['after_close_bytes'])}, kmallocs/create {r['kmallocs_per_create']}  "
                  f"[{r['profile']}, {r['allocator']}]")
    last = results[-1]
    t = Table(title=f"where the bytes sit at the end of the run — {last['config']['use_case']} "
                    f"{last['config']['kind']} (payload; modelled)")
    t.add_column("place")
    t.add_column("bytes", justify="right")
    end = sum(1 for tm, _ in last["series"] if tm < last["config"]["duration_s"]) - 1
    rows: dict[str, int] = {}
    for k, v in last["breakdown_series"].items():
        key = k.split("/cpu")[0] + " (all CPUs)" if "/cpu" in k else k
        rows[key] = rows.get(key, 0) + v[max(end, 0)]
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        if v:
            t.add_row(k, fmt_bytes(v))
    con.print(t)
    con.print("speed is an input (--rate); every byte is modelled")


@bench.command("local-storage-create")
@click.option("--storage-type", type=click.Choice(("task", "socket")), default="task", show_default=True,
              help="task: threads created and joined; socket: sockets opened and closed.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Owners created, then ended, per round (owners).")
@click.option("--producers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Producers, one per CPU (processes).")
@click.option("--kernel", "release", default="v6.18", show_default=True,
              help="Kernel release of the model (v6.1 .. v6.19, v7.0).")
@click.option("--backend", type=click.Choice(["model", "kernel"]), default="model", show_default=True,
              help="kernel: also run it on this kernel (storage from a BPF program where it allows, else from "
                   "syscalls; kmallocs counted by a raw_tp/kmalloc program, system-wide).")
@click.option("--duration", type=Finite(0, 60, min_open=True), default=1.0, show_default=True,
              help="Seconds the kernel run lasts (each of the two runs: with and without storage).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@html_option
def bench_local_storage_create(storage_type: str, batch_size: int, producers: int, release: str, backend: str,
                               duration: float, as_json: bool, html_path: str | None) -> None:
    """The selftests' local-storage-create: kmallocs per create on the model (the storage's own) and, with
    --backend kernel, creates/s and kmallocs per create on this kernel beside the model's prediction."""
    from ..backend.local_storage import run_create_model
    from ..maps.local_storage import profile_for_release
    try:
        profile_for_release(release)
    except ValueError as e:
        fail("--kernel", str(e))
    model = run_create_model(storage_type, batch_size, producers, release, rounds=max(50, 3200 // batch_size))
    out: dict[str, Any] = {"tool": "bpfmem", "version": __version__, "command": "bench local-storage-create",
                           "model": model}
    if backend == "kernel":
        import os

        from ..kernel.storage_create import run_create
        from .main import kernel_policies
        kernel_policies(release)
        if producers > len(os.sched_getaffinity(0)):
            fail("--producers", f"this machine has {len(os.sched_getaffinity(0))} CPUs for producers")
        base = run_create(storage_type, batch_size, producers, duration, with_storage=False)
        run = run_create(storage_type, batch_size, producers, duration, with_storage=True)
        # kmallocs made inside the producers (the system-wide count carries other processes' noise); on the
        # syscall path the update's own key and value copies are not the storage's
        owner = base["kmallocs_producers_per_create"]
        syscall = run["syscall_kmallocs_per_update"] if run["storage_from"].startswith("syscall") else 0.0
        storage = run["kmallocs_producers_per_create"] - owner - (syscall or 0.0)
        out["kernel"] = {"baseline": base, "with_storage": run, "owner_kmallocs_per_create": round(owner, 3),
                         "syscall_kmallocs_per_update": syscall,
                         "storage_kmallocs_per_create": round(storage, 3),
                         "agrees": round(storage) == round(model["storage_kmallocs_per_create"])}
        out["model_prediction_kmallocs_per_create"] = round(owner + (syscall or 0.0) +
                                                            model["storage_kmallocs_per_create"], 3)
    write_html(out, html_path, not as_json)
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    con = Console()
    con.print(f"model ({model['profile']}, {model['allocator']}): the storage costs "
              f"{model['storage_kmallocs_per_create']} kmallocs/create at batch {batch_size} (modelled; creates/s is "
              f"not modelled)")
    k = out.get("kernel")
    if k is not None:
        r = k["with_storage"]
        con.print(f"kernel: creates {r['creates_per_s'] / 1e3:.3f}k/s ({r['per_producer_per_s'] / 1e3:.3f}k/prod), "
                  f"{r['kmallocs_producers_per_create']:.2f} kmallocs/create in the producers, "
                  f"{r['kmallocs_per_create']:.2f} system-wide (measured; storage from {r['storage_from']}"
                  + (f": {r['why']}" if r.get("why") else "") + ")")
        con.print(f"kernel without storage: {k['owner_kmallocs_per_create']:.2f} kmallocs per owner"
                  + (f"; the update syscall copies key and value: {k['syscall_kmallocs_per_update']:.2f}"
                     if k["syscall_kmallocs_per_update"] else "")
                  + f"; the storage adds {k['storage_kmallocs_per_create']:.2f} (model: "
                  f"{model['storage_kmallocs_per_create']}: {'agrees' if k['agrees'] else 'DIFFERS'} to the integer)")
