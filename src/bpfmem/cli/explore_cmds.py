"""``bpfmem explore`` and ``bpfmem replay``."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..explore.explore import STOP_MODES, STRATEGIES, ExploreResult, explore, replay
from ..explore.runtime import MAX_STEPS
from ..explore.scenarios import POLICIES, POLICY_HELP, SCENARIOS
from ..explore.strategies import ReplayDivergence
from ..report.units import plural
from .main import Finding, cli, fail
from .params import html_option, write_html

_POLICY_LINES = "; ".join(f"{p}: {h}" for p, h in POLICY_HELP.items())


@cli.command("explore")
@click.argument("scenario", required=False)
@click.option("--list", "list_", is_flag=True, help="List the shipped scenarios, their policies, expected verdicts "
                                                    "and planted bugs.")
@click.option("--policy", type=click.Choice(list(POLICIES)), default=None,
              help=f"How the data structure frees memory (default: free, or with --planted the planted bug's "
                   f"policy, or the scenario's first). {_POLICY_LINES}.")
@click.option("--planted", is_flag=True, help="Explore the scenario's planted bug (a variant that is wrong only "
                                              "under some interleavings; see --list).")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default="random", show_default=True,
              help="random: random walks; pct: probabilistic concurrency testing; dfs: every schedule within "
                   "--bound deviations.")
@click.option("--schedules", type=click.IntRange(1, 100_000_000), default=2000, show_default=True,
              help="Schedules to run at most.")
@click.option("--seed", type=click.IntRange(0, (1 << 63) - 1), default=0, show_default=True,
              help="First seed (random and pct: schedule i uses seed + i).")
@click.option("--depth", type=click.IntRange(1, 20), default=3, show_default=True,
              help="PCT: the bug depth to aim for (depth - 1 priority change points).")
@click.option("--bound", type=click.IntRange(0, 50), default=3, show_default=True,
              help="DFS: deviations from the default order (a preemption, time passing, an NMI, a stale read).")
@click.option("--max-steps", type=click.IntRange(10, 10_000_000), default=MAX_STEPS, show_default=True,
              help="Scheduling steps per schedule before it is reported as a livelock.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (the result is exactly the one-job result).")
@click.option("--all", "keep_all", is_flag=True, help="Keep counting after a violation.")
@click.option("--stop-on", type=click.Choice(list(STOP_MODES)), default="unaccepted", show_default=True,
              help="Stop at the first bug, or at the first violation of any kind (accepted ones too).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def explore_cmd(scenario: str | None, list_: bool, policy: str | None, planted: bool, strategy: str, schedules: int,
                seed: int, depth: int, bound: int, max_steps: int, jobs: int, keep_all: bool, stop_on: str,
                as_json: bool) -> None:
    """Explore interleavings of a scenario's programs (one memory access per step, weak ordering, IRQ/NMI
    points inside the allocator, grace periods) for reuse bugs."""
    if list_:
        _list(as_json)
        return
    if scenario is None:
        fail("SCENARIO", f"name a scenario ({', '.join(SCENARIOS)}) or use --list")
        return
    sc = SCENARIOS.get(scenario)
    if sc is None:
        fail("SCENARIO", f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
        return
    if policy is None:
        policy = sc.planted_policy if planted else "free" if "free" in sc.policies else sc.policies[0]
    if policy not in sc.policies:
        fail("--policy", f"{scenario} runs under {', '.join(sc.policies)}; not {policy!r}")
    r = explore(scenario, policy, strategy, schedules, seed=seed, depth=depth, bound=bound, jobs=jobs,
                stop=stop_on, keep_all=keep_all, planted=planted, max_steps=max_steps)
    doc = {"tool": "bpfmem", "version": __version__, "command": "explore", **r.to_json(),
           "schedules_per_s": round(r.schedules / r.elapsed_s) if r.elapsed_s else None}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        _print_result(r, doc)
    if r.unaccepted:
        raise Finding(f"{plural(r.unaccepted, 'schedule')} with a bug the kernel would not accept "
                      f"({', '.join(k for k in r.found_kinds if not SCENARIOS[scenario].accepted.get(k))})")


def _list(as_json: bool) -> None:
    rows = [{"name": s.name, "description": s.description, "cpus": s.ncpus,
             "expect": {p: sorted(k) or "none" for p, k in s.expect.items()},
             "accepted": sorted(k for k, a in s.accepted.items() if a),
             "planted": {"bug": s.planted, "policy": s.planted_policy, "expect": sorted(s.planted_expect)}}
            for s in SCENARIOS.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    t = Table(title="scenarios: what each policy must show (none: no bug may be found)")
    for c in ("name", "description", "must show, per policy", "--planted"):
        t.add_column(c)
    for r in rows:
        must = "\n".join(f"{p}: {', '.join(k) if isinstance(k, list) else k}" for p, k in r["expect"].items())
        pl = r["planted"]
        t.add_row(r["name"], r["description"], must,
                  f"{pl['bug']} (under {pl['policy']}: {', '.join(pl['expect'])})")
    Console().print(t)


def _print_result(r: ExploreResult, doc: dict) -> None:
    con = Console()
    what = f"{r.scenario} / {r.policy}{' / planted bug' if r.planted else ''} / {r.strategy}"
    con.print(f"{what}: {plural(r.schedules, 'schedule')} in {r.elapsed_s:.2f} s "
              f"({doc['schedules_per_s']}/s); {r.proves}", highlight=False)
    kinds = ", ".join(f"{k} ×{n}" for k, n in r.found_kinds.items()) or "none"
    con.print(f"violations by kind: {kinds}; runs with a bug: {r.unaccepted:,}", highlight=False)
    if r.first is None:
        con.print("[green]no violation found[/green]" + (" (exhaustive within the bound)" if r.exhausted else ""))
        return
    f = r.first
    con.print(f"[bold]schedule {f.schedule}[/bold]" + (" (stopped the search)" if r.stopped else "") + ":")
    for i, step in enumerate(f.steps):
        con.print(f"  {i:3d}  {step}", highlight=False)
    for v in f.violations:
        tag = "accepted by the kernel" if v["accepted"] else "BUG"
        con.print(f"  [{'yellow' if v['accepted'] else 'red'}]{v['kind']}[/] at step {v['step']} ({tag}): "
                  f"{v['message']}", highlight=False)
    con.print(f"replay: bpfmem replay {f.replay}", highlight=False, soft_wrap=True)


@cli.command("replay")
@click.argument("trace")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def replay_cmd(trace: str, as_json: bool) -> None:
    """Re-run one schedule from its replay string, step for step (fails if this bpfmem asks other questions)."""
    try:
        scenario, policy, planted, res = replay(trace)
    except ReplayDivergence as e:
        fail("TRACE", f"the schedule does not replay here: {e}")
        return
    except (ValueError, KeyError) as e:
        fail("TRACE", str(e))
        return
    doc = {"tool": "bpfmem", "version": __version__, "command": "replay", "scenario": scenario, "policy": policy,
           "planted": planted, "steps": res.steps, "violations": [v.__dict__ for v in res.violations],
           "choices": res.choices}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    con = Console()
    con.print(f"{scenario} / {policy}{' / planted bug' if planted else ''}: {plural(len(res.raw_steps), 'step')}")
    for i, step in enumerate(res.steps):
        con.print(f"  {i:3d}  {step}", highlight=False)
    for v in res.violations:
        con.print(f"  {v.kind} at step {v.step} ({'accepted' if v.accepted else 'BUG'}): {v.message}",
                  highlight=False)
    sys.stdout.flush()


def _register_bench_explore() -> None:
    from .main import bench

    @bench.command("explore")
    @click.option("--schedules", type=click.IntRange(100, 10_000_000), default=3000, show_default=True,
                  help="Random schedules per scenario for the throughput figure.")
    @click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
                  help="Worker processes for the throughput figure (1: one core).")
    @click.option("--max-bound", type=click.IntRange(0, 10), default=3, show_default=True,
                  help="DFS tree sizes are counted for every bound from 0 to this.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
    @html_option
    def bench_explore(schedules: int, jobs: int, max_bound: int, as_json: bool, html_path: str | None) -> None:
        """How fast the explorer runs: random schedules per wall second per scenario (policy free), and the
        size of the DFS tree (schedules within each bound) per scenario and policy."""
        import platform
        rows = []
        for name, sc in SCENARIOS.items():
            pol = "free" if "free" in sc.policies else sc.policies[0]
            r = explore(name, pol, "random", schedules, jobs=jobs, keep_all=True)
            tree = {}
            for p in sc.policies:
                tree[p] = {str(b): explore(name, p, "dfs", 50_000_000, bound=b, keep_all=True).schedules
                           for b in range(max_bound + 1)}
            rows.append({"scenario": name, "policy": pol, "schedules": r.schedules, "wall_s": r.elapsed_s,
                         "schedules_per_s": round(r.schedules / r.elapsed_s) if r.elapsed_s else None,
                         "dfs_tree": tree})
        doc = {"tool": "bpfmem", "version": __version__, "command": "bench explore", "jobs": jobs,
               "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
               "results": rows}
        write_html(doc, html_path, not as_json)
        if as_json:
            click.echo(json.dumps(doc, indent=1))
            return
        t = Table(title=f"explorer speed ({plural(jobs, 'job')}) and DFS tree sizes",
                  caption=f"dfs columns: schedules within bound 0 / 1 / ... / {max_bound}, per policy; "
                          "bug = bug_free_rcu_no_gp; - : the scenario does not run under that policy")
        t.add_column("scenario")
        t.add_column("random/s", justify="right")
        short = {"call_rcu_free": "call_rcu", "bug_free_rcu_no_gp": "bug"}
        shown = [p for p in POLICIES if any(p in r["dfs_tree"] for r in rows)]
        for p in shown:
            t.add_column(short.get(p, p), justify="right")
        for r in rows:
            t.add_row(r["scenario"], f"{r['schedules_per_s']:,}",
                      *(" / ".join(f"{v:,}" for v in r["dfs_tree"][p].values()) if p in r["dfs_tree"] else "-"
                        for p in shown))
        Console().print(t)


_register_bench_explore()
