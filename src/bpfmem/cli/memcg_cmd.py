"""``bpfmem memcg``: which cgroup pays for each element, per kernel release, and what happens at the limit."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..report.units import fmt_bytes
from .main import cli, fail
from .params import option_of
from .size_cmd import ByteSize


@cli.command("memcg")
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH[=LIMIT]",
              help="A memory cgroup (absolute path) and its limit in bytes, e.g. /orch/app=64M; repeat for a tree "
                   "(default: the built-in example).")
@click.option("--map-in", default=None, metavar="PATH",
              help="The cgroup of the process that creates the map (default: the built-in example's /monitor).")
@click.option("--update", "updates", multiple=True, metavar="CONTEXT[:PATH]=N",
              help="N element additions from process:PATH (a task's bpf(2)), hook:PATH (a program on a cgroup "
                   "hook, in that cgroup's task), softirq or nmi; in this order (default: the built-in example).")
@click.option("--kernel", "rules", default="all", show_default=True,
              help="v5.10, rfc-v8 (the 5.11 series v7/v8, never merged), v5.11, v6.0, v6.18, or all.")
@click.option("--value-size", type=click.IntRange(1, 65536), default=64, show_default=True,
              help="Value size in bytes of the hash map.")
@click.option("--max-entries", type=click.IntRange(1, 1 << 24), default=1 << 17, show_default=True,
              help="max_entries (elements).")
@click.option("--cpus", type=click.IntRange(1, 256), default=4, show_default=True, help="Possible CPUs (CPUs).")
@click.option("--memlock-limit", type=ByteSize(), default=None,
              help="RLIMIT_MEMLOCK in bytes for v5.10 (default 64 KiB; 8 MiB is shown too).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def memcg_cmd(cgroups: tuple[str, ...], map_in: str | None, updates: tuple[str, ...], rules: str, value_size: int,
              max_entries: int, cpus: int, memlock_limit: int | None, as_json: bool) -> None:
    """Who pays for a map's elements and what happens at a memcg limit, per kernel release (modelled).
    Without --cgroup/--update: a monitoring agent's map updated from a container's cgroup hook and softirq."""
    from ..sizing.who_pays import CHARGE_RULES, DEFAULT, MEMLOCK_DEFAULT_OLD, Scenario, Update, who_pays
    names = list(CHARGE_RULES) if rules == "all" else [r.strip() for r in rules.split(",") if r.strip()]
    for r in names:
        if r not in CHARGE_RULES:
            fail("--kernel", f"unknown release rule {r!r}; allowed: {', '.join(CHARGE_RULES)} or all")
    if not cgroups and not updates and map_in is None:
        sc = DEFAULT
        builtin = True
    else:
        builtin = False
        tree: dict[str, int | None] = {}
        for text in cgroups:
            path, _, lim = text.partition("=")
            try:
                tree[path] = ByteSize().convert(lim, None, None) if lim else None
            except click.BadParameter as e:
                fail("--cgroup", f"{text!r}: {e.message}")
        if map_in is None:
            fail("--map-in", "name the cgroup of the process that creates the map")
        try:
            ups = [Update.parse(u) for u in updates]
        except ValueError as e:
            fail("--update", str(e))
        if not ups:
            fail("--update", "give at least one update source, e.g. --update softirq=1000")
        sc = Scenario(tree, map_in, ups, value_size=value_size, max_entries=max_entries, cpus=cpus,
                      memlock_limit=memlock_limit or MEMLOCK_DEFAULT_OLD)
    try:
        out = who_pays(sc, names)
    except ValueError as e:
        msg = str(e)
        opt = "--max-entries" if "--max-entries" in msg else \
            option_of(msg, "--kernel" if msg.startswith("unknown rule") else "--cgroup")
        fail(opt, msg)
    out["builtin_example"] = builtin
    out["version"] = __version__
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    _print(out)


def _print(out: dict[str, Any]) -> None:
    con = Console()
    sc = out["scenario"]
    head = "built-in example: " if out["builtin_example"] else ""
    con.print(f"{head}map created in {sc['map_in']}; cgroups "
              + ", ".join(f"{p}{' ≤ ' + fmt_bytes(l) if l else ''}" for p, l in sc["cgroups"].items())
              + f"; value {sc['value_size']} B — modelled")
    for r in out["rules"]:
        title = f"{r['rule']} ({r['kernel']}{'' if r['merged'] else ', NOT MERGED'}) — {r['source']}"
        t = Table(title=title, title_justify="left")
        for c in ("update", "elements", "charged to", "ok", "failed"):
            t.add_column(c, justify="right" if c in ("elements", "ok", "failed") else "left")
        for u in r["updates"]:
            t.add_row(u["context"] + (f":{u['cgroup']}" if u["cgroup"] else ""), f"{u['count']:,}", u["charged_to"],
                      f"{u['ok']:,}", f"{u['failed']:,}")
        con.print(t)
        if "memlock" in r:
            ml = r["memlock"]
            con.print(f"  memlock precharge {fmt_bytes(ml['cost_bytes'])} against RLIMIT_MEMLOCK "
                      f"{fmt_bytes(ml['limit_bytes'])}: {ml['create']}; under the defaults: "
                      + ", ".join(f"{k}: {v}" for k, v in ml["under_defaults"].items()))
        for path, c in r["cgroups"].items():
            lim = fmt_bytes(c["limit_bytes"]) if c["limit_bytes"] else "no limit"
            con.print(f"  {path}: usage {fmt_bytes(c['usage_bytes'])} / {lim}, failcnt {c['failcnt']:,}"
                      + ("  [AT LIMIT]" if c["at_limit"] else ""))
        for o in r["outcomes"]:
            con.print(f"  → {o}")
