"""A published table beside the model, for ``bpfmem reproduce --plot``: one panel per use case, average
memory per flavour as paired bars (published, model after the machine's floor) on a log scale, the
ratio above each pair, a pair outside 2x marked."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .plotstyle import KERNEL_COLOR, MODEL_COLOR, style_axes

OUTSIDE = "#d62728"


def plot_table(table: dict[str, Any], machine: dict[str, Any], path: str) -> None:
    use_cases = list(dict.fromkeys(c["use_case"] for c in table["cells"]))
    fig = Figure(figsize=(max(4.6 * len(use_cases), 9.0), 4.4), layout="constrained")   # room for the title
    axes = fig.subplots(1, len(use_cases), squeeze=False)[0]
    for ax, uc in zip(axes, use_cases):
        cells = [c for c in table["cells"] if c["use_case"] == uc]
        x = list(range(len(cells)))
        # average memory where published; else peak (B.2); else speed (B.3)
        q = next(k for k in ("avg_mib", "peak_mib", "speed") if all(c["published"].get(k) is not None
                                                                       for c in cells))
        pub = [c["published"][q] for c in cells]
        mod = [c["model"][q] for c in cells]
        ax.bar([i - 0.2 for i in x], pub, 0.4, color=KERNEL_COLOR, label="published")
        ax.bar([i + 0.2 for i in x], mod, 0.4, color=MODEL_COLOR, label="model")
        ax.set_yscale("log")
        top = max(pub + mod)
        for i, c in enumerate(cells):
            r = c["ratio"][q]
            ok = c["within_2x"].get(q, True)
            label = "anchor" if c.get("anchor") and q == "speed" else f"×{r:.2f}"
            ax.text(i, max(pub[i], mod[i]) * 1.15, label, ha="center", fontsize=7,
                    color="#333333" if ok else OUTSIDE, fontweight="normal" if ok else "bold")
        ax.set_ylim(min(pub + mod) / 2, top * 3)
        ax.set_xticks(x, [c["policy"] for c in cells], rotation=30, ha="right", fontsize=7.5)
        same = table["order_by_avg_memory"].get(uc, {}).get("same", True)
        ax.set_title(f"{uc}\norder by memory: {'same' if same else 'differs'}" if q != "speed" else uc,
                     fontsize=9, color="#333333" if same else OUTSIDE)
        ax.set_ylabel({"avg_mib": "average memory, MiB (log)", "peak_mib": "peak memory, MiB (log)",
                       "speed": f"speed, {table['speed_unit']} (log)"}[q], fontsize=8)
        style_axes(ax)
    fig.suptitle(f"{table['name']}: {table['title']}\npublished vs model (+{machine['floor_mib']:.2f} MiB machine "
                 f"floor); ×ratio = model ÷ published, red: outside 2×", fontsize=9.5)
    fig.legend(handles=[Patch(color=KERNEL_COLOR, label="published"), Patch(color=MODEL_COLOR, label="model")],
               loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
