"""Bars for ``bench arena-vs-htab`` documents: the same keys in two structures.

The document holds one row per (structure, backend): bytes per element when
full, and the charge at its peak, after deleting a fraction of the keys and
after an idle second.  Two panels: bytes per element (what each element
costs), and the three totals side by side (what deleting gives back).
Colour names the structure, hatching marks modelled rows (solid: measured).
"""

from __future__ import annotations

from typing import Any

from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .plotstyle import byte_unit, figure_legend, fit_height, fmt_size, style_axes, wrap_parts

STRUCT_COLORS = {"htab": "#3b6fb6", "arena": "#f28e2b"}
TOTALS = (("peak_bytes", "peak"), ("after_delete_bytes", "after delete"), ("after_idle_bytes", "after 1 s idle"))


def family(r: dict[str, Any]) -> str:
    """'arena' or 'htab': the structure, without how it was filled."""
    return "arena" if str(r["structure"]).startswith("arena") else "htab"


def row_style(r: dict[str, Any]) -> dict[str, Any]:
    """Bar style of a row: colour by structure family, hatch when modelled."""
    modelled = bool(r.get("modelled", r.get("backend") == "model"))
    return {"facecolor": STRUCT_COLORS[family(r)], "hatch": "////" if modelled else None, "edgecolor": "white", "lw": 0}


def row_label(r: dict[str, Any]) -> str:
    modelled = bool(r.get("modelled", r.get("backend") == "model"))
    return f"{r['structure']} — {r['backend']} ({'modelled' if modelled else 'measured'})"


def arena_figure(doc: dict[str, Any], *, title: str | None = None) -> Figure:
    """The figure for a validated ``bench arena-vs-htab`` document."""
    rows = doc["results"]
    width = max(10.0, 2.2 * len(rows) + 6.0)
    fig = Figure(figsize=(width, 4.5), layout="constrained")
    ax_e, ax_t = fig.subplots(1, 2, width_ratios=[1, 2])
    n = len(rows)
    for i, r in enumerate(rows):
        bpe = float(r["bytes_per_element"])
        ax_e.bar(i, bpe, width=0.8, **row_style(r))
        payload = r.get("element_bytes")
        note = f"{bpe:.1f} B" + (f"\n(payload {payload} B)" if payload else "")
        ax_e.annotate(note, (i, bpe), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                      fontsize=7)
    ax_e.set_xticks(range(n), [f"{family(r)}\n{r['backend']}" for r in rows], fontsize=7.5)
    ax_e.set_ylabel("bytes per element (full map)", fontsize=8)
    ax_e.set_ylim(0, max(float(r["bytes_per_element"]) for r in rows) * 1.3 or 1.0)
    ax_e.set_title("what one element costs", loc="left", fontsize=9, fontweight="bold")
    peak = max(float(r.get(k) or 0) for r in rows for k, _ in TOTALS)
    unit, div = byte_unit(peak)
    w = 0.8 / n
    for i, r in enumerate(rows):
        xs = [g + (i - (n - 1) / 2) * w for g in range(len(TOTALS))]
        vals = [float(r.get(k) or 0) for k, _ in TOTALS]
        ax_t.bar(xs, [v / div for v in vals], width=w * 0.92, **row_style(r))
        for x, v in zip(xs, vals):
            ax_t.annotate(fmt_size(v), (x, v / div), xytext=(0, 2), textcoords="offset points", ha="center",
                          va="bottom", fontsize=6.5, rotation=90 if n > 6 else 0)
    ax_t.set_xticks(range(len(TOTALS)), [lab for _, lab in TOTALS], fontsize=8)
    ax_t.set_ylabel(f"memcg charge ({unit})", fontsize=8)
    ax_t.set_ylim(0, peak / div * (1.35 if n > 6 else 1.12) or 1.0)
    ax_t.set_title("what deleting gives back", loc="left", fontsize=9, fontweight="bold")
    for ax in (ax_e, ax_t):
        style_axes(ax)
    p = doc.get("params") or {}
    kinds = list(dict.fromkeys("modelled" if row_style(r)["hatch"] else "measured" for r in rows))
    parts = [f"{p['elements']:,} elements" if p.get("elements") is not None else "",
             f"value {p['value_size']} B" if p.get("value_size") is not None else "",
             f"delete {100 * p['delete_fraction']:.0f} %" if p.get("delete_fraction") is not None else "",
             f"seed {p['seed']}" if p.get("seed") is not None else "",
             "backends " + ", ".join(dict.fromkeys(str(r["backend"]) for r in rows)) + ": " + " and ".join(kinds)]
    suptitle = (f"{title or 'bench arena-vs-htab: the same keys in a hash map and in an arena hash table'}\n"
                f"{wrap_parts(' · '.join(x for x in parts if x), width)}")
    fig.suptitle(suptitle, fontsize=11)
    entries: list[tuple[Artist, str]] = [(Patch(**row_style(r)), row_label(r)) for r in rows]
    legend_rows = figure_legend(fig, entries)
    notes = wrap_parts(" · ".join(str(x) for x in doc.get("notes") or []), width, fontsize=7.5)
    if notes and fig.legends:   # the notes head the legend: both stay outside the panels, one above the other
        fig.legends[0].set_title(notes, prop={"size": 7.5})
        fig.legends[0].get_title().set_color("#555555")
    fig.set_size_inches(width, fit_height(3.4, suptitle, legend_rows) + 0.15 * (notes.count("\n") + 1 if notes else 0))
    return fig
