"""Option types that refuse what click's own ranges let through.

``click.FloatRange`` compares with ``<`` and ``>``, and every comparison with
NaN is false, so ``--duration nan`` passed the range check and failed deep in
the model.  ``Finite`` refuses NaN and infinities with the option's name.
"""

from __future__ import annotations

import math
from typing import Any

import click


class Finite(click.FloatRange):
    """A float range that also refuses nan and ±inf."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        v = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number; allowed: {self._describe_range()}", param, ctx)
        return super().convert(v, param, ctx)


def check_output_path(option: str, path: str | None, exts: tuple[str, ...] = ()) -> None:
    """Refuse an output file before any work starts: extension, directory, and that it can be written
    (opened for appending, then removed again if it did not exist), so a long run never ends in an error."""
    import os
    if path is None:
        return
    if not path:
        raise click.BadParameter("an empty path", param_hint=f"'{option}'")
    if exts and os.path.splitext(path)[1].lower() not in exts:
        raise click.BadParameter(f"the file must end in {', '.join(exts)}, got {path!r}", param_hint=f"'{option}'")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise click.BadParameter(f"directory {d} does not exist", param_hint=f"'{option}'")
    if os.path.isdir(path):
        raise click.BadParameter(f"{path} is a directory", param_hint=f"'{option}'")
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        raise click.BadParameter(f"cannot write {path}: {e.strerror}", param_hint=f"'{option}'") from None
    if not existed:
        try:
            os.unlink(path)
        except OSError:
            pass


def option_of(msg: str, default: str) -> str:
    """The option a model's ValueError names first (``--cpus must be ...``), else ``default``."""
    first = msg.split()[0].rstrip(":,") if msg else ""
    return first if first.startswith("--") else default


def given_options(ctx: click.Context, skip: tuple[str, ...] = ("html_path",)) -> list[str]:
    """The options the user gave (not defaults), as a command line: how to reproduce this run."""
    out: list[str] = []
    for p in ctx.command.params:
        if p.name is None or p.name in skip or not isinstance(p, click.Option):
            continue
        if ctx.get_parameter_source(p.name) in (None, click.core.ParameterSource.DEFAULT):
            continue
        v = ctx.params.get(p.name)
        flag = max(p.opts, key=len)
        if p.is_flag:
            if v:
                out.append(flag)
        elif isinstance(v, (list, tuple)) and p.multiple:
            for x in v:
                out += [flag, str(x)]
        elif v is not None:
            out += [flag, str(v)]
    return out


def _check_html(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    check_output_path("--html", value, (".html", ".htm"))
    return value


html_option = click.option(
    "--html", "html_path", type=click.Path(dir_okay=False), default=None, callback=_check_html,
    help="Write the interactive report (bpfmem report) of this run to this .html file [default: none].")


def write_html(doc: dict[str, Any], html_path: str | None, say: bool = True) -> None:
    """``--html``: the sweep report of this one run's document (``doc["command"]`` names it), written to
    ``html_path``; ``say`` prints where it went (stderr), not under ``--json``."""
    if html_path is None:
        return
    from ..sweep.run import report_for_doc
    report_for_doc(doc, html_path, str(doc["command"]), given_options(click.get_current_context()))
    if say:
        click.echo(f"report written to {html_path}", err=True)
