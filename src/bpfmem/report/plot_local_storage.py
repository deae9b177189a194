"""Local-storage churn runs: charged memory over time, stacked by where it sits."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MIB = 1 << 20


def plot_local_storage(results: Sequence[dict[str, Any]], path: str) -> None:
    """One panel per run: payload bytes per place (stacked) and the charged total (line), in MiB."""
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        cfg = r["config"]
        ts = [t for t, _ in r["series"]]
        parts = {k: v for k, v in r["breakdown_series"].items() if any(v)}
        folded: dict[str, list[int]] = {}
        for k, v in parts.items():
            key = k.split("/cpu")[0] + " (all CPUs)" if "/cpu" in k else k
            acc = folded.setdefault(key, [0] * len(v))
            for i, x in enumerate(v):
                acc[i] += x
        names = sorted(folded, key=lambda k: -max(folded[k]))
        ax.stackplot(ts, *[[x / MIB for x in folded[k]] for k in names], labels=names, alpha=0.8)
        ax.plot(ts, [b / MIB for _, b in r["series"]], color="black", lw=1, label="charged (memcg)")
        ax.axvline(cfg["duration_s"], color="grey", ls=":", lw=1)
        ax.set_title(f"{cfg['use_case']} — {cfg['kind']} storage, {r['profile']} ({r['allocator']}), "
                     f"{cfg['cpus']} CPUs, {cfg['rate']:g} ops/s per producer (modelled)", fontsize=9)
        ax.set_xlabel("simulated time (s); dotted: end of the run phase")
        ax.set_ylabel("MiB")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
