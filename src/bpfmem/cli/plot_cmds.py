"""``bpfmem plot``: draw a saved ``--json`` document again.

Kernel runs need root and take minutes, and a figure is often wanted later or
elsewhere; the saved document is enough.  Everything that can be checked
before drawing is checked first (output name, its directory, the input's
JSON and fields), so a mistake costs one line and exit 2, never a traceback
or a half-written file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..report.replot import FORMATS, parse_document, read_document, replot
from .main import cli, fail


class FilePath(click.Path):
    """``click.Path`` without its checks' one hole: a NUL byte made ``os.stat`` raise ValueError (exit 70)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "\x00" in value:
            self.fail("the file name contains a NUL byte", param, ctx)
        return super().convert(value, param, ctx)


def check_output(path: str) -> None:
    """The figure's name ends in a format matplotlib writes, in a directory that exists and is writable."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        fail("--output", f"file must end in .png, .svg or .pdf, got {path!r}")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        fail("--output", f"directory {d} does not exist")
    if not os.access(d, os.W_OK | os.X_OK):
        fail("--output", f"directory {d} is not writable")
    if os.path.isdir(path):
        fail("--output", f"{path} is a directory")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        fail("--output", f"{path} exists and is not writable")


def load(result: str) -> dict[str, Any]:
    """The checked document from file ``result`` ('-': standard input); one-line errors naming the file."""
    try:
        if result == "-":
            return parse_document(sys.stdin.read())
        return read_document(result)
    except FileNotFoundError:
        fail("RESULT.json", f"{result}: no such file")
    except IsADirectoryError:
        fail("RESULT.json", f"{result}: is a directory, expected a JSON file")
    except OSError as e:
        fail("RESULT.json", f"{result}: cannot read: {e.strerror or e}")
    except UnicodeDecodeError:
        fail("RESULT.json", f"{result}: not UTF-8 text, expected a JSON document")
    except ValueError as e:
        fail("RESULT.json", f"{result}: {e}")
    raise AssertionError("unreachable")  # fail() always raises


@cli.command("plot")
@click.argument("result", metavar="RESULT.json", type=FilePath(allow_dash=True))
@click.option("-o", "--output", required=True, metavar="FILE", type=FilePath(),
              help="Figure to write: .png (110 dpi), .svg or .pdf. Its directory must exist and be writable; "
                   "an existing file is replaced.")
@click.option("--title", default=None, metavar="TEXT",
              help="Figure heading, one line [default: names the command and what the figure shows]. "
                   "The line of parameters under it (use cases, CPUs, sizes, seconds, backend) is always kept.")
def plot_cmd(result: str, output: str, title: str | None) -> None:
    """Plot a saved JSON document again: RESULT.json is the output of `bpfmem bench htab-mem --json`
    (memory over time per list), `bpfmem compare --json` (model vs kernel) or `bpfmem bench arena-vs-htab
    --json` (bytes per element and totals); the kind comes from its "command" field. '-' reads standard input."""
    check_output(output)
    doc = load(result)
    try:
        kind = replot(doc, output, title=title)
    except OSError as e:
        fail("--output", f"cannot write {output}: {e.strerror or e}")
        raise
    click.echo(f"{kind} plot written to {output}")

