"""The kernel backend: probing, cleanup, unprivileged refusal, and the model checked against the kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bpfmem.cli import main

from . import require_kernel_backend

KIB = 1024


def leftovers() -> tuple[list[str], list[int], int]:
    """bpfmem cgroups under ours, our child processes, our open BPF map fds."""
    from bpfmem.kernel.cgroup import leftover_cgroups, memcg_layout
    lay = memcg_layout()
    cgs = leftover_cgroups(lay) if lay else []
    kids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == os.getpid() and stat[0] != "Z":
                kids.append(int(pid))
    maps = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "bpf-map" in os.readlink(f"/proc/self/fd/{fd}"):
                maps += 1
        except OSError:
            pass
    return cgs, kids, maps


def test_probe_lists_what_the_kernel_allows(capsys: pytest.CaptureFixture[str]) -> None:
    require_kernel_backend()
    rc = main(["kernel", "probe", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    names = {i["name"]: i for i in doc["items"]}
    assert names["bpf"]["ok"] and names["memcg"]["ok"] and names["map:hash"]["ok"]
    assert "prog:socket_filter+test_run" in names and "map:arena" in names
    assert doc["cpus"] >= 1 and doc["kernel"]


def test_a_kernel_run_leaves_no_cgroup_map_or_process_behind() -> None:
    require_kernel_backend()
    from bpfmem.bench import run_htab_mem
    from bpfmem.kernel.backend import KernelBackend
    from bpfmem.workloads import HtabMemConfig, htab_mem
    before = leftovers()
    with KernelBackend(2) as kb:
        r = run_htab_mem(kb, htab_mem(HtabMemConfig("add_del_on_diff_cpu", 2)), "v6.6",
                         duration_ns=200_000_000, idle_ns=100_000_000)
    assert r.ops > 0 and r.backend == "kernel" and r.breakdown is None and not r.modelled
    assert r.after_close_bytes <= 8 * KIB
    assert leftovers() == before


def test_an_exception_mid_run_still_cleans_up() -> None:
    require_kernel_backend()
    from bpfmem.backend.protocol import MapSpec
    from bpfmem.kernel.backend import KernelBackend
    before = leftovers()
    with pytest.raises(RuntimeError, match="boom"):
        with KernelBackend(1) as kb:
            kb.map_create(MapSpec("hash", 4, 8, 1000))
            assert leftovers() != before
            raise RuntimeError("boom")
    assert leftovers() == before


def test_ctrl_c_stops_a_kernel_bench_and_cleans_up() -> None:
    require_kernel_backend()
    from bpfmem.kernel.cgroup import leftover_cgroups, memcg_layout
    lay = memcg_layout()
    assert lay is not None
    before = leftover_cgroups(lay)
    p = subprocess.Popen([sys.executable, "-m", "bpfmem", "bench", "htab-mem", "--backend", "kernel", "--use-case",
                          "overwrite", "--duration", "5", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline and len(leftover_cgroups(lay)) == len(before):
        time.sleep(0.05)
    assert len(leftover_cgroups(lay)) > len(before), "the bench never created its cgroup"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert leftover_cgroups(lay) == before
    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True)
    assert out.stdout == b""


def drop_all_capabilities() -> None:  # pragma: no cover - runs in the child before exec
    """Root without capabilities: SECBIT_NOROOT keeps execve from granting them back."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_SECUREBITS, SECBIT_NOROOT, SECBIT_NOROOT_LOCKED = 28, 1, 2
    if libc.prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECUREBITS)")

    class Hdr(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    if libc.capset(ctypes.byref(Hdr(0x20080522, 0)), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def test_unprivileged_kernel_commands_exit_2_with_one_line() -> None:
    """Without CAP_BPF/CAP_SYS_ADMIN every kernel command refuses in one line; the model still works."""
    require_kernel_backend()
    for args in (["kernel", "probe"], ["bench", "htab-mem", "--backend", "kernel", "--duration", "0.1"],
                 ["compare", "--duration", "0.1"], ["calibrate", "--repeat", "1", "--out", "/tmp/x.json"],
                 ["arena", "create", "--max-entries", "16", "--backend", "kernel"],
                 ["arena", "example", "--backend", "kernel", "--direction", "user-to-bpf"],
                 ["bench", "arena-vs-htab", "--backend", "kernel"]):
        p = subprocess.run([sys.executable, "-m", "bpfmem", *args], capture_output=True, text=True,
                           preexec_fn=drop_all_capabilities, timeout=60)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2, (args, p.stderr)
        assert len(lines) == 1 and lines[0].startswith("bpfmem:") and "bpf" in lines[0], lines
    p = subprocess.run([sys.executable, "-m", "bpfmem", "bench", "htab-mem", "--use-case", "overwrite", "--cpus", "2",
                        "--duration", "0.1", "--idle", "0.1", "--json"], capture_output=True, text=True,
                       preexec_fn=drop_all_capabilities, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["results"][0]["backend"] == "model"


def compare(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    rc = main(["compare", *args, "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def _possible_cpus() -> int:
    from bpfmem.kernel.probe import possible_cpus
    return possible_cpus()


def _trim_batch_bytes(value_size: int) -> int:
    """Objects free_bulk moves per trim (high - (high + low) / 2) times the charge per element."""
    from bpfmem.alloc import KernelWatermarks
    from bpfmem.mm import kmalloc_charge
    unit = 48 + 8 + (value_size + 7) // 8 * 8 + 8
    c = type("C", (), {"percpu_size": 0, "unit_size": unit})()
    KernelWatermarks().init_refill_work(c)  # type: ignore[arg-type]
    return (c.high_watermark + 1 - (c.high_watermark + c.low_watermark) // 2) * kmalloc_charge(unit)


# two cases with the default tests, the other six with the slow ones
CASES = [(pol, uc, vs, n) if (pol, uc, vs) in (("v6.6", "overwrite", 8), ("prealloc", "batch_add_batch_del", 1024))
         else pytest.param(pol, uc, vs, n, marks=pytest.mark.slow)
         for pol in ("v6.6", "prealloc") for uc in ("overwrite", "batch_add_batch_del")
         for vs, n in ((8, 1000), (1024, 10_000))]


@pytest.mark.parametrize("policy,use_case,value,n", CASES)
def test_model_within_5_percent_of_the_kernel(capsys: pytest.CaptureFixture[str], policy: str, use_case: str,
                                             value: int, n: int) -> None:
    """Steady and peak bytes within 5 %; after-idle and after-poke inside the kernel's spread (± resolution);
    the poke-to-release delay inside the kernel's range; the charge per element exact."""
    require_kernel_backend()
    doc = compare(capsys, "--policy", policy, "--use-case", use_case, "--cpus", "1", "--batch", str(n),
                  "--value-size", str(value), "--duration", "0.6", "--idle", "0.6", "--repeat", "3")
    m = doc["cases"][0]["metrics"]
    for k in ("steady_bytes", "peak_bytes"):
        assert abs(m[k]["rel_error"]) <= 0.05, (k, m[k])
    # whether the last grace period ends inside the last invocation is a matter of phase, on both sides:
    # allow one trimmed batch per possible CPU beyond the kernel's range (± its 4 KiB/CPU resolution)
    slack = m["after_idle_bytes"]["resolution"] + _trim_batch_bytes(value) * _possible_cpus()
    for k in ("after_idle_bytes", "after_poke_bytes"):
        assert m[k]["kernel_min"] - slack <= m[k]["model"] <= m[k]["kernel_max"] + slack, (k, m[k])
    if policy == "v6.6":
        # the delay is random in both (and the kernel has rare 600-900 ms outliers): the model's value
        # and the kernel's median must both lie in the model's range (lazy delay + the profile's GP
        # range, widened by a few jiffies and the sampling interval)
        import statistics

        from bpfmem.backend.profile import load_profile
        tt = load_profile(None).tasks_trace
        lo, hi = (tt.lazy_delay_ns + tt.gp_min_ns) / 1e6 - 10, (tt.lazy_delay_ns + tt.gp_max_ns) / 1e6 + 20
        r = m["poke_release_ms"]
        assert lo <= r["model"] <= hi, r
        assert lo <= statistics.median(r["kernel"]) <= hi, (lo, hi, r)
    assert doc["element_charge"]["exact"], doc["element_charge"]


def test_add_del_on_diff_cpu_model_inside_the_kernel_range(capsys: pytest.CaptureFixture[str]) -> None:
    require_kernel_backend()
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs")
    keys = ("steady_bytes", "peak_bytes", "after_idle_bytes", "after_poke_bytes")
    tries = []
    for _ in range(2):      # the kernel's spread moves between invocations: a second measurement if one is outside
        doc = compare(capsys, "--use-case", "add_del_on_diff_cpu", "--cpus", "2", "--duration", "0.6", "--idle",
                      "0.6", "--repeat", "3", "--no-elem-charge")
        m = doc["cases"][0]["metrics"]
        tries.append({k: m[k] for k in keys if not m[k]["inside"]})
        if not tries[-1]:
            break
    for k in keys:
        assert m[k]["inside"], (k, tries)


# A known deviation, measured on every run of this machine kind (docs/measurements.md §10): the model's
# steady mean is 14-20 % above the kernel's for batch_add_batch_del with 100,000 keys of 4000 B on v6.6
# (peak within 5 %).  strict: the day the model is fixed this case fails until the mark is removed.
KNOWN_OFF = pytest.mark.xfail(strict=True, reason="model steady +14-20 % (docs/measurements.md §10)")


@pytest.mark.slow
@pytest.mark.parametrize("policy,use_case,value,n", [
    pytest.param(p, u, v, n, marks=KNOWN_OFF) if (p, u, v, n) == ("v6.6", "batch_add_batch_del", 4000, 100_000)
    else (p, u, v, n)
    for p in ("v6.6", "prealloc") for u in ("overwrite", "batch_add_batch_del")
    for v, n in ((8, 100_000), (4000, 1000), (4000, 100_000))])
def test_model_within_5_percent_of_the_kernel_large(capsys: pytest.CaptureFixture[str], fresh_profile: str,
                                                   policy: str, use_case: str, value: int, n: int) -> None:
    require_kernel_backend()
    doc = compare(capsys, "--policy", policy, "--use-case", use_case, "--cpus", "1", "--batch", str(n),
                  "--value-size", str(value), "--duration", "4", "--idle", "1", "--repeat", "2", "--no-elem-charge",
                  "--profile", fresh_profile)
    m = doc["cases"][0]["metrics"]
    for k in ("steady_bytes", "peak_bytes"):
        assert abs(m[k]["rel_error"]) <= 0.05, (k, m[k])


TOLERANCE = 0.15           # the target; widened to the kernel's own run-to-run spread of a use case when larger
LOOP = {"overwrite": ("ow", 1), "batch_add_batch_del": ("bd", 2)}     # calibration loop, batches per invocation


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--batch", "10000"]], ids=["batch64", "batch10000"])
def test_ops_per_second_match_the_kernel(capsys: pytest.CaptureFixture[str], fresh_profile: str,
                                         extra: list[str]) -> None:
    """map ops/s within 15 % of the kernel, one CPU, at the bench's own batch (64 keys) and at 10,000 keys:
    within 15 % of the kernel's mean, or of its range over the runs.

    A shared VM's speed drifts by 10-25 % between runs minutes apart, so the calibration's reference loop
    at the test's batch (overwrite, 64 or 10,000 keys, one CPU: a 64-key loop is mostly fixed costs, a
    10,000-key one per-key costs, and they drift apart) is run again just before and after the comparison:
    the ratio of its speed now to its speed at calibration is one measured factor for the machine at that
    batch, applied to both use cases alike (never fitted per cell); the test reports it.  A use case does not
    always follow it (overwrite slowed by 16 % while batch_add_batch_del sped up by 7 %, minutes apart), so
    a use case passes with the factor or without it, and both errors are shown.  The kernel's speed at one
    use case also drifts on its own (batch_add_batch_del moved by 30-40 % against overwrite within minutes,
    docs/measurements.md §10): the tolerance of a use case is 15 %, or the kernel's own spread over this
    session's runs of it (the calibration's rounds and the comparison's runs) when that is larger; the
    fit itself is held to 15 % without a kernel (tests/backend/test_calibration_fit.py), and a failure shows
    this profile's own residual on the loop.  A comparison outside is measured once more (the kernel's
    drift between minutes); both are shown if the second is outside too.  The two-CPU use case has its own
    test below."""
    require_kernel_backend()
    import statistics

    from bpfmem.cli.calibrate_cmd import _loop_ns
    batch = int(extra[1]) if extra else 64
    with open(fresh_profile) as f:
        measured = json.load(f)["measured"]
    rounds, fit = measured["ns_per_invocation_or_key"], measured["model_residuals"]
    at_calibration = statistics.median(rounds[f"ow{batch}"])
    tries = []
    for _ in range(2):      # the kernel's speed drifts between runs: a second measurement if one is outside
        before = _loop_ns("syscall", "overwrite", batch, "v6.6", 8, 1)[0]
        doc = compare(capsys, "--use-case", "all", "--cpus", "1", "--repeat", "3", "--no-elem-charge",
                      "--profile", fresh_profile, *extra)
        after = _loop_ns("syscall", "overwrite", batch, "v6.6", 8, 1)[0]
        drift = at_calibration / ((before + after) / 2)        # > 1: the machine runs faster now
        bad, seen = [], []
        assert {c["use_case"] for c in doc["cases"]} == {"overwrite", "batch_add_batch_del"}
        for case in doc["cases"]:
            s = case["metrics"]["ops_per_sec"]
            loop, per_inv = LOOP[case["use_case"]]
            calibrated = [per_inv * batch * 1e9 / ns for ns in rounds[f"{loop}{batch}"]]
            runs = [*calibrated, *s["kernel"]]
            tol = max(TOLERANCE, max(runs) / min(runs) - 1)
            errs = {}
            for name, model in (("with the factor", s["model"] * drift), ("without", s["model"])):
                err = model / s["kernel_mean"] - 1
                inside = s["kernel_min"] / (1 + tol) <= model <= s["kernel_max"] * (1 + tol)
                errs[name] = (round(err, 3), abs(err) <= tol or inside)
            seen.append((case["use_case"], {k: f"{e:+.1%}" for k, (e, _) in errs.items()}, f"tolerance {tol:.0%}"))
            if not any(ok for _, ok in errs.values()):
                bad.append((case["use_case"], errs, round(s["model"]), s["kernel"], "calibration", calibrated,
                            "the fit on its own loop", fit.get(f"{loop}{batch}")))
        print(f"machine speed now / at calibration {drift:.3f}; {seen}")
        tries.append((f"machine speed now / at calibration: {drift:.3f}", bad))
        if not bad:
            break
    assert not bad, tries


@pytest.mark.slow
def test_add_del_on_diff_cpu_ops_per_second_within_the_kernels_spread(capsys: pytest.CaptureFixture[str],
                                                                       fresh_profile: str) -> None:
    """add_del_on_diff_cpu at the bench's batch on two CPUs: within 15 % of the kernel, or of its own spread
    over this session's runs (the calibration's ad64 rounds and the comparison's runs) when that is larger:
    the two-CPU hand-off drifts by up to 2x between runs minutes apart on this machine kind
    (docs/measurements.md §10), so the tolerance is what the kernel itself does, and the test reports it."""
    require_kernel_backend()
    if len(os.sched_getaffinity(0)) < 2 or _possible_cpus() < 2:
        pytest.skip("add_del_on_diff_cpu needs two CPUs")
    with open(fresh_profile) as f:
        rounds = json.load(f)["measured"]["ns_per_invocation_or_key"]
    if "ad64" not in rounds:
        pytest.skip("the profile was calibrated without two CPUs (no ad64 loop)")
    doc = compare(capsys, "--use-case", "add_del_on_diff_cpu", "--cpus", "2", "--repeat", "3", "--no-elem-charge",
                  "--profile", fresh_profile)
    s = doc["cases"][0]["metrics"]["ops_per_sec"]
    calibrated = [2 * 64 * 1e9 / ns for ns in rounds["ad64"]]          # one add + one delete batch per cycle
    runs = [*calibrated, *s["kernel"]]
    tol = max(TOLERANCE, max(runs) / min(runs) - 1)
    err = s["model"] / s["kernel_mean"] - 1
    inside = s["kernel_min"] / (1 + tol) <= s["model"] <= s["kernel_max"] * (1 + tol)
    print(f"add_del_on_diff_cpu: model {s['model']:.0f}, kernel {s['kernel']}, calibration {calibrated}; "
          f"error {err:+.1%}, tolerance {tol:.0%}")
    assert abs(err) <= tol or inside, (round(err, 3), s, calibrated, tol)
