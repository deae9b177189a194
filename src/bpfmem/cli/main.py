"""The ``bpfmem`` command line (click + rich).

Every command prints human tables by default and one JSON document with
``--json``; bad input exits 2 with one line naming the option and what is
allowed; long runs show progress on stderr.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import click
from rich.console import Console

from .params import Finite, check_output_path, html_option, write_html
from .progress import progress
from .. import __version__
from ..backend.model import ModelBackend
from ..backend.protocol import LRU_MAP_TYPES, MAP_TYPES
from ..bench import run_htab_mem
from ..kernel import DRIVERS
from ..maps.policies import DEFAULT_RELEASE, GROUPS, POLICIES, RELEASES, expand_policy, get_policy
from ..report.text import print_htab_mem
from ..backend.profile import Profile, ProfileError, load_profile
from ..workloads import USE_CASES, HtabMemConfig, HtabMemWorkload, WorkloadError, htab_mem

NSEC_PER_SEC = 1_000_000_000


class KernelUnavailableError(click.ClickException):
    """The kernel backend cannot run here: exit 2 with the one-line reason."""

    exit_code = 2


def fail(option: str, message: str) -> None:
    raise click.BadParameter(message, param_hint=f"'{option}'")


EXIT_CODES = """\
exit codes:
  0    done
  1    a finding: explore found a bug; compare --check found the model outside its tolerance
  2    bad input, or this machine cannot do it (no privilege, no BPF, the kernel refused)
  70   an internal error of bpfmem (a bug: please report it with BPFMEM_DEBUG=1 output)
  129  SIGHUP, 130 SIGINT (Ctrl-C), 143 SIGTERM: stopped, everything it made removed
  141  the output pipe was closed"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog="\b\n" + EXIT_CODES)
@click.version_option(__version__, prog_name="bpfmem")
def cli() -> None:
    """bpfmem: the kernel's BPF memory management, as a model you can run and check."""


@cli.group()
def bench() -> None:
    """Benchmarks in the style of the kernel's selftests bench."""


def _choices_with_all(values: list[str] | tuple[str, ...]) -> click.Choice:
    return click.Choice([*values, "all"])


POLICY_CHOICE = click.Choice(list(dict.fromkeys([*POLICIES, *RELEASES, *GROUPS])))
POLICY_HELP = ("Element memory policy: a kernel profile, a release (v6.1..v6.19; v7.0 is a prediction), a proposal, "
               "or a group: all (the kernel profiles and merged variants), proposals (the RFCs of the reuse debate), "
               "everything, next (v6.6 beside the v7.0 prediction).")


def workload_options(fn: Any) -> Any:
    """The options every htab-mem command shares (bench, compare)."""
    opts = [
        click.option("--use-case", type=_choices_with_all(USE_CASES), default="all", show_default=True,
                     help="htab-mem use case, or all."),
        click.option("--map-type", type=click.Choice(list(MAP_TYPES)), default="hash", show_default=True,
                     help="Hash map type.  LRU maps are always preallocated (the policy's element store does "
                          "not apply) and evict instead of failing when full."),
        click.option("--cpus", type=click.IntRange(1, 256), default=None,
                     help="Producer CPUs (-p) [default: 8 on the model, this machine's CPUs on the kernel]."),
        click.option("--value-size", type=click.IntRange(1, 4096), default=8, show_default=True,
                     help="Value size in bytes."),
        click.option("--max-entries", type=click.IntRange(1, 1 << 31), default=None,
                     help="Map size [default: max(8192, 64 x cpus, keys used)]."),
        click.option("--batch", type=click.IntRange(1, 1 << 20), default=64, show_default=True,
                     help="Keys per program run (OP_BATCH)."),
        click.option("--duration", type=Finite(0, 3600, min_open=True), default=1.0, show_default=True,
                     help="Run phase, seconds (simulated on the model)."),
        click.option("--idle", type=Finite(0, 3600), default=1.0, show_default=True,
                     help="Idle phases after the drain and after the poke, seconds."),
        click.option("--poke", type=click.IntRange(0, 1 << 20), default=200, show_default=True,
                     help="Keys each CPU adds and deletes after the idle phase."),
        click.option("--seed", type=click.IntRange(0, (1 << 63) - 1), default=0, show_default=True,
                     help="Model seed."),
        click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
                     help="Model profile JSON (from bpfmem calibrate) [default: the shipped one]."),
        click.option("--driver", type=click.Choice(list(DRIVERS)), default="syscall", show_default=True,
                     help="Kernel: run ops by batch syscalls or from a BPF program (BPF_PROG_TEST_RUN)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
        click.option("--quiet", "-q", is_flag=True, help="No progress on stderr (a bar on a terminal, "
                                                         "plain lines otherwise)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def workload_configs(use_case: str, cpus: int, value_size: int, max_entries: int | None, batch: int,
                     poke: int, map_type: str = "hash") -> dict[str, HtabMemConfig]:
    """The configuration of each chosen use case (cheap: no keys are made yet)."""
    use_cases = list(USE_CASES) if use_case == "all" else [use_case]
    out = {}
    for uc in use_cases:
        if use_case == "all" and uc == "add_del_on_diff_cpu" and cpus % 2:
            continue  # the kernel bench refuses an odd producer count for this use case only
        entries = max_entries
        if entries is None:
            keys = batch * (cpus // 2 if uc == "add_del_on_diff_cpu" else cpus)
            entries = max(8192, 64 * cpus, keys, poke)
        out[uc] = HtabMemConfig(uc, cpus, value_size, entries, batch, poke=poke, map_type=map_type)
    if not out:
        fail("--cpus", "no use case can run with these options")
    return out


def build_workloads(use_case: str, cpus: int, value_size: int, max_entries: int | None, batch: int,
                    poke: int, *, map_type: str = "hash", runs_per_use_case: int = 1, preallocated: bool = False,
                    simulated_s: float = 0.0, sample_interval_ms: float = 10.0) -> dict[str, HtabMemWorkload]:
    """Workloads for the chosen use cases; bad combinations fail naming the option, and so does a
    set of runs that would need more memory than this machine has (priced before anything is built)."""
    configs = workload_configs(use_case, cpus, value_size, max_entries, batch, poke, map_type)
    check_footprint(list(configs.values()), runs_per_use_case, preallocated or map_type in LRU_MAP_TYPES,
                    simulated_s, sample_interval_ms)
    out = {}
    for uc, cfg in configs.items():
        try:
            out[uc] = htab_mem(cfg)
        except WorkloadError as e:
            fail("--" + e.param.replace("_", "-"), str(e))
    return out


def _down(x: float) -> str:
    """``x`` to three significant digits, rounded down (a suggested limit must itself pass)."""
    import math
    if x <= 0:
        return "0"
    step = 10 ** (math.floor(math.log10(x)) - 2)
    return f"{math.floor(x / step) * step:.6g}"


def check_footprint(configs: list[HtabMemConfig], runs_per_use_case: int, preallocated: bool,
                    simulated_s: float, sample_interval_ms: float) -> None:
    """Refuse, naming the option and its limit, runs whose memory would pass what this machine has."""
    from ..backend import footprint as fp
    interval_ns = max(1, int(sample_interval_ms * 1e6))
    per_run = fp.samples_per_run(int(simulated_s * NSEC_PER_SEC), interval_ns)
    sizes = [fp.RunSize(c.key_count(), c.entries() if preallocated else 0, per_run)
             for c in configs for _ in range(runs_per_use_case)]
    cost, budget = fp.price(sizes), fp.budget_bytes()
    if cost.total <= budget:
        return
    need = f"about {fp.gib(cost.total)} of model memory, more than the {fp.gib(budget)} this machine has available"
    part = cost.largest()
    room = budget - (cost.total - getattr(cost, part))
    c = max(configs, key=lambda c: c.key_count())
    if part == "samples":
        n = len(sizes)
        most = max(0.0, (room / fp.PER_SAMPLE_BYTES / n - 8) * interval_ns / NSEC_PER_SEC)
        fail("--duration", f"{n} run(s) of {simulated_s:g} simulated s (run and idle phases) sampled every "
                           f"{sample_interval_ms:g} ms keep {per_run * n} memory samples: {need}; at most about "
                           f"{_down(most)} s of run and idle phases at this --sample-interval")
    if part == "prealloc":
        most = max(0, room // fp.PER_PREALLOC_ELEM_BYTES)
        fail("--max-entries", f"a preallocated map of {c.entries()} entries makes every element up front: {need}; "
                              f"at most about {most} entries")
    units = c.cpus // 2 if c.use_case == "add_del_on_diff_cpu" else c.cpus     # keys per unit of batch
    poke_keys = c.key_count() - c.batch * units
    most = max(0, (room // fp.PER_KEY_BYTES - poke_keys) // max(1, units))
    fail("--batch", f"{c.key_count()} keys ({c.cpus} CPUs x {c.batch} per program run, and the poke): {need}; "
                    f"at most about {most} keys per program run at --cpus {c.cpus}")


def load_model_profile(path: str | None) -> Profile:
    try:
        return load_profile(path)
    except ProfileError as e:
        fail("--profile", str(e))
        raise  # unreachable


def model_backend(cpus: int, policy: str, seed: int, profile: Profile, sample_interval_ms: float = 10.0,
                  fast_forward: bool = True) -> ModelBackend:
    return ModelBackend(cpus, policy, seed=seed, costs=profile.costs, rcu_model=profile.rcu,
                        tasks_trace_model=profile.tasks_trace, sample_interval_ns=int(sample_interval_ms * 1e6),
                        fast_forward=fast_forward, profile_name=profile.name)


def kernel_policies(policy: str) -> list[str]:
    """What --policy means on the kernel backend: the running kernel's allocator, or preallocated maps."""
    if policy == "all":
        return [DEFAULT_RELEASE, "prealloc"]
    if policy in GROUPS:
        fail("--policy", f"the kernel backend runs this kernel ({platform.release()}); the {policy} group is "
                         f"model-only: use --policy all ({DEFAULT_RELEASE} and prealloc), {DEFAULT_RELEASE} or prealloc")
    # the running kernel's bpf_mem_alloc: its release, the profile of the 6.6+ allocator (v6.6, v6.7, v6.8,
    # v6.16, as named before release-exact profiles existed), or preallocated maps
    if get_policy(policy).name not in ("v6.6", "v6.7", "v6.8", "v6.16", "prealloc"):
        fail("--policy", f"the kernel backend runs this kernel ({platform.release()}); --policy must be "
                         f"{DEFAULT_RELEASE} (its bpf_mem_alloc; also v6.6..v6.19) or prealloc, got {policy!r}")
    return [policy]


_warned_leftovers = False


def warn_leftovers() -> None:
    """One line on stderr (once per process) when earlier runs left cgroups behind."""
    global _warned_leftovers
    if _warned_leftovers:
        return
    _warned_leftovers = True
    from ..kernel.lifecycle import leftovers
    try:
        found = leftovers()
    except OSError:
        return
    if found:
        click.echo(f"bpfmem: {len(found)} memory cgroup(s) left by earlier runs that were killed "
                   f"(e.g. {found[0].path}); remove them with: bpfmem kernel cleanup", err=True)


def open_kernel(cpus: int, driver: str, policy: str) -> Any:
    from ..kernel.backend import KernelBackend, KernelUnavailable
    try:
        be = KernelBackend(cpus, driver=driver, policy=policy)
    except KernelUnavailable as e:
        raise KernelUnavailableError(f"kernel backend unavailable: {e}") from None
    warn_leftovers()
    return be


@bench.command("htab-mem")
@click.option("--policy", type=POLICY_CHOICE, default=DEFAULT_RELEASE, show_default=True, help=POLICY_HELP)
@click.option("--backend", type=click.Choice(["model", "kernel"]), default="model", show_default=True,
              help="Where to run: the model, or the running kernel (root, BPF, memcg).")
@workload_options
@click.option("--sample-interval", type=Finite(0.01, 10000), default=None,
              help="Memory sampling interval, ms [default: 10 on the model, 1 on the kernel].")
@click.option("--fast-forward/--no-fast-forward", default=True, show_default=True,
              help="Model: skip exactly repeating cycles (counts stay exact).")
@click.option("--breakdown/--no-breakdown", default=None,
              help="Print where the bytes sit [default: when at most 3 results].")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write memory over time per list to this .png/.svg/.pdf file [default: no plot].")
@html_option
def bench_htab_mem(policy: str, backend: str, use_case: str, map_type: str, cpus: int | None, value_size: int,
                   max_entries: int | None, batch: int, duration: float, idle: float, poke: int, seed: int,
                   profile_path: str | None, driver: str, as_json: bool, sample_interval: float | None,
                   fast_forward: bool, breakdown: bool | None, plot: str | None, html_path: str | None,
                   quiet: bool) -> None:
    """Run the htab-mem use cases and report memory like the kernel bench, plus where every byte sits."""
    check_plot_path(plot)
    if cpus is None:
        cpus = 8 if backend == "model" else len(os.sched_getaffinity(0))
    policies = kernel_policies(policy) if backend == "kernel" else expand_policy(policy)
    workloads = build_workloads(use_case, cpus, value_size, max_entries, batch, poke, map_type=map_type,
                                runs_per_use_case=len(policies), preallocated=backend == "model" and any(get_policy(p).elems == "prealloc"
                                                                        for p in policies),
                                simulated_s=duration + 2 * idle,
                                sample_interval_ms=sample_interval or (10.0 if backend == "model" else 1.0))
    profile = load_model_profile(profile_path) if backend == "model" else None
    results: list[dict[str, Any]] = []
    backend_info: dict[str, Any] = {}
    runs = [(uc, pol) for uc in workloads for pol in policies]
    per_run = duration + 2 * idle                       # simulated seconds a run covers (create..close)
    unit = "simulated s" if backend == "model" else "runs"
    with progress(quiet, as_json, unit=unit) as prog:
        task = prog.add_task("htab-mem", total=len(runs) * (per_run if backend == "model" else 1))
        for i, (uc, pol) in enumerate(runs):
            def say(phase: str, uc: str = uc, pol: str = pol) -> None:
                prog.update(task, description=f"{uc} / {pol}: {phase}")
            if backend == "model":
                assert profile is not None
                be: Any = model_backend(cpus, pol, seed, profile, sample_interval or 10.0, fast_forward)
                be.on_tick = lambda t_ns, base=i * per_run: prog.update(
                    task, completed=base + min(per_run, t_ns / NSEC_PER_SEC))
                r = run_htab_mem(be, workloads[uc], pol, duration_ns=int(duration * NSEC_PER_SEC),
                                 idle_ns=int(idle * NSEC_PER_SEC), progress=say)
                prog.update(task, completed=(i + 1) * per_run)
            else:
                with open_kernel(cpus, driver, pol) as be:
                    if sample_interval:
                        be.sample_interval_ns = int(sample_interval * 1e6)
                    r = run_htab_mem(be, workloads[uc], pol, duration_ns=int(duration * NSEC_PER_SEC),
                                     idle_ns=int(idle * NSEC_PER_SEC), progress=say)
                prog.advance(task)
            backend_info = be.describe()
            results.append(r.to_json())
    backend_info.pop("policy", None)
    if backend == "model":
        backend_info.pop("kernel", None)
    doc = {
        "tool": "bpfmem", "version": __version__, "command": "bench htab-mem",
        "params": {"use_case": use_case, "map_type": map_type, "policy": policy, "backend": backend, "cpus": cpus,
                   "value_size": value_size, "max_entries": max_entries, "batch": batch, "duration_s": duration,
                   "idle_s": idle, "poke": poke, "seed": seed, "sample_interval_ms": sample_interval,
                   "fast_forward": fast_forward, "driver": driver if backend == "kernel" else None},
        "backend": backend_info,
        "policies": {p: {"kernel": get_policy(p).kernel, "profile": get_policy(p).name,
                         "description": get_policy(p).description} for p in policies},
        "results": results,
    }
    if plot is not None:
        from ..report.plot import plot_htab_mem
        plot_htab_mem(results, plot, context=doc)
    write_html(doc, html_path, not as_json)
    if as_json:
        click.echo(json.dumps(doc, indent=1, sort_keys=False))
        return
    console = Console(width=None if sys.stdout.isatty() else 200)
    print_htab_mem(console, doc, breakdowns=breakdown if breakdown is not None else len(results) <= 3)
    if plot is not None:
        console.print(f"plot written to {plot}")


def check_plot_path(plot: str | None) -> None:
    check_output_path("--plot", plot, (".png", ".svg", ".pdf"))


@bench.command("self")
@click.option("--cpus", type=click.IntRange(1, 256), multiple=True, default=(8, 64), show_default=True,
              help="Simulated CPUs (producers); repeat for several.")
@click.option("--duration", type=Finite(0, 60, min_open=True), default=0.2, show_default=True,
              help="Simulated seconds of run phase per row.")
@click.option("--policy", type=POLICY_CHOICE, default="all", show_default=True, help=POLICY_HELP)
@click.option("--use-case", type=_choices_with_all(USE_CASES), default="all", show_default=True,
              help="htab-mem use case, or all.")
@click.option("--raw", is_flag=True, help="Also time each row with every fast path off (slow).")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Model profile JSON (costs, grace periods) [default: the shipped one].")
@click.option("--matrix/--no-matrix", default=True, show_default=True,
              help="Also time the default all-policy matrix (bench htab-mem --policy all --use-case all --cpus 8).")
@click.option("--local-storage/--no-local-storage", "local_storage", default=True, show_default=True,
              help="Also time bench local-storage (task and socket storage, each use case, 8 CPUs, 20k ops/s per "
                   "producer).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@html_option
def bench_self(cpus: tuple[int, ...], duration: float, policy: str, use_case: str, raw: bool,
               profile_path: str | None, matrix: bool, local_storage: bool, as_json: bool, quiet: bool,
               html_path: str | None) -> None:
    """How fast and small the model is, one core: real-time factor, map ops per wall second, peak memory and
    bytes per parked object, per use case x policy x CPUs (each row in a fresh process)."""
    from ..backend.speed import time_matrix, time_rows
    profile = load_model_profile(profile_path)
    policies = expand_policy(policy)
    use_cases = list(USE_CASES) if use_case == "all" else [use_case]
    cases = [(uc, pol, n) for n in dict.fromkeys(cpus) for uc in use_cases for pol in policies
             if not (uc == "add_del_on_diff_cpu" and n % 2)]
    if not cases:
        fail("--cpus", "add_del_on_diff_cpu needs an even number of CPUs")
    rows: list[dict[str, Any]] = []
    matrix_doc = None
    ls_rows: list[dict[str, Any]] = []
    from ..backend.local_storage import USE_CASES as LS_CASES
    ls_cases = [(k, uc) for k in ("task", "socket") for uc in LS_CASES] if local_storage else []
    with progress(quiet, as_json, unit="rows") as prog:
        task = prog.add_task("bench self", total=len(cases) + (1 if matrix else 0) + len(ls_cases))
        for uc, pol, n in cases:
            prog.update(task, description=f"{uc} / {pol} / {n} CPUs")
            rows.extend(time_rows([(uc, pol, n)], duration, raw, profile))
            prog.advance(task)
        if matrix:
            prog.update(task, description="the default all-policy matrix")
            matrix_doc = time_matrix()
            prog.advance(task)
        if ls_cases:
            from ..backend.local_storage import LocalStorageConfig, run_local_storage
        for kind, uc in ls_cases:
            prog.update(task, description=f"local-storage {uc} / {kind} / 8 CPUs")
            r = run_local_storage(LocalStorageConfig(kind, uc, 8, duration_s=duration, idle_s=0.0))
            ls_rows.append({"kind": kind, "use_case": uc, "cpus": 8, "simulated_s": duration, "wall_s": r["wall_s"],
                            "realtime_factor": r["realtime_factor"], "ops": r["creates"] + r["deletes"] +
                            r["destroys"], "allocator": r["allocator"]})
            prog.advance(task)
    doc = {"tool": "bpfmem", "version": __version__, "command": "bench self",
           "params": {"cpus": list(dict.fromkeys(cpus)), "duration_s": duration, "policy": policy,
                      "use_case": use_case, "raw": raw, "profile": profile.name},
           "machine": {"python": platform.python_version(), "implementation": platform.python_implementation(),
                       "cpu": platform.processor() or platform.machine(), "cores_used": 1,
                       "host_cpus": os.cpu_count()},
           "measured": True, "results": rows, "matrix": matrix_doc, "local_storage": ls_rows}
    write_html(doc, html_path, not as_json)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    from rich.table import Table
    t = Table(title=f"model speed and size: {duration} simulated s of run phase per row, one core (measured)")
    cols = ["use case", "policy", "CPUs", "real-time factor", "map ops/wall s", "peak RSS", "parked max",
            "B/parked"] + (["raw real-time factor"] if raw else [])
    for c in cols:
        t.add_column(c, justify="left" if c in ("use case", "policy") else "right", no_wrap=c == "use case")
    for r in rows:
        bpp = r["bytes_per_parked"]
        t.add_row(r["use_case"], r["policy"], str(r["cpus"]), f"{r['realtime_factor']:.2f}x",
                  f"{r['ops_per_wall_s'] / 1e6:.2f} M", f"{r['peak_rss_bytes'] / (1 << 20):.0f} MiB",
                  f"{r['parked_max']:,}", "-" if bpp is None else f"{bpp:.1f}",
                  *([f"{r['raw']['realtime_factor']:.2f}x"] if raw else []))
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(t)
    if matrix_doc is not None:
        console.print(f"default all-policy matrix: {matrix_doc['wall_s']:.1f} s wall ({matrix_doc['command']})")
    for r in ls_rows:
        console.print(f"local-storage {r['use_case']} {r['kind']} ({r['allocator']}), 8 CPUs: "
                      f"{r['realtime_factor']:.2f}x real time, {r['ops']:,} operations in {r['wall_s']:.2f} s wall")


@cli.command("policies")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def policies_cmd(as_json: bool) -> None:
    """List the element memory policies the model knows, and which one models each release 6.1 .. 6.19."""
    from ..maps.policies import RELEASE_NOTES
    rows = [{"name": p.name, "kind": "policy", "kernel": p.kernel, "description": p.description,
             "group": next((g for g in ("all", "proposals", "everything", "next") if p.name in GROUPS[g]), ""),
             **reader_verdicts(p.name)}
            for p in POLICIES.values()]
    rows += [{"name": r, "kind": "release", "kernel": r[1:], "profile": prof, "description": RELEASE_NOTES.get(r, "")}
             for r, prof in RELEASES.items()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.markup import escape
    from rich.table import Table
    console = Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title="policies (readers: what the explorer finds when a program holds an element the map frees; "
                    "scenarios htab_churn_rcu / htab_churn_sleepable)")
    for c in ("name", "group", "kernel", "description", "RCU reader", "sleepable reader"):
        t.add_column(c)
    for r in rows:
        if r["kind"] == "policy":
            t.add_row(r["name"], r["group"], r["kernel"], r["description"], r["rcu_reader"], r["sleepable_reader"])
    console.print(t)
    t = Table(title="releases (--policy v6.N runs the profile that models release 6.N)")
    for c in ("release", "profile", "what changed (commit)"):
        t.add_column(c)
    for r in rows:
        if r["kind"] == "release":
            t.add_row(r["name"], r["profile"], escape(r["description"]) or "-")
    console.print(t)


# the explorer policy whose free path a bench policy's hash map uses (None: not explored)
EXPLORED_AS = {"v6.1": "free", "v6.2": "free", "v6.4": "free", "v6.6": "free", "v6.7": "free", "v6.8": "free",
               "v6.16": "free", "v7.0": "free", "prealloc": "free", "free_rcu": "free_rcu",
               "delayed_free": "call_rcu_free", "kmalloc_rcu": None}


def reader_verdicts(policy: str) -> dict[str, str]:
    """The explorer's pinned verdicts (the churn scenarios' ``expect``, held by tests) for a bench policy:
    what a normal (RCU) and a sleepable program holding a freed element may see."""
    from ..explore.scenarios import SCENARIOS
    as_ = EXPLORED_AS.get(policy, policy)
    out = {}
    for key, name in (("rcu_reader", "htab_churn_rcu"), ("sleepable_reader", "htab_churn_sleepable")):
        sc = SCENARIOS[name]
        if as_ is None or as_ not in sc.expect:
            out[key] = "not explored"
            continue
        kinds = sorted(sc.expect[as_])
        out[key] = ", ".join(f"{k} ({'accepted' if sc.accepted.get(k) else 'bug'})" for k in kinds) or "safe"
    return out


EXIT_FINDING = 1
EXIT_INTERNAL = 70


class Refused(click.ClickException):
    """The kernel (or the model, by the kernel's rules) refused what was asked: exit 2 with the errno."""

    exit_code = 2


class Finding(click.ClickException):
    """The command ran and found what it was looking for (a bug, a model outside its tolerance): exit 1."""

    exit_code = EXIT_FINDING


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on stderr and a documented exit code for every outcome (see EXIT_CODES)."""
    from ..kernel.lifecycle import Terminated, signals_as_exceptions, teardown
    code = 0
    try:
        with signals_as_exceptions():
            try:
                code = _run(argv)
            finally:
                failed = teardown()
                if failed:
                    click.echo(f"bpfmem: could not remove {'; '.join(failed)}", err=True)
    except Terminated as e:
        click.echo(f"bpfmem: stopped by {e.name}; everything it made was removed", err=True)
        code = e.exit_code
    except KeyboardInterrupt:
        click.echo("bpfmem: interrupted; everything it made was removed", err=True)
        code = 130
    return code


def _run(argv: list[str] | None) -> int:
    if argv is not None and any("\0" in a for a in argv):
        click.echo("bpfmem: an argument contains a NUL byte (no command line can pass one)", err=True)
        return 2
    try:
        cli.main(args=argv, prog_name="bpfmem", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return 0
    except click.UsageError as e:
        click.echo(f"bpfmem: {_one_line(e.format_message())}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("bpfmem: aborted", err=True)
        return 130
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        click.echo(f"bpfmem: {_one_line(e.format_message())}", err=True)
        return e.exit_code
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")     # the reader went away: nothing more to say
        except OSError:
            pass
        return 141
    except SystemExit as e:
        # rich answers a closed pipe by pointing stdout at /dev/null and raising SystemExit(1)
        try:
            if os.path.samestat(os.fstat(1), os.stat(os.devnull)):
                return 141
        except OSError:
            pass
        return e.code if isinstance(e.code, int) else 1
    except OSError as e:
        # the kernel (bpf(2), cgroups, mmap) or the file system refused: the message names the call
        click.echo(f"bpfmem: {_one_line(str(e))}", err=True)
        return 2
    except (KeyboardInterrupt, BaseException) as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)) or type(e).__name__ == "Terminated":
            raise
        from ..maps.base import BpfError
        if isinstance(e, BpfError):            # the model refused what the kernel refuses (same errno)
            click.echo(f"bpfmem: the model refused: {_one_line(str(e))}", err=True)
            return 2
        if os.environ.get("BPFMEM_DEBUG"):
            raise
        click.echo(f"bpfmem: internal error (a bug in bpfmem): {type(e).__name__}: {_one_line(str(e))}", err=True)
        return EXIT_INTERNAL
    return 0


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def entry() -> None:
    sys.exit(main())

