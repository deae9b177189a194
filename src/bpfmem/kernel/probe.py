"""What the running kernel allows, each item with a reason when it does not.

``bpfmem kernel probe`` prints this; kernel-backed commands and tests call
``require_kernel()`` and stop (exit 2 / skip) with its one-line reason.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

from . import uapi as U
from .cgroup import memcg_layout

RET0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit


@dataclass
class ProbeItem:
    name: str
    ok: bool
    detail: str


@dataclass
class ProbeResult:
    kernel: str
    machine: str
    cpus: int
    euid: int
    items: list[ProbeItem] = field(default_factory=list)

    def ok(self, name: str) -> bool:
        return any(i.name == name and i.ok for i in self.items)

    def reason(self, name: str) -> str:
        for i in self.items:
            if i.name == name:
                return i.detail
        return f"{name} not probed"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def possible_cpus() -> int:
    """``num_possible_cpus()`` of the running kernel (/sys/devices/system/cpu/possible)."""
    try:
        text = open("/sys/devices/system/cpu/possible").read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _try(fn: object) -> tuple[bool, str]:
    try:
        detail = fn()  # type: ignore[operator]
        return True, detail or "ok"
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"


def probe() -> ProbeResult:
    """Probe everything; never raises."""
    r = ProbeResult(platform.release(), platform.machine(), os.cpu_count() or 1, os.geteuid())
    add = r.items.append
    if platform.system() != "Linux":
        add(ProbeItem("bpf", False, f"not Linux ({platform.system()}): the kernel backend needs bpf(2)"))
        return r
    try:
        from . import syscall as S
    except OSError as e:  # pragma: no cover - no libc
        add(ProbeItem("bpf", False, f"cannot load libc for bpf(2): {e}"))
        return r

    def hash_map() -> str:
        with S.map_create(U.BPF_MAP_TYPE_HASH, 4, 8, 16, U.BPF_F_NO_PREALLOC) as m:
            S.map_update_elem(m, b"\0\0\0\0", b"\0" * 8)
        return "BPF_MAP_CREATE/UPDATE of a BPF_F_NO_PREALLOC hash map works"
    ok, detail = _try(hash_map)
    if not ok and r.euid != 0:
        detail += " (not root: run as root or with CAP_BPF + CAP_PERFMON)"
    add(ProbeItem("bpf", ok, detail))
    if not ok:
        return r
    for name, mtype, k, v, n, flags in (("map:hash", U.BPF_MAP_TYPE_HASH, 4, 8, 16, 0),
                                        ("map:percpu_hash", U.BPF_MAP_TYPE_PERCPU_HASH, 4, 8, 16, 0),
                                        ("map:array", U.BPF_MAP_TYPE_ARRAY, 4, 8, 16, 0),
                                        ("map:arena", U.BPF_MAP_TYPE_ARENA, 0, 0, 1, U.BPF_F_MMAPABLE)):
        def mk(mtype: int = mtype, k: int = k, v: int = v, n: int = n, flags: int = flags) -> str:
            S.map_create(mtype, k, v, n, flags).close()
            return "created"
        add(ProbeItem(name, *_try(mk)))

    def sock_filter() -> str:
        with S.prog_load(U.BPF_PROG_TYPE_SOCKET_FILTER, RET0, name="probe") as p:
            ret, dur = S.prog_test_run(p, b"\0" * 64, repeat=1000)
        return f"load + BPF_PROG_TEST_RUN repeat=1000: retval {ret}, {dur} ns/run"
    add(ProbeItem("prog:socket_filter+test_run", *_try(sock_filter)))

    def syscall_prog() -> str:
        with S.prog_load(U.BPF_PROG_TYPE_SYSCALL, RET0, name="probe", flags=U.BPF_F_SLEEPABLE) as p:
            S.prog_test_run(p, b"", repeat=0)
        return "sleepable SYSCALL program loads and runs (repeat must be 0)"
    add(ProbeItem("prog:syscall_sleepable+test_run", *_try(syscall_prog)))

    lay = memcg_layout()
    if lay is None:
        add(ProbeItem("memcg", False, "no memory cgroup controller mounted"))
    else:
        parent = os.path.join(lay.mount, lay.own.lstrip("/"))
        writable = os.access(parent, os.W_OK)
        files = f"{lay.usage_file}, {lay.peak_file}" if lay.peak_file else lay.usage_file
        add(ProbeItem("memcg", writable, f"{lay.version} at {parent} ({files})" +
                      ("" if writable else ": cannot create child cgroups here")))
    return r


def require_kernel(need: tuple[str, ...] = ("bpf", "memcg")) -> str | None:
    """None when the kernel backend can run, else a one-line reason."""
    r = probe()
    for name in need:
        if not r.ok(name):
            return f"{name}: {r.reason(name)}"
    return None
