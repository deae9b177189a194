"""Map operations driven from inside a BPF program, at kernel speed.

Problem: one bpf(2) syscall per element measures the syscall path, not the
map; real users (tracepoint programs) call the helpers from program context,
where the hash map takes its in-program allocation paths.

Mechanism: ``MapOpProgram`` loads one SOCKET_FILTER program and runs it with
BPF_PROG_TEST_RUN ``repeat = n``.  Each run fetch-adds ``ctrl.next_index``,
reads its key from the ``keys`` array and applies ``ctrl.op`` to the target
map (update takes its value from the one-entry ``zero`` map, since values up
to 4096 B do not fit the 512 B stack).  A failing helper bumps
``ctrl.errors`` and leaves its errno in ``ctrl.last_error``.
"""

from __future__ import annotations

import errno as errno_mod
import struct
from typing import Sequence, TypeVar

from . import asm as A
from . import uapi as U
from .syscall import (BpfFd, BpfMap, BpfSyscallError, map_create, map_lookup_elem, map_update_batch,
                      map_update_elem, prog_load, prog_test_run, u32_array)

OPS = {"update": 0, "delete": 1, "lookup": 2}
_CTRL = struct.Struct("<5Q")  # next_index, op, flags, errors, last_error
_KEY0 = bytes(4)
_MAX_REPEAT = 1 << 20
_F = TypeVar("_F", bound=BpfFd)


def _program(target: int, keys: int, ctrl: int, zero: int) -> bytes:
    """The driver; r6 = &ctrl[0] throughout, stack: fp-4 zero key, fp-8 index, fp-12 target key."""
    def lookup(map_fd: int, key_off: int) -> list[A.Item]:
        return [A.ld_map_fd(A.R1, map_fd), A.mov64_reg(A.R2, A.FP), A.alu64_imm(A.ADD, A.R2, key_off),
                A.call(A.MAP_LOOKUP_ELEM), A.jeq_imm(A.R0, 0, "out")]

    def target_key() -> list[A.Item]:
        return [A.ld_map_fd(A.R1, target), A.mov64_reg(A.R2, A.FP), A.alu64_imm(A.ADD, A.R2, -12)]

    return A.assemble([
        A.st_mem(A.W, A.FP, -4, 0),
        *lookup(ctrl, -4),
        A.mov64_reg(A.R6, A.R0),
        A.mov64_imm(A.R1, 1),
        A.atomic_fetch_add(A.DW, A.R6, A.R1, 0),          # r1 = ctrl.next_index++
        A.stx_mem(A.W, A.FP, A.R1, -8),
        *lookup(keys, -8),                                 # past the keys written: done
        A.ldx_mem(A.W, A.R1, A.R0, 0),
        A.stx_mem(A.W, A.FP, A.R1, -12),
        A.ldx_mem(A.DW, A.R7, A.R6, 8),                    # op
        A.jeq_imm(A.R7, OPS["delete"], "delete"),
        A.jeq_imm(A.R7, OPS["lookup"], "lookup"),
        *lookup(zero, -4),
        A.mov64_reg(A.R3, A.R0),
        *target_key(),
        A.ldx_mem(A.DW, A.R4, A.R6, 16),                   # flags
        A.call(A.MAP_UPDATE_ELEM),
        A.jmp("check"),
        A.label("delete"),
        *target_key(),
        A.call(A.MAP_DELETE_ELEM),
        A.jmp("check"),
        A.label("lookup"),
        *target_key(),
        A.call(A.MAP_LOOKUP_ELEM),
        A.mov64_imm(A.R1, 0),
        A.jne_imm(A.R0, 0, "found"),
        A.mov64_imm(A.R1, -errno_mod.ENOENT),              # a miss counts as ENOENT
        A.label("found"),
        A.mov64_reg(A.R0, A.R1),
        A.label("check"),
        A.jeq_imm(A.R0, 0, "out"),
        A.mov64_imm(A.R1, 1),
        A.atomic_add(A.DW, A.R6, A.R1, 24),                # ctrl.errors++
        A.neg64(A.R0),
        A.stx_mem(A.DW, A.R6, A.R0, 32),                   # ctrl.last_error = errno
        A.label("out"),
        A.mov64_imm(A.R0, 0),
        A.exit_(),
    ])


class MapOpProgram:
    """Runs update/delete/lookup of u32 keys on ``target`` inside a BPF program; closes what it creates."""

    def __init__(self, target: BpfMap, capacity: int = 1 << 20) -> None:
        if target.key_size != 4:
            raise ValueError(f"MapOpProgram drives u32 keys only, target key_size is {target.key_size}")
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.target, self.capacity = target, capacity
        self._owned: list[BpfFd] = []
        self._batch_ok = True
        self._last_keys: Sequence[int] | None = None
        self._index = u32_array(range(capacity))
        self.last_ns_per_op = 0  # kernel-measured average of the last run's final chunk
        try:
            self.keys = self._own(map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, capacity, name="mapop_keys"))
            self.ctrl = self._own(map_create(U.BPF_MAP_TYPE_ARRAY, 4, _CTRL.size, 1, name="mapop_ctrl"))
            self.zero = self._own(map_create(U.BPF_MAP_TYPE_ARRAY, 4, target.value_size, 1, name="mapop_zero"))
            code = _program(target.fd, self.keys.fd, self.ctrl.fd, self.zero.fd)
            self.prog = self._own(prog_load(U.BPF_PROG_TYPE_SOCKET_FILTER, code, name="mapop"))
        except BaseException:
            self.close()
            raise

    def _own(self, fd: _F) -> _F:
        self._owned.append(fd)
        return fd

    def close(self) -> None:
        for fd in reversed(self._owned):
            fd.close()
        self._owned.clear()

    def __enter__(self) -> MapOpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_keys(self, keys: Sequence[int]) -> None:
        if keys is self._last_keys:      # the same key sequence again (a workload's loop): already there
            return
        self._last_keys = None
        self._write_keys_now(keys)
        self._last_keys = keys

    def _write_keys_now(self, keys: Sequence[int]) -> None:
        n = len(keys)
        if self._batch_ok and n > 1:
            vals = u32_array(keys)
            try:
                done = map_update_batch(self.keys, self._index, vals, n)  # type: ignore[arg-type]
                if done == n:
                    return
            except BpfSyscallError as e:
                if e.errno not in (errno_mod.EINVAL, errno_mod.ENOTSUP, 524):  # 524: ENOTSUPP
                    raise
                self._batch_ok = False
        for i, k in enumerate(keys):
            map_update_elem(self.keys, struct.pack("<I", i), struct.pack("<I", k))

    def _read_ctrl(self) -> tuple[int, int, int, int, int]:
        raw = map_lookup_elem(self.ctrl, _KEY0)
        assert raw is not None
        return _CTRL.unpack(raw)  # type: ignore[return-value]

    def run(self, op: str, keys: Sequence[int], flags: int = 0) -> tuple[int, int, int]:
        """Apply ``op`` to each key in order; returns (ok_count, error_count, last errno or 0)."""
        if op not in OPS:
            raise ValueError(f"op must be one of {sorted(OPS)}, not {op!r}")
        if keys and not (0 <= min(keys) and max(keys) < 1 << 32):
            raise ValueError("keys must be u32")
        chunk = min(self.capacity, _MAX_REPEAT)
        ok = errors = last = 0
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            self._write_keys(part)
            map_update_elem(self.ctrl, _KEY0, _CTRL.pack(0, OPS[op], flags, 0, 0))
            _, self.last_ns_per_op = prog_test_run(self.prog, bytes(64), repeat=len(part))
            done, _, _, err, last_err = self._read_ctrl()
            if done != len(part):
                raise RuntimeError(f"program ran {done} times for {len(part)} keys")
            ok += done - err
            errors += err
            last = last_err or last
        return ok, errors, last
