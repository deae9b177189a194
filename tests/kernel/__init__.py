"""Tests of the bpf(2) layer; kernel-backed ones skip with a reason via ``require_bpf``."""

from __future__ import annotations

import os

import pytest

_reason: str | None = None
_checked = False


def require_bpf() -> None:
    """Skip the calling test unless this process can create a BPF map (root, bpf(2) enabled)."""
    global _reason, _checked
    if not _checked:
        _checked = True
        if os.geteuid() != 0:
            _reason = "needs root for bpf(2) map creation and program test runs"
        else:
            try:
                from bpfmem.kernel import uapi as U
                from bpfmem.kernel.syscall import map_create
                map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, 1).close()
            except OSError as e:
                _reason = f"bpf(2) unusable here: {e}"
    if _reason is not None:
        pytest.skip(_reason)


_backend_reason: str | None = None
_backend_checked = False


def require_kernel_backend() -> None:
    """Skip unless the kernel backend can run (BPF and a writable memory cgroup), with the probe's reason."""
    global _backend_reason, _backend_checked
    if not _backend_checked:
        _backend_checked = True
        from bpfmem.kernel.probe import require_kernel
        _backend_reason = require_kernel()
    if _backend_reason is not None:
        pytest.skip(f"kernel backend unavailable: {_backend_reason}")
