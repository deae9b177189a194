"""A tiny eBPF assembler: Python calls in, ``struct bpf_insn`` bytes out.

Problem: to run map operations in program context we must hand BPF_PROG_LOAD
raw instructions, without clang or libbpf.  Writing 8-byte words by hand is
error-prone, mostly because of jump offsets.

Mechanism: each helper returns an ``Insn`` (u8 code, u4 dst, u4 src, s16 off,
s32 imm, little-endian; ``ld_imm64`` is one ``Insn`` spanning two slots).
Jumps name a ``Label``; ``assemble`` places labels by slot count and turns each
jump target into the 16-bit offset ``target - (jump slot + 1)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Union

# registers
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10

# instruction classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
# modes
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# operand source
K, X = 0x00, 0x08
# ALU operations
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0)
# jump operations
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
# atomic modifier (in imm)
FETCH = 0x01
PSEUDO_MAP_FD = 1

# helper ids (enum bpf_func_id)
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM = 1, 2, 3

_SLOT = struct.Struct("<BBhI")


class AsmError(ValueError):
    """An instruction or program that cannot be encoded (bad label, field out of range)."""


@dataclass(frozen=True)
class Insn:
    """One ``struct bpf_insn``; ``imm_hi`` set means a two-slot ``ld_imm64``; ``target`` a jump label."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm_hi: int | None = None
    target: str | None = None

    @property
    def slots(self) -> int:
        return 1 if self.imm_hi is None else 2

    def encode(self, off: int | None = None) -> bytes:
        o = self.off if off is None else off
        if not (0 <= self.dst <= 10 and 0 <= self.src <= 15):
            raise AsmError(f"register out of range in {self}")
        if not -(1 << 15) <= o < (1 << 15):
            raise AsmError(f"offset {o} does not fit s16 in {self}")
        if not -(1 << 31) <= self.imm < (1 << 32):
            raise AsmError(f"immediate {self.imm} does not fit 32 bits in {self}")
        out = _SLOT.pack(self.code, self.src << 4 | self.dst, o, self.imm & 0xFFFFFFFF)
        if self.imm_hi is not None:
            out += _SLOT.pack(0, 0, 0, self.imm_hi & 0xFFFFFFFF)
        return out

    def __bytes__(self) -> bytes:
        if self.target is not None:
            raise AsmError(f"jump to {self.target!r} needs assemble() to resolve its label")
        return self.encode()


@dataclass(frozen=True)
class Label:
    """A pseudo-instruction naming the next slot; occupies no space."""

    name: str


Item = Union[Insn, Label]


def label(name: str) -> Label:
    return Label(name)


# ALU
def alu64_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(ALU64 | op | K, dst, 0, 0, imm)


def alu64_reg(op: int, dst: int, src: int) -> Insn:
    return Insn(ALU64 | op | X, dst, src)


def mov64_imm(dst: int, imm: int) -> Insn:
    return alu64_imm(MOV, dst, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return alu64_reg(MOV, dst, src)


def neg64(dst: int) -> Insn:
    return Insn(ALU64 | NEG, dst)


# loads and stores
def ld_imm64(dst: int, imm: int, src: int = 0) -> Insn:
    if not -(1 << 63) <= imm < (1 << 64):
        raise AsmError(f"immediate {imm} does not fit 64 bits")
    imm &= (1 << 64) - 1
    return Insn(LD | DW | IMM, dst, src, 0, imm & 0xFFFFFFFF, imm >> 32)


def ld_map_fd(dst: int, fd: int) -> Insn:
    return ld_imm64(dst, fd, src=PSEUDO_MAP_FD)


def ldx_mem(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(LDX | MEM | size, dst, src, off)


def stx_mem(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(STX | MEM | size, dst, src, off)


def st_mem(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(ST | MEM | size, dst, 0, off, imm)


def _atomic(size: int, dst: int, src: int, off: int, imm: int) -> Insn:
    if size not in (W, DW):
        raise AsmError("atomic operations take W or DW")
    return Insn(STX | ATOMIC | size, dst, src, off, imm)


def atomic_add(size: int, dst: int, src: int, off: int) -> Insn:
    """``*(size *)(dst + off) += src``."""
    return _atomic(size, dst, src, off, ADD)


def atomic_fetch_add(size: int, dst: int, src: int, off: int) -> Insn:
    """``src = atomic_fetch_add((size *)(dst + off), src)``."""
    return _atomic(size, dst, src, off, ADD | FETCH)


# control flow
def call(helper_id: int) -> Insn:
    return Insn(JMP | CALL, imm=helper_id)


def exit_() -> Insn:
    return Insn(JMP | EXIT)


def jmp(target: str) -> Insn:
    return Insn(JMP | JA, target=target)


def jcond_imm(op: int, reg: int, imm: int, target: str) -> Insn:
    return Insn(JMP | op | K, reg, 0, 0, imm, target=target)


def jcond_reg(op: int, dst: int, src: int, target: str) -> Insn:
    return Insn(JMP | op | X, dst, src, target=target)


def jeq_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JEQ, reg, imm, target)
def jne_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JNE, reg, imm, target)
def jgt_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JGT, reg, imm, target)
def jge_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JGE, reg, imm, target)
def jlt_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JLT, reg, imm, target)
def jle_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JLE, reg, imm, target)
def jsgt_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JSGT, reg, imm, target)
def jslt_imm(reg: int, imm: int, target: str) -> Insn: return jcond_imm(JSLT, reg, imm, target)
def jeq_reg(dst: int, src: int, target: str) -> Insn: return jcond_reg(JEQ, dst, src, target)
def jne_reg(dst: int, src: int, target: str) -> Insn: return jcond_reg(JNE, dst, src, target)
def jgt_reg(dst: int, src: int, target: str) -> Insn: return jcond_reg(JGT, dst, src, target)
def jge_reg(dst: int, src: int, target: str) -> Insn: return jcond_reg(JGE, dst, src, target)
def jlt_reg(dst: int, src: int, target: str) -> Insn: return jcond_reg(JLT, dst, src, target)
def jle_reg(dst: int, src: int, target: str) -> Insn: return jcond_reg(JLE, dst, src, target)


def assemble(items: Iterable[Item]) -> bytes:
    """Encode ``items``, resolving jump labels to slot offsets; raises ``AsmError`` on bad labels."""
    items = list(items)
    where: dict[str, int] = {}
    slot = 0
    for it in items:
        if isinstance(it, Label):
            if it.name in where:
                raise AsmError(f"duplicate label {it.name!r}")
            where[it.name] = slot
        else:
            slot += it.slots
    out = bytearray()
    slot = 0
    for it in items:
        if isinstance(it, Label):
            continue
        off = None
        if it.target is not None:
            if it.target not in where:
                raise AsmError(f"unknown label {it.target!r}")
            off = where[it.target] - (slot + 1)
        out += it.encode(off)
        slot += it.slots
    return bytes(out)
