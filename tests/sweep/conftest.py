"""A real Dask distributed cluster on 127.0.0.1 (a scheduler and two single-thread workers, real processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Iterator

import pytest


class Cluster:
    def __init__(self, address: str, scheduler: subprocess.Popen[bytes], workers: list[subprocess.Popen[bytes]]):
        self.address = address
        self.scheduler = scheduler
        self.workers = workers


def _dask() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    if not os.path.exists(exe):
        pytest.skip("the dask command is not installed (pip install 'bpfmem[sweep]')")
    return exe


@pytest.fixture
def dask_cluster(tmp_path: object) -> Iterator[Cluster]:
    exe = _dask()
    sfile = os.path.join(str(tmp_path), "scheduler.json")
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sched = subprocess.Popen([exe, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", sfile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
        procs.append(sched)
        deadline = time.monotonic() + 30
        while not os.path.exists(sfile) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.exists(sfile), "the dask scheduler did not start"
        address = json.load(open(sfile))["address"]
        workers = []
        for i in range(2):
            extra = ["--resources", "bpf=1"] if i == 0 else []       # w0 may run real-kernel points
            w = subprocess.Popen([exe, "worker", "--scheduler-file", sfile, "--nthreads", "1", "--no-dashboard",
                                  "--name", f"w{i}", "--death-timeout", "30", *extra], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env, start_new_session=True)
            procs.append(w)
            workers.append(w)
        from distributed import Client
        with Client(address, timeout="20s") as c:
            c.wait_for_workers(2, timeout=60)
        yield Cluster(address, sched, workers)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")
