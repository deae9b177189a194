"""What every bpfmem figure shares: colours, units, grid shapes, the legend.

A reader compares panels by colour and axis, so both must mean the same thing
everywhere: a list has one colour in every panel of every figure (a fixed
table keyed by list name, per-CPU keys folded into one band), and axes pick
B/KiB/MiB and ms/s from the data so tick labels stay short.  Figures are built
on ``matplotlib.figure.Figure`` directly (no pyplot state, no display).
"""

from __future__ import annotations

import math
import textwrap
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .units import KIB, MIB

# breakdown bands, bottom of the stack first: (legend label, colour).  Kernel names stay verbatim.
LISTS: tuple[tuple[str, str], ...] = (
    ("htab struct + buckets", "#a5a5a5"),
    ("live elements", "#3b6fb6"),
    ("free_llist (all CPUs)", "#3a9e4f"),
    ("free_llist_extra", "#a6d96a"),
    ("free_llist_extra_rcu", "#d9f0a3"),
    ("pcpu_freelist", "#1b9e77"),
    ("extra_elems", "#80cdc1"),
    ("free_by_rcu", "#7b5ea7"),
    ("waiting_for_gp", "#c994c7"),
    ("free_by_rcu_ttrace", "#f28e2b"),
    ("waiting_for_gp_ttrace", "#d62728"),
    ("call_rcu (waiting to kfree)", "#e7298a"),
    ("percpu values (pcpu_ma)", "#17becf"),
    ("slab rounding + objcg", "#8c564b"),
    ("area rounding", "#c49c94"),
)
LIST_COLORS = dict(LISTS)
# colours for keys no table row knows, chosen by a stable hash of the name (not Python's salted hash)
SPARE_COLORS = ("#bcbd22", "#9edae5", "#dbdb8d", "#ff9896", "#c5b0d5", "#f7b6d2", "#636363")

# phases of bench htab-mem: (label, light fill for the strip, dark colour for a line when too short)
PHASES: dict[str, tuple[str, str, str]] = {
    "create": ("create", "#f0f0f0", "#737373"),
    "run": ("run", "#c6dbef", "#2171b5"),
    "drain": ("drain", "#fdd0a2", "#e6550d"),
    "idle": ("idle", "#e5f5e0", "#31a354"),
    "poke": ("poke", "#fcbba1", "#cb181d"),
    "after_poke": ("idle after poke", "#e7e1ef", "#756bb1"),
    "close": ("close", "#d9d9d9", "#252525"),
}

TOTAL_COLOR = "#111111"
MODEL_COLOR = "#3b6fb6"
KERNEL_COLOR = "#111111"


def list_label(key: str) -> str:
    """The legend label (band) of a breakdown key: per-CPU and near-identical keys share one band."""
    if key.startswith("pcpu_ma:"):
        return "percpu values (pcpu_ma)"
    if key in ("htab", "buckets"):
        return "htab struct + buckets"
    if key == "live":
        return "live elements"
    if key.startswith("free_llist/"):
        return "free_llist (all CPUs)"
    if key == "slab_rounding":
        return "slab rounding + objcg"
    if key == "area_rounding":
        return "area rounding"
    if key == "call_rcu":
        return "call_rcu (waiting to kfree)"
    return key


def list_color(label: str) -> str:
    """One colour per band label, the same in every panel and figure."""
    if label in LIST_COLORS:
        return LIST_COLORS[label]
    return SPARE_COLORS[zlib.crc32(label.encode()) % len(SPARE_COLORS)]


def list_order(labels: Iterable[str]) -> list[str]:
    """Stacking order, bottom first: the table's order, then unknown bands by name."""
    present = set(labels)
    return [b for b, _ in LISTS if b in present] + sorted(present - set(LIST_COLORS))


def byte_unit(peak: float) -> tuple[str, float]:
    """(unit, divisor) that keeps ``peak`` between 1 and 1023 units."""
    if peak >= MIB:
        return "MiB", float(MIB)
    if peak >= KIB:
        return "KiB", float(KIB)
    return "B", 1.0


def fmt_size(n: float) -> str:
    """Bytes in the unit ``byte_unit`` picks, three significant digits."""
    unit, div = byte_unit(abs(n))
    v = n / div
    return f"{v:.0f} {unit}" if unit == "B" or abs(v) >= 100 else f"{v:.3g} {unit}"


def time_unit(span_s: float) -> tuple[str, float]:
    """(unit, factor from seconds): ms below two seconds, else s."""
    return ("ms", 1000.0) if span_s < 2.0 else ("s", 1.0)


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) for n panels: one row up to three, then near-square and wider than tall."""
    if n <= 3:
        return 1, max(n, 1)
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


@dataclass(frozen=True)
class CaseGrid:
    """Where each (use case, policy) panel goes: rows are use cases and columns policies when both
    vary (``by_case``), else a near-square grid in the given order."""

    rows: int
    cols: int
    cells: list[int]
    by_case: bool
    pairs: list[tuple[str, str]]

    def is_first_in_row(self, i: int) -> bool:
        row = self.cells[i] // self.cols
        return self.cells[i] == min(c for c in self.cells if c // self.cols == row)

    def is_bottom(self, i: int) -> bool:
        return self.cells[i] + self.cols not in self.cells


def case_grid(pairs: Sequence[tuple[str, str]]) -> CaseGrid:
    """The grid for panels keyed by (use case, policy), in the order given."""
    ucs = list(dict.fromkeys(uc for uc, _ in pairs))
    pols = list(dict.fromkeys(p for _, p in pairs))
    if len(ucs) > 1 and len(pols) > 1 and len(set(pairs)) == len(pairs):
        cols = len(pols)
        return CaseGrid(len(ucs), cols, [ucs.index(uc) * cols + pols.index(p) for uc, p in pairs], True, list(pairs))
    rows, cols = grid_shape(len(pairs))
    return CaseGrid(rows, cols, list(range(len(pairs))), False, list(pairs))


def add_case_axes(fig: Figure, grid: CaseGrid) -> list[Axes]:
    """One axes per pair, titled: policy on each panel and the use case at the left of each row
    (``by_case``), else whatever of the two varies."""
    gs = fig.add_gridspec(grid.rows, grid.cols)
    ucs = {uc for uc, _ in grid.pairs}
    pols = {p for _, p in grid.pairs}
    out = []
    for i, ((uc, pol), cell) in enumerate(zip(grid.pairs, grid.cells)):
        ax = fig.add_subplot(gs[cell // grid.cols, cell % grid.cols])
        if grid.by_case:
            ax.set_title(pol, loc="left", fontsize=9, fontweight="bold")
            if grid.is_first_in_row(i):
                ax.annotate(uc, xy=(0, 0.5), xycoords=ax.yaxis.label, xytext=(-5, 0), textcoords="offset points",
                            rotation=90, ha="right", va="center", fontsize=10, fontweight="bold")
        else:
            label = pol if len(ucs) == 1 < len(pols) else uc if len(pols) == 1 < len(ucs) else f"{uc} / {pol}"
            ax.set_title(label, loc="left", fontsize=9, fontweight="bold")
        out.append(ax)
    return out


def wrap_parts(line: str, width_in: float, fontsize: float = 11.0) -> str:
    """Wrap a ' · '-joined line at its separators so each line fits ``width_in`` inches."""
    chars = max(30, int((width_in - 0.4) * 72 / (fontsize * 0.56)))
    out: list[str] = []
    for part in line.split(" · "):
        if out and len(out[-1]) + 3 + len(part) <= chars:
            out[-1] += " · " + part
        else:
            out.extend(textwrap.wrap(part, chars, break_long_words=False) or [part])
    return "\n".join(out)


def join_values(values: Iterable[Any], fmt: str = "{}") -> str:
    """'8192' if every value is equal, else '8192/16384' (in first-seen order)."""
    uniq = list(dict.fromkeys(v for v in values if v is not None))
    return "/".join(fmt.format(v) for v in uniq) if uniq else "default"


def figure_legend(fig: Figure, entries: Sequence[tuple[Artist, str]], *, where: str = "below") -> int:
    """One legend for the whole figure, outside every panel (below or right of the grid).
    Returns its height in text rows, to size the figure."""
    if not entries:
        return 0
    handles = [h for h, _ in entries]
    labels = [lab for _, lab in entries]
    if where == "right":
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
        return 0
    ncols = max(1, min(len(entries), int(fig.get_size_inches()[0] / 2.3)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False,
               columnspacing=1.6, handlelength=1.8)
    return -(-len(entries) // ncols)


def fit_height(panels_h: float, suptitle: str, legend_rows: int) -> float:
    """Figure height: the panels, the title's lines and the legend's rows below them."""
    return panels_h + 0.2 + 0.2 * (suptitle.count("\n") + 1) + (0.21 * legend_rows + 0.15 if legend_rows else 0)


def style_axes(ax: Axes) -> None:
    """Quiet frame and grid so the data carries the colour."""
    ax.tick_params(labelsize=7.5, length=3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#e6e6e6", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
