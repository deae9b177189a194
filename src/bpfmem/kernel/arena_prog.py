"""A real BPF program that allocates arena pages: the ``bpf_arena_alloc_pages`` kfunc.

A sleepable ``BPF_PROG_TYPE_SYSCALL`` program (run once per
``BPF_PROG_TEST_RUN``) reads (addr, page_cnt, marker) from an array map,
calls the kfunc (``BPF_PSEUDO_KFUNC_CALL`` with the BTF id from
/sys/kernel/btf/vmlinux), stores the returned user address back, converts it
with an address-space cast (``BPF_ADDR_SPACE_CAST``, as(1) -> as(0)) and
writes the marker through it, so user space finds the marker in its mapping.
The arena must be mmap-ed (its user address fixed) before the program loads.
"""

from __future__ import annotations

import struct

from . import asm as A
from . import syscall as S
from . import uapi as U
from .btf import find_func_id

BPF_PSEUDO_KFUNC_CALL = 2
BPF_ADDR_SPACE_CAST = 1
_CTRL = struct.Struct("<QQQQqqq")   # addr, page_cnt, marker, result, op, node_id, status
OP_ALLOC, OP_FREE, OP_RESERVE = 0, 1, 2


def kfunc_call(btf_id: int) -> A.Insn:
    return A.Insn(A.JMP | A.CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, btf_id)


def cast_kern(dst: int, src: int) -> A.Insn:
    """``addr_space_cast(dst, src, 1, 0)``: an arena (user-form) pointer to a kernel-usable one."""
    return A.Insn(A.ALU64 | A.MOV | A.X, dst, src, BPF_ADDR_SPACE_CAST, 1)


class ArenaAllocProgram:
    """Loads the program for one arena map; ``alloc(addr, cnt, marker)`` returns the kfunc's result,
    ``free(ptr, cnt)`` calls ``bpf_arena_free_pages`` and ``reserve(ptr, cnt)`` ``bpf_arena_reserve_pages``
    (≈6.17; ``OSError`` where the kernel has none).  One program: the control record's ``op`` picks the kfunc."""

    def __init__(self, arena_map: S.BpfFd) -> None:
        kid = find_func_id("bpf_arena_alloc_pages")
        fid = find_func_id("bpf_arena_free_pages")
        try:
            rid: int | None = find_func_id("bpf_arena_reserve_pages")
        except LookupError:
            rid = None
        self.has_reserve = rid is not None
        self.ctrl = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, _CTRL.size, 1, name="arena_ctrl")
        try:
            reserve: list[A.Item] = [
                A.label("reserve"),
                A.ld_map_fd(A.R1, arena_map.fd), A.ldx_mem(A.DW, A.R2, A.R9, 0), A.ldx_mem(A.DW, A.R3, A.R9, 8),
                kfunc_call(rid), A.stx_mem(A.DW, A.R9, A.R0, 48),          # status = the kfunc's int
                A.jmp("out"),
            ] if rid is not None else []
            code = A.assemble([
                A.st_mem(A.W, A.FP, -4, 0),
                A.ld_map_fd(A.R1, self.ctrl.fd),
                A.mov64_reg(A.R2, A.FP),
                A.alu64_imm(A.ADD, A.R2, -4),
                A.call(A.MAP_LOOKUP_ELEM),
                A.jeq_imm(A.R0, 0, "out"),
                A.mov64_reg(A.R9, A.R0),                       # r9 = &ctrl
                A.ldx_mem(A.DW, A.R1, A.R9, 32),               # op
                A.jeq_imm(A.R1, OP_FREE, "free"),
                *([A.jeq_imm(A.R1, OP_RESERVE, "reserve")] if rid is not None else []),
                A.ldx_mem(A.DW, A.R2, A.R9, 0),                # addr
                A.ldx_mem(A.DW, A.R3, A.R9, 8),                # page_cnt
                A.ld_map_fd(A.R1, arena_map.fd),
                A.ldx_mem(A.DW, A.R4, A.R9, 40),               # node_id (-1: NUMA_NO_NODE)
                A.mov64_imm(A.R5, 0),                          # flags
                kfunc_call(kid),
                A.stx_mem(A.DW, A.R9, A.R0, 24),               # result = full user address (or 0)
                A.jeq_imm(A.R0, 0, "out"),
                cast_kern(A.R6, A.R0),
                A.ldx_mem(A.DW, A.R7, A.R9, 16),               # marker
                A.stx_mem(A.DW, A.R6, A.R7, 0),                # *(u64 *)page = marker
                A.jmp("out"),
                A.label("free"),
                A.ld_map_fd(A.R1, arena_map.fd), A.ldx_mem(A.DW, A.R2, A.R9, 0), A.ldx_mem(A.DW, A.R3, A.R9, 8),
                kfunc_call(fid),
                A.jmp("out"),
                *reserve,
                A.label("out"),
                A.mov64_imm(A.R0, 0),
                A.exit_(),
            ])
            self.prog = S.prog_load(U.BPF_PROG_TYPE_SYSCALL, code, name="arena_alloc", flags=U.BPF_F_SLEEPABLE)
        except BaseException:
            self.ctrl.close()
            raise

    def _run(self, op: int, addr: int, page_cnt: int, marker: int = 0, node_id: int = -1) -> tuple[int, ...]:
        S.map_update_elem(self.ctrl, b"\0\0\0\0", _CTRL.pack(addr, page_cnt, marker, 0, op, node_id, 0))
        S.prog_test_run(self.prog, b"", repeat=0)
        raw = S.map_lookup_elem(self.ctrl, b"\0\0\0\0")
        assert raw is not None
        return _CTRL.unpack(raw)

    def alloc(self, addr: int, page_cnt: int, marker: int = 0, node_id: int = -1) -> int:
        return self._run(OP_ALLOC, addr, page_cnt, marker, node_id)[3]

    def free(self, ptr: int, page_cnt: int) -> None:
        self._run(OP_FREE, ptr, page_cnt)

    def reserve(self, ptr: int, page_cnt: int) -> int:
        if not self.has_reserve:
            raise OSError(95, "this kernel has no bpf_arena_reserve_pages kfunc")
        return self._run(OP_RESERVE, ptr, page_cnt)[6]

    def close(self) -> None:
        self.prog.close()
        self.ctrl.close()

    def __enter__(self) -> ArenaAllocProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
