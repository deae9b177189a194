"""Plot any saved ``--json`` document again, without rerunning anything.

Runs on the kernel take root and minutes; a saved document must be enough to
draw its figure later, on another machine.  The document's ``command`` field
says which figure: ``bench htab-mem`` (memory over time per list),
``compare`` (model against kernel) or ``bench arena-vs-htab`` (bars).  Before
drawing, the fields the figure reads are checked, so a wrong or damaged file
fails with a ValueError that names the field (``results[2].series: missing``)
instead of a matplotlib traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable

from matplotlib.figure import Figure

from .plot import htab_mem_figure
from .plot_arena import arena_figure
from .plot_compare import compare_figure

PLOTTABLE = ("bench htab-mem", "compare", "bench arena-vs-htab")
FORMATS = (".png", ".svg", ".pdf")
MAX_BYTES = 256 << 20        # far above any document bpfmem writes; stops /dev/zero and the like


def _type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _field(obj: dict[str, Any], key: str, where: str, kind: str, *, optional: bool = False) -> Any:
    """``obj[key]`` if it has the expected kind (str, num, list, dict, or num?: a number or null);
    else ValueError naming the field."""
    name = f"{where}.{key}" if where else key
    if key not in obj:
        if optional:
            return None
        raise ValueError(f"{name}: missing")
    v = obj[key]
    ok = {"str": isinstance(v, str), "num": _is_num(v), "list": isinstance(v, list), "dict": isinstance(v, dict),
          "num?": v is None or _is_num(v)}[kind]
    if optional and v is None:
        return None
    if not ok:
        want = {"str": "a string", "num": "a number", "list": "a list", "dict": "an object",
                "num?": "a number or null"}[kind]
        raise ValueError(f"{name}: {_type(v)}, expected {want}")
    return v


def _rows(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    rows = _field(doc, key, "", "list")
    if not rows:
        raise ValueError(f"{key}: empty, nothing to plot")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"{key}[{i}]: {_type(r)}, expected an object")
    return rows


def check_htab_mem(doc: dict[str, Any]) -> None:
    """Every result has a use case, a policy and (time, bytes) samples; phases and per-list series optional."""
    for i, r in enumerate(_rows(doc, "results")):
        where = f"results[{i}]"
        _field(r, "use_case", where, "str")
        _field(r, "policy", where, "str")
        series = _field(r, "series", where, "list")
        if not series:
            raise ValueError(f"{where}.series: empty, nothing to plot")
        for j, p in enumerate(series):
            if not (isinstance(p, list) and len(p) == 2 and _is_num(p[0]) and _is_num(p[1])):
                raise ValueError(f"{where}.series[{j}]: expected [time s, bytes], got {json.dumps(p)[:40]}")
        for j, p in enumerate(_field(r, "phases", where, "list", optional=True) or []):
            if not (isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and _is_num(p[1])):
                raise ValueError(f"{where}.phases[{j}]: expected [name, start s], got {json.dumps(p)[:40]}")
        for k, vals in (_field(r, "breakdown_series", where, "dict", optional=True) or {}).items():
            if not (isinstance(vals, list) and all(_is_num(v) for v in vals)):
                raise ValueError(f"{where}.breakdown_series.{k}: expected a list of byte counts")
        for k in ("peak_bytes", "memlock_bytes", "cpus", "value_size", "max_entries", "batch", "duration_s"):
            _field(r, k, where, "num?", optional=True)


def check_compare(doc: dict[str, Any]) -> None:
    """Every case has a use case, a policy and metrics, each a model value and a list of kernel values."""
    for i, c in enumerate(_rows(doc, "cases")):
        where = f"cases[{i}]"
        _field(c, "use_case", where, "str")
        _field(c, "policy", where, "str")
        metrics = _field(c, "metrics", where, "dict")
        if not metrics:
            raise ValueError(f"{where}.metrics: empty, nothing to plot")
        for name, m in metrics.items():
            mw = f"{where}.metrics.{name}"
            if not isinstance(m, dict):
                raise ValueError(f"{mw}: {_type(m)}, expected an object")
            _field(m, "model", mw, "num?")
            kernel = _field(m, "kernel", mw, "list")
            if not all(v is None or _is_num(v) for v in kernel):
                raise ValueError(f"{mw}.kernel: expected a list of numbers")
            for k in ("resolution", "rel_error"):
                _field(m, k, mw, "num?", optional=True)


def check_arena(doc: dict[str, Any]) -> None:
    """Every row names its structure and backend and holds bytes per element and the three totals."""
    for i, r in enumerate(_rows(doc, "results")):
        where = f"results[{i}]"
        _field(r, "structure", where, "str")
        _field(r, "backend", where, "str")
        for k in ("bytes_per_element", "peak_bytes", "after_delete_bytes"):
            _field(r, k, where, "num")
        _field(r, "after_idle_bytes", where, "num?", optional=True)


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "bench htab-mem": check_htab_mem, "compare": check_compare, "bench arena-vs-htab": check_arena}


def document_kind(doc: Any) -> str:
    """The plottable command that made ``doc``, after checking what its figure reads; else ValueError."""
    if not isinstance(doc, dict):
        raise ValueError(f"the document is {_type(doc)}, expected a JSON object from a bpfmem --json command")
    if not doc:
        raise ValueError("the document is an empty object, expected one from a bpfmem --json command")
    if "command" not in doc:
        raise ValueError(f"no 'command' field: not a bpfmem --json document (plottable: {', '.join(PLOTTABLE)})")
    cmd = doc["command"]
    if cmd not in CHECKS:
        raise ValueError(f"a document of command {cmd!r} has no plot; plottable: {', '.join(PLOTTABLE)}")
    CHECKS[cmd](doc)
    return str(cmd)


def parse_document(text: str) -> dict[str, Any]:
    """The checked document in ``text``; ValueError if empty, not JSON or not plottable."""
    if not text.strip():
        raise ValueError("empty, expected the JSON document of a bpfmem --json command")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    document_kind(doc)
    return doc  # type: ignore[no-any-return]


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked document in file ``path``; OSError if unreadable, ValueError as ``parse_document``."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES >> 20} MiB, not a bpfmem result document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}), expected a JSON document") from None
    return parse_document(text)


def figure_for(doc: dict[str, Any], *, title: str | None = None) -> Figure:
    """The figure of any plottable document (checked first)."""
    kind = document_kind(doc)
    if kind == "bench htab-mem":
        return htab_mem_figure(doc["results"], title=title, context=doc)
    if kind == "compare":
        return compare_figure(doc, title=title)
    return arena_figure(doc, title=title)


def replot(doc: dict[str, Any], path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Write the figure of ``doc`` to ``path`` (.png, .svg or .pdf); returns the document's command."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"output must end in {', '.join(FORMATS)}, got {os.fspath(path)!r}")
    fig = figure_for(doc, title=title)
    save_whole(fig, os.fspath(path))
    return str(doc["command"])


def save_whole(fig: Figure, path: str) -> None:
    """Write ``fig`` to a temporary file next to ``path``, then rename it: an error or Ctrl-C while
    writing leaves no half-written figure (and an old one intact)."""
    ext = os.path.splitext(path)[1].lower()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=ext[1:], dpi=110)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
