"""No input gives a traceback: every command and option, fed edge values, exits with a documented code.

Hypothesis draws a command from the whole command tree (new commands are included by themselves),
up to four of its options and arguments, and a value for each from strategies per parameter type:
numbers (nan, inf, -0, huge, negative, one past each bound), strings (empty, unicode, very long),
files (missing, empty, corrupt, wrong shape, a directory, unwritable, under /proc).  Each run is cut
after a short time (a valid input that starts long work is fine: it is stopped like Ctrl-C, which
must clean up too).  The outcome must be one of the documented exit codes, never 70 (an internal
error) and never a printed traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
from typing import Any, Iterator

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfmem.cli import cli, main

ALLOWED = {0, 1, 2}
CUT_AFTER_S = 0.6
RECUT_AFTER_S = 2.0
SWALLOWING = {"gc_callback", "__del__", "_remove", "_callback", "_releaseLock", "_acquireLock",
              "_after_at_fork_child_reinit_locks"}   # callers that drop exceptions


def leaves(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        if cmd.hidden:
            continue
        if isinstance(cmd, click.Group):
            yield from leaves(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


LEAVES = list(leaves(cli))
NUMBERS = ["nan", "NaN", "inf", "-inf", "0", "-0", "0.0", "-1", "1", "2", "3", "7", "64", "65", "128", "256", "257",
           "1000", "65536", "2147483648", "4294967295", "4294967296", "18446744073709551616",
           "99999999999999999999999999", "1e308", "-1e308", "1e-300", "0.5", "abc", "", " 1", "0x10", "1_000"]
STRINGS = ["", "ünïcødé ✓", "x" * 10_000, "-", "--json", "bpfmem2:abc", "bpfmem1:xyz", "0x7f0000000000", "-1",
           "0xffffffffffffffffff", "all", "none", "/", "a b", "\t"]


def _forked_children() -> list[int]:
    """Children of this process that are forks of it (same command line), e.g. explore's pool workers."""
    me, out = os.getpid(), []
    mine = open(f"/proc/{me}/cmdline", "rb").read()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
            if ppid == me and open(f"/proc/{pid}/cmdline", "rb").read() == mine:
                out.append(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return out


@pytest.fixture(scope="module", autouse=True)
def no_forks_left_behind() -> Iterator[None]:
    """Every command runs inside this one long-lived test process, and a cut can land while a command has
    just forked (explore's worker pool, a kernel worker) from a process that has other threads: such a
    child can deadlock on a lock it inherited held, and the test process would then wait for it at exit.
    The CLI never runs that way (a Ctrl-C ends its whole process group), so the harness reaps them here."""
    before = set(_forked_children())
    yield
    for pid in set(_forked_children()) - before:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("fuzz")
    out = []
    for name, text in (("empty.json", ""), ("corrupt.json", "{not json"), ("list.json", "[]"),
                       ("obj.json", json.dumps({"a": 1})), ("str.json", '"x"'), ("null.json", "null"),
                       ("profile-empty.json", "{}"), ("profile-bad.json", json.dumps({"costs": {"nope": 1}})),
                       ("bench.json", json.dumps({"command": "bench htab-mem", "results": []}))):
        p = d / name
        p.write_text(text)
        out.append(str(p))
    (d / "dir.json").mkdir()
    out += [str(d / "dir.json"), str(d / "missing.json"), str(d / "out.png"), str(d / "out.svg"),
            str(d / "out.json"), str(d / "nodir" / "x.png"), "/proc/x.png", "/proc/x.json", "/proc/self/status",
            "/proc/nonexistent/a.json", "/dev/null", ""]
    return out


def value_for(p: click.Parameter, files: list[str]) -> st.SearchStrategy[str]:
    t = p.type
    if isinstance(t, click.Choice):
        return st.sampled_from([*map(str, t.choices), "", "nope", "ALL"])
    if isinstance(t, (click.IntRange, click.FloatRange)):
        edge = []
        for b in (t.min, t.max):
            if b is not None:
                edge += [str(b), str(b - 1), str(b + 1)]
        return st.sampled_from(NUMBERS + edge)
    if isinstance(t, (click.types.IntParamType, click.types.FloatParamType)):
        return st.sampled_from(NUMBERS)
    if isinstance(t, click.Path):
        return st.sampled_from(files)
    return st.sampled_from(STRINGS + files[:3] + NUMBERS[:8])


class _Cut(KeyboardInterrupt):
    pass


def run(argv: list[str]) -> tuple[int, str, bool]:
    out, err = io.StringIO(), io.StringIO()
    cut = [False]

    def alarm(signum: int, frame: Any) -> None:
        # An exception raised inside a garbage-collector callback or a finaliser is printed and dropped
        # ("Exception ignored in ..."), and the command would then run to its end: cut a moment later.
        f, depth = frame, 0
        while f is not None and depth < 64:
            if f.f_code.co_name in SWALLOWING:
                signal.setitimer(signal.ITIMER_REAL, 0.02, RECUT_AFTER_S)
                return
            f, depth = f.f_back, depth + 1
        cut[0] = True
        raise _Cut()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, CUT_AFTER_S, RECUT_AFTER_S)   # and again, should a cut still be lost
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue() + err.getvalue(), cut[0]


def fuzz_one(data: st.DataObject, files: list[str]) -> None:
    path, cmd = data.draw(st.sampled_from(LEAVES), label="command")
    params = [p for p in cmd.params if p.name != "help"]
    chosen = data.draw(st.lists(st.sampled_from(params), max_size=4, unique_by=lambda p: p.name), label="params") \
        if params else []
    argv = list(path)
    for p in chosen:
        if isinstance(p, click.Option):
            if p.is_flag:
                argv.append(data.draw(st.sampled_from(p.opts + p.secondary_opts)))
            else:
                argv += [p.opts[0], data.draw(value_for(p, files), label=p.name or "")]
        else:
            argv.append(data.draw(value_for(p, files), label=p.name or ""))
    code, text, cut = run(argv)
    assert "Traceback (most recent call last)" not in text, (argv, text[-2000:])
    assert code in ALLOWED or (cut and code == 130), (argv, code, text[-2000:])


@given(data=st.data())
@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_no_traceback_for_any_input(data: st.DataObject, files: list[str]) -> None:
    fuzz_one(data, files)


@pytest.mark.slow
@given(data=st.data())
@settings(max_examples=2000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_no_traceback_for_any_input_long(data: st.DataObject, files: list[str]) -> None:
    fuzz_one(data, files)


def test_the_fuzz_can_fail() -> None:
    """A command that crashes is caught: exit 70 with one line, which the fuzz assertion rejects."""
    @cli.command("crash-for-test", hidden=True)
    def crash() -> None:
        raise ZeroDivisionError("planted")
    try:
        code, text, _ = run(["crash-for-test"])
    finally:
        del cli.commands["crash-for-test"]
    assert code == 70 and "internal error" in text and "Traceback" not in text
    assert code not in ALLOWED


def test_exit_codes_are_documented_in_the_help_and_readme() -> None:
    code, text, _ = run(["--help"])
    assert code == 0 and "exit codes:" in text and "143" in text
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for c in ("0", "1", "2", "70", "129", "130", "141", "143"):
        assert re.search(rf"^\| [0-9, ]*\b{c}\b", section, re.M), c
