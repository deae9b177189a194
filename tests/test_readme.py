"""The README's example output is what the command prints today (the model is deterministic).

Each example in README.md is a fenced block right after a ``<!-- example -->`` comment whose first
line is ``$ bpfmem ARGS``; the rest is the output.  The test runs ``bpfmem ARGS`` and compares, line by
line (trailing spaces ignored).  When the model changes on purpose, refresh the examples with
``python tests/test_readme.py --update`` and say why in the commit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
BLOCK = re.compile(r"<!-- example -->\n```\n\$ bpfmem (?P<args>[^\n]*)\n(?P<out>.*?)```", re.S)


def run(args: str) -> str:
    from bpfmem.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(shlex.split(args))
    assert code == 0, (args, code)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def examples(text: str) -> list[re.Match[str]]:
    return list(BLOCK.finditer(text))


def test_readme_examples_are_real_output() -> None:
    text = open(README).read()
    found = examples(text)
    assert found, "README.md has no <!-- example --> block"
    for m in found:
        want = "\n".join(line.rstrip() for line in m.group("out").splitlines()) + "\n"
        got = run(m.group("args"))
        assert got == want, (f"README example `bpfmem {m.group('args')}` drifted; refresh it with "
                             f"`python tests/test_readme.py --update`.\n--- README\n{want}\n--- now\n{got}")


def test_a_drifted_example_fails() -> None:
    text = open(README).read()
    m = examples(text)[0]
    bad = m.group(0).replace("per-prod-op", "per-prod-0p", 1)
    drifted = BLOCK.search(bad)
    assert drifted is not None
    want = "\n".join(line.rstrip() for line in drifted.group("out").splitlines()) + "\n"
    assert run(drifted.group("args")) != want


def update() -> None:
    text = open(README).read()
    for m in reversed(examples(text)):
        body = f"<!-- example -->\n```\n$ bpfmem {m.group('args')}\n{run(m.group('args'))}```"
        text = text[:m.start()] + body + text[m.end():]
    with open(README, "w") as f:
        f.write(text)


if __name__ == "__main__":
    if "--update" in sys.argv:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
        update()
