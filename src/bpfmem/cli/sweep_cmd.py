"""``bpfmem sweep``, ``bpfmem report``, ``bpfmem query``: many runs, one database, one page to look at."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .. import __version__
from .main import cli, fail
from .progress import progress


@cli.command("sweep")
@click.argument("spec_path", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option("--jobs", type=click.IntRange(1, 512), default=None,
              help="Worker processes for model points on this machine [default: this machine's CPUs].")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Run on an existing Dask distributed cluster, e.g. tcp://host:8786 [default: this machine]; "
                   "kernel points go to workers started with --resources bpf=1.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default="results.duckdb", show_default=True,
              help="The DuckDB file results go to (made if missing); re-running a SPEC skips finished points.")
@click.option("--export", "export", type=(click.Choice(["parquet"]), click.Path(file_okay=False)), default=None,
              metavar="parquet DIR", help="Also write every table as DIR/<table>.parquet [default: no export].")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout (no progress).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def sweep_cmd(spec_path: str, jobs: int | None, dask_address: str | None, db_path: str,
              export: tuple[str, str] | None, as_json: bool, quiet: bool) -> None:
    """Run a bpfmem command over a grid or list of option sets (SPEC.toml, docs/sweeps.md) on this machine's
    cores or a Dask cluster; every finished point goes to one DuckDB file, exactly once."""
    from ..sweep.db import DbError, connect, export_parquet
    from ..sweep.run import run_sweep
    from ..sweep.spec import SpecError, load_spec
    try:
        spec = load_spec(spec_path)
    except SpecError as e:
        fail("SPEC.toml", str(e))
    try:
        connect(db_path).close()                 # a file that is not ours: refused before anything runs
    except DbError as e:
        fail("--db", str(e))
    failed: list[str] = []
    with progress(quiet, as_json, "points") as prog:
        task = prog.add_task(f"sweep {spec.command}", total=len(spec.points))

        def start(total: int, skipped: int) -> None:
            prog.update(task, completed=skipped, description=f"sweep {spec.command} ({skipped} already done)")

        def on_point(pt: Any, out: dict[str, Any]) -> None:
            if out["code"] != 0:
                failed.append(f"point {pt.index}: {out['error']}")
            prog.update(task, advance=1, description=f"sweep {spec.command}: {len(failed)} failed")
        try:
            summary = run_sweep(spec, db_path, jobs=jobs or os.cpu_count() or 1, dask=dask_address,
                                on_point=on_point, start=start)
        except OSError as e:
            fail("--dask" if dask_address else "--jobs", str(e).splitlines()[0])
    exported: list[str] = []
    if export is not None:
        con = connect(db_path)
        try:
            exported = export_parquet(con, export[1])
        finally:
            con.close()
    if as_json:
        click.echo(json.dumps({"tool": "bpfmem", "version": __version__, "command": "sweep", "db": db_path,
                               **summary, "errors": failed, "exported": exported}, indent=1))
        return
    click.echo(f"sweep {summary['sweep_id']} ({spec.command}): {summary['points']} points, {summary['ok']} run now, "
               f"{summary['failed']} failed, {summary['skipped']} already in {db_path}")
    for line in failed[:10]:
        click.echo(f"  {line}")
    if exported:
        click.echo(f"exported {len(exported)} tables to {export[1] if export else ''}")


def _open_results(db_path: str) -> Any:
    """A results database opened read-only, or exit 2 naming RESULTS.duckdb (missing, or not a bpfmem one)."""
    from ..sweep.db import DbError, connect
    if not os.path.exists(db_path):
        fail("RESULTS.duckdb", f"no such file {db_path!r}")
    try:
        return connect(db_path, create=False, read_only=True)
    except DbError as e:
        fail("RESULTS.duckdb", str(e))
    raise AssertionError("unreachable")


@cli.command("report")
@click.argument("db_path", metavar="RESULTS.duckdb", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="The HTML file to write (self-contained: opens without network access).")
@click.option("--sweep", "sweep_id", default=None, help="Only this sweep's points [default: every sweep].")
def report_cmd(db_path: str, out: str, sweep_id: str | None) -> None:
    """One self-contained HTML page of a results database: interactive plots and a sortable table of points."""
    from ..report.html import write_report
    con = _open_results(db_path)
    try:
        if sweep_id is not None and not con.execute("select 1 from sweeps where sweep_id = ?", [sweep_id]).fetchone():
            fail("--sweep", f"no sweep {sweep_id!r} in {db_path}")
        n = write_report(con, out, sweep_id)
    except OSError as e:
        fail("--out", f"cannot write {out!r}: {e.strerror or e}")
    finally:
        con.close()
    click.echo(f"report: {out} ({n} points, {os.path.getsize(out) / 2**20:.1f} MiB)")


@cli.command("query")
@click.argument("db_path", metavar="RESULTS.duckdb", type=click.Path(dir_okay=False))
@click.argument("sql", metavar="SQL")
@click.option("--json", "as_json", is_flag=True, help="Rows as a JSON list of objects on stdout.")
def query_cmd(db_path: str, sql: str, as_json: bool) -> None:
    """Ad-hoc SQL on a results database (read-only), e.g. "select policy, max(peak_bytes) from bench_htab_mem
    join runs using (run_id) group by 1"."""
    con = _open_results(db_path)
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description or []]
        rows = cur.fetchall()
    except Exception as e:                       # duckdb's own error classes: the SQL is at fault
        fail("SQL", str(e).splitlines()[0])
    finally:
        con.close()
    if as_json:
        click.echo(json.dumps([dict(zip(cols, r)) for r in rows], default=str, indent=1))
        return
    t = Table(title=f"{len(rows)} row(s)")
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    Console().print(t)
