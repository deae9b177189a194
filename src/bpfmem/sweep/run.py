"""Running a sweep's points: on this machine's cores, or on a Dask distributed cluster.

Problem: points are independent runs of a bpfmem command, so they spread over processes and machines;
but the results must land in one database exactly once, and real-kernel points measure the machine they
run on, so two of them must never share one.

Mechanism: a worker runs one point by calling the bpfmem command in its own process (``run_point``:
the command's JSON document is the result) and returns it; only the driver writes the database, one
transaction per finished point (``db.Writer``).  Locally, model points go to a pool of ``jobs`` worker
processes and kernel points to a pool of one.  On Dask (``--dask ADDRESS``), model points go to any
worker and kernel points only to workers started with the resource ``bpf=1`` (``dask worker
--resources bpf=1``), one at a time per worker; a worker that dies mid-point has its point run again
elsewhere by the scheduler, and the driver still records it once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import platform
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable

from .spec import Point, Spec

_LOCK = threading.Lock()       # stdout is per process: threads of one Dask worker take turns


def profile_hash(options: dict[str, Any]) -> str:
    """sha256 (12 hex digits) of the model profile a point runs with: its ``--profile`` or the shipped one."""
    return _profile_hash(str(options.get("profile") or ""))


@functools.lru_cache(maxsize=64)
def _profile_hash(path: str) -> str:
    if path:
        with open(str(path), "rb") as f:
            data = f.read()
    else:
        from importlib import resources

        from ..backend.profile import DEFAULT_PROFILE
        data = resources.files("bpfmem.backend").joinpath("profiles", DEFAULT_PROFILE).read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def run_point(command: str, argv: list[str]) -> dict[str, Any]:
    """Run ``bpfmem COMMAND ARGV --json`` here; the outcome as plain data (picklable, for any pool)."""
    from ..cli.main import _run
    from ..kernel.lifecycle import Terminated, signals_as_exceptions, teardown
    out, err = io.StringIO(), io.StringIO()
    # a worker process's main thread turns SIGTERM/SIGINT into an exception, so teardown() removes what a
    # kernel point made (a Dask worker runs points in other threads: its own shutdown applies)
    signals = signals_as_exceptions() if threading.current_thread() is threading.main_thread() \
        else contextlib.nullcontext()
    with signals, _LOCK, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        started = time.time()
        try:
            code = _run([*command.split(), *argv, "--json", *(["-q"] if command.startswith("bench") and
                                                               command != "bench obj" else [])])
        except Terminated:
            teardown()                   # what the point made is removed; the worker stops for good (its driver
            os._exit(143)                # is gone or cancelled: the pool's queues would keep it waiting forever)
        finally:
            teardown()
        ended = time.time()
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    return {"code": code, "stdout": out.getvalue() if code == 0 else "",
            "error": lines[-1] if code != 0 and lines else ("" if code == 0 else f"exit {code}"),
            "started": started, "ended": ended, "machine": platform.node(), "kernel_release": os.uname().release,
            "worker": f"{platform.node()}:{os.getpid()}"}


def _die_with_parent() -> None:
    """A worker process gets SIGTERM when the driver dies, even by ``kill -9`` (``PR_SET_PDEATHSIG``)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)    # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


class LocalPool:
    """Worker processes on this machine: ``jobs`` for model points, one for kernel points."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        self.model = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_die_with_parent)
        self.kernel: ProcessPoolExecutor | None = None
        self.ctx = ctx

    def submit(self, command: str, pt: Point) -> Future[Any]:
        if pt.kernel:
            if self.kernel is None:
                self.kernel = ProcessPoolExecutor(max_workers=1, mp_context=self.ctx, initializer=_die_with_parent)
            return self.kernel.submit(run_point, command, pt.argv())
        return self.model.submit(run_point, command, pt.argv())

    def wait(self, futs: set[Any]) -> tuple[set[Any], set[Any]]:
        done, rest = wait(futs, return_when=FIRST_COMPLETED)
        return set(done), set(rest)

    def close(self, cancel: bool = False) -> None:
        """Cancelled (the driver was interrupted): the workers are asked to stop now (SIGTERM: a point being run
        tears down what it made) rather than finish their points."""
        for ex in (self.model, self.kernel):
            if ex is None:
                continue
            if cancel:
                for proc in list(getattr(ex, "_processes", {}).values()):
                    proc.terminate()
            ex.shutdown(wait=True, cancel_futures=cancel)


class DaskPool:
    """An existing Dask distributed cluster; kernel points need a worker with the resource ``bpf``."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise OSError("--dask needs the distributed package: pip install 'bpfmem[sweep]'") from None
        try:
            self.client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise OSError(f"no Dask scheduler answers at {address} within {timeout_s:g} s ({type(e).__name__})") \
                from None

    def submit(self, command: str, pt: Point) -> Any:
        kw: dict[str, Any] = {"pure": False, "key": f"bpfmem-point-{pt.key}-{time.monotonic_ns()}"}
        if pt.kernel:
            kw["resources"] = {"bpf": 1}
        return self.client.submit(run_point, command, pt.argv(), retries=2, **kw)

    def wait(self, futs: set[Any]) -> tuple[set[Any], set[Any]]:
        from distributed import wait as dwait
        with self.client.as_current():
            res = dwait(list(futs), return_when="FIRST_COMPLETED")
        return set(res.done), set(res.not_done)

    def close(self, cancel: bool = False) -> None:
        self.client.close()


def run_sweep(spec: Spec, db_path: str, *, jobs: int = 1, dask: str | None = None,
              on_point: Callable[[Point, dict[str, Any]], None] | None = None,
              start: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run every point not already finished in ``db_path``; each result is written as it arrives."""
    from .. import __version__
    from .db import Writer, connect, finished, record_sweep
    con = connect(db_path)
    try:
        record_sweep(con, spec.sweep_id, spec.command, spec.text, len(spec.points))
        done_keys = finished(con, spec.sweep_id)
        todo = [p for p in spec.points if p.key not in done_keys]
        if start is not None:
            start(len(spec.points), len(spec.points) - len(todo))
        counts = {"points": len(spec.points), "skipped": len(spec.points) - len(todo), "ok": 0, "failed": 0}
        if not todo:
            return {"sweep_id": spec.sweep_id, **counts}
        writer = Writer(con)
        pool: Any = DaskPool(dask) if dask else LocalPool(jobs)
        cancel = True
        driver_s = 0.0                   # CPU time the driver's thread spends per point (submit + write)
        try:
            t0 = time.thread_time()
            by_future: dict[Any, Point] = {pool.submit(spec.command, p): p for p in todo}
            driver_s += time.thread_time() - t0
            pending = set(by_future)
            while pending:
                done, pending = pool.wait(pending)
                for fut in done:
                    pt = by_future[fut]
                    try:
                        out = fut.result()
                    except Exception as e:          # the worker died or the task raised: record the reason
                        out = {"code": 1, "stdout": "", "error": f"{type(e).__name__}: {e}".splitlines()[0],
                               "started": time.time(), "ended": time.time(), "machine": "", "kernel_release": "",
                               "worker": ""}
                    t0 = time.thread_time()
                    _record(writer, spec, pt, out, __version__)
                    driver_s += time.thread_time() - t0
                    counts["ok" if out["code"] == 0 else "failed"] += 1
                    if on_point is not None:
                        on_point(pt, out)
            cancel = False
        finally:
            pool.close(cancel=cancel)
        return {"sweep_id": spec.sweep_id, **counts, "driver_ms_per_point": round(1000 * driver_s / len(todo), 2)}
    finally:
        con.close()


def _record(writer: Any, spec: Spec, pt: Point, out: dict[str, Any], version: str) -> None:
    import json
    doc = None
    status = "ok" if out["code"] == 0 else "failed"
    error = out["error"]
    if status == "ok":
        try:
            doc = json.loads(out["stdout"])
        except ValueError:
            status, error = "failed", "the command printed no JSON document"
    opts = dict(pt.options)
    try:
        phash = profile_hash(opts)
    except OSError:
        phash = ""
    backend = "kernel" if pt.kernel else str(opts.get("backend", "model"))
    writer.write({"run_id": f"{spec.sweep_id}:{pt.key}", "sweep_id": spec.sweep_id, "point": pt.index,
                  "point_key": pt.key, "command": spec.command, "options": json.dumps(opts),
                  "argv": " ".join(["bpfmem", spec.command, *pt.argv()]), "bpfmem_version": version,
                  "profile_hash": phash, "backend": backend, "kernel_release": out["kernel_release"],
                  "machine": out["machine"], "worker": out["worker"], "started": out["started"],
                  "ended": out["ended"], "status": status, "error": error}, doc)




def report_for_doc(doc: dict[str, Any], path: str, command: str, argv: list[str]) -> None:
    """The sweep report for one run's document (``bench ... --html FILE``): a one-point database in memory."""
    import json
    from .. import __version__
    from ..report.html import write_report
    from .db import Writer, connect, record_sweep
    con = connect(":memory:")
    try:
        record_sweep(con, "single", command, "", 1)
        now = time.time()
        Writer(con).write({"run_id": "single:0", "sweep_id": "single", "point": 0, "point_key": "0",
                           "command": command, "options": json.dumps({}), "argv": " ".join(["bpfmem", command, *argv]),
                           "bpfmem_version": __version__, "profile_hash": "", "backend": str(doc.get("params", {})
                                                                                             .get("backend", "model")),
                           "kernel_release": os.uname().release, "machine": platform.node(), "worker": "",
                           "started": now, "ended": now, "status": "ok", "error": ""}, doc)
        write_report(con, path, title=f"bpfmem {command}")
    finally:
        con.close()
