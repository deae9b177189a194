"""bpfmem arena ... and bench arena-vs-htab."""

from __future__ import annotations

import json

import pytest

from bpfmem.cli import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    rc = main(args)
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip().startswith("{") else {})


def test_create_reports_the_kernel_errno(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused creation still prints its document (with the errno) and exits 2."""
    rc, doc = run(["arena", "create", "--max-entries", str((1 << 20) + 1), "--json"], capsys)
    assert rc == 2 and doc["result"] == "E2BIG"
    rc, doc = run(["arena", "create", "--max-entries", "16", "--flags", "mmapable,no_prealloc", "--json"], capsys)
    assert rc == 2 and doc["result"] == "EINVAL"
    rc, doc = run(["arena", "create", "--max-entries", "16", "--map-extra", "0x7f0000000000", "--json"], capsys)
    assert doc["result"] == "ok" and doc["user_vm_start"] == 0x7F00_0000_0000 and doc["memlock"] == 0


def test_translate_and_inspect(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run(["arena", "translate", "0x7f1234560010", "--user-vm-start", "0x7f1234560000", "--json"], capsys)
    assert doc["bpf_pointer"] == 0x34560010 and doc["user_pointer"] == 0x7F1234560010 and doc["pgoff"] == 0
    rc, doc = run(["arena", "inspect", "--alloc", "2", "--touch", "5", "--reserve", "7", "--json"], capsys)
    assert doc["populated"] == [[0, 1], [5, 5]] and doc["reserved"] == 1
    assert doc["charged_to_map_creator"] == 3 * 4096 and doc["charged_to_user_task"] == 4096
    assert any("NULL" in e for e in doc["events"])


def test_example_both_directions_on_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    for direction in ("bpf-to-user", "user-to-bpf"):
        rc, doc = run(["arena", "example", "--elements", "300", "--direction", direction, "--json"], capsys)
        assert rc == 0 and doc["correct"] and doc["read_back"] == 300


def test_bad_arena_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arena", "create", "--max-entries", "16", "--flags", "bogus"]) == 2
    assert main(["arena", "translate", "zz"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--flags" in err[0] and "ADDRESS" in err[1]


def test_arena_vs_htab_on_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = run(["bench", "arena-vs-htab", "--elements", "3000", "--value-size", "64", "--json"], capsys)
    htab, arena = doc["results"]
    assert htab["bytes_per_element"] > arena["bytes_per_element"] > 0
    assert arena["after_delete_bytes"] <= arena["peak_bytes"]
    rc, doc = run(["bench", "arena-vs-htab", "--elements", "3000", "--delete-fraction", "1", "--json"], capsys)
    assert doc["results"][1]["after_delete_bytes"] < doc["results"][1]["peak_bytes"]   # pages came back
