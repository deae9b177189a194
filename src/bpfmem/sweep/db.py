"""Sweep results in one DuckDB file (embedded: no server).

Problem: hundreds of JSON documents are unreadable side by side, and a sweep killed half-way must keep
what it finished and never record a point twice.  So each finished point is one transaction: its
``runs`` row, its result rows (one table per result kind: the document's fields as columns) and its
memory series (a child table ``<kind>_series``).  Either all of it is there or none; a point whose
``runs`` row says ``ok`` is never run again.

Tables:

- ``bpfmem_meta(key, value)``: marks the file as a bpfmem results database (``schema``).
- ``sweeps(sweep_id, command, spec, points, created)``.
- ``runs(run_id, sweep_id, point, point_key, command, options, argv, bpfmem_version, profile_hash, backend,
  kernel_release, machine, worker, started, ended, status, error, result_kind)``.
- ``<kind>`` (e.g. ``bench_htab_mem``): ``run_id, result_idx`` and one column per scalar field of a result
  (numbers DOUBLE, text VARCHAR, flags BOOLEAN; nested fields as JSON).
- ``<kind>_series(run_id, result_idx, list, t, value)``: ``series`` (list ``total``) and each
  ``breakdown_series`` list, ``t`` in seconds.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

SCHEMA = "bpfmem-results-1"


class DbError(ValueError):
    """A file that is not a bpfmem results database, or one that cannot be opened."""


def connect(path: str, *, create: bool = True, read_only: bool = False) -> Any:
    """Open (or create) a results database; ``DbError`` if the file is something else."""
    import duckdb
    import os
    exists = path != ":memory:" and os.path.exists(path)
    if not exists and not create:
        raise DbError(f"no such database {path!r}")
    try:
        con = duckdb.connect(path, read_only=read_only and exists)
    except Exception as e:                 # duckdb raises its own IOException / InvalidInputException
        raise DbError(f"{path!r} is not a bpfmem results database ({str(e).splitlines()[0]})") from None
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    if exists and tables and "bpfmem_meta" not in tables:
        con.close()
        raise DbError(f"{path!r} is a DuckDB file but not a bpfmem results database (no bpfmem_meta table)")
    if "bpfmem_meta" in tables:
        row = con.execute("select value from bpfmem_meta where key = 'schema'").fetchone()
        if row is None or row[0] != SCHEMA:
            con.close()
            raise DbError(f"{path!r}: schema {row[0] if row else None!r}, this bpfmem reads {SCHEMA!r}")
    elif not read_only:
        con.execute("begin")
        con.execute("create table bpfmem_meta(key varchar primary key, value varchar)")
        con.execute("insert into bpfmem_meta values ('schema', ?)", [SCHEMA])
        con.execute("""create table sweeps(sweep_id varchar primary key, command varchar, spec varchar,
                       points integer, created timestamp default current_timestamp)""")
        con.execute("""create table runs(run_id varchar primary key, sweep_id varchar, point integer,
                       point_key varchar, command varchar, options json, argv varchar, bpfmem_version varchar,
                       profile_hash varchar, backend varchar, kernel_release varchar, machine varchar,
                       worker varchar, started timestamp, ended timestamp, status varchar, error varchar,
                       result_kind varchar)""")
        con.execute("commit")
    return con


def ident(name: str) -> str:
    """A table or column name from a document key (``bench htab-mem`` -> ``bench_htab_mem``)."""
    out = re.sub(r"[^0-9a-zA-Z_]", "_", name).strip("_").lower() or "x"
    return out if not out[0].isdigit() else "_" + out


def record_sweep(con: Any, sweep_id: str, command: str, spec: str, points: int) -> None:
    con.execute("insert or ignore into sweeps(sweep_id, command, spec, points) values (?, ?, ?, ?)",
                [sweep_id, command, spec, points])


def finished(con: Any, sweep_id: str) -> set[str]:
    """Point keys of this sweep already recorded as ``ok``."""
    rows = con.execute("select point_key from runs where sweep_id = ? and status = 'ok'", [sweep_id]).fetchall()
    return {r[0] for r in rows}


def _results(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The result rows of a document: ``results`` (a list), ``result`` (one), ``cases``/``tables`` rows, or the
    document's own scalar fields."""
    for key in ("results", "cases", "rows"):
        v = doc.get(key)
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            return v
    if isinstance(doc.get("result"), dict):
        return [doc["result"]]
    if isinstance(doc.get("tables"), list):
        rows = []
        for t in doc["tables"]:
            for r in (t.get("rows") or t.get("cells") or []) if isinstance(t, dict) else []:
                if isinstance(r, dict):
                    rows.append({"table": t.get("name", ""), **r})
        if rows:
            return rows
    return [{k: v for k, v in doc.items() if not isinstance(v, (dict, list))}]


def _coltype(v: Any) -> str | None:
    if isinstance(v, bool):
        return "BOOLEAN"
    if isinstance(v, (int, float)):
        return "DOUBLE"
    if isinstance(v, str):
        return "VARCHAR"
    if isinstance(v, (dict, list)):
        return "JSON"
    return None


class Writer:
    """Writes finished points; knows each result table's columns and adds new ones as documents bring them."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.cols: dict[str, dict[str, str]] = {}
        # run ids recorded as failed: a new try replaces the row (a failed point has no result rows)
        self.retry = {r[0] for r in con.execute("select run_id from runs where status <> 'ok'").fetchall()}

    def _columns(self, table: str) -> dict[str, str]:
        if table not in self.cols:
            rows = self.con.execute("select column_name, data_type from information_schema.columns "
                                    "where table_name = ?", [table]).fetchall()
            self.cols[table] = {r[0]: r[1] for r in rows}
        return self.cols[table]

    def _ensure(self, table: str, row: dict[str, Any]) -> dict[str, str]:
        cols = self._columns(table)
        if not cols:
            self.con.execute(f'create table "{table}"(run_id varchar, result_idx integer)')
            self.con.execute(f'create table "{table}_series"(run_id varchar, result_idx integer, list varchar, '
                             "t double, value double)")
            cols.update({"run_id": "VARCHAR", "result_idx": "INTEGER"})
        for k, v in row.items():
            t = _coltype(v)
            if t is not None and k not in cols:
                self.con.execute(f'alter table "{table}" add column "{k}" {t}')
                cols[k] = t
        return cols

    def write(self, run: dict[str, Any], doc: dict[str, Any] | None) -> None:
        """One point, atomically: its runs row, result rows and series (``doc`` None: a failed point)."""
        con = self.con
        con.execute("begin")
        try:
            if run["run_id"] in self.retry:        # a failed try recorded before: replaced, never doubled
                con.execute("delete from runs where run_id = ?", [run["run_id"]])
            kind = ident(str(doc.get("command", run["command"]))) if doc else None
            if doc is not None and kind is not None:
                for i, res in enumerate(_results(doc)):
                    self._row(kind, run["run_id"], i, res)
            con.execute("""insert into runs values ($run_id, $sweep_id, $point, $point_key, $command, $options,
                           $argv, $bpfmem_version, $profile_hash, $backend, $kernel_release, $machine, $worker,
                           to_timestamp($started), to_timestamp($ended), $status, $error, $result_kind)""",
                        {**run, "result_kind": kind})
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            self.cols.clear()              # a rolled-back ALTER TABLE: read the columns again
            raise

    def _row(self, kind: str, run_id: str, idx: int, res: dict[str, Any]) -> None:
        series = res.get("series")
        lists = res.get("breakdown_series")
        flat: dict[str, Any] = {}
        for k, v in res.items():
            if k in ("series", "breakdown_series"):
                continue
            if isinstance(v, dict) and 0 < len(v) <= 12 and all(not isinstance(x, (dict, list)) for x in v.values()):
                for kk, vv in v.items():                 # a small record (published, model): one column each
                    flat[ident(f"{k}__{kk}")] = vv
            else:
                flat[ident(k)] = v
        cols = self._ensure(kind, flat)
        names, values = ["run_id", "result_idx"], [run_id, idx]
        for k, v in flat.items():
            t = cols.get(k)
            if t is None or v is None:
                continue
            if t == "JSON" or isinstance(v, (dict, list)):
                v = json.dumps(v)
            elif t == "DOUBLE" and not isinstance(v, (int, float)) or t == "VARCHAR" and not isinstance(v, str):
                v = str(v) if t == "VARCHAR" else None
            names.append(k)
            values.append(v)
        ph = ", ".join("?" for _ in names)
        self.con.execute(f'insert into "{kind}"({", ".join(chr(34) + n + chr(34) for n in names)}) values ({ph})',
                         values)
        rows = list(_series_rows(run_id, idx, series, lists))
        if rows:                                   # one statement for the whole series (columns as lists)
            names_, ts, vs = [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows]
            self.con.execute(f'insert into "{kind}_series" select ?, ?, unnest(?::varchar[]), unnest(?::double[]), '
                             "unnest(?::double[])", [run_id, idx, names_, ts, vs])


def _series_rows(run_id: str, idx: int, series: Any, lists: Any) -> Iterable[tuple[Any, ...]]:
    ts: list[float] = []
    if isinstance(series, list):
        for p in series:
            if isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, (int, float)) for x in p):
                ts.append(float(p[0]))
                yield (run_id, idx, "total", float(p[0]), float(p[1]))
    if isinstance(lists, dict) and ts:
        for name, vs in lists.items():
            if isinstance(vs, list):
                for t, v in zip(ts, vs):
                    if isinstance(v, (int, float)):
                        yield (run_id, idx, str(name), t, float(v))


def export_parquet(con: Any, outdir: str) -> list[str]:
    """Every table as ``outdir/<table>.parquet``."""
    import os
    os.makedirs(outdir, exist_ok=True)
    out = []
    for (name,) in con.execute("select table_name from information_schema.tables order by 1").fetchall():
        path = os.path.join(outdir, f"{name}.parquet")
        con.execute(f"copy \"{name}\" to '{path}' (format parquet)")
        out.append(path)
    return out
