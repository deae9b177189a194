"""A map in its own process's limited cgroup: the kernel OOM-kills the process (measured 3 of 3 on 6.18, before
any update failed); the model predicts the kill.  Runs in a forked child; nothing is left behind."""

from __future__ import annotations

import os
import signal
import time

import pytest

from . import require_kernel_backend

pytestmark = pytest.mark.kernel
LIMIT = 24 << 20


def _oom_kills(cg: object) -> int | None:
    path = os.path.join(cg.path, "memory.oom_control")           # type: ignore[attr-defined]
    try:
        for line in open(path):
            k, v = line.split()
            if k == "oom_kill":
                return int(v)
    except OSError:
        return None
    return None


def test_the_process_holding_the_map_in_its_own_limited_cgroup_is_oom_killed() -> None:
    require_kernel_backend()
    from bpfmem.kernel import syscall as S
    from bpfmem.kernel import uapi as U
    from bpfmem.kernel.cgroup import ChildMemcg, memcg_layout
    from bpfmem.kernel.lifecycle import fork, leftovers, unregister_pid
    from bpfmem.sizing.who_pays import Scenario, Update, who_pays

    before = leftovers()
    layout = memcg_layout()
    assert layout is not None
    cg = ChildMemcg(layout, "oom")
    r, w = os.pipe()
    try:
        cg.set_limit(LIMIT)
        pid = fork()
        if pid == 0:  # pragma: no cover - the child that joins the cgroup and fills its map
            code = 3
            try:
                os.close(r)
                with open(os.path.join(cg.path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                m = S.map_create(U.BPF_MAP_TYPE_HASH, 4, 1024, 1 << 16, U.BPF_F_NO_PREALLOC, name="bpfmem_oom")
                bm = S.BpfMap(m.release(), U.BPF_MAP_TYPE_HASH, 4, 1024, 1 << 16, U.BPF_F_NO_PREALLOC)
                value = bytes(1024)
                for k in range(1 << 16):
                    try:
                        S.map_update_elem(bm, k.to_bytes(4, "little"), value)
                    except OSError as e:
                        os.write(w, f"errno {e.errno} after {k}\n".encode())
                        code = 4
                        break
                    if k % 256 == 0:
                        os.write(w, f"{k}\n".encode())
                        bytearray(64 << 10)              # an ordinary allocation of the process now and then
            finally:
                os._exit(code)
        os.close(w)
        w = -1
        _, status = os.waitpid(pid, 0)
        unregister_pid(pid)
        lines = os.read(r, 1 << 20).decode().split()
        kills = _oom_kills(cg)
    finally:
        if w >= 0:
            os.close(w)
        os.close(r)
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end and cg.usage() > 64 * 1024:
            time.sleep(0.01)
        cg.remove()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (status, lines[-3:])
    if kills is not None:
        assert kills >= 1
    assert not any(x.startswith("errno") for x in lines)            # killed before any update failed
    # the model: the same process (its cgroup holds the map) reaches the limit -> OOM kill predicted
    sc = Scenario({"/job": LIMIT}, "/job", [Update("process", 1 << 15, "/job")], value_size=1024, max_entries=1 << 16)
    outcomes = who_pays(sc, ["v6.18"])["rules"][0]["outcomes"]
    assert any(o.startswith("OOM kill: a process in /job") for o in outcomes), outcomes
    assert leftovers() == before
