"""Memory-over-time plots of bench results (matplotlib, no display needed)."""

from __future__ import annotations

from typing import Any, Sequence

from .units import MIB

PHASE_COLORS = {"run": "#f0f0f0", "drain": "#ffe8cc", "idle": "#e8f0ff", "poke": "#ffd6d6", "after_poke": "#e8ffe8"}

# bands bottom-up, each with a fixed colour so panels compare at a glance
BANDS: tuple[tuple[str, str], ...] = (
    ("map struct + buckets", "#9e9e9e"),
    ("live elements", "#1f77b4"),
    ("free_llist (all CPUs)", "#2ca02c"),
    ("free_llist_extra", "#98df8a"),
    ("prealloc free (pcpu_freelist + extra_elems)", "#2ca02c"),
    ("free_by_rcu", "#9467bd"),
    ("waiting_for_gp", "#e377c2"),
    ("free_by_rcu_ttrace", "#ff7f0e"),
    ("waiting_for_gp_ttrace", "#d62728"),
    ("call_rcu (waiting to kfree)", "#d62728"),
    ("percpu values (pcpu_ma)", "#17becf"),
    ("slab rounding + objcg", "#8c564b"),
)


def band_of(key: str, profile_lists: dict[str, str] | None = None) -> str:
    """The plot band a breakdown key belongs to."""
    if key.startswith("pcpu_ma:"):
        return "percpu values (pcpu_ma)"
    if key in ("htab", "buckets"):
        return "map struct + buckets"
    if key == "live":
        return "live elements"
    if key.startswith("free_llist/"):
        return "free_llist (all CPUs)"
    if key in ("pcpu_freelist", "extra_elems"):
        return "prealloc free (pcpu_freelist + extra_elems)"
    if key in ("slab_rounding", "area_rounding"):
        return "slab rounding + objcg"
    if key == "call_rcu":
        return "call_rcu (waiting to kfree)"
    return key


def plot_htab_mem(results: Sequence[dict[str, Any]], path: str) -> None:
    """One panel per (use case, policy): stacked bytes per list over time, total as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_cases = list(dict.fromkeys(r["use_case"] for r in results))
    policies = list(dict.fromkeys(r["policy"] for r in results))
    nrow, ncol = len(use_cases), len(policies)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol + 1.5, 3.0 * nrow + 0.8), squeeze=False)
    for r in results:
        ax = axes[use_cases.index(r["use_case"])][policies.index(r["policy"])]
        t = [p[0] for p in r["series"]]
        total = [p[1] / MIB for p in r["series"]]
        phases = r.get("phases") or []
        for i, (name, start) in enumerate(phases):
            stop = phases[i + 1][1] if i + 1 < len(phases) else (t[-1] if t else start)
            ax.axvspan(start, stop, color=PHASE_COLORS.get(name, "#ffffff"), lw=0, zorder=0)
        bs = r.get("breakdown_series")
        if bs:
            bands: dict[str, list[float]] = {}
            for k, vals in bs.items():
                acc = bands.setdefault(band_of(k), [0.0] * len(vals))
                for i, v in enumerate(vals):
                    acc[i] += v / MIB
            bands = {b: v for b, v in bands.items() if any(v)}
            order = [b for b, _ in BANDS if b in bands] + sorted(b for b in bands if b not in dict(BANDS))
            colors = dict(BANDS)
            n = min(len(t), *(len(bands[b]) for b in order)) if order else 0
            if n:
                ax.stackplot(t[:n], *[bands[b][:n] for b in order], labels=order,
                             colors=[colors.get(b, "#bcbd22") for b in order], alpha=0.9, zorder=1)
        ax.plot(t, total, color="black", lw=0.8, label="memcg charge", zorder=2)
        mode = "modelled" if r.get("modelled", True) else "measured"
        ax.set_title(f"{r['use_case']} / {r['policy']} ({mode})", fontsize=9)
        span = (t[-1] - t[0]) if len(t) > 1 else 1.0
        for i, (name, start) in enumerate(phases):
            stop = phases[i + 1][1] if i + 1 < len(phases) else start + span
            if stop - start >= 0.04 * span:                 # label only phases wide enough to read
                ax.text(start, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize=6, va="top",
                        color="#555")
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("MiB", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = [], []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / (4.2 * ncol + 1.5), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
