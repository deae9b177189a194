"""A sweep's SPEC: one bpfmem command and the option sets to run it with.

Problem: a policy question is answered by hundreds of runs (policies x eras x sizes x CPUs x seeds), and a
mistyped option found at point 437 wastes the 436 before it.  So a SPEC is expanded and every point is
validated by the command's own option parser (click: types, ranges, choices) before anything runs or is
written.

Format (TOML)::

    command = "bench htab-mem"
    [options]                 # every point (optional)
    duration = 0.2
    [grid]                    # the cross product of these lists (optional)
    policy = ["v6.1", "v6.18"]
    value-size = [8, 256]
    seed = "0..4"             # an integer range, both ends included
    [[points]]                # explicit option sets, each merged over [options] (optional)
    policy = "prealloc"

Option names are spelled as on the command line without the dashes; flags take true/false; a command's
positional argument by its name (whatif's ``question``, reproduce's ``name``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

import click

# the commands a sweep can run, and whether they run on the real kernel whatever their options say
COMMANDS: dict[str, bool] = {"bench htab-mem": False, "bench local-storage": False, "bench obj": False,
                             "reproduce": False, "whatif": False, "compare": True}
# options a sweep sets itself (every point prints one JSON document, quietly)
RESERVED = {"json", "quiet", "html", "plot", "out"}


class SpecError(ValueError):
    """A SPEC that does not validate; the message names the culprit."""


@dataclass(frozen=True)
class Point:
    """One run: the command and its options (name -> value), in a canonical order."""

    index: int
    options: tuple[tuple[str, Any], ...]
    kernel: bool                 # measures the running kernel: one at a time per machine
    arguments: tuple[str, ...] = ()     # which names are positional arguments (whatif's QUESTION)
    negatable: tuple[str, ...] = ()     # flags with a --no- form (false: --no-NAME, not the default)

    @property
    def key(self) -> str:
        """A stable identity: the same options give the same key in every sweep and every process."""
        text = json.dumps(list(self.options), sort_keys=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def argv(self) -> list[str]:
        out: list[str] = []
        for name, value in self.options:
            if name in self.arguments:
                continue
            if value is True:
                out.append(f"--{name}")
            elif value is False:
                if name in self.negatable:
                    out.append(f"--no-{name}")
            elif isinstance(value, list):
                for v in value:
                    out += [f"--{name}", str(v)]
            else:
                out += [f"--{name}", str(value)]
        return out + [str(v) for k, v in self.options if k in self.arguments]


@dataclass(frozen=True)
class Spec:
    command: str
    points: list[Point]
    text: str = field(repr=False)

    @property
    def sweep_id(self) -> str:
        """The same command and points give the same id: re-running a SPEC resumes it."""
        h = hashlib.sha256(self.command.encode())
        for p in self.points:
            h.update(p.key.encode())
        return h.hexdigest()[:12]


def _command(name: str) -> click.Command:
    from ..cli.main import cli
    ctx = click.Context(cli)
    cmd: Any = cli
    for part in name.split():
        sub = cmd.get_command(ctx, part) if isinstance(cmd, click.Group) else None
        if sub is None:
            raise SpecError(f"command: unknown command {name!r}; allowed: {', '.join(COMMANDS)}")
        cmd = sub
    return cmd


def _range(name: str, value: Any) -> Any:
    """``"0..4"`` -> [0, 1, 2, 3, 4]; anything else as given (a scalar becomes a one-value list)."""
    if isinstance(value, str) and ".." in value:
        lo, _, hi = value.partition("..")
        try:
            a, b = int(lo), int(hi)
        except ValueError:
            raise SpecError(f"grid.{name}: {value!r} is not an integer range a..b") from None
        if b < a or b - a > 100_000:
            raise SpecError(f"grid.{name}: the range {value!r} is empty or longer than 100,000")
        return list(range(a, b + 1))
    return value if isinstance(value, list) else [value]


def _check_names(cmd: click.Command, command: str, names: set[str], where: str) -> None:
    known = {p.name: p for p in cmd.params}
    by_flag = {}
    for p in cmd.params:
        for o in getattr(p, "opts", []):
            if o.startswith("--"):
                by_flag[o[2:]] = p
    for n in sorted(names):
        if n in RESERVED:
            raise SpecError(f"{where}.{n}: a sweep sets --{n} itself")
        if n not in by_flag and not isinstance(known.get(n), click.Argument):
            args = [p.name for p in cmd.params if isinstance(p, click.Argument) and p.name]
            raise SpecError(f"{where}.{n}: {command!r} has no option --{n}; allowed: "
                            + ", ".join(sorted(k for k in by_flag if k not in RESERVED))
                            + (f" and the argument {', '.join(args)}" if args else ""))


def parse_spec(text: str, *, source: str = "SPEC") -> Spec:
    """Parse and validate a SPEC; ``SpecError`` naming the culprit (nothing runs, nothing is written)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: not TOML: {e}") from None
    unknown = set(raw) - {"command", "options", "grid", "points"}
    if unknown:
        raise SpecError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: command, options, grid, "
                        "points")
    command = raw.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise SpecError(f"command: {command!r} is not a command a sweep runs; allowed: {', '.join(COMMANDS)}")
    cmd = _command(command)
    base = raw.get("options", {})
    grid = raw.get("grid", {})
    listed = raw.get("points", [])
    if not isinstance(base, dict) or not isinstance(grid, dict) or not isinstance(listed, list):
        raise SpecError(f"{source}: [options] and [grid] must be tables, [[points]] a list of tables")
    _check_names(cmd, command, set(base), "options")
    _check_names(cmd, command, set(grid), "grid")
    for i, p in enumerate(listed):
        if not isinstance(p, dict):
            raise SpecError(f"points[{i}]: must be a table of options")
        _check_names(cmd, command, set(p), f"points[{i}]")
    arguments = tuple(p.name for p in cmd.params if isinstance(p, click.Argument) and p.name)
    negatable = tuple(o[5:] for p in cmd.params if isinstance(p, click.Option) for o in p.secondary_opts
                      if o.startswith("--no-"))
    axes = {k: _range(k, v) for k, v in grid.items()}
    for k, vs in axes.items():
        if not vs:
            raise SpecError(f"grid.{k}: an empty list")
    sets: list[dict[str, Any]] = []
    names = list(axes)
    for combo in itertools.product(*(axes[n] for n in names)) if names else [()]:
        if names or not listed:
            sets.append({**base, **dict(zip(names, combo))})
    sets += [{**base, **p} for p in listed]
    seen: set[str] = set()
    points: list[Point] = []
    for opts in sets:
        ordered = tuple(sorted(opts.items()))
        pt = Point(len(points), ordered, COMMANDS[command] or opts.get("backend") == "kernel", arguments,
                   negatable)
        if pt.key in seen:
            continue
        seen.add(pt.key)
        _validate(cmd, command, pt)
        points.append(pt)
    if not points:
        raise SpecError(f"{source}: no points")
    return Spec(command, points, text)


def _validate(cmd: click.Command, command: str, pt: Point) -> None:
    """The command's own parser on this point's options (types, ranges, choices), without running it."""
    argv = ["--json"] + pt.argv()
    opts = dict(pt.options)
    if command == "whatif" and "question" in opts:          # an argument the command checks itself
        from ..whatif import QUESTIONS
        if opts["question"] not in (*QUESTIONS, "all"):
            raise SpecError(f"point {pt.index}: question={opts['question']!r}; allowed: {', '.join(QUESTIONS)}, all")
    try:
        with cmd.make_context(command, argv, resilient_parsing=False) as _ctx:
            pass
    except click.exceptions.Exit:
        return
    except click.UsageError as e:
        raise SpecError(f"point {pt.index} ({', '.join(f'{k}={v}' for k, v in opts.items())}): "
                        f"{e.format_message()}") from None


def load_spec(path: str) -> Spec:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SpecError(f"SPEC: cannot read {path!r}: {e.strerror or e}") from None
    return parse_spec(text, source=path)
