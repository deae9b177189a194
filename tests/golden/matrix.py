"""The golden matrix: `bpfmem bench htab-mem --json` over policies x use cases x value sizes x CPUs x batches.

Frozen before the model's representation changed (the scale work): every number the model prints must
stay byte-identical.  ``python -m tests.golden.matrix --write`` regenerates the files; do that only when
a number changes on purpose, and say why (with the kernel fact) in the commit.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import sys
from typing import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.path.join(HERE, "profile.json")
POLICIES = ("v6.1", "v6.2", "v6.6", "free_rcu", "prealloc", "kmalloc_rcu")
USE_CASES = ("overwrite", "batch_add_batch_del", "add_del_on_diff_cpu")
VALUES = (8, 1024, 4000)
CPUS = (1, 2, 8)
BATCHES = (64, 10_000)
DURATION, IDLE = "0.02", "0.3"


def points() -> Iterator[tuple[str, str, int, int, int]]:
    for pol in POLICIES:
        for uc in USE_CASES:
            for v in VALUES:
                for c in CPUS:
                    if uc == "add_del_on_diff_cpu" and c % 2:
                        continue
                    for b in BATCHES:
                        yield pol, uc, v, c, b


def name(p: tuple[str, str, int, int, int]) -> str:
    pol, uc, v, c, b = p
    return f"{pol}-{uc}-v{v}-c{c}-b{b}"


def argv(p: tuple[str, str, int, int, int]) -> list[str]:
    pol, uc, v, c, b = p
    return ["bench", "htab-mem", "--policy", pol, "--use-case", uc, "--value-size", str(v), "--cpus", str(c),
            "--batch", str(b), "--duration", DURATION, "--idle", IDLE, "--profile", PROFILE, "--json", "--quiet"]


def run(p: tuple[str, str, int, int, int]) -> str:
    from bpfmem.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv(p))
    assert code == 0, (name(p), code)
    doc = json.loads(out.getvalue())
    doc["backend"]["profile"] = "tests/golden/profile.json"     # no machine path in the frozen file
    return json.dumps(doc, indent=None, sort_keys=True, separators=(",", ":"))


def path(p: tuple[str, str, int, int, int]) -> str:
    return os.path.join(HERE, "htab_mem", name(p) + ".json.gz")


def read(p: tuple[str, str, int, int, int]) -> str:
    with gzip.open(path(p), "rt") as f:
        return f.read()


def write_all() -> None:
    os.makedirs(os.path.join(HERE, "htab_mem"), exist_ok=True)
    for p in points():
        text = run(p)
        with gzip.GzipFile(path(p), "wb", mtime=0) as f:
            f.write(text.encode())
        print(name(p), len(text), flush=True)


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_all()
