"""bpfmem sweep / report / query: a SPEC validated before anything runs, points recorded exactly once whatever
is killed, the same rows on the local pool and on a real Dask cluster, and a report a browser can open offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from bpfmem.cli import main
from bpfmem.sweep.spec import SpecError, parse_spec

from .conftest import Cluster, chromium

SHORT = """command = "bench htab-mem"
[options]
use-case = "overwrite"
cpus = 2
duration = 0.05
idle = 0.02
poke = 20
[grid]
policy = {policies}
seed = "0..{last_seed}"
"""


def spec_file(tmp_path: Any, policies: str = '["v6.1", "v6.18"]', last_seed: int = 1, duration: float = 0.05) -> str:
    path = os.path.join(str(tmp_path), "spec.toml")
    with open(path, "w") as f:
        f.write(SHORT.format(policies=policies, last_seed=last_seed).replace("duration = 0.05",
                                                                            f"duration = {duration}"))
    return path


def rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    import duckdb
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def results(db: str) -> list[tuple[Any, ...]]:
    """Every result row and series row, without what depends on where and when it ran."""
    a = rows(db, "select * from bench_htab_mem order by run_id, result_idx")
    b = rows(db, "select * from bench_htab_mem_series order by run_id, result_idx, list, t")
    return a + b


@pytest.mark.parametrize("text,culprit", [
    ('command = "bench htab-memm"', "command"),
    ('command = "bench htab-mem"\n[grid]\nvalue-siz = [8]', "value-siz"),
    ('command = "bench htab-mem"\n[grid]\nvalue-size = [8, 0]', "--value-size"),
    ('command = "bench htab-mem"\n[grid]\npolicy = ["v6.18", "v9.9"]', "--policy"),
    ('command = "bench htab-mem"\n[grid]\nseed = "4..1"', "grid.seed"),
    ('command = "bench htab-mem"\n[options]\njson = true', "options.json"),
    ('command = "whatif"\n[grid]\nquestion = ["quiet", "later"]', "question"),
    ('command = "bench htab-mem"\nfrobnicate = 1', "frobnicate"),
])
def test_a_spec_that_does_not_validate_names_the_culprit_and_writes_nothing(
        text: str, culprit: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SpecError, match=culprit.replace("-", r"\-").replace(".", r"\.")):
        parse_spec(text)
    path = os.path.join(str(tmp_path), "bad.toml")
    with open(path, "w") as f:
        f.write(text)
    db = os.path.join(str(tmp_path), "r.duckdb")
    assert main(["sweep", path, "--db", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and culprit in err[0], err
    assert not os.path.exists(db)


def test_grid_points_and_argv() -> None:
    s = parse_spec(SHORT.format(policies='["v6.1", "v6.18"]', last_seed=2))
    assert len(s.points) == 6 and len({p.key for p in s.points}) == 6
    assert s.points[0].argv()[:2] == ["--cpus", "2"]
    assert parse_spec(SHORT.format(policies='["v6.1", "v6.18"]', last_seed=2)).sweep_id == s.sweep_id
    w = parse_spec('command = "whatif"\n[grid]\nquestion = ["quiet"]\nquiet-for = [2]')
    assert w.points[0].argv() == ["--quiet-for", "2", "quiet"]


def test_sweep_resumes_and_query_reads_it(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_file(tmp_path)
    db = os.path.join(str(tmp_path), "r.duckdb")
    assert main(["sweep", spec, "--db", db, "--jobs", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["ok"] == 4 and first["failed"] == 0 and first["skipped"] == 0
    assert main(["sweep", spec, "--db", db, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == 4 and again["ok"] == 0
    assert rows(db, "select count(*), count(distinct point_key) from runs") == [(4, 4)]
    assert main(["query", db, "select policy, count(*) n, max(peak_bytes) > 0 p from bench_htab_mem "
                 "join runs using (run_id) group by 1 order by 1", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert q == [{"policy": "v6.1", "n": 2, "p": True}, {"policy": "v6.18", "n": 2, "p": True}]
    assert rows(db, "select count(*) > 0 from bench_htab_mem_series where list = 'total'") == [(True,)]
    out = os.path.join(str(tmp_path), "pq")
    assert main(["sweep", spec, "--db", db, "--export", "parquet", out, "--json"]) == 0
    capsys.readouterr()
    assert {"runs.parquet", "bench_htab_mem.parquet", "bench_htab_mem_series.parquet"} <= set(os.listdir(out))


def test_bad_databases_sql_and_addresses_exit_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import duckdb
    other = os.path.join(str(tmp_path), "other.duckdb")
    duckdb.connect(other).execute("create table t(x int)").close()
    text = os.path.join(str(tmp_path), "text.duckdb")
    with open(text, "w") as f:
        f.write("not a database")
    spec = spec_file(tmp_path)
    for argv, culprit in ((["sweep", spec, "--db", other], "--db"), (["query", other, "select 1"], "RESULTS"),
                          (["report", text], "RESULTS"), (["query", os.path.join(str(tmp_path), "none.duckdb"),
                                                          "select 1"], "RESULTS")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and culprit in err[0], (argv, err)
    db = os.path.join(str(tmp_path), "r.duckdb")
    assert main(["sweep", spec, "--db", db, "--jobs", "1", "-q"]) == 0
    assert main(["query", db, "select nope from runs"]) == 2
    assert "SQL" in capsys.readouterr().err


@pytest.mark.slow
def test_a_dask_address_that_does_not_answer_fails_within_10_s(tmp_path: Any,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = os.path.join(str(tmp_path), "r.duckdb")
    t0 = time.monotonic()
    assert main(["sweep", spec_file(tmp_path), "--db", db, "--dask", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - t0 < 12 and len(err) == 1 and "--dask" in err[0], err
    assert rows(db, "select count(*) from runs") == [(0,)]


def _driver(spec: str, db: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bpfmem", "sweep", spec, "--db", db, "-q", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow
def test_kill_9_of_the_driver_loses_no_finished_point_and_records_none_twice(tmp_path: Any) -> None:
    spec = spec_file(tmp_path, '["v6.1", "v6.2", "v6.6", "v6.18"]', 9, duration=1.0)  # 40 points
    db = os.path.join(str(tmp_path), "r.duckdb")
    p = _driver(spec, db, "--jobs", "2")
    deadline = time.monotonic() + 60
    while not (os.path.exists(db + ".wal") and os.path.getsize(db + ".wal") > 20_000) and time.monotonic() < deadline:
        time.sleep(0.05)                              # the first points are being written
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)                  # the driver and its worker processes, mid-sweep
    p.wait()
    assert 0 < rows(db, "select count(*) from runs")[0][0] < 40
    p = _driver(spec, db, "--jobs", "2")
    assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    assert rows(db, "select count(*), count(distinct point_key), min(status), max(status) from runs") == \
        [(40, 40, "ok", "ok")]
    assert rows(db, "select count(*), count(distinct run_id) from bench_htab_mem") == [(40, 40)]


@pytest.mark.slow
def test_the_same_rows_on_the_local_pool_and_on_a_dask_cluster(tmp_path: Any, dask_cluster: Cluster,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_file(tmp_path)
    local, remote = (os.path.join(str(tmp_path), f"{n}.duckdb") for n in ("local", "dask"))
    assert main(["sweep", spec, "--db", local, "--jobs", "2", "-q"]) == 0
    assert main(["sweep", spec, "--db", remote, "--dask", dask_cluster.address, "-q"]) == 0
    capsys.readouterr()
    assert results(local) == results(remote) and len(results(local)) > 4
    workers = {r[0] for r in rows(remote, "select worker from runs")}
    assert len(workers) == 2                          # both Dask workers ran points


@pytest.mark.slow
def test_kill_9_of_a_dask_worker_mid_sweep_still_records_every_point_once(tmp_path: Any,
                                                                           dask_cluster: Cluster) -> None:
    spec = spec_file(tmp_path, '["v6.1", "v6.2", "v6.6", "v6.18"]', 3, duration=1.0)  # 16 points, ~1 s each
    db = os.path.join(str(tmp_path), "r.duckdb")
    p = _driver(spec, db, "--dask", dask_cluster.address)
    time.sleep(5)
    os.killpg(dask_cluster.workers[0].pid, signal.SIGKILL)
    assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    assert rows(db, "select count(*), count(distinct point_key), min(status) from runs") == [(16, 16, "ok")]
    assert len({r[0] for r in rows(db, "select worker from runs")}) == 2      # the killed one had run some


def _open_in_chromium(page: str, tmp_path: Any) -> dict[str, Any]:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path}/chromium"]
    t0 = time.monotonic()
    dom = subprocess.run([exe, *offline, "--virtual-time-budget=10000", "--dump-dom", f"file://{page}#selftest"],
                         capture_output=True, text=True, timeout=120).stdout
    wall = time.monotonic() - t0
    shot = os.path.join(str(tmp_path), "report.png")
    subprocess.run([exe, *offline, f"--screenshot={shot}", "--window-size=1280,1600", f"file://{page}"],
                   capture_output=True, timeout=120)
    assert os.path.getsize(shot) > 10_000
    start = dom.index('<pre id="selftest">') + len('<pre id="selftest">')
    out: dict[str, Any] = json.loads(dom[start:dom.index("</pre>", start)].replace("&quot;", '"'))
    out["wall_s"] = wall
    return out


def test_the_report_opens_offline_in_chromium(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_file(tmp_path)
    db = os.path.join(str(tmp_path), "r.duckdb")
    assert main(["sweep", spec, "--db", db, "--jobs", "2", "-q"]) == 0
    page = os.path.join(str(tmp_path), "report.html")
    assert main(["report", db, "-o", page]) == 0
    capsys.readouterr()
    st = _open_in_chromium(page, tmp_path)
    assert st["errors"] == [] and st["figures"] >= 3 and st["drawn"] == st["figures"], st
    assert st["rows"] == 4 and st["sorted"], st
    one = os.path.join(str(tmp_path), "one.html")
    assert main(["bench", "htab-mem", "--use-case", "overwrite", "--cpus", "2", "--duration", "0.05", "--idle", "0.02",
                 "--html", one, "-q"]) == 0
    st = _open_in_chromium(one, tmp_path)
    assert st["errors"] == [] and st["drawn"] == st["figures"] >= 2 and st["rows"] == 1, st
    assert "--html" not in open(one).read().split("id='points'")[1]


@pytest.mark.slow
def test_a_1000_point_report_stays_small_and_opens_fast(tmp_path: Any) -> None:
    """A 1,000-point database (one real document, written under 1,000 option sets) makes a report under 10 MB
    that a browser opens in under 5 s."""
    from bpfmem.report.html import write_report
    from bpfmem.sweep.db import Writer, connect
    from bpfmem.sweep.run import run_point
    out = run_point("bench htab-mem", ["--use-case", "overwrite", "--cpus", "2", "--duration", "0.2", "--idle",
                                       "0.05", "--sample-interval", "1"])
    doc = json.loads(out["stdout"])
    db = os.path.join(str(tmp_path), "big.duckdb")
    con = connect(db)
    w = Writer(con)
    for i in range(1000):
        opts = {"value-size": 8 * (1 + i % 50), "seed": i // 50}
        w.write({"run_id": f"s:{i}", "sweep_id": "s", "point": i, "point_key": str(i), "command": "bench htab-mem",
                 "options": json.dumps(opts), "argv": f"bpfmem bench htab-mem --seed {i}", "bpfmem_version": "x",
                 "profile_hash": "", "backend": "model", "kernel_release": "", "machine": "", "worker": "",
                 "started": 0.0, "ended": 0.0, "status": "ok", "error": ""}, doc)
    page = os.path.join(str(tmp_path), "big.html")
    assert write_report(con, page) == 1000
    con.close()
    assert os.path.getsize(page) < 10 * 2**20
    st = _open_in_chromium(page, tmp_path)
    assert st["errors"] == [] and st["rows"] == 1000 and st["drawn"] == st["figures"], st
    assert st["load_ms"] < 5000, st


def test_false_flags_take_their_no_form() -> None:
    s = parse_spec('command = "bench htab-mem"\n[options]\nfast-forward = false\nbreakdown = true')
    assert s.points[0].argv() == ["--breakdown", "--no-fast-forward"]


@pytest.mark.slow
@pytest.mark.kernel
def test_kernel_points_go_only_to_a_worker_with_the_bpf_resource(tmp_path: Any, dask_cluster: Cluster,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tests.kernel import require_bpf
    require_bpf()
    path = os.path.join(str(tmp_path), "obj.toml")
    with open(path, "w") as f:
        f.write('command = "bench obj"\n[options]\nrounds = 100\nwarmup = 10\nobjects = 16\n'
                '[grid]\nbackend = ["model", "kernel"]\nkind = ["obj", "cpumask"]\n')
    db = os.path.join(str(tmp_path), "r.duckdb")
    assert main(["sweep", path, "--db", db, "--dask", dask_cluster.address, "-q"]) == 0
    capsys.readouterr()
    kernel = rows(db, "select distinct worker, status from runs where backend = 'kernel'")
    assert len(kernel) == 1 and kernel[0][1] == "ok", kernel
    first = rows(db, "select worker from runs where backend = 'model'")
    assert len(first) == 2
    assert main(["sweep", path, "--db", os.path.join(str(tmp_path), "local.duckdb"), "-q"]) == 0
    assert rows(os.path.join(str(tmp_path), "local.duckdb"), "select count(*), min(status) from runs") == [(4, "ok")]


@pytest.mark.slow
@pytest.mark.kernel
def test_the_report_puts_model_beside_kernel_and_published_beside_model(tmp_path: Any,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.kernel import require_bpf
    require_bpf()
    path = os.path.join(str(tmp_path), "mk.toml")
    with open(path, "w") as f:
        f.write('command = "bench htab-mem"\n[options]\nuse-case = "overwrite"\ncpus = 2\nduration = 0.2\n'
                'idle = 0.1\npoke = 20\n[grid]\nbackend = ["model", "kernel"]\npolicy = ["v6.18", "prealloc"]\n')
    db = os.path.join(str(tmp_path), "r.duckdb")
    assert main(["sweep", path, "--db", db, "-q"]) == 0
    rep = os.path.join(str(tmp_path), "rep.toml")
    with open(rep, "w") as f:
        f.write('command = "reproduce"\n[options]\nduration = 0.05\n[grid]\nname = ["B.2"]\n')
    assert main(["sweep", rep, "--db", db, "-q"]) == 0
    page = os.path.join(str(tmp_path), "report.html")
    assert main(["report", db, "-o", page]) == 0
    capsys.readouterr()
    text = open(page).read()
    assert "bench_htab_mem: model against kernel" in text and "reproduce B.2: published against model" in text
    st = _open_in_chromium(page, tmp_path)
    assert st["errors"] == [] and st["drawn"] == st["figures"], st


BENCH_HTML = {
    "local-storage": ["--storage-type", "task", "--use-case", "create_destroy", "--cpus", "2", "--owners", "16",
                      "--duration", "0.05", "--idle", "0.02"],
    "local-storage-create": ["--batch-size", "64"],
    "obj": ["--rounds", "20", "--warmup", "5", "--cpus", "2"],
    "arena-vs-htab": ["--elements", "200"],
    "explore": ["--schedules", "100", "--max-bound", "0"],
    "self": ["--cpus", "2", "--duration", "0.01", "--policy", "v6.6", "--use-case", "overwrite", "--no-matrix",
             "--no-local-storage", "-q"],
}


@pytest.mark.parametrize("name", sorted(BENCH_HTML))
def test_every_bench_writes_its_report(tmp_path: Any, capsys: pytest.CaptureFixture[str], name: str) -> None:
    """``bench X --html FILE`` for every bench: the page names the run's command line and shows its first result;
    a series (local storage) is drawn on a time axis in seconds, as htab-mem's; a bad path fails before the run."""
    page = os.path.join(str(tmp_path), f"{name}.html")
    assert main(["bench", name, *BENCH_HTML[name], "--html", page]) == 0
    err = capsys.readouterr().err
    assert f"report written to {page}" in err
    text = open(page).read()
    table = text.split("id='points'")[1]
    assert table.count("<tr>") == 2 and f"bpfmem bench {name} " in table, table[:2000]
    if name == "local-storage":
        assert "memory over time" in text and "time (s; simulated on the model)" in text
    assert main(["bench", name, *BENCH_HTML[name], "--html", os.path.join(str(tmp_path), "x.txt")]) == 2
    assert "--html" in capsys.readouterr().err
