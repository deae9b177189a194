"""Every column bpfmem prints is explained in docs/columns.md.

Runs the table-printing commands in-process with short parameters and reads what a person sees:
the header of every rich table (the cells between the ┃ characters, joined when a header wraps),
the field names of htab-mem's one-line summaries and of the explorer's result lines, and the row
names of field/value tables, of the breakdown, of compare's metrics and of calibrate's costs.
Each one must be named in the section of docs/columns.md for its command (the ``## `bpfmem …` ``
heading up to the next one), as a markdown table cell or in backticks.  ``compare`` and
``calibrate`` need the real kernel: compare runs with a model backend standing in for it, and
calibrate's table is drawn from costs fitted to made-up measurements.  The whole file takes ~6 s.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bpfmem.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "columns.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# the first column of these tables names rows a reader must be able to look up
ROW_KEYED = ("field", "form", "place", "metric", "feature", "cost")

HTAB = ["--cpus", "2", "--duration", "0.02", "--idle", "0.3", "--poke", "20"]


# -- reading docs/columns.md -----------------------------------------------------------------------------

def doc_sections() -> dict[str, str]:
    """``## `bpfmem …` `` heading -> its text up to the next ``## `` heading (subsections included)."""
    out: dict[str, str] = {}
    head = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            head = line[3:].strip()
            out[head] = ""
        elif head is not None:
            out[head] += line + "\n"
    return out


def section(command: str) -> str:
    sections = doc_sections()
    head = f"`bpfmem {command}`"
    assert head in sections, f"docs/columns.md has no section '## {head}'"
    return sections[head]


def names_in(text: str) -> set[str]:
    """Every markdown table cell and every `backticked` span of ``text``."""
    names = set(re.findall(r"`([^`]+)`", text))
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            for c in line.strip().strip("|").split("|"):
                names.add(c.strip())
                names.add(c.strip().strip("`"))
    return names


def undocumented(command: str, shown: set[str]) -> list[str]:
    documented = names_in(section(command))
    return sorted(n for n in shown if n not in documented)


# -- reading what the commands print --------------------------------------------------------------------

def rich_tables(out: str) -> list[tuple[list[str], list[list[str]]]]:
    """(headers, rows) of every rich table in ``out``; a header that wraps is joined with spaces."""
    lines = [ANSI.sub("", ln).strip() for ln in out.splitlines()]
    tables = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("┏"):
            i += 1
            continue
        i += 1
        headers: list[str] | None = None
        while i < len(lines) and lines[i].startswith("┃"):
            cells = [c.strip() for c in lines[i].strip("┃").split("┃")]
            headers = cells if headers is None else [f"{a} {b}".strip() for a, b in zip(headers, cells)]
            i += 1
        rows = []
        i += 1                                          # the ┡ line under the header
        while i < len(lines) and lines[i].startswith("│"):
            rows.append([c.strip() for c in lines[i].strip("│").split("│")])
            i += 1
        assert headers, "a rich table without a header row"
        tables.append((headers, rows))
    return tables


def shown_names(out: str) -> set[str]:
    """Headers of every table, plus the first-column names of row-keyed tables (cpuN for CPU numbers)."""
    tables = rich_tables(out)
    assert tables, f"no table in the output:\n{out}"
    names: set[str] = set()
    for headers, rows in tables:
        for h in headers:
            assert "…" not in h, f"header {h!r} is cut off: the table is wider than the test's console"
        names.update(headers)
        if headers[0] in ROW_KEYED:
            names.update(re.sub(r"cpu\d+", "cpuN", r[0]) for r in rows if r[0])
    return names


def summary_fields(out: str) -> set[str]:
    """Field names of htab-mem's lines ``USE_CASE name: value, name: value  [POLICY]``."""
    fields: set[str] = set()
    for line in out.splitlines():
        m = re.match(r"^\S+ (\w[^:]*: .*?)\s+\[[^\]]+\]$", line.strip())
        if m:
            fields.update(part.split(":")[0].strip() for part in m.group(1).split(", "))
            fields.add("[policy]")
    return fields


def line_labels(out: str) -> set[str]:
    """``label: value`` fields of plain lines (``a: x; b: y``); table lines and step lines are skipped."""
    labels = set()
    for line in out.splitlines():
        s = line.strip()
        if s[:1] in "┏┃┡│└" or not s:
            continue
        for part in s.split("; "):
            m = re.match(r"^([a-z][a-z ]*[a-z]): ", part)
            if m:
                labels.add(m.group(1))
    return labels


def run(args: list[str], capsys: pytest.CaptureFixture[str], ok: tuple[int, ...] = (0,)) -> str:
    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc in ok, f"bpfmem {' '.join(args)} exited {rc}: {err}"
    return out


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every console 300 columns wide, so that no header wraps or is cut: consoles without a width take
    COLUMNS; those with a fixed one for pipes (htab-mem 160, compare 140) are widened, because their
    tables fill that width and one longer header would cut another (a layout matter, not this test's)."""
    from rich.console import Console
    init = Console.__init__

    def wide_init(self: Console, *args: Any, **kw: Any) -> None:
        if kw.get("width") is not None:
            kw["width"] = max(kw["width"], 300)
        init(self, *args, **kw)

    monkeypatch.setattr(Console, "__init__", wide_init)
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.delenv("FORCE_COLOR", raising=False)


# -- the commands -----------------------------------------------------------------------------------------

MODEL_COMMANDS = {
    "bench htab-mem": [["bench", "htab-mem", "--use-case", "all", "--policy", "all", *HTAB, "--breakdown"]],
    "bench self": [["bench", "self", "--duration", "0.01", "--cpus", "2", "--policy", "v6.1", "--no-matrix",
                    "--no-local-storage"]],
    "bench explore": [["bench", "explore", "--schedules", "100", "--max-bound", "0"]],
    "bench arena-vs-htab": [["bench", "arena-vs-htab", "--elements", "200"]],
    "arena create": [["arena", "create", "--max-entries", "16"],
                     ["arena", "create", "--max-entries", "0"]],        # refused: the error row, exit 2
    "arena inspect": [["arena", "inspect", "--max-entries", "64", "--alloc", "2", "--touch", "5",
                       "--reserve", "9"]],
    "arena translate": [["arena", "translate", "0x7f1234560010", "--user-vm-start", "0x7f1234560000"]],
    "arena example": [["arena", "example", "--elements", "20"],
                      ["arena", "example", "--elements", "20", "--direction", "user-to-bpf"]],
    "policies": [["policies"]],
    "explore --list": [["explore", "--list"]],
}


@pytest.mark.parametrize("command", list(MODEL_COMMANDS))
def test_every_table_column_and_row_name_is_documented(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    shown: set[str] = set()
    for args in MODEL_COMMANDS[command]:
        out = run(args, capsys, ok=(0, 2) if args[:2] == ["arena", "create"] else (0,))
        shown |= shown_names(out) | summary_fields(out)
    missing = undocumented(command, shown)
    assert not missing, f"bpfmem {command} prints {missing}, which docs/columns.md does not explain"


def test_htab_mem_summary_lines_and_every_breakdown_place_are_documented(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = run(["bench", "htab-mem", "--use-case", "overwrite", "--policy", "v6.6", *HTAB], capsys)
    fields = summary_fields(out)
    assert {"per-prod-op", "avg mem", "peak mem"} <= fields, out
    # the JSON breakdown has every place of every policy, the empty ones too (the table hides them)
    doc = json.loads(run(["bench", "htab-mem", "--use-case", "overwrite", "--policy", "all", *HTAB, "--json"],
                         capsys))
    places = {re.sub(r"cpu\d+", "cpuN", k) for r in doc["results"] for k in r["breakdown"]}
    missing = undocumented("bench htab-mem", fields | places)
    assert not missing, f"bench htab-mem prints {missing}, which docs/columns.md does not explain"


def test_explore_result_lines_are_documented(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(["explore", "qp_trie", "--policy", "free", "--schedules", "200"], capsys, ok=(0, 1))
    labels = line_labels(out)
    assert {"violations by kind", "runs with a bug"} <= labels, out
    missing = undocumented("explore SCENARIO", labels)
    assert not missing, f"bpfmem explore prints {missing}, which docs/columns.md does not explain"


def test_kernel_probe_table_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    # prints its table with or without privilege (exit 2 when bpf(2) is not usable)
    out = run(["kernel", "probe"], capsys, ok=(0, 2))
    missing = undocumented("kernel probe", shown_names(out))
    assert not missing, f"bpfmem kernel probe prints {missing}, which docs/columns.md does not explain"


def test_compare_table_is_documented(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """compare's table and lines, with a model backend standing in for the kernel."""
    from bpfmem.backend.model import ModelBackend
    from bpfmem.cli import kernel_cmds
    from bpfmem.kernel import probe

    def fake_kernel(cpus: int, driver: str, policy: str) -> Any:
        return contextlib.nullcontext(ModelBackend(cpus, policy))

    monkeypatch.setattr(kernel_cmds, "open_kernel", fake_kernel)
    monkeypatch.setattr(probe, "possible_cpus", lambda: 2)
    out = run(["compare", "--use-case", "overwrite", "--cpus", "2", "--duration", "0.02", "--idle", "0.3",
               "--repeat", "1", "--quiet"], capsys)
    shown = shown_names(out) | line_labels(out)
    assert "charge per element" in out, out
    missing = undocumented("compare", shown)
    assert not missing, f"bpfmem compare prints {missing}, which docs/columns.md does not explain"


def test_calibrate_table_is_documented(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """calibrate's tables, drawn from a profile fitted to made-up measurements as calibrate fits them."""
    from bpfmem.cli import calibrate_cmd

    batches = calibrate_cmd.BATCHES
    m = {f"ow{n}": 400 + 200 * n for n in batches} | {f"bd{n}": 500 + 340 * n for n in batches}
    m |= {"ow64_1024": 400 + 210 * 64, "ow10000_1024": 400 + 300 * 10_000, "pre1024": 0.6 * m["ow1024"],
          "fill_8": 300, "fill_4000": 900, "delete_8": 150, "big": 600, "ad64": 2 * (m["bd64"] / 2) + 4000}
    ws = {f"ow{n}": 100_000 + 100 * n for n in batches} | {"ow10000_1024": 20 << 20, "big": 400 << 20}
    ws |= {"pre1024": 600_000}
    profile = calibrate_cmd.make_profile({k: [v] for k, v in m.items()}, ws, [270.0], 250.0, "test",
                                         (512 << 10, 32 << 20))
    capsys.readouterr()
    calibrate_cmd._print_old_vs_new(profile, str(tmp_path / "p.json"))
    out, _ = capsys.readouterr()
    missing = undocumented("calibrate", shown_names(out))
    assert not missing, f"bpfmem calibrate prints {missing}, which docs/columns.md does not explain"


def test_the_check_itself_catches_an_unexplained_column() -> None:
    table = ("┏━━━━━━━━┳━━━━━━━━━━━━━┓\n┃ steady ┃ not a column ┃\n┡━━━━━━━━╇━━━━━━━━━━━━━┩\n"
             "│ 1 B    │ 2 B         │\n└────────┴─────────────┘\n")
    assert undocumented("bench htab-mem", shown_names(table)) == ["not a column"]
