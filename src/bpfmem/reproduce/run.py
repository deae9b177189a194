"""Run a published table on the model and set it beside the published numbers.

Problem: the allocator debate was settled with tables measured on patched kernels of 2023 on an
8-CPU guest.  The model can run each flavour as posted, but two things differ from that machine
and must not be fitted cell by cell: the bench process's own memory-cgroup floor (programs, BTF,
stacks, the bss array: what the preallocated and no_op rows show) and the machine's speed.

Mechanism: each cell runs the published benchmark variant (``rfc``: ``--max-entries 16384 --full
50``, 1024 keys per CPU per invocation, 2048 for add_del pairs, loop counts summed over producers;
``merged``: OP_BATCH 64, per-producer batches) on that era's policy, 8 CPUs, for ``duration_s``
simulated seconds.  Then one memory floor (MiB) and one speed factor per machine are fitted from
the preallocated rows of all the machine's tables of the same benchmark variant (the RFC bench and the
merged one are different programs with different floors; floor: mean of published − model average;
factor: geometric mean of published ÷ model speed) and applied to every cell of that variant alike.  Memory and
speed are *modelled*; the ratio is model ÷ published.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Callable

from ..backend.model import ModelBackend
from ..backend.profile import Profile
from ..bench import run_htab_mem
from ..maps.policies import get_policy
from ..workloads import HtabMemConfig, htab_mem
from ..workloads.map_perf import MAP_PERF_OPS_PER_EVENT, map_perf_test
from .tables import MACHINE, TABLES, PublishedTable

NS = 1_000_000_000
MIB = 1 << 20
WITHIN = 2.0                    # a cell is met when model / published is within this factor


def cell_config(table: PublishedTable, policy: str, use_case: str) -> HtabMemConfig:
    """The benchmark as published: the RFC variants walk ``nr_entries = 16384 * 50 %`` keys split over the
    producers (pairs for add_del; RFC v2's pairs without barriers), the merged one OP_BATCH 64 keys per
    invocation, htab-update each CPU's ``16384 / producers`` keys of 255 B added then deleted."""
    pre = get_policy(policy).elems == "prealloc"
    if table.variant in ("rfc", "rfc_v2"):
        nr_entries = 16384 * 50 // 100
        per = nr_entries // (table.cpus // 2 if use_case == "add_del_on_diff_cpu" else table.cpus)
        return HtabMemConfig(use_case, table.cpus, batch=per, max_entries=16384, preallocated=pre, poke=0,
                             add_del_sync=table.variant == "rfc")
    if table.variant == "htab_update":
        return HtabMemConfig(use_case, table.cpus, value_size=table.value_size, batch=16384 // table.cpus,
                             max_entries=16384, preallocated=pre, poke=0, key_size=table.key_size)
    if table.variant == "map_perf":
        raise ValueError("map_perf_test is not an htab-mem configuration (workloads.map_perf)")
    return HtabMemConfig(use_case, table.cpus, preallocated=pre, poke=0)


def run_cell(table: PublishedTable, policy: str, use_case: str, duration_s: float, profile: Profile,
             lazy_tasks_trace: bool = False) -> dict[str, float]:
    """One cell on the model: speed in the table's unit, average (second half of the run) and peak MiB.
    A table whose numbers depend on the run's length (``full_length``) runs its published length."""
    if table.variant == "map_perf":
        wl = map_perf_test(table.cpus, 8192)
    else:
        wl = htab_mem(cell_config(table, policy, use_case))
    cfg = wl.config
    if table.full_length:
        duration_s = table.measured_s
    pol = get_policy(policy)
    if pol.tasks_trace_lazy != lazy_tasks_trace:      # these kernels predate lazy call_rcu_tasks_trace
        pol = replace(pol, tasks_trace_lazy=lazy_tasks_trace)
    be = ModelBackend(cfg.cpus, pol, costs=profile.costs, rcu_model=profile.rcu,
                      tasks_trace_model=profile.tasks_trace, breakdown=False, profile_name=profile.name)
    res = run_htab_mem(be, wl, policy, duration_ns=int(duration_s * NS), idle_ns=0)
    if table.variant == "map_perf":                 # K events per second per process (CPU)
        speed = res.ops / MAP_PERF_OPS_PER_EVENT / res.duration_s / cfg.cpus / 1000
    elif table.variant in ("rfc", "rfc_v2", "htab_update"):
        per_inv = cfg.batch * (2 if use_case == "batch_add_batch_del" else 1)
        speed = res.ops / per_inv / res.duration_s / 1000
    else:
        speed = res.per_prod_op
    return {"speed": speed, "avg_mib": res.steady_bytes / MIB, "peak_mib": res.peak_bytes / MIB}


def fit_machine(model: dict[tuple[str, str, str], dict[str, float]], variant: str) -> dict[str, Any]:
    """Floor (MiB) and speed factor of the machine running benchmark ``variant``, from the preallocated
    cells of every table of that variant (``model`` keyed by (table, policy, use case)), all at once.
    A variant without preallocated rows: its tables' ``anchor`` flavour sets the speed factor (no floor),
    or, without one, neither is fitted."""
    floors, logs = [], []
    for (tname, policy, uc), m in model.items():
        if policy != "prealloc" or TABLES[tname].variant != variant:
            continue
        pub = TABLES[tname].cells[(policy, uc)]
        if pub[1] is not None:
            floors.append(pub[1] - m["avg_mib"])
        if pub[0] is not None:
            logs.append(math.log(pub[0] / m["speed"]))
    if floors:
        return {"floor_mib": sum(floors) / len(floors), "speed_factor": math.exp(sum(logs) / len(logs)),
                "from_cells": len(floors), "how": "preallocated rows"}
    anchors = [(tname, t.anchor, uc) for tname, t in TABLES.items() if t.variant == variant and t.anchor
               for uc in t.use_cases if (tname, t.anchor, uc) in model]
    if anchors:
        logs = [math.log(TABLES[k[0]].cells[(k[1], k[2])][0] / model[k]["speed"]) for k in anchors]  # type: ignore[operator]
        return {"floor_mib": 0.0, "speed_factor": math.exp(sum(logs) / len(logs)), "from_cells": len(anchors),
                "how": f"anchor {anchors[0][1]}"}
    if any(t.variant == variant for t in TABLES.values()):
        return {"floor_mib": 0.0, "speed_factor": 1.0, "from_cells": 0, "how": "none"}
    raise ValueError(f"no table of the {variant} benchmark")


def _order(values: dict[str, float]) -> list[str]:
    return [k for k, _ in sorted(values.items(), key=lambda kv: (kv[1], kv[0]))]


QUANTITIES = ("speed", "avg_mib", "peak_mib")


def compare_table(table: PublishedTable, model: dict[tuple[str, str, str], dict[str, float]],
                  machine: dict[str, Any]) -> dict[str, Any]:
    """Published vs model (after the machine's floor and factor) for every published number, the ratio,
    whether it is within 2x, and per use case whether the flavours come in the same order by average memory
    (by peak where only the peak is published).  The anchor cell of a table without preallocated rows set
    the speed factor: it is reported, not checked."""
    rows = []
    order = {}
    for uc in table.use_cases:
        pub_mem: dict[str, float] = {}
        mod_mem: dict[str, float] = {}
        by = "avg_mib" if all(table.cells[(f.policy, uc)][1] is not None for f in table.flavours) else \
            "peak_mib" if all(table.cells[(f.policy, uc)][2] is not None for f in table.flavours) else ""
        for fl in table.flavours:
            m = model[(table.name, fl.policy, uc)]
            pub = dict(zip(QUANTITIES, table.cells[(fl.policy, uc)]))
            adj = {"speed": m["speed"] * machine["speed_factor"], "avg_mib": m["avg_mib"] + machine["floor_mib"],
                   "peak_mib": m["peak_mib"] + machine["floor_mib"]}
            anchor = fl.policy == table.anchor
            ratios = {k: adj[k] / v for k, v in pub.items() if v is not None}
            within = {k: (1 / WITHIN <= r <= WITHIN) for k, r in ratios.items()
                      if not (anchor and k == "speed")}
            rows.append({"flavour": fl.label, "policy": fl.policy, "use_case": uc,
                         "published": pub, "model_raw": m, "model": adj, "ratio": ratios,
                         "within_2x": within, "anchor": anchor})
            if by:
                pub_mem[fl.policy], mod_mem[fl.policy] = pub[by], adj[by]  # type: ignore[assignment]
        if by:
            order[uc] = {"by": by, "published": _order(pub_mem), "model": _order(mod_mem),
                         "same": _order(pub_mem) == _order(mod_mem)}
    checked = [r for r in rows if r["within_2x"]]
    met = sum(all(r["within_2x"].values()) for r in checked)
    return {"name": table.name, "title": table.title, "source": table.source, "variant": table.variant,
            "command": table.command, "notes": table.notes, "speed_unit": table.speed_unit, "cells": rows,
            "order_by_avg_memory": order, "cells_within_2x": met, "cells_total": len(checked)}


def plan(names: list[str]) -> list[tuple[str, str, str, bool]]:
    """The cells to run for ``names``: theirs, and the preallocated rows of every table of the machine
    (the floor and speed factor are fitted from all of them, whichever tables are asked for)."""
    jobs: list[tuple[str, str, str, bool]] = []
    for tname, t in TABLES.items():
        for fl in t.flavours:
            if tname in names or fl.policy == "prealloc":
                jobs += [(tname, fl.policy, uc, fl.lazy_tasks_trace) for uc in t.use_cases]
    return jobs


def reproduce(names: list[str], duration_s: float, profile: Profile,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``names`` and compare each with its published table (the order of ``TABLES``)."""
    say = progress or (lambda _m: None)
    jobs = plan(names)
    model: dict[tuple[str, str, str], dict[str, float]] = {}
    for i, (tname, policy, uc, lazy) in enumerate(jobs):
        say(f"{tname} {policy} {uc} ({i + 1}/{len(jobs)})")
        t0 = time.perf_counter()
        model[(tname, policy, uc)] = run_cell(TABLES[tname], policy, uc, duration_s, profile, lazy)
        model[(tname, policy, uc)]["wall_s"] = time.perf_counter() - t0
    fits = {v: fit_machine(model, v) for v in sorted({TABLES[n].variant for n in names})}
    return {"machine": {"name": MACHINE, "fits": fits},
            "duration_s": duration_s, "profile": profile.name,
            "tables": [{**compare_table(TABLES[n], model, fits[TABLES[n].variant]), "fit": fits[TABLES[n].variant],
                        "wall_s": round(sum(m["wall_s"] for k, m in model.items() if k[0] == n), 1)}
                       for n in names]}
