"""``bpfmem reproduce``: the published tables of the allocator debate, run on the model beside the numbers."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..reproduce import MACHINE, PENDING, TABLES, plan, reproduce
from .main import EXIT_FINDING, cli, fail, load_model_profile
from .params import Finite
from .progress import progress

NAMES = [*TABLES, *PENDING, "all"]


@cli.command("reproduce")
@click.argument("name", type=click.Choice(NAMES), default="all", required=False)
@click.option("--duration", type=Finite(0.05, 60), default=2.0, show_default=True,
              help="Simulated seconds of run phase per cell, 0.05..60 (the published runs measured 9-10 s "
                   "after a warm-up; the average is over the run's second half).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Model profile JSON (costs, grace periods) [default: the shipped one].")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write one figure per table, DIR/reproduce-<name>.png [default: no plots].")
@click.option("--check", is_flag=True,
              help="Exit 1 when a cell is outside 2x of the published one or a use case orders its flavours "
                   "differently by average memory.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def reproduce_cmd(name: str, duration: float, profile_path: str | None, plot_dir: str | None, check: bool,
                  as_json: bool, quiet: bool) -> None:
    """Run a published table (B.2 .. B.8, or all) on the model with that era's policies and the paper's
    machine size, and print published vs model for every cell with the ratio. Everything on the model
    side is modelled; one memory floor and one speed factor per published machine are fitted from the
    preallocated rows, never per cell."""
    if name in PENDING:
        fail("NAME", f"{name} is not reproduced yet: {PENDING[name]}; available: {', '.join(TABLES)}, all")
    if plot_dir is not None:
        if not os.path.isdir(plot_dir):
            fail("--plot", f"{plot_dir} is not a directory")
        if not os.access(plot_dir, os.W_OK):
            fail("--plot", f"cannot write in {plot_dir}")
    profile = load_model_profile(profile_path)
    names = list(TABLES) if name == "all" else [name]
    total = len(plan(names))
    t0 = time.perf_counter()
    with progress(quiet, as_json, unit="cells") as prog:
        task = prog.add_task("reproduce", total=total)
        done = [0]

        def say(msg: str) -> None:          # called before each cell: the previous one is done
            if done[0]:
                prog.advance(task)
            done[0] += 1
            prog.update(task, description=f"reproduce: {msg}")
        doc = reproduce(names, duration, profile, progress=say)
        prog.advance(task)
    wall = time.perf_counter() - t0
    doc = {"tool": "bpfmem", "version": __version__, "command": "reproduce", "modelled": True,
           "wall_s": round(wall, 1), **doc}
    if plot_dir is not None:
        from ..report.plot_reproduce import plot_table
        doc["plots"] = []
        for t in doc["tables"]:
            path = os.path.join(plot_dir, f"reproduce-{t['name']}.png")
            plot_table(t, t["fit"], path)
            doc["plots"].append(path)
    bad = _findings(doc)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        _print(doc)
    if check and bad:
        sys.exit(EXIT_FINDING)


def _findings(doc: dict[str, Any]) -> list[str]:
    out = []
    for t in doc["tables"]:
        out += [f"{t['name']} {c['policy']} {c['use_case']}" for c in t["cells"] if not all(c["within_2x"].values())]
        out += [f"{t['name']} order {uc}" for uc, o in t["order_by_avg_memory"].items() if not o["same"]]
    return out


def _cell(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def _print(doc: dict[str, Any]) -> None:
    con = Console(width=None if sys.stdout.isatty() else 200)
    for t in doc["tables"]:
        tab = Table(title=f"{t['name']}: {t['title']}", caption=f"speed: {t['speed_unit']}; memory: MiB; "
                    f"ratio = model ÷ published (bold red: outside 2×); source: lore {t['source']}")
        for c in ("use case", "flavour", "published speed / avg / peak", "model speed / avg / peak",
                  "ratio speed / avg / peak"):
            tab.add_column(c, justify="left" if c in ("use case", "flavour") else "right")
        for c in t["cells"]:
            p, m, r, ok = c["published"], c["model"], c["ratio"], c["within_2x"]
            ratios = " / ".join("-" if k not in r else f"{r[k]:.2f} (anchor)" if k not in ok else
                                f"{r[k]:.2f}" if ok[k] else f"[bold red]{r[k]:.2f}[/bold red]"
                                for k in ("speed", "avg_mib", "peak_mib"))
            tab.add_row(c["use_case"], c["policy"], " / ".join(_cell(p[k]) for k in ("speed", "avg_mib", "peak_mib")),
                        " / ".join(_cell(m[k]) for k in ("speed", "avg_mib", "peak_mib")), ratios)
        con.print(tab)
        for uc, o in t["order_by_avg_memory"].items():
            mark = "same" if o["same"] else "[bold red]differs[/bold red]"
            what = "average" if o.get("by", "avg_mib") == "avg_mib" else "peak"
            con.print(f"  {uc}: order by {what} memory {mark}: published {' < '.join(o['published'])}; "
                      f"model {' < '.join(o['model'])}", highlight=False)
        fit = t["fit"]
        how = fit.get("how", "preallocated rows")
        src = (f"fitted once from its {fit['from_cells']} preallocated cells" if how == "preallocated rows" else
               f"speed factor from the {how.split()[-1]} cell (reported, not checked)" if how.startswith("anchor")
               else "no preallocated row: nothing fitted")
        con.print(f"  {t['cells_within_2x']} of {t['cells_total']} cells within 2× on every published number; "
                  f"{t['variant']} benchmark on this machine: floor {fit['floor_mib']:+.2f} MiB, speed "
                  f"×{fit['speed_factor']:.2f} ({src})", highlight=False)
    con.print(f"[dim]All model numbers are modelled: {doc['duration_s']:g} simulated s per cell, profile "
              f"{doc['profile']}. Published machine: {MACHINE}; its floor and speed factor are fitted per "
              f"benchmark variant from the preallocated rows, never per cell. Wall time {doc['wall_s']:.0f} s."
              f"[/dim]", highlight=False)
    for path in doc.get("plots", []):
        con.print(f"plot written to {path}", highlight=False)
