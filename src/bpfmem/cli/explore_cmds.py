"""``bpfmem explore`` and ``bpfmem replay``."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..explore.explore import STRATEGIES, decode_replay, explore, replay
from ..explore.scenarios import POLICIES, SCENARIOS
from .main import cli, fail


@cli.command("explore")
@click.argument("scenario", required=False)
@click.option("--list", "list_", is_flag=True, help="List the shipped scenarios and their expected verdicts.")
@click.option("--policy", type=click.Choice(list(POLICIES)), default="free", show_default=True)
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default="random", show_default=True)
@click.option("--schedules", type=click.IntRange(1, 100_000_000), default=2000, show_default=True,
              help="Schedules to run at most.")
@click.option("--seed", type=click.IntRange(0, (1 << 63) - 1), default=0, show_default=True)
@click.option("--depth", type=click.IntRange(1, 20), default=3, show_default=True, help="PCT bug depth.")
@click.option("--bound", type=click.IntRange(0, 50), default=3, show_default=True,
              help="DFS: deviations from the default order.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--all", "keep_all", is_flag=True, help="Keep counting after a violation.")
@click.option("--stop-on", type=click.Choice(["unaccepted", "any"]), default="unaccepted", show_default=True,
              help="Stop at the first bug, or at the first violation of any kind (accepted ones too).")
@click.option("--json", "as_json", is_flag=True)
def explore_cmd(scenario: str | None, list_: bool, policy: str, strategy: str, schedules: int, seed: int, depth: int,
                bound: int, jobs: int, keep_all: bool, stop_on: str, as_json: bool) -> None:
    """Explore interleavings of a scenario's programs (CPUs, IRQ/NMI points, grace periods) for reuse bugs."""
    if list_:
        rows = [{"name": s.name, "description": s.description,
                 "expect": {p: sorted(k) or "none" for p, k in s.expect.items()}} for s in SCENARIOS.values()]
        if as_json:
            click.echo(json.dumps(rows, indent=1))
            return
        t = Table(title="scenarios (expected findings per policy)")
        for c in ("name", "description", *POLICIES):
            t.add_column(c)
        for r in rows:
            t.add_row(r["name"], r["description"], *(", ".join(r["expect"][p]) if isinstance(r["expect"][p], list)
                                                    else r["expect"][p] for p in POLICIES))
        Console().print(t)
        return
    if scenario is None:
        fail("SCENARIO", f"name a scenario ({', '.join(SCENARIOS)}) or use --list")
    if scenario not in SCENARIOS:
        fail("SCENARIO", f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
    r = explore(scenario, policy, strategy, schedules, seed=seed, depth=depth, bound=bound, jobs=jobs,
                stop=stop_on, keep_all=keep_all)
    doc = {"tool": "bpfmem", "version": __version__, "command": "explore", **r.to_json(),
           "schedules_per_s": round(r.schedules / r.elapsed_s) if r.elapsed_s else None}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    con = Console()
    con.print(f"{scenario} / {policy} / {strategy}: {r.schedules} schedules in {r.elapsed_s:.2f} s "
              f"({doc['schedules_per_s']}/s); {r.proves}")
    con.print(f"violations by kind: {r.found_kinds or 'none'}; runs with a bug: {r.unaccepted}")
    if r.first is None:
        con.print("[green]no violation found[/green]" + (" (exhaustive within the bound)" if r.exhausted else ""))
        return
    f = r.first
    con.print(f"[bold]schedule {f.schedule}[/bold]:")
    for i, step in enumerate(f.steps):
        con.print(f"  {i:3d}  {step}", highlight=False)
    for v in f.violations:
        tag = "accepted by the kernel" if v["accepted"] else "BUG"
        con.print(f"  [{'yellow' if v['accepted'] else 'red'}]{v['kind']}[/] at step {v['step']} ({tag}): {v['message']}",
                  highlight=False)
    con.print(f"replay: bpfmem replay {f.replay}", highlight=False, soft_wrap=True)


@cli.command("replay")
@click.argument("trace")
@click.option("--json", "as_json", is_flag=True)
def replay_cmd(trace: str, as_json: bool) -> None:
    """Re-run one schedule from its replay string, step for step."""
    try:
        decode_replay(trace)
        scenario, policy, res = replay(trace)
    except (ValueError, KeyError) as e:
        fail("TRACE", str(e))
        return
    doc = {"tool": "bpfmem", "version": __version__, "command": "replay", "scenario": scenario, "policy": policy,
           "steps": res.steps, "violations": [v.__dict__ for v in res.violations], "choices": res.choices}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    con = Console()
    con.print(f"{scenario} / {policy}: {len(res.steps)} steps")
    for i, step in enumerate(res.steps):
        con.print(f"  {i:3d}  {step}", highlight=False)
    for v in res.violations:
        con.print(f"  {v.kind} at step {v.step} ({'accepted' if v.accepted else 'BUG'}): {v.message}", highlight=False)
    sys.stdout.flush()
