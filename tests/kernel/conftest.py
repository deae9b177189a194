"""A model profile calibrated on this machine, now: comparisons that depend on speed use it.

The shipped profile was fitted on one day; a shared VM's speed changes from day to day (2x was
seen), and memory over a run depends on how fast the kernel fills the map.  Tests that compare
time-dependent numbers fit the costs first, once per session (~20 s).
"""

from __future__ import annotations

import contextlib
import io

import pytest


@pytest.fixture(scope="session")
def fresh_profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    from bpfmem.kernel.probe import require_kernel
    reason = require_kernel()
    if reason:
        pytest.skip(f"kernel backend unavailable: {reason}")
    from bpfmem.cli import main
    path = str(tmp_path_factory.mktemp("profile") / "fresh-profile.json")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["calibrate", "--repeat", "3", "--out", path, "--quiet"]) == 0   # medians of 3 rounds
    return path
