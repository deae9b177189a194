"""Memory cgroups of the running kernel: a child cgroup per run, its usage and peak.

The map must be charged to a cgroup the measuring process is *not* in: with a
limit, the allocator's GFP_NOWAIT refills push a cgroup to exactly its limit
while updates still succeed, and the next ordinary charge of a process inside
it triggers the memcg OOM killer.  So ``create_in`` forks a short-lived child
that joins the cgroup, creates the object and hands its file descriptor back
over a Unix socket (SCM_RIGHTS); the measuring process never joins.

v1: ``memory.kmem.usage_in_bytes`` / ``memory.kmem.max_usage_in_bytes``
(BPF memory is kernel memory); v2: ``memory.current`` / ``memory.peak``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

from .lifecycle import (cgroup_name, deferred_signals, fork, register_cgroup, remove_cgroup, unregister_cgroup,
                        unregister_pid)

ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class MemcgLayout:
    version: str          # "v1" or "v2"
    mount: str            # the memory controller's mount point
    own: str              # our process's memory cgroup, relative to the mount
    usage_file: str
    peak_file: str | None
    limit_file: str


def memcg_layout() -> MemcgLayout | None:
    """The memory controller as this process sees it, or None without one."""
    try:
        lines = open("/proc/self/cgroup").read().splitlines()
    except OSError:
        return None
    v1 = os.path.join(ROOT, "memory")
    if os.path.exists(os.path.join(v1, "memory.kmem.usage_in_bytes")) or os.path.exists(
            os.path.join(v1, "memory.usage_in_bytes")):
        own = next((ln.split(":", 2)[2] for ln in lines if ln.split(":")[1] == "memory"), "/")
        kmem = os.path.exists(os.path.join(v1, "memory.kmem.usage_in_bytes"))
        return MemcgLayout("v1", v1, own, "memory.kmem.usage_in_bytes" if kmem else "memory.usage_in_bytes",
                           "memory.kmem.max_usage_in_bytes" if kmem else "memory.max_usage_in_bytes",
                           "memory.limit_in_bytes")
    try:
        controllers = open(os.path.join(ROOT, "cgroup.controllers")).read().split()
    except OSError:
        return None
    if "memory" not in controllers:
        return None
    own = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), "/")
    return MemcgLayout("v2", ROOT, own, "memory.current", "memory.peak", "memory.max")


class ChildMemcg:
    """A fresh child memory cgroup under our own, removed on exit, on errors and on signals
    (registered before it exists: ``lifecycle``)."""

    _seq = 0

    def __init__(self, layout: MemcgLayout, tag: str = "run") -> None:
        ChildMemcg._seq += 1
        self.layout = layout
        self.name = cgroup_name(tag, ChildMemcg._seq)
        parent = os.path.join(layout.mount, layout.own.lstrip("/"))
        if layout.version == "v2":
            ctl = os.path.join(parent, "cgroup.subtree_control")
            try:
                if "memory" not in open(ctl).read().split():
                    with open(ctl, "w") as f:
                        f.write("+memory")
            except OSError:
                pass
        self.path = os.path.join(parent, self.name)
        with deferred_signals():            # made and registered as one step
            register_cgroup(self.path)
            try:
                os.mkdir(self.path)
            except BaseException:
                unregister_cgroup(self.path)
                raise

    def read(self, name: str) -> int:
        with open(os.path.join(self.path, name)) as f:
            v = f.read().strip()
        return (1 << 63) - 1 if v == "max" else int(v)

    def usage(self) -> int:
        return self.read(self.layout.usage_file)

    def peak(self) -> int | None:
        if self.layout.peak_file is None:
            return None
        try:
            return self.read(self.layout.peak_file)
        except OSError:
            return None

    def reset_peak(self) -> None:
        if self.layout.peak_file is None:
            return
        try:
            with open(os.path.join(self.path, self.layout.peak_file), "w") as f:
                f.write("0" if self.layout.version == "v1" else "reset")
        except OSError:
            pass

    def set_limit(self, nbytes: int) -> None:
        with open(os.path.join(self.path, self.layout.limit_file), "w") as f:
            f.write(str(nbytes))

    def failcnt(self) -> int:
        name = "memory.failcnt" if self.layout.version == "v1" else "memory.events"
        if self.layout.version == "v1":
            return self.read(name)
        for line in open(os.path.join(self.path, name)):
            k, v = line.split()
            if k == "max":
                return int(v)
        return 0

    def remove(self) -> None:
        remove_cgroup(self.path)

    def __enter__(self) -> ChildMemcg:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def create_in(cg: ChildMemcg, make: Callable[[], int]) -> int:
    """Run ``make()`` (returns an fd) in a child process that joined ``cg``; return a dup of that fd here."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            parent_sock.close()
            with open(os.path.join(cg.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            try:
                fd = make()
                socket.send_fds(child_sock, [b"ok"], [fd])
                code = 0
            except OSError as e:
                child_sock.sendall(f"err {e.errno} {e}".encode()[:4000])
        finally:
            os._exit(code)
    child_sock.close()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(parent_sock, 4096, 1)
    finally:
        parent_sock.close()
        os.waitpid(pid, 0)
        unregister_pid(pid)
    if not fds:
        text = msg.decode(errors="replace")
        parts = text.split(" ", 2)
        if len(parts) == 3 and parts[0] == "err":
            raise OSError(int(parts[1]), parts[2])
        raise OSError(5, f"creating in {cg.path} failed: {text or 'child died'}")
    return fds[0]


def leftover_cgroups(layout: MemcgLayout) -> list[str]:
    """Child cgroups bpfmem made under ours that still exist."""
    parent = os.path.join(layout.mount, layout.own.lstrip("/"))
    try:
        return sorted(n for n in os.listdir(parent) if n.startswith("bpfmem-"))
    except OSError:
        return []
