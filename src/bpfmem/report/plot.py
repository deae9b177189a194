"""Memory over time per list for ``bench htab-mem`` results, as a grid of panels.

Six policies times three use cases is eighteen panels; in one row they shrink
to slivers, with colours that change meaning from panel to panel.  So: rows are
use cases and columns policies (a near-square grid when only one of them
varies), every list keeps one colour (``plotstyle.LISTS``), one legend sits
below the grid, and the figure title names the parameters.  Phases (create,
run, drain, idle, poke, idle after poke, close) are a strip along the top of
each panel; a phase too short to see as a strip (the model's drain and poke
are instants) is a dashed line, and the legend names every phase colour.

Results without a breakdown (the kernel backend) show the memcg charge as a
line; every panel also shows the fdinfo ``memlock`` and, when the samples
missed it, the cgroup's peak.
"""

from __future__ import annotations

from typing import Any, Sequence

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .plotstyle import (PHASES, TOTAL_COLOR, add_case_axes, byte_unit, case_grid, figure_legend, fit_height,
                        fmt_size, join_values, list_color, list_label, list_order, style_axes, time_unit, wrap_parts)

PANEL_W, PANEL_H = 3.5, 2.6        # inches per panel: room for ticks, a title and the phase strip
STRIP = 0.9                        # the phase strip spans axes heights STRIP..1; data stays below
HEADROOM = 0.85                    # data peak at this fraction of the height


def result_kind(results: Sequence[dict[str, Any]]) -> str:
    """'modelled', 'measured', or both: every figure says which numbers it shows."""
    flags = {bool(r.get("modelled", r.get("backend") == "model")) for r in results}
    return "modelled" if flags == {True} else "measured" if flags == {False} else "modelled and measured"


def params_line(results: Sequence[dict[str, Any]], context: dict[str, Any] | None = None) -> str:
    """The parameters every panel shares: use cases, CPUs, sizes, durations, backend."""
    params = (context or {}).get("params") or {}
    backend = (context or {}).get("backend") or {}
    ucs = list(dict.fromkeys(r["use_case"] for r in results))
    cpus = join_values(r.get("cpus") for r in results)
    parts = [("use case " if len(ucs) == 1 else "use cases ") + ", ".join(ucs),
             f"{cpus} CPU{'' if cpus == '1' else 's'}",
             f"value {join_values(r.get('value_size') for r in results)} B",
             f"max_entries {join_values(r.get('max_entries') for r in results)}",
             f"batch {join_values(r.get('batch') for r in results)}",
             f"run {join_values((r.get('duration_s') for r in results), '{:g}')} s"]
    if params.get("idle_s") is not None:
        parts.append(f"idle {params['idle_s']:g} s")
    if params.get("poke") is not None:
        parts.append(f"poke {params['poke']} keys/CPU")
    names = join_values(r.get("backend") for r in results)
    detail = []
    if backend.get("kernel"):
        detail.append(f"Linux {backend['kernel']}")
    if backend.get("memcg"):
        detail.append(f"memcg {backend['memcg']}")
    if backend.get("driver"):
        detail.append(f"{backend['driver']} driver")
    if backend.get("profile"):
        detail.append(f"profile {backend['profile']}")
    if backend.get("seed") is not None:
        detail.append(f"seed {backend['seed']}")
    parts.append(f"backend {names}" + (f" ({', '.join(detail)})" if detail else "") + f": {result_kind(results)}")
    return " · ".join(parts)


def phase_spans(phases: Sequence[Sequence[Any]], t_end: float) -> list[tuple[str, float, float]]:
    """(phase, start s, stop s); the model's instant drain and poke (no samples of their own) are put
    back as zero-length spans where the phases after them start."""
    spans = [(str(p[0]), float(p[1]), float(phases[i + 1][1]) if i + 1 < len(phases) else t_end)
             for i, p in enumerate(phases)]
    names = {s[0] for s in spans}
    for missing, after in (("drain", "idle"), ("poke", "after_poke")):
        if missing not in names:
            spans += [(missing, s[1], s[1]) for s in spans if s[0] == after]
    return sorted(spans, key=lambda s: (s[1], s[2]))


def draw_phases(ax: Axes, spans: list[tuple[str, float, float]], factor: float, x0: float, x1: float,
                width_in: float) -> list[str]:
    """The phase strip along the top of ``ax``; returns the phases drawn (for the legend)."""
    xspan = max(x1 - x0, 1e-12)
    drawn = []
    for name, start, stop in spans:
        label, light, dark = PHASES.get(name, (name, "#eeeeee", "#555555"))
        a, b = start * factor, stop * factor
        if (b - a) / xspan >= 0.02:
            ax.axvspan(a, b, ymin=STRIP, ymax=1.0, facecolor=light, edgecolor="white", lw=0.8, zorder=1)
            text_in = len(label) * 6.5 * 0.56 / 72 + 0.1
            if (b - a) / xspan * width_in >= text_in:
                ax.text((a + b) / 2, (1 + STRIP) / 2, label, transform=ax.get_xaxis_transform(), ha="center",
                        va="center", fontsize=6.5, color="#333333", zorder=4, clip_on=True)
        else:
            ax.axvline(a, ymin=0, ymax=STRIP, color=dark, lw=0.9, ls=(0, (3, 2)), alpha=0.85, zorder=3)
            ax.axvline(a, ymin=STRIP, ymax=1.0, color=dark, lw=2.2, zorder=3)
        drawn.append(name)
    return drawn


def fold_bands(bs: dict[str, Sequence[float]]) -> dict[str, list[float]]:
    """Breakdown keys summed into legend bands (per-CPU free_llist into one), empty bands dropped."""
    bands: dict[str, list[float]] = {}
    for key, vals in bs.items():
        acc = bands.setdefault(list_label(key), [0.0] * len(vals))
        for i, v in enumerate(vals[:len(acc)]):
            acc[i] += v
    return {b: v for b, v in bands.items() if any(v)}


def draw_result(ax: Axes, r: dict[str, Any], factor: float, width_in: float) -> tuple[set[str], set[str]]:
    """One panel: stacked lists (or the charge alone), memlock, missed peak, phases.
    Returns (bands drawn, lines and phases drawn) for the figure legend."""
    series = r.get("series") or []
    t = [float(p[0]) * factor for p in series]
    total = [float(p[1]) for p in series]
    peak = max([float(r.get("peak_bytes") or 0), *total, 0.0])
    memlock = float(r.get("memlock_bytes") or 0)
    unit, div = byte_unit(max(peak, memlock))
    bands = fold_bands(r.get("breakdown_series") or {})
    order = list_order(bands)
    n = min([len(t), *(len(bands[b]) for b in order)])
    if order and n:
        ax.stackplot(t[:n], *[[v / div for v in bands[b][:n]] for b in order],
                     colors=[list_color(b) for b in order], labels=order, lw=0, zorder=2)
    lines = {"total"}
    ax.plot(t, [v / div for v in total], color=TOTAL_COLOR, lw=1.0, zorder=3, label="memcg charge")
    if memlock:
        ax.axhline(memlock / div, color="#7f7f7f", lw=0.9, ls=(0, (5, 3)), zorder=3, label="memlock")
        lines.add("memlock")
    if total and peak > 1.01 * max(total):
        ax.axhline(peak / div, color=TOTAL_COLOR, lw=0.9, ls=(0, (1, 2)), zorder=3, label="peak")
        lines.add("peak")
    x0, x1 = (t[0], t[-1]) if len(t) > 1 else (0.0, 1.0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(0, max(peak, memlock, 1.0) / div / HEADROOM)
    ax.set_ylabel(unit, fontsize=8)
    drawn = draw_phases(ax, phase_spans(r.get("phases") or [], t[-1] / factor if t else 0.0), factor, x0, x1,
                        width_in)
    lines.update(f"phase:{p}" for p in drawn)
    ax.set_title(f"peak {fmt_size(peak)}", loc="right", fontsize=7.5, color="#444444")
    style_axes(ax)
    return set(order), lines


def legend_entries(bands: set[str], lines: set[str], kind: str) -> list[tuple[Artist, str]]:
    """Proxy handles: bands (stack order), the lines, then the phases in run order."""
    out: list[tuple[Artist, str]] = [(Patch(facecolor=list_color(b), lw=0), b) for b in list_order(bands)]
    out.append((Line2D([], [], color=TOTAL_COLOR, lw=1.2), f"memcg charge ({kind})"))
    if "memlock" in lines:
        out.append((Line2D([], [], color="#7f7f7f", lw=1, ls=(0, (5, 3))), "memlock (fdinfo, end of run)"))
    if "peak" in lines:
        out.append((Line2D([], [], color=TOTAL_COLOR, lw=1, ls=(0, (1, 2))), "peak between samples"))
    for name, (label, light, dark) in PHASES.items():
        if f"phase:{name}" in lines:
            out.append((Patch(facecolor=light, edgecolor=dark, lw=1.2), f"phase: {label}"))
    return out


def htab_mem_figure(results: Sequence[dict[str, Any]], *, title: str | None = None,
                    context: dict[str, Any] | None = None) -> Figure:
    """The grid figure for ``bench htab-mem`` results; ``context`` holds the document's
    ``params`` and ``backend`` for the title (optional)."""
    if not results:
        raise ValueError("no results to plot")
    grid = case_grid([(r["use_case"], r["policy"]) for r in results])
    width = max(7.5, grid.cols * PANEL_W + (0.4 if grid.by_case else 0.0))
    fig = Figure(figsize=(width, grid.rows * PANEL_H + 1.0), layout="constrained")
    tunit, factor = time_unit(max((float(r["series"][-1][0]) for r in results if r.get("series")), default=0.0))
    bands: set[str] = set()
    lines: set[str] = set()
    for i, (r, ax) in enumerate(zip(results, add_case_axes(fig, grid))):
        b, lns = draw_result(ax, r, factor, width / grid.cols - 0.8)
        bands |= b
        lines |= lns
        if grid.is_bottom(i):
            ax.set_xlabel(f"time ({tunit})", fontsize=8)
    kind = result_kind(results)
    heading = title or f"bench htab-mem: memory over time, per list ({kind})"
    suptitle = f"{heading}\n{wrap_parts(params_line(results, context), width)}"
    fig.suptitle(suptitle, fontsize=11)
    legend_rows = figure_legend(fig, legend_entries(bands, lines, kind))
    fig.set_size_inches(width, fit_height(grid.rows * PANEL_H, suptitle, legend_rows))
    return fig


def plot_htab_mem(results: Sequence[dict[str, Any]], path: str, *, title: str | None = None,
                  context: dict[str, Any] | None = None) -> None:
    """Write the grid figure of ``results`` to ``path`` (.png, .svg or .pdf)."""
    fig = htab_mem_figure(results, title=title, context=context)
    fig.savefig(path, dpi=110)
