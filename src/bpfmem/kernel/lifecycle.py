"""What a kernel run leaves behind, and how nothing is left: signals, a registry, leftovers of dead runs.

Problem: a kernel run makes things that outlive a careless exit — child memory
cgroups, worker processes holding map file descriptors, a forked child that
creates a map.  ``kill``, ``timeout`` and systemd send SIGTERM, a closed
terminal SIGHUP, Ctrl-C SIGINT; any of them may arrive between creating a thing
and remembering it, and SIGKILL (or power loss) leaves no chance at all.

Mechanism:
- every cgroup and child process is *registered* before it exists (its path)
  or in the same signal-free window as its creation (its pid):
  ``deferred_signals()`` blocks SIGINT/SIGTERM/SIGHUP for that window;
- the CLI turns those signals into an exception (``Terminated``) that unwinds
  through every ``finally``; after the first one the others are ignored so the
  cleanup cannot itself be interrupted; ``teardown()`` then kills registered
  children and removes registered cgroups, whatever the code in between did;
- children ask the kernel to kill them when their parent dies
  (``PR_SET_PDEATHSIG``), so even SIGKILL of the driver leaves no worker;
- cgroups are named ``bpfmem-<pid>-<start time>-<what>-<n>``: ``leftovers()``
  finds those whose process is gone (or whose pid now belongs to another
  process) anywhere in the memory cgroup hierarchy; ``bpfmem kernel cleanup``
  removes them.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
_NAME = re.compile(r"^bpfmem-(\d+)-(?:(\d+)-)?([a-z]+)-(\d+)$")

_cgroups: list[str] = []
_parents: set[str] = set()          # directories this process made cgroups in
_pids: list[int] = []


class Terminated(BaseException):
    """SIGTERM, SIGHUP or SIGINT arrived: unwind, clean up, exit ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum: int, frame: object) -> None:
    for s in SIGNALS:                       # the cleanup that follows must not be cut short
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Terminated`` in the main thread for the duration."""
    old = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Make creating and registering a resource one step: the signals wait until the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2:].split()[19])


def cgroup_name(what: str, seq: int) -> str:
    """``bpfmem-<pid>-<start time>-<what>-<seq>``: enough to tell later whether its maker still runs."""
    pid = os.getpid()
    return f"bpfmem-{pid}-{start_time(pid)}-{what}-{seq}"


def register_cgroup(path: str) -> None:
    _cgroups.append(path)
    _parents.add(os.path.dirname(path))


def unregister_cgroup(path: str) -> None:
    if path in _cgroups:
        _cgroups.remove(path)


def register_pid(pid: int) -> None:
    _pids.append(pid)


def unregister_pid(pid: int) -> None:
    if pid in _pids:
        _pids.remove(pid)


def child_dies_with_parent(parent: int) -> None:
    """In a freshly forked child: the kernel sends SIGKILL when the parent dies (and it may have already)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except OSError:
        pass
    if os.getppid() != parent:
        os._exit(1)


def fork() -> int:
    """``os.fork()`` whose child is registered before any signal can intervene; the child returns with
    default signal handling and is killed by the kernel when this process dies."""
    parent = os.getpid()
    with deferred_signals():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            for s in SIGNALS:
                signal.signal(s, signal.SIG_DFL)
            child_dies_with_parent(parent)
        else:
            register_pid(pid)
    return pid


def kill_and_reap(pid: int) -> None:
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
    unregister_pid(pid)


def remove_cgroup(path: str, tries: int = 100) -> None:
    """rmdir a cgroup we made (its tasks are our short-lived children: kill them first)."""
    for _ in range(tries):
        try:
            os.rmdir(path)
            break
        except FileNotFoundError:
            break
        except OSError:
            _kill_members(path)
            time.sleep(0.01)
    else:
        os.rmdir(path)
    unregister_cgroup(path)


def _kill_members(path: str) -> None:
    try:
        pids = [int(x) for x in open(os.path.join(path, "cgroup.procs")).read().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def teardown() -> list[str]:
    """Kill registered children, remove registered cgroups; returns what could not be removed."""
    for pid in list(_pids):
        kill_and_reap(pid)
    failed = []
    for path in list(_cgroups) + _ours_unregistered():
        try:
            remove_cgroup(path)
        except OSError as e:
            failed.append(f"{path}: {e.strerror}")
    return failed


def _ours_unregistered() -> list[str]:
    """Cgroups named as this process names them (``cgroup_name``) that are no longer registered: a
    signal between a step and its bookkeeping must not leave one behind."""
    prefix = cgroup_name("", 0).rsplit("-", 2)[0] + "-"
    out = []
    for parent in _parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        out += [os.path.join(parent, n) for n in names
                if n.startswith(prefix) and os.path.join(parent, n) not in _cgroups]
    return out


@dataclass(frozen=True)
class Leftover:
    path: str
    pid: int
    reason: str


def _alive(pid: int, start: int | None) -> bool:
    st = start_time(pid)
    return st is not None and (start is None or st == start)


def leftovers(root: str | None = None, max_depth: int = 8) -> list[Leftover]:
    """Cgroups named by bpfmem whose process is gone, anywhere under the memory hierarchy."""
    if root is None:
        root = "/sys/fs/cgroup/memory" if os.path.isdir("/sys/fs/cgroup/memory") else "/sys/fs/cgroup"
    out: list[Leftover] = []
    base = root.rstrip("/").count("/")
    for dirpath, dirnames, _files in os.walk(root):
        if dirpath.count("/") - base >= max_depth:
            dirnames[:] = []
            continue
        keep = []
        for d in dirnames:
            m = _NAME.match(d)
            if m is None:
                if not d.startswith("bpfmem-"):
                    keep.append(d)
                continue
            pid, start = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
            if not _alive(pid, start):
                why = "its process is gone" if start_time(pid) is None else "its pid belongs to another process now"
                out.append(Leftover(os.path.join(dirpath, d), pid, why))
        dirnames[:] = keep
    return sorted(out, key=lambda x: x.path)


def clean(items: list[Leftover]) -> list[str]:
    """Remove leftovers (deepest first); returns the ones that could not be removed, with the reason."""
    failed = []
    for lo in sorted(items, key=lambda x: -x.path.count("/")):
        try:
            remove_cgroup(lo.path, tries=20)
        except OSError as e:
            failed.append(f"{lo.path}: {e.strerror}")
    return failed
