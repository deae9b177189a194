"""Terminal rendering of bench results with rich."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from .units import MIB, fmt_bytes


def bench_line(r: dict[str, Any]) -> str:
    """The selftests bench's own output line."""
    return (f"{r['use_case']} per-prod-op: {r['per_prod_op']:.2f}k/s, avg mem: {r['steady_bytes'] / MIB:.2f}MiB, "
            f"peak mem: {r['peak_bytes'] / MIB:.2f}MiB  [{r['policy']}]")


def htab_mem_table(results: Sequence[dict[str, Any]]) -> Table:
    t = Table(title="bench htab-mem (bytes: the map's memcg charge)", header_style="bold")
    for col, just in (("use case", "left"), ("policy", "left"), ("per-prod-op", "right"), ("map ops/s", "right"),
                      ("steady", "right"), ("peak", "right"), ("last delete", "right"), ("after idle", "right"),
                      ("after poke", "right"), ("poke→drop", "right"), ("memlock", "right"), ("errors", "left")):
        t.add_column(col, justify=just, no_wrap=col in ("use case", "policy"))  # type: ignore[arg-type]
    for r in results:
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-"
        rel = "-" if r["poke_release_ms"] is None else f"{r['poke_release_ms']:.0f} ms"
        t.add_row(r["use_case"], r["policy"], f"{r['per_prod_op']:.2f}k/s", f"{r['ops_per_sec'] / 1e6:.2f} M",
                  fmt_bytes(r["steady_bytes"]), fmt_bytes(r["peak_bytes"]), fmt_bytes(r["at_last_delete_bytes"]),
                  fmt_bytes(r["after_idle_bytes"]), fmt_bytes(r["after_poke_bytes"]), rel,
                  fmt_bytes(r["memlock_bytes"]), errs)
    return t


def breakdown_table(r: dict[str, Any]) -> Table | None:
    bd = r.get("breakdown")
    if not bd:
        return None
    total = sum(bd.values())
    t = Table(title=f"where the bytes sit at the end of the run: {r['use_case']} / {r['policy']}",
              header_style="bold")
    t.add_column("place")
    t.add_column("bytes", justify="right")
    t.add_column("share", justify="right")
    for k, v in sorted(bd.items(), key=lambda kv: -kv[1]):
        if v:
            t.add_row(k, fmt_bytes(v), f"{100 * v / total:.1f} %" if total else "-")
    t.add_row("[bold]total (memcg charge)[/bold]", fmt_bytes(total), "100 %")
    for k, v in sorted((r.get("uncharged") or {}).items(), key=lambda kv: -kv[1]):
        t.add_row(f"[dim]{k} (charged to no cgroup)[/dim]", f"[dim]{fmt_bytes(v)}[/dim]", "")
    return t


def print_htab_mem(console: Console, doc: dict[str, Any], *, breakdowns: bool) -> None:
    results = doc["results"]
    for r in results:
        console.print(bench_line(r), highlight=False, markup=False)
    console.print(htab_mem_table(results))
    if breakdowns:
        for r in results:
            t = breakdown_table(r)
            if t is not None:
                console.print(t)
    for name, info in doc.get("policies", {}).items():
        if "prediction" in info.get("kernel", ""):
            console.print(f"[dim]{name} is a prediction: the next release's changes as posted to the mailing lists, "
                          f"not measured on any kernel ({info.get('description', '')}).[/dim]", highlight=False)
    mt = doc.get("params", {}).get("map_type", "hash")
    if mt.startswith("lru"):
        note = f"Map type {mt}: preallocated (the policy's element store does not apply); a full map evicts."
        if doc["backend"].get("backend") == "model":
            note += " Its ops/s uses the preallocated-element costs: the LRU lists' own cost is not calibrated."
        console.print(f"[dim]{note}[/dim]", highlight=False)
    elif mt != "hash":
        console.print(f"[dim]Map type {mt}.[/dim]", highlight=False)
    console.print(f"[dim]{provenance(doc['backend'])}[/dim]", highlight=False)


def provenance(b: dict[str, Any]) -> str:
    """One sentence saying what produced the numbers: the model (and its costs) or the kernel (and how)."""
    cpus = b.get("cpus")
    if b.get("backend") == "model":
        return (f"All numbers are modelled, not measured: {cpus} simulated CPU{'' if cpus == 1 else 's'}, "
                f"seed {b.get('seed')}, costs: {b.get('costs')}. Bytes are the map's own memcg charge.")
    return (f"Measured on the running kernel: Linux {b.get('kernel')}, {cpus} CPU{'' if cpus == 1 else 's'}, "
            f"driver {b.get('driver')}, memcg {b.get('memcg')} ({b.get('usage_file')}) sampled every "
            f"{b.get('sample_interval_ms')} ms. Bytes are the map's own memcg charge.")
