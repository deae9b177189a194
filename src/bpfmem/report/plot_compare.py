"""Model against kernel for ``bpfmem compare`` documents, one panel per case.

A compare document holds no time series, only the bench's memory readings at
fixed points of the run (creation, steady, peak, last delete, after idle,
after poke), once from the model and once per kernel run.  Those points are
the x axis: the model is a line, each kernel run a thin line, their range
(widened by the kernel's reading resolution, as ``compare`` judges it) a
band.  A model point outside the band is ringed in red, and the model's error
sits under each point.  The poke-to-drop delay and the operation rate have
other units; they are written under the panel.
"""

from __future__ import annotations

from typing import Any

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .plotstyle import (KERNEL_COLOR, MODEL_COLOR, add_case_axes, byte_unit, case_grid, figure_legend, fit_height,
                        style_axes, wrap_parts)

POINTS = (("create_bytes", "create"), ("steady_bytes", "steady"), ("peak_bytes", "peak"),
          ("at_last_delete_bytes", "last\ndelete"), ("after_idle_bytes", "after\nidle"),
          ("after_poke_bytes", "after\npoke"))
OUTSIDE = "#d62728"
RUN_COLOR = "#9e9e9e"
BAND_COLOR = "#dcdcdc"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _range_text(m: dict[str, Any] | None, fmt: str, unit: str, scale: float = 1.0) -> str:
    """'model X unit, kernel A–B unit' for a metric with other units than bytes."""
    if not m:
        return "-"
    model = _num(m.get("model"))
    ks = [k for k in (_num(v) for v in m.get("kernel") or []) if k is not None]
    out = "model " + ("-" if model is None else fmt.format(model * scale) + unit)
    if ks:
        lo, hi = fmt.format(min(ks) * scale), fmt.format(max(ks) * scale)
        out += ", kernel " + (lo if lo == hi else f"{lo}–{hi}") + unit
    return out


def draw_case(ax: Axes, case: dict[str, Any]) -> set[str]:
    """One case: model line, kernel runs, kernel band, errors under the points. Returns what it drew."""
    metrics = case["metrics"]
    names = [(n, lab) for n, lab in POINTS if n in metrics]
    model = [_num(metrics[n].get("model")) for n, _ in names]
    runs = [[_num(v) for v in metrics[n].get("kernel") or []] for n, _ in names]
    res = [_num(metrics[n].get("resolution")) or 0.0 for n, _ in names]
    values = [v for v in model if v is not None] + [v for r in runs for v in r if v is not None]
    unit, div = byte_unit(max(values, default=0.0))
    x = list(range(len(names)))
    drawn: set[str] = set()
    lo = [min((v for v in r if v is not None), default=None) for r in runs]
    hi = [max((v for v in r if v is not None), default=None) for r in runs]
    if any(v is not None for v in lo):
        ax.fill_between(x, [(a - e) / div if a is not None else float("nan") for a, e in zip(lo, res)],
                        [(b + e) / div if b is not None else float("nan") for b, e in zip(hi, res)],
                        color=BAND_COLOR, lw=0, zorder=1)
        drawn.add("band")
    nruns = max((len(r) for r in runs), default=0)
    for i in range(nruns):
        ys = [r[i] / div if i < len(r) and r[i] is not None else float("nan") for r in runs]
        ax.plot(x, ys, color=RUN_COLOR, lw=0.8, zorder=2)
        drawn.add("runs")
    if nruns:
        mean = [sum(v for v in r if v is not None) / max(1, sum(v is not None for v in r)) / div
                if any(v is not None for v in r) else float("nan") for r in runs]
        ax.plot(x, mean, color=KERNEL_COLOR, lw=1.2, marker="o", ms=4, zorder=3)
        drawn.add("mean")
    ax.plot(x, [v / div if v is not None else float("nan") for v in model], color=MODEL_COLOR, lw=1.6, marker="s",
            ms=4.5, zorder=4)
    labels = []
    for i, (n, lab) in enumerate(names):
        err = _num(metrics[n].get("rel_error"))
        inside = metrics[n].get("inside")
        labels.append(lab + ("" if err is None else f"\n{100 * err:+.1f} %".replace("-", "\u2212")))
        if inside is False and model[i] is not None:
            ax.plot([i], [model[i] / div], marker="o", ms=10, mfc="none", mec=OUTSIDE, mew=1.5, zorder=5)
            drawn.add("outside")
    ax.set_xticks(x, labels, fontsize=7)
    for tick, (n, _) in zip(ax.get_xticklabels(), names):
        if metrics[n].get("inside") is False:
            tick.set_color(OUTSIDE)
    ax.set_xlim(-0.3, len(names) - 0.7)
    ax.set_ylim(0, max(values, default=1.0) / div * 1.12 or 1.0)
    ax.set_ylabel(unit, fontsize=8)
    ax.set_xlabel(f"poke→drop: {_range_text(metrics.get('poke_release_ms'), '{:.0f}', ' ms')}\n"
                  f"map ops/s: {_range_text(metrics.get('ops_per_sec'), '{:.2f}', ' M', 1e-6)}", fontsize=7)
    ax.set_title(f"{nruns} kernel run{'' if nruns == 1 else 's'}", loc="right", fontsize=7.5, color="#444444")
    style_axes(ax)
    return drawn


def compare_params(doc: dict[str, Any]) -> str:
    """The parameters line: workload, kernel, model profile, charge per element."""
    p = doc.get("params") or {}
    k = doc.get("kernel") or {}
    m = doc.get("model") or {}
    ucs = list(dict.fromkeys(c["use_case"] for c in doc["cases"]))
    parts = [("use case " if len(ucs) == 1 else "use cases ") + ", ".join(ucs)]
    for key, fmt in (("cpus", "{} CPUs"), ("value_size", "value {} B"), ("max_entries", "max_entries {}"),
                     ("batch", "batch {}"), ("duration_s", "run {:g} s"), ("idle_s", "idle {:g} s"),
                     ("poke", "poke {} keys/CPU"),
                     ("repeat", "{} kernel runs per case")):
        if p.get(key) is not None:
            parts.append(fmt.format(p[key]))
    kern = ", ".join(x for x in (f"memcg {k['memcg']}" if k.get("memcg") else "",
                                 f"{k['driver']} driver" if k.get("driver") else "") if x)
    if k.get("kernel"):
        parts.append(f"kernel Linux {k['kernel']}" + (f" ({kern})" if kern else "") + ": measured")
    if m.get("profile"):
        parts.append(f"model profile {m['profile']}: modelled")
    e = doc.get("element_charge")
    if isinstance(e, dict) and _num(e.get("model")) is not None and _num(e.get("kernel")) is not None:
        parts.append(f"charge per element (value {e.get('value_size')} B): model {e['model']:.1f} B, "
                     f"kernel {e['kernel']:.1f} B")
    return " · ".join(parts)


def legend_entries(drawn: set[str]) -> list[tuple[Artist, str]]:
    out: list[tuple[Artist, str]] = [
        (Line2D([], [], color=MODEL_COLOR, lw=1.6, marker="s", ms=4.5), "model (modelled)")]
    if "mean" in drawn:
        out.append((Line2D([], [], color=KERNEL_COLOR, lw=1.2, marker="o", ms=4), "kernel mean (measured)"))
    if "runs" in drawn:
        out.append((Line2D([], [], color=RUN_COLOR, lw=0.8), "each kernel run"))
    if "band" in drawn:
        out.append((Patch(facecolor=BAND_COLOR, lw=0), "kernel min–max ± reading resolution"))
    if "outside" in drawn:
        out.append((Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec=OUTSIDE, mew=1.5),
                    "model outside the kernel's range"))
    return out


def compare_figure(doc: dict[str, Any], *, title: str | None = None) -> Figure:
    """The figure for a validated ``bpfmem compare`` document."""
    cases = doc["cases"]
    grid = case_grid([(c["use_case"], c["policy"]) for c in cases])
    width = max(9.0, grid.cols * 3.8)
    panel_h = 3.0
    fig = Figure(figsize=(width, grid.rows * panel_h + 1.5), layout="constrained")
    drawn: set[str] = set()
    for case, ax in zip(cases, add_case_axes(fig, grid)):
        drawn |= draw_case(ax, case)
    suptitle = (f"{title or 'bpfmem compare: model vs kernel, memory at each point of the run'}\n"
                f"{wrap_parts(compare_params(doc), width)}")
    fig.suptitle(suptitle, fontsize=11)
    rows = figure_legend(fig, legend_entries(drawn))
    fig.set_size_inches(width, fit_height(grid.rows * panel_h, suptitle, rows))
    return fig
