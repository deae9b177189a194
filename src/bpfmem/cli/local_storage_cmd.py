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
from .params import Finite, check_output_path

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
@click.option("--cpus", type=click.IntRange(1, 256), default=8, show_default=True, help="Producers, one per CPU (CPUs).")
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
def bench_local_storage(storage_type: str, use_case: str, release: str, cpus: int, value_size: int, owners: int,
                        rate: float, duration: float, idle: float, plot: str | None, as_json: bool) -> None:
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
        msg = str(e)
        fail(msg.split()[0] if msg.startswith("--") else "--kernel", msg)
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
    if as_json:
        click.echo(json.dumps({"tool": "bpfmem", "version": __version__, "command": "bench local-storage",
                               "results": results}, indent=1))
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
    end = sum(1 for tm, _ in last["series"] if tm * 1e6 < last["config"]["duration_s"] * 1e9) - 1
    rows: dict[str, int] = {}
    for k, v in last["breakdown_series"].items():
        key = k.split("/cpu")[0] + " (all CPUs)" if "/cpu" in k else k
        rows[key] = rows.get(key, 0) + v[max(end, 0)]
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        if v:
            t.add_row(k, fmt_bytes(v))
    con.print(t)
    con.print("speed is an input (--rate); every byte is modelled")
