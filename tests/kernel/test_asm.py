"""The assembler: byte-exact encodings, label resolution, and a program the kernel accepts."""

from __future__ import annotations

import pytest

from bpfmem.kernel import asm as A

from . import require_bpf


@pytest.mark.parametrize("insn, hexbytes", [
    (A.mov64_imm(A.R0, 0), "b700000000000000"),
    (A.exit_(), "9500000000000000"),
    (A.mov64_reg(A.R2, A.R10), "bfa2000000000000"),
    (A.alu64_imm(A.ADD, A.R2, -4), "07020000fcffffff"),
    (A.alu64_imm(A.LSH, A.R1, 3), "6701000003000000"),
    (A.call(A.MAP_LOOKUP_ELEM), "8500000001000000"),
    (A.ldx_mem(A.W, A.R1, A.R0, 0), "6101000000000000"),
    (A.stx_mem(A.DW, A.R10, A.R1, -8), "7b1af8ff00000000"),
    (A.st_mem(A.W, A.R10, -4, 0), "620afcff00000000"),
    (A.atomic_fetch_add(A.DW, A.R6, A.R1, 0), "db16000001000000"),
    (A.atomic_add(A.W, A.R6, A.R1, 24), "c316180000000000"),
    (A.neg64(A.R0), "8700000000000000"),
    (A.ld_map_fd(A.R1, 5), "1811000005000000" "0000000000000000"),
    (A.ld_imm64(A.R0, 0x1122334455667788), "1800000088776655" "0000000044332211"),
    (A.ld_imm64(A.R3, -1), "18030000ffffffff" "00000000ffffffff"),
])
def test_known_encodings(insn: A.Insn, hexbytes: str) -> None:
    assert bytes(insn) == bytes.fromhex(hexbytes)
    assert A.assemble([insn]) == bytes.fromhex(hexbytes)


def test_forward_and_backward_labels() -> None:
    code = A.assemble([
        A.label("top"),
        A.jeq_imm(A.R0, 0, "end"),   # slot 0 -> 3: off 2
        A.mov64_imm(A.R0, 1),
        A.jmp("top"),                # slot 2 -> 0: off -3
        A.label("end"),
        A.exit_(),
    ])
    assert code[0:8] == bytes.fromhex("1500020000000000")
    assert code[16:24] == bytes.fromhex("0500fdff00000000")


def test_ld_imm64_counts_two_slots() -> None:
    code = A.assemble([A.jlt_reg(A.R1, A.R2, "end"), A.ld_imm64(A.R0, 1), A.label("end"), A.exit_()])
    assert len(code) == 4 * 8
    assert code[0:8] == bytes.fromhex("ad21020000000000")


def test_bad_labels_are_named() -> None:
    with pytest.raises(A.AsmError, match="unknown label 'nowhere'"):
        A.assemble([A.jmp("nowhere"), A.exit_()])
    with pytest.raises(A.AsmError, match="duplicate label 'x'"):
        A.assemble([A.label("x"), A.label("x"), A.exit_()])
    with pytest.raises(A.AsmError, match="needs assemble"):
        bytes(A.jmp("x"))


def test_out_of_range_fields_raise() -> None:
    with pytest.raises(A.AsmError, match="s16"):
        bytes(A.ldx_mem(A.W, A.R0, A.R1, 1 << 15))
    with pytest.raises(A.AsmError, match="32 bits"):
        bytes(A.mov64_imm(A.R0, 1 << 32))
    with pytest.raises(A.AsmError, match="W or DW"):
        A.atomic_add(A.B, A.R0, A.R1, 0)
    far = [A.jmp("end"), *[A.mov64_imm(A.R0, 0)] * (1 << 15), A.label("end"), A.exit_()]
    with pytest.raises(A.AsmError, match="s16"):
        A.assemble(far)


@pytest.mark.kernel
def test_kernel_runs_a_socket_filter_returning_7() -> None:
    require_bpf()
    from bpfmem.kernel import uapi as U
    from bpfmem.kernel.syscall import prog_load, prog_test_run

    code = A.assemble([A.mov64_imm(A.R0, 0), A.jeq_imm(A.R0, 1, "no"), A.mov64_imm(A.R0, 7), A.exit_(),
                       A.label("no"), A.mov64_imm(A.R0, 1), A.exit_()])
    with prog_load(U.BPF_PROG_TYPE_SOCKET_FILTER, code, name="ret7") as prog:
        retval, _ = prog_test_run(prog, b"\x00" * 64, repeat=1)
    assert retval == 7
