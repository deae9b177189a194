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
from .tables import MACHINE, TABLES, PublishedTable

NS = 1_000_000_000
MIB = 1 << 20
WITHIN = 2.0                    # a cell is met when model / published is within this factor


def cell_config(table: PublishedTable, policy: str, use_case: str) -> HtabMemConfig:
    """The benchmark as published: the RFC variant walks ``nr_entries = 16384 * 50 %`` keys split over the
    producers (pairs for add_del), the merged one OP_BATCH 64 keys per invocation."""
    pre = get_policy(policy).elems == "prealloc"
    if table.variant == "rfc":
        nr_entries = 16384 * 50 // 100
        per = nr_entries // (table.cpus // 2 if use_case == "add_del_on_diff_cpu" else table.cpus)
        return HtabMemConfig(use_case, table.cpus, batch=per, max_entries=16384, preallocated=pre, poke=0)
    return HtabMemConfig(use_case, table.cpus, preallocated=pre, poke=0)


def run_cell(table: PublishedTable, policy: str, use_case: str, duration_s: float, profile: Profile,
             lazy_tasks_trace: bool = False) -> dict[str, float]:
    """One cell on the model: speed in the table's unit, average (second half of the run) and peak MiB."""
    cfg = cell_config(table, policy, use_case)
    wl = htab_mem(cfg)
    pol = get_policy(policy)
    if pol.tasks_trace_lazy != lazy_tasks_trace:      # these kernels predate lazy call_rcu_tasks_trace
        pol = replace(pol, tasks_trace_lazy=lazy_tasks_trace)
    be = ModelBackend(cfg.cpus, pol, costs=profile.costs, rcu_model=profile.rcu,
                      tasks_trace_model=profile.tasks_trace, breakdown=False, profile_name=profile.name)
    res = run_htab_mem(be, wl, policy, duration_ns=int(duration_s * NS), idle_ns=0)
    if table.variant == "rfc":
        per_inv = cfg.batch * (2 if use_case == "batch_add_batch_del" else 1)
        speed = res.ops / per_inv / res.duration_s / 1000
    else:
        speed = res.per_prod_op
    return {"speed": speed, "avg_mib": res.steady_bytes / MIB, "peak_mib": res.peak_bytes / MIB}


def fit_machine(model: dict[tuple[str, str, str], dict[str, float]], variant: str) -> dict[str, float]:
    """Floor (MiB) and speed factor of the machine running benchmark ``variant``, from the preallocated
    cells of every table of that variant (``model`` keyed by (table, policy, use case)), all at once."""
    floors, logs = [], []
    for (tname, policy, uc), m in model.items():
        if policy != "prealloc" or TABLES[tname].variant != variant:
            continue
        pub = TABLES[tname].cells[(policy, uc)]
        floors.append(pub[1] - m["avg_mib"])
        logs.append(math.log(pub[0] / m["speed"]))
    if not floors:
        raise ValueError(f"no preallocated row of the {variant} benchmark to fit the floor and speed factor from")
    return {"floor_mib": sum(floors) / len(floors), "speed_factor": math.exp(sum(logs) / len(logs)),
            "from_cells": len(floors)}


def _order(values: dict[str, float]) -> list[str]:
    return [k for k, _ in sorted(values.items(), key=lambda kv: (kv[1], kv[0]))]


def compare_table(table: PublishedTable, model: dict[tuple[str, str, str], dict[str, float]],
                  machine: dict[str, float]) -> dict[str, Any]:
    """Published vs model (after the machine's floor and factor) for every cell, the ratio, whether it is
    within 2x, and per use case whether the flavours come in the same order by average memory."""
    rows = []
    order = {}
    for uc in table.use_cases:
        pub_avg, mod_avg = {}, {}
        for fl in table.flavours:
            m = model[(table.name, fl.policy, uc)]
            p = table.cells[(fl.policy, uc)]
            adj = {"speed": m["speed"] * machine["speed_factor"], "avg_mib": m["avg_mib"] + machine["floor_mib"],
                   "peak_mib": m["peak_mib"] + machine["floor_mib"]}
            ratios = {k: adj[k] / v for k, v in zip(("speed", "avg_mib", "peak_mib"), p)}
            rows.append({"flavour": fl.label, "policy": fl.policy, "use_case": uc,
                         "published": dict(zip(("speed", "avg_mib", "peak_mib"), p)),
                         "model_raw": m, "model": adj, "ratio": ratios,
                         "within_2x": {k: 1 / WITHIN <= r <= WITHIN for k, r in ratios.items()}})
            pub_avg[fl.policy], mod_avg[fl.policy] = p[1], adj["avg_mib"]
        order[uc] = {"published": _order(pub_avg), "model": _order(mod_avg),
                     "same": _order(pub_avg) == _order(mod_avg)}
    met = sum(all(r["within_2x"].values()) for r in rows)
    return {"name": table.name, "title": table.title, "source": table.source, "variant": table.variant,
            "command": table.command, "notes": table.notes, "speed_unit": table.speed_unit, "cells": rows,
            "order_by_avg_memory": order, "cells_within_2x": met, "cells_total": len(rows)}


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
    """Run ``names`` and compare each with its published table."""
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
