"""How fast and how small the model is: ``bpfmem bench self``.

Problem: the model is only useful at the scale where the kernel blows up if it runs there in
minutes, within the memory of an ordinary machine.  Each (use case, policy, CPUs) row is timed in a
fresh process (so its peak resident memory is its own) on one core: the run phase of the htab-mem
workload for a given simulated time, with every exact fast path on (cycle fast-forward, runs of
quiet keys, invocation records) and, on request, with all of them off.  Reported per row, all
**measured** on this host: the real-time factor (simulated seconds per wall second), simulated map
operations per wall second (shipped profile, as `bench htab-mem` runs), peak resident memory, and the model's resident bytes per parked object
(growth of resident memory up to the moment the most objects were parked, divided by that number).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import subprocess
import sys
import time
from typing import Any, Iterator

from .model import ModelBackend
from .profile import Profile, load_profile
from ..maps.htab import parked_objects
from ..workloads import HtabMemConfig, htab_mem

NSEC_PER_SEC = 1_000_000_000
MIN_PARKED = 1_000_000       # fewer parked: fixed costs (records, samples) dominate, bytes per object means nothing
MATRIX_ARGS = ["bench", "htab-mem", "--policy", "all", "--use-case", "all", "--cpus", "8", "--json", "--quiet"]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_row(use_case: str, policy: str, cpus: int, duration_s: float, raw: bool = False,
             profile: Profile | None = None) -> dict[str, Any]:
    """One row, in this process: the run phase of ``use_case`` on ``cpus`` simulated CPUs."""
    wl = htab_mem(HtabMemConfig(use_case, cpus))
    prof = profile or load_profile(None)           # the shipped profile, as `bench htab-mem` runs
    be = ModelBackend(cpus, policy, costs=prof.costs, rcu_model=prof.rcu, tasks_trace_model=prof.tasks_trace)
    m = be.map_create(wl.map_spec)
    most = [0, 0]
    r0 = _rss()

    def tick(_t: int) -> None:
        n = parked_objects(m.htab)
        if n > most[0]:
            most[:] = [n, _rss() - r0]
    be.on_tick = tick
    t0 = time.perf_counter()
    counts = be.run(m, wl.producers, int(duration_s * NSEC_PER_SEC))
    wall = time.perf_counter() - t0
    row: dict[str, Any] = {
        "use_case": use_case, "policy": policy, "cpus": cpus, "simulated_s": duration_s, "wall_s": round(wall, 4),
        "realtime_factor": duration_s / wall, "ops": counts.ops, "ops_per_wall_s": counts.ops / wall,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "parked_max": most[0], "bytes_per_parked": most[1] / most[0] if most[0] >= MIN_PARKED else None,
    }
    if raw:
        be = ModelBackend(cpus, policy, costs=prof.costs, rcu_model=prof.rcu, tasks_trace_model=prof.tasks_trace,
                          fast_forward=False, memo=False)
        be.machine.batching = False
        m = be.map_create(wl.map_spec)
        t0 = time.perf_counter()
        rc = be.run(m, wl.producers, int(duration_s * NSEC_PER_SEC))
        wall = time.perf_counter() - t0
        row["raw"] = {"ops": rc.ops, "wall_s": round(wall, 4), "ops_per_wall_s": rc.ops / wall,
                      "realtime_factor": duration_s / wall}
    return row


def _child(conn: Any, args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", time_row(*args)))
    except BaseException as e:          # report it in the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def time_rows(cases: list[tuple[str, str, int]], duration_s: float, raw: bool = False,
              profile: Profile | None = None) -> Iterator[dict[str, Any]]:
    """Every case in its own fresh interpreter, one at a time (one core).  Spawned, not forked: a fork
    taken while another thread of this process holds a lock can deadlock the child for ever."""
    ctx = multiprocessing.get_context("spawn")
    for uc, pol, cpus in cases:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(child, (uc, pol, cpus, duration_s, raw, profile)), daemon=True)
        p.start()
        child.close()
        status, row = "died", None
        try:
            status, row = parent.recv()
        except EOFError:
            pass
        finally:
            parent.close()
            if status != "died":
                p.join(timeout=10)          # it has answered: it ends at once
            if p.is_alive():
                p.kill()                    # interrupted, or stuck: the row's process must not outlive the command
            p.join()
        if status == "died":
            raise RuntimeError(f"the process timing {uc} / {pol} / {cpus} CPUs died (exit {p.exitcode})")
        if status != "ok":
            raise RuntimeError(f"timing {uc} / {pol} / {cpus} CPUs failed: {row}")
        yield row


def time_matrix() -> dict[str, Any]:
    """Wall time of the default all-policy matrix, as a user runs it (a new process, start-up included)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "bpfmem", *MATRIX_ARGS], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"bpfmem {' '.join(MATRIX_ARGS)} exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return {"command": "bpfmem " + " ".join(MATRIX_ARGS), "wall_s": round(wall, 2)}
