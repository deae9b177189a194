"""``bpfmem whatif --plot``: one figure per question, the kernel beside each proposal.

- quiet, hotplug: bytes the burst left in bpf_global_ma over simulated time, one line per policy (hotplug
  adds, dashed, what sits on the offline CPU);
- share: peak and steady memory per policy at each CPU count, with the added cost per operation;
- pressure: the share of allocations that failed per policy, with the peak.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .plotstyle import byte_unit  # noqa: E402


def _lines(ax: Any, rows: Sequence[dict[str, Any]], question: str) -> None:
    peak = max(max((b for _, b in r["series"]), default=0) for r in rows)
    unit, div = byte_unit(max(peak, 1))
    for r in rows:
        pol = r["config"]["policy"]
        ts = [t for t, _ in r["series"]]
        line, = ax.plot(ts, [max(b, 0) / div for _, b in r["series"]], lw=1.5, label=f"{pol}: held by the allocator")
        if question == "hotplug":
            ax.plot([t for t, _ in r["stranded_series"]], [b / div for _, b in r["stranded_series"]],
                    ls="--", lw=1, color=line.get_color(), label=f"{pol}: on the offline CPU")
    c0 = rows[0]["config"]
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("simulated seconds after the frees (linear to 1 s, then log)")
    ax.set_ylabel(unit)
    what = "half the CPUs free a burst, then stay quiet" if question == "quiet" else \
        "one CPU frees a burst, goes offline at 0.1 s, returns halfway"
    ax.set_title(f"{question}: {what}\n{c0['objects']:,} objects of {c0['size']} B per bursting CPU, "
                 f"{c0['cpus']} CPUs — bpf_global_ma, slab above boot (modelled)", fontsize=9)


def _share(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    peak = max(r["peak_bytes"] for r in rows)
    unit, div = byte_unit(max(peak, 1))
    labels = [f"{r['config']['policy']}\n{r['config']['cpus']} CPUs" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["peak_bytes"] / div for r in rows], width=0.4, label="peak")
    ax.bar([x + 0.2 for x in xs], [r["steady_bytes"] / div for r in rows], width=0.4, label="steady")
    for x, r in zip(xs, rows):
        cost = r["cost"]
        note = f"+{cost['added_ns_per_op']:g} ns/op" if cost else "kernel"
        ax.annotate(note, (x, r["peak_bytes"] / div), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title("share: htab-mem add_del_on_diff_cpu — the map's memory, peak and steady (modelled)", fontsize=9)


def _pressure(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    xs = range(len(rows))
    rates = [100 * (r["failure_rate"] or 0) for r in rows]
    ax.bar(list(xs), rates, width=0.6, color="tab:red")
    unit, div = byte_unit(max(max(r["peak_bytes"] for r in rows), 1))
    for x, r, v in zip(xs, rows, rates):
        ax.annotate(f"{v:.1f} %\npeak {r['peak_bytes'] / div:.3g} {unit}", (x, v), ha="center", va="bottom",
                    fontsize=8)
    ax.set_xticks(list(xs), [r["config"]["policy"] for r in rows], fontsize=8)
    ax.set_ylabel("allocations that failed (%)")
    ax.set_ylim(0, max(rates + [1]) * 1.3)
    c0 = rows[0]["config"]
    ax.set_title(f"pressure: slab budget {c0['budget_bytes'] / 2**20:g} MiB for bpf_global_ma's objects, "
                 f"{c0['duration_s']:g} s (modelled)", fontsize=9)


def plot_whatif(results: Sequence[dict[str, Any]], outdir: str) -> list[str]:
    """Write ``whatif-<question>.png`` into ``outdir`` (made if missing) for each question in ``results``."""
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for q in dict.fromkeys(r["config"]["question"] for r in results):
        rows = [r for r in results if r["config"]["question"] == q]
        fig, ax = plt.subplots(figsize=(9, 4.2))
        if q in ("quiet", "hotplug"):
            _lines(ax, rows, q)
            ax.legend(fontsize=7, loc="upper right")
        elif q == "share":
            _share(ax, rows)
            ax.legend(fontsize=8)
        else:
            _pressure(ax, rows)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(outdir, f"whatif-{q}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
