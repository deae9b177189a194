"""``bpfmem size``: before deploying a hash map, what it costs and which memcg limit is safe."""

from __future__ import annotations

import json
import re
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..backend.protocol import MAP_TYPES
from ..maps.policies import DEFAULT_RELEASE
from ..report.units import fmt_bytes
from .main import cli, fail, kernel_policies
from .params import Finite

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# one CPU's memcg charge stock: MEMCG_CHARGE_BATCH (64) pages, charged but not yet used (mm/memcontrol.c)
STOCK_BYTES = 64 * 4096
TOLERANCE = 0.02


class ByteSize(click.ParamType):
    """Bytes: an integer with an optional K, M or G suffix (powers of 1024)."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", str(value))
        if not m:
            self.fail(f"{value!r} is not a size (an integer with an optional K, M or G suffix)", param, ctx)
        n = int(m.group(1)) * _UNITS[m.group(2).lower()]
        if n < 1:
            self.fail("must be at least 1 byte", param, ctx)
        return n


@cli.command("size")
@click.option("--map-type", type=click.Choice(MAP_TYPES), default="hash", show_default=True,
              help="The hash map type.")
@click.option("--key-size", type=click.IntRange(1, 1 << 20), default=4, show_default=True, help="Key size in bytes.")
@click.option("--value-size", type=click.IntRange(1, 1 << 22), default=64, show_default=True,
              help="Value size in bytes.")
@click.option("--max-entries", type=click.IntRange(1, 1 << 24), default=65536, show_default=True,
              help="max_entries (elements).")
@click.option("--cpus", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Possible CPUs of the machine the map runs on (CPUs).")
@click.option("--kernel", "release", default=DEFAULT_RELEASE, show_default=True,
              help="Kernel release (v6.1 .. v6.19) or a policy name.")
@click.option("--prealloc", is_flag=True, help="Without BPF_F_NO_PREALLOC (LRU maps always are).")
@click.option("--delete-rate", type=Finite(0, 1e12), default=0.0, show_default=True,
              help="Deletes per second on CPUs other than the adding one (their frees wait for a grace period).")
@click.option("--memcg-limit", type=ByteSize(), default=None,
              help="Limit in bytes (K/M/G suffixes) of a cgroup holding only the map, its creation included: how "
                   "many elements fit (default: no limit).")
@click.option("--backend", type=click.Choice(["model", "kernel"]), default="model", show_default=True,
              help="kernel: also create the map in a limited child cgroup of this kernel and count (needs "
                   "--memcg-limit).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def size_cmd(map_type: str, key_size: int, value_size: int, max_entries: int, cpus: int, release: str,
             prealloc: bool, delete_rate: float, memcg_limit: int | None, backend: str, as_json: bool) -> None:
    """What a hash map costs when full, what fdinfo will say, and the smallest safe memcg limit (modelled)."""
    from ..sizing import SizeQuery, check_limit, size_kernel, size_model
    try:
        q = SizeQuery(map_type, key_size, value_size, max_entries, cpus, release, not prealloc, delete_rate,
                      memcg_limit)
    except ValueError as e:
        option = "--kernel" if "release" in str(e) or "policy" in str(e) else "--max-entries"
        fail(option, str(e))
    if backend == "kernel":
        if memcg_limit is None:
            fail("--backend", "the kernel check counts elements up to a limit: give --memcg-limit")
        kernel_policies(release)        # only this kernel's own release can be checked here
        import os
        if cpus != len(os.sched_getaffinity(0)):
            fail("--cpus", f"the kernel check runs on this machine's {len(os.sched_getaffinity(0))} CPUs; "
                           f"use --cpus {len(os.sched_getaffinity(0))}")
    why = check_limit(q)
    if why:
        fail("--memcg-limit", why)
    out = size_model(q)
    out["version"] = __version__
    at = out.get("at_limit")
    if at is not None:
        low = max(0, at["elements"] - -(-STOCK_BYTES // max(1, int(out["per_element_bytes"]))))
        at["elements_low"] = low
        at["note"] = ("the model charges exact bytes; the kernel may stop earlier by up to one CPU's memcg charge "
                      f"stock ({STOCK_BYTES // 1024} KiB) left on the CPU that created the map")
    if backend == "kernel":
        k = size_kernel(q)
        out["measured"] = k
        if at is not None and k["elements"]:
            out["model_vs_kernel"] = round(at["elements"] / k["elements"], 4)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    _print(out)


def _print(out: dict[str, Any]) -> None:
    q = out["query"]
    con = Console()
    t = Table(title=f"{q['map_type']} map, key {q['key_size']} B, value {q['value_size']} B, "
                    f"{q['max_entries']:,} entries, {q['cpus']} CPUs, {out['policy']} ({out['kernel']}) — modelled",
              show_header=True)
    t.add_column("what")
    t.add_column("bytes", justify="right")
    t.add_column("")
    t.add_row("map creation (memcg)", fmt_bytes(out["create_bytes"]), "struct, buckets, per-CPU prefill")
    t.add_row("full (memcg)", fmt_bytes(out["full_bytes"]), f"{out['per_element_bytes']:.1f} B per element")
    t.add_row("fdinfo memlock when full", fmt_bytes(out["memlock_bytes"]), "what bpftool will show")
    t.add_row("spare elements", fmt_bytes(out["spare_bytes_max"]), "up to a high watermark per CPU")
    t.add_row("parked frees", fmt_bytes(out["parked_bytes_max"]),
              f"{q['delete_rate']:g} deletes/s × {out['parked_wait_ms']:.0f} ms (lazy tasks-trace GP + GPs)")
    t.add_row("smallest limit that never refuses", fmt_bytes(out["min_limit_bytes"]),
              f"+ up to {STOCK_BYTES // 1024} KiB per CPU of memcg charge stock")
    con.print(t)
    at = out.get("at_limit")
    if at is not None:
        con.print(f"limit {fmt_bytes(at['limit_bytes'])}: {at['elements']:,} elements "
                  f"(kernel: ≥ {at['elements_low']:,}), then {at['stopped_by']}"
                  + (f"; {at['readded']:,} of {at['deleted']:,} deleted elements re-added at once"
                     if "readded" in at else ""))
    k = out.get("measured")
    if k is not None:
        con.print(f"kernel (measured): {k['elements']:,} elements, then {k['stopped_by']}; usage "
                  f"{fmt_bytes(k['usage_bytes'])}, failcnt {k['failcnt']}"
                  + (f"; {k['readded']:,} of {k['deleted']:,} re-added" if "readded" in k else "")
                  + (f"; model/kernel {out['model_vs_kernel']:.3f}" if "model_vs_kernel" in out else ""))
