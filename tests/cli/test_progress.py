"""Progress of a long model run: simulated time and the time left, on stderr only where a person looks."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest
from click.testing import CliRunner

from bpfmem.cli import cli
from bpfmem.cli import progress as progress_mod

ARGS = ["bench", "htab-mem", "--use-case", "overwrite", "--policy", "free_rcu", "--duration", "0.4", "--idle", "0.2",
        "--cpus", "4"]


def test_a_terminal_gets_a_bar_with_simulated_time_and_eta() -> None:
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "bpfmem", *ARGS], stdout=subprocess.PIPE, stderr=slave,
                         env={**os.environ, "COLUMNS": "160"})
    os.close(slave)
    raw = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            raw += chunk
        elif p.poll() is not None:
            break
    out = p.communicate()[0].decode()
    os.close(master)
    assert p.returncode == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode(errors="replace"))
    amounts = [float(a) for a in re.findall(r"([0-9.]+)/0\.80 simulated s", text)]
    assert amounts and max(amounts) == 0.8, text[-500:]
    assert any(0 < a < 0.8 for a in amounts), "the bar moved in simulated time while the run went on"
    assert "ETA" in text and "overwrite / free_rcu" in text
    assert "simulated s" not in out                      # the table on stdout is untouched


def test_json_output_has_no_progress() -> None:
    r = CliRunner().invoke(cli, [*ARGS, "--json"])
    assert r.exit_code == 0
    json.loads(r.stdout)
    assert r.stderr == ""


def test_a_log_gets_plain_lines_with_simulated_time_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "LINE_EVERY_S", 0.0)
    r = CliRunner().invoke(cli, ARGS)
    assert r.exit_code == 0
    lines = [ln for ln in r.stderr.splitlines() if "simulated s" in ln]
    assert lines, r.stderr
    assert all("\x1b" not in ln for ln in r.stderr.splitlines())
    assert any(re.search(r"[0-9.]+/0\.80 simulated s, [0-9]+%, about [0-9]+ s left", ln) for ln in lines), lines
    assert re.fullmatch(r"bpfmem: htab-mem: done in [0-9.]+ s", r.stderr.splitlines()[-1])


def test_quiet_silences_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "LINE_EVERY_S", 0.0)
    r = CliRunner().invoke(cli, [*ARGS, "--quiet"])
    assert r.exit_code == 0 and r.stderr == ""
