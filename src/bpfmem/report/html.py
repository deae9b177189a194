"""One self-contained HTML page from a results database: interactive plots and a sortable table of points.

Problem: five hundred points are read by looking, not by scrolling JSON, and the page must open on a
laptop with no network (a report mailed around, a CI artifact).  So everything is inlined: plotly's
JavaScript once, each figure as a ``div`` drawn by it, the table sorted by a few lines of script, and
the command line that reproduces each point beside it.

Figures (each only when the data has it): memory over time per point; memory per list for the first
points with a breakdown; peak memory against every numeric option the points vary, one colour per
policy; model against kernel (mean and range over seeds) where both ran; published against model for
``reproduce`` tables.  Series are thinned to at most ``MAX_SAMPLES`` samples and the time plot to
``MAX_LINES`` points, so a 1,000-point report stays a few MiB.

Opening the page with ``#selftest`` appends a ``<pre id="selftest">`` with what it checked (figures
drawn, the table sorted on a click, console errors): the tests read it from a headless browser.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

MAX_SAMPLES = 300
MAX_LINES = 40
MAX_PER_LIST = 2


def _rows(con: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _thin(ts: list[float], vs: list[float]) -> tuple[list[float], list[float]]:
    if len(ts) <= MAX_SAMPLES:
        return ts, vs
    step = len(ts) / MAX_SAMPLES
    idx = sorted({int(i * step) for i in range(MAX_SAMPLES)} | {len(ts) - 1})
    return [ts[i] for i in idx], [vs[i] for i in idx]


def _label(opts: dict[str, Any], varying: Sequence[str]) -> str:
    return ", ".join(f"{k}={opts[k]}" for k in varying if k in opts) or "point"


def write_report(con: Any, path: str, sweep_id: str | None = None, title: str | None = None) -> int:
    """Write the page for every point (or one sweep's) to ``path``; the number of points."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
    where, params = ("where sweep_id = ?", [sweep_id]) if sweep_id else ("", [])
    runs = _rows(con, f"select * from runs {where} order by sweep_id, point", params)
    for r in runs:
        r["opts"] = json.loads(r["options"]) if r["options"] else {}
    keys = sorted({k for r in runs for k in r["opts"]})
    varying = [k for k in keys if len({json.dumps(r["opts"].get(k)) for r in runs}) > 1]
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    kinds = sorted({r["result_kind"] for r in runs if r["result_kind"] and r["result_kind"] in tables})
    by_id = {r["run_id"]: r for r in runs}
    figs: list[tuple[str, Any]] = []
    results: dict[str, list[dict[str, Any]]] = {}
    for kind in kinds:
        res = [x for x in _rows(con, f'select * from "{kind}" order by run_id, result_idx') if x["run_id"] in by_id]
        results[kind] = res
        figs += _time_figs(go, con, kind, res, by_id, varying)
        figs += _peak_figs(go, kind, res, by_id, varying)
        figs += _model_kernel_figs(go, kind, res, by_id, varying)
        if kind == "reproduce":
            figs += _reproduce_figs(go, res)
    body = []
    for i, (heading, fig) in enumerate(figs):
        fig.update_layout(template="plotly_white", height=420, margin={"l": 60, "r": 20, "t": 50, "b": 50})
        body.append(f"<section><h2>{html.escape(heading)}</h2>"
                    + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}",
                                  config={"displaylogo": False, "responsive": True}) + "</section>")
    page = _PAGE.format(title=html.escape(title or f"bpfmem report: {len(runs)} points"),
                        plotly=get_plotlyjs(), summary=html.escape(_summary(runs, kinds)),
                        figures="\n".join(body) or "<p>No plottable results.</p>",
                        table=_table(runs, results, varying), script=_SCRIPT)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return len(runs)


def _summary(runs: list[dict[str, Any]], kinds: list[str]) -> str:
    ok = sum(r["status"] == "ok" for r in runs)
    sweeps = sorted({r["sweep_id"] for r in runs})
    return (f"{len(runs)} points ({ok} ok, {len(runs) - ok} failed) in {len(sweeps)} sweep(s) "
            f"{', '.join(sweeps)}; result kinds: {', '.join(kinds) or 'none'}. Model numbers are modelled; "
            "kernel points are measured on the machine named in the table.")


def _time_figs(go: Any, con: Any, kind: str, res: list[dict[str, Any]], by_id: dict[str, Any],
               varying: Sequence[str]) -> list[tuple[str, Any]]:
    if f"{kind}_series" not in {r[0] for r in con.execute("select table_name from information_schema.tables")
                                .fetchall()}:
        return []
    shown = res[:MAX_LINES]
    out: list[tuple[str, Any]] = []
    fig = go.Figure()
    for x in shown:
        pts = con.execute(f'select t, value from "{kind}_series" where run_id = ? and result_idx = ? and '
                          "list = 'total' order by t", [x["run_id"], x["result_idx"]]).fetchall()
        if not pts:
            continue
        ts, vs = _thin([p[0] for p in pts], [p[1] / 2**20 for p in pts])
        fig.add_trace(go.Scatter(x=ts, y=vs, mode="lines", name=_name(x, by_id, varying)))
    if fig.data:
        fig.update_layout(xaxis_title="time (s; simulated on the model)", yaxis_title="MiB")
        more = f" (first {MAX_LINES} of {len(res)})" if len(res) > MAX_LINES else ""
        out.append((f"{kind}: memory over time{more}", fig))
    for x in res[:MAX_PER_LIST]:
        pts = con.execute(f'select list, t, value from "{kind}_series" where run_id = ? and result_idx = ? and '
                          "list <> 'total' order by list, t", [x["run_id"], x["result_idx"]]).fetchall()
        if not pts:
            continue
        lists: dict[str, tuple[list[float], list[float]]] = {}
        for name, t, v in pts:
            lists.setdefault(name, ([], []))
            lists[name][0].append(t)
            lists[name][1].append(v / 2**20)
        fig = go.Figure()
        for name, (ts, vs) in sorted(lists.items(), key=lambda kv: -max(kv[1][1] or [0])):
            if max(vs or [0]) > 0:
                ts2, vs2 = _thin(ts, vs)
                fig.add_trace(go.Scatter(x=ts2, y=vs2, mode="lines", stackgroup="one", name=name))
        if fig.data:
            fig.update_layout(xaxis_title="time (s)", yaxis_title="MiB")
            out.append((f"{kind}: memory per list, {_name(x, by_id, varying)}", fig))
    return out


def _name(x: dict[str, Any], by_id: dict[str, Any], varying: Sequence[str]) -> str:
    """A result's label: the options its points vary, and its use case and policy when those do not say it."""
    name = _label(by_id[x["run_id"]]["opts"], varying)
    for extra in ("use_case", "policy"):
        if x.get(extra) and f"={x[extra]}" not in name:
            name += f" {x[extra]}"
    return name


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _peak_figs(go: Any, kind: str, res: list[dict[str, Any]], by_id: dict[str, Any],
               varying: Sequence[str]) -> list[tuple[str, Any]]:
    metric = next((m for m in ("peak_bytes", "memory_bytes", "peak_mib") if any(_num(x.get(m)) is not None
                                                                                 for x in res)), None)
    if metric is None:
        return []
    out = []
    for opt in varying:
        if opt == "seed":
            continue
        xs = [(by_id[x["run_id"]]["opts"].get(opt), x) for x in res]
        if not all(_num(v) is not None for v, _ in xs):
            continue
        groups: dict[str, list[tuple[float, float]]] = {}
        for v, x in xs:
            y = _num(x.get(metric))
            if y is not None:
                groups.setdefault(str(x.get("policy") or x.get("config", "") or "all"), []).append((float(v), y))
        fig = go.Figure()
        for g, pts in sorted(groups.items()):
            pts.sort()
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers+lines", name=g))
        fig.update_layout(xaxis_title=opt, yaxis_title=metric)
        out.append((f"{kind}: {metric} against {opt}, per policy", fig))
    return out


def _model_kernel_figs(go: Any, kind: str, res: list[dict[str, Any]], by_id: dict[str, Any],
                       varying: Sequence[str]) -> list[tuple[str, Any]]:
    if not res or "backend" not in res[0]:
        return []
    if not {"model", "kernel"} <= {str(x.get("backend")) for x in res}:
        return []
    metric = "peak_bytes"
    groups: dict[tuple[str, str], list[float]] = {}
    keys = [k for k in varying if k not in ("seed", "backend")]
    for x in res:
        y = _num(x.get(metric))
        if y is None:
            continue
        label = _label(by_id[x["run_id"]]["opts"], keys) + f" {x.get('use_case') or ''} {x.get('policy') or ''}"
        groups.setdefault((label.strip(), str(x["backend"])), []).append(y / 2**20)
    labels = sorted({g[0] for g in groups})
    fig = go.Figure()
    for be in ("model", "kernel"):
        ys = [groups.get((lab, be), []) for lab in labels]
        mean = [sum(v) / len(v) if v else None for v in ys]
        fig.add_trace(go.Bar(x=labels, y=mean, name=be, error_y={
            "type": "data", "symmetric": False,
            "array": [max(v) - m if v and m is not None else 0 for v, m in zip(ys, mean)],
            "arrayminus": [m - min(v) if v and m is not None else 0 for v, m in zip(ys, mean)]}))
    fig.update_layout(barmode="group", yaxis_title=f"{metric} (MiB): mean, range over seeds")
    return [(f"{kind}: model against kernel", fig)]


def _reproduce_figs(go: Any, res: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    out = []
    for table in sorted({str(x.get("table")) for x in res}):
        cells = [x for x in res if str(x.get("table")) == table]
        for metric in ("peak_mib", "avg_mib", "speed"):
            pub = [_num(x.get(f"published__{metric}")) for x in cells]
            mod = [_num(x.get(f"model__{metric}")) or _num(x.get(f"model_raw__{metric}")) for x in cells]
            if not any(p is not None for p in pub):
                continue
            labels = [f"{x.get('flavour') or x.get('policy')} / {x.get('use_case', '')}" for x in cells]
            fig = go.Figure([go.Bar(x=labels, y=pub, name="published"), go.Bar(x=labels, y=mod, name="model")])
            fig.update_layout(barmode="group", yaxis_title=metric)
            out.append((f"reproduce {table}: published against model, {metric}", fig))
    return out


COLUMNS = ("use_case", "policy", "backend", "peak_bytes", "steady_bytes", "memory_bytes", "ops_per_sec",
           "per_prod_op", "failures", "kmallocs_per_round")


def _table(runs: list[dict[str, Any]], results: dict[str, list[dict[str, Any]]], varying: Sequence[str]) -> str:
    first: dict[str, dict[str, Any]] = {}
    for res in results.values():
        for x in res:
            first.setdefault(x["run_id"], x)
    metrics = [c for c in COLUMNS if any(c in x and x[c] is not None for x in first.values())]
    head = ["point", "status", *varying, *metrics, "command line"]
    rows = []
    for r in runs:
        x = first.get(r["run_id"], {})
        cells = [str(r["point"]), r["status"] + (f": {r['error']}" if r["error"] else "")]
        cells += [str(r["opts"].get(k, "")) for k in varying]
        for m in metrics:
            v = x.get(m)
            cells.append("" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)))
        cells.append(r["argv"])
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return ("<table id='points'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table>")


_SCRIPT = r"""
(function () {
  var errors = [];
  var oldError = console.error;
  console.error = function () { errors.push(Array.prototype.join.call(arguments, ' ')); oldError.apply(console, arguments); };
  window.addEventListener('error', function (e) { errors.push(String(e.message)); });
  function key(td) { var t = td.textContent.trim(); var n = parseFloat(t); return (t !== '' && !isNaN(n) && /^[-+0-9.eE]+$/.test(t)) ? n : t.toLowerCase(); }
  function sortBy(th) {
    var table = th.closest('table'), body = table.tBodies[0], i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('data-order') !== 'asc';
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute('data-order'); });
    th.setAttribute('data-order', asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) { var x = key(a.cells[i]), y = key(b.cells[i]);
      if (typeof x !== typeof y) { x = String(x); y = String(y); } return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll('#points th').forEach(function (th) { th.addEventListener('click', function () { sortBy(th); }); });
  window.addEventListener('load', function () {
    if (location.hash !== '#selftest') return;
    var t0 = performance.now();
    var plots = document.querySelectorAll('.js-plotly-plot'), drawn = 0;
    plots.forEach(function (p) { if (p.querySelector('svg.main-svg') && p.querySelectorAll('path, rect').length > 0) drawn++; });
    var th = document.querySelector('#points th'), sorted = false;
    if (th) {
      th.click(); var a = Array.prototype.map.call(document.querySelectorAll('#points tbody tr'), function (r) { return key(r.cells[0]); });
      th.click(); var b = Array.prototype.map.call(document.querySelectorAll('#points tbody tr'), function (r) { return key(r.cells[0]); });
      var asc = a.every(function (v, j) { return j === 0 || a[j - 1] <= v; }), desc = b.every(function (v, j) { return j === 0 || b[j - 1] >= v; });
      sorted = asc && desc && (a.length < 2 || a[0] !== b[0]);
    }
    var out = document.createElement('pre'); out.id = 'selftest';
    out.textContent = JSON.stringify({figures: plots.length, drawn: drawn, rows: document.querySelectorAll('#points tbody tr').length,
      sorted: sorted, errors: errors, load_ms: Math.round(performance.timing.loadEventStart - performance.timing.navigationStart)});
    document.body.appendChild(out);
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.05em; margin: 1.2em 0 0.2em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }}
th {{ background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }}
th[data-order=asc]::after {{ content: " \\25B2"; }} th[data-order=desc]::after {{ content: " \\25BC"; }}
td:last-child {{ font-family: monospace; }}
.tablewrap {{ max-height: 40em; overflow: auto; }}
</style>
<script>{plotly}</script>
</head><body>
<h1>{title}</h1>
<p>{summary}</p>
{figures}
<h2>Points (click a column to sort; the last column reproduces the point)</h2>
<div class="tablewrap">{table}</div>
<script>{script}</script>
</body></html>
"""
