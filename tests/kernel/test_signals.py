"""Signals at any moment of a kernel command leave nothing behind; kill -9 leaves only cgroups, which
``bpfmem kernel cleanup`` finds and removes.

Each case runs a real kernel command in a child process tagged through its environment (its forked
workers inherit the tag), sends one signal after a delay drawn from a seeded RNG over the whole run
(start-up, setup, run, idle phases, teardown), then checks: the exit code is the signal's (or 0 when the
command finished first), no memory cgroup made by that process exists, no process carrying the tag lives.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from . import require_kernel_backend

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# the interpreter's own start-up (before bpfmem.launch runs its first line) cannot answer a signal: the
# delays start after it; bpfmem.launch answers from there until the command line installs its handlers
STARTUP = 0.06
COMMANDS = (
    ["bench", "htab-mem", "--backend", "kernel", "--use-case", "overwrite", "--duration", "0.3", "--idle", "0.1",
     "--poke", "20", "--json"],
    ["bench", "htab-mem", "--backend", "kernel", "--use-case", "add_del_on_diff_cpu", "--cpus", "2",
     "--duration", "0.3", "--idle", "0.1", "--poke", "20", "--json"],
    ["compare", "--use-case", "batch_add_batch_del", "--cpus", "1", "--duration", "0.2", "--idle", "0.1",
     "--repeat", "1", "--no-elem-charge", "--json"],
    ["arena", "create", "--backend", "kernel", "--max-entries", "64", "--json"],
    ["bench", "arena-vs-htab", "--backend", "kernel", "--elements", "2000", "--json"],
    ["bench", "local-storage-create", "--backend", "kernel", "--storage-type", "task", "--duration", "0.3", "--json"],
    ["size", "--backend", "kernel", "--cpus", str(len(os.sched_getaffinity(0))), "--memcg-limit", "16M",
     "--value-size", "1024", "--max-entries", "100000", "--json"],
)


def _memcg_parent() -> str:
    from bpfmem.kernel.cgroup import memcg_layout
    lay = memcg_layout()
    assert lay is not None
    return os.path.join(lay.mount, lay.own.lstrip("/"))


def _tagged(tag: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        if f"BPFMEM_TEST_TAG={tag}".encode() in env.split(b"\0"):
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                out.append(int(pid))
    return out


def _cgroups_of(pid: int) -> list[str]:
    parent = _memcg_parent()
    return [d for d in os.listdir(parent) if d.startswith(f"bpfmem-{pid}-")]


def _start(argv: list[str], tag: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, BPFMEM_TEST_TAG=tag)
    return subprocess.Popen([sys.executable, "-m", "bpfmem", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _durations() -> list[float]:
    """How long each command takes undisturbed (the range the signal delays are drawn from)."""
    out = []
    for argv in COMMANDS:
        t0 = time.monotonic()
        p = _start(argv, uuid.uuid4().hex)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, (argv, err.decode())
        out.append(time.monotonic() - t0)
    return out


def _signal_matrix(points_per_signal: int, seed: int) -> None:
    require_kernel_backend()
    durations = _durations()
    rng = random.Random(seed)
    problems = []
    outcomes: dict[str, int] = {}
    for sig in SIGNALS:
        for i in range(points_per_signal):
            k = i % len(COMMANDS)
            argv = COMMANDS[k]
            delay = rng.uniform(STARTUP, durations[k] * 1.05)
            tag = uuid.uuid4().hex
            p = _start(argv, tag)
            time.sleep(delay)
            p.send_signal(sig)
            _, err = p.communicate(timeout=60)
            time.sleep(0.05)                   # the kernel delivers PDEATHSIG asynchronously
            alive = _tagged(tag)
            cgs = _cgroups_of(p.pid)
            ok_codes = {0, 128 + sig}
            lines = err.decode().strip().splitlines()
            key = "finished" if p.returncode == 0 else "stopped"
            outcomes[key] = outcomes.get(key, 0) + 1
            # progress lines may come first (stderr is a pipe); the last line says why it stopped
            if p.returncode not in ok_codes or alive or cgs or "Traceback" in err.decode() or \
                    (p.returncode and not (lines and lines[-1].startswith("bpfmem: stopped by"))):
                problems.append((signal.Signals(sig).name, argv[:2], round(delay, 3), p.returncode, alive, cgs,
                                 lines[-3:]))
    # in full: pytest shortens a bare repr, and the last stderr lines say what went wrong
    assert not problems, "\n".join(repr(pr) for pr in problems)
    assert outcomes.get("stopped", 0) >= len(SIGNALS) * points_per_signal // 2, outcomes


@pytest.mark.slow
@pytest.mark.kernel
def test_signals_at_random_points_leave_nothing() -> None:
    _signal_matrix(points_per_signal=6, seed=1)


@pytest.mark.kernel
@pytest.mark.slow
def test_signals_at_fifty_points_each_leave_nothing() -> None:
    _signal_matrix(points_per_signal=50, seed=2)


@pytest.mark.kernel
def test_kill_9_leaves_cgroups_that_cleanup_removes() -> None:
    """SIGKILL: workers die with the driver (PR_SET_PDEATHSIG); its cgroup stays until `kernel cleanup`,
    which removes it and only it; kernel commands warn about it meanwhile."""
    require_kernel_backend()
    from bpfmem.kernel.lifecycle import leftovers
    tag = uuid.uuid4().hex
    p = _start(["bench", "htab-mem", "--backend", "kernel", "--use-case", "add_del_on_diff_cpu", "--cpus", "2",
                "--duration", "3", "--json"], tag)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (_cgroups_of(p.pid) and len(_tagged(tag)) >= 3):
        time.sleep(0.05)
    assert _cgroups_of(p.pid) and len(_tagged(tag)) >= 3, "the run never started its workers"
    p.kill()
    p.wait(timeout=10)
    time.sleep(0.3)
    assert _tagged(tag) == [], "workers outlived the driver"
    left = [lo for lo in leftovers() if f"bpfmem-{p.pid}-" in lo.path]
    assert left and all(lo.reason == "its process is gone" for lo in left)
    # a live run's cgroup is not a leftover: make one in this process and check cleanup leaves it
    from bpfmem.kernel.cgroup import ChildMemcg, memcg_layout
    mine = ChildMemcg(memcg_layout(), "test")  # type: ignore[arg-type]
    try:
        warn = subprocess.run([sys.executable, "-m", "bpfmem", "bench", "htab-mem", "--backend", "kernel",
                               "--use-case", "overwrite", "--duration", "0.1", "--idle", "0.05", "--json"],
                              capture_output=True, timeout=60)
        assert warn.returncode == 0 and b"bpfmem kernel cleanup" in warn.stderr
        dry = subprocess.run([sys.executable, "-m", "bpfmem", "kernel", "cleanup", "--dry-run"], capture_output=True,
                             timeout=60)
        assert dry.returncode == 0 and str(p.pid).encode() in dry.stdout and _cgroups_of(p.pid)
        rm = subprocess.run([sys.executable, "-m", "bpfmem", "kernel", "cleanup"], capture_output=True, timeout=60)
        assert rm.returncode == 0, rm.stderr
        assert _cgroups_of(p.pid) == []
        assert os.path.isdir(mine.path)
    finally:
        mine.remove()


@pytest.mark.kernel
def test_teardown_removes_a_cgroup_of_ours_that_lost_its_registration() -> None:
    """A signal between making a cgroup and recording it (or forgetting it too early) must not leave it:
    teardown also removes every cgroup named as this process names them."""
    require_kernel_backend()
    from bpfmem.kernel.cgroup import ChildMemcg, memcg_layout
    from bpfmem.kernel.lifecycle import teardown, unregister_cgroup
    lay = memcg_layout()
    assert lay is not None
    cg = ChildMemcg(lay, "lost")
    assert os.path.isdir(cg.path)
    unregister_cgroup(cg.path)                  # as if the bookkeeping had been interrupted
    others = [n for n in os.listdir(os.path.dirname(cg.path)) if n.startswith("bpfmem-")]
    assert teardown() == []
    assert not os.path.exists(cg.path)
    assert [n for n in os.listdir(os.path.dirname(cg.path)) if n.startswith("bpfmem-")] == \
        [n for n in others if n != os.path.basename(cg.path)]      # nobody else's was touched


@pytest.mark.kernel
def test_a_signal_while_the_sampler_starts_unwinds_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal that arrives inside ``Thread.start()`` of the memory sampler must end as that signal, not as
    'cannot join thread before it is started' from the cleanup (exit 70 instead of 143)."""
    require_kernel_backend()
    import threading

    from bpfmem.backend.protocol import MapSpec
    from bpfmem.kernel.backend import KernelBackend
    from bpfmem.kernel.lifecycle import Terminated, signals_as_exceptions
    real_start = threading.Thread.start

    def start_after_a_signal(self: threading.Thread) -> None:
        if self.name == "bpfmem-sampler":
            os.kill(os.getpid(), signal.SIGTERM)       # handled at the next instruction unless deferred
        real_start(self)
    monkeypatch.setattr(threading.Thread, "start", start_after_a_signal)
    with pytest.raises(Terminated) as ei:
        with signals_as_exceptions():
            with KernelBackend(1) as kb:
                kb.map_create(MapSpec("hash", 4, 8, 16))
    assert ei.value.signum == signal.SIGTERM
    assert all(t.name != "bpfmem-sampler" or not t.is_alive() for t in threading.enumerate())
