"""Every command and option explains itself: help text, the default, and the unit of every number."""

from __future__ import annotations

import re
from typing import Iterator

import click

from bpfmem.cli import cli

# a number's help must say what it counts or measures
UNITS = re.compile(r"\b(bytes?|B|KiB|MiB|ms|ns|s|seconds?|pages?|keys?|elements?|entries|CPUs?|schedules?|steps?|"
                   r"rounds?|runs?|deviations?|depth|processes|seed|fraction|percent|%|address|counts?|bound|"
                   r"change points|pairs)\b", re.IGNORECASE)


def leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if cmd.hidden:
            continue
        if isinstance(cmd, click.Group):
            assert cmd.help, f"group {' '.join(prefix + (name,))} has no help"
            yield from leaves(cmd, prefix + (name,))
        else:
            yield " ".join(prefix + (name,)), cmd


def test_every_command_and_option_has_help_with_default_and_unit() -> None:
    problems = []
    for path, cmd in leaves(cli):
        if not cmd.help:
            problems.append(f"{path}: no help")
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.name == "help":
                continue
            where = f"{path} {p.opts[0]}"
            if not p.help:
                problems.append(f"{where}: no help")
                continue
            if not p.is_flag and not p.required and not p.show_default and "default" not in p.help:
                problems.append(f"{where}: the default is not shown")
            numeric = isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))
            if numeric and not UNITS.search(p.help):
                problems.append(f"{where}: a number without a unit: {p.help!r}")
    assert not problems, "\n".join(problems)


def test_the_check_can_fail() -> None:
    @cli.command("unhelpful-for-test", hidden=False)
    @click.option("--n", type=int, default=3)
    def unhelpful(n: int) -> None:
        """A command."""
    try:
        try:
            test_every_command_and_option_has_help_with_default_and_unit()
        except AssertionError as e:
            assert "unhelpful-for-test --n: no help" in str(e)
        else:
            raise AssertionError("an option without help passed the check")
    finally:
        del cli.commands["unhelpful-for-test"]
