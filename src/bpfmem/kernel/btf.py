"""Just enough of BTF to find a kernel function's type id in /sys/kernel/btf/vmlinux.

A kfunc call (``BPF_PSEUDO_KFUNC_CALL``) names its target by the BTF id of
the ``BTF_KIND_FUNC`` in vmlinux BTF.  This walks the type section (each
kind has a fixed trailer size) and returns the id of a named FUNC.
"""

from __future__ import annotations

import struct

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 9, 10, 11, 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19


def _trailer(kind: int, vlen: int) -> int:
    """Bytes following the 12-byte ``struct btf_type`` for each kind."""
    if kind == KIND_INT:
        return 4
    if kind == KIND_ARRAY:
        return 12
    if kind in (KIND_STRUCT, KIND_UNION):
        return 12 * vlen
    if kind == KIND_ENUM:
        return 8 * vlen
    if kind == KIND_FUNC_PROTO:
        return 8 * vlen
    if kind == KIND_VAR:
        return 4
    if kind == KIND_DATASEC:
        return 12 * vlen
    if kind == KIND_DECL_TAG:
        return 4
    if kind == KIND_ENUM64:
        return 12 * vlen
    return 0


def find_func_id(name: str, path: str = VMLINUX_BTF) -> int:
    """BTF type id of kernel function ``name``; raises LookupError if absent."""
    data = open(path, "rb").read()
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != BTF_MAGIC:
        raise ValueError(f"{path} is not BTF")
    types = hdr_len + type_off
    strs = hdr_len + str_off
    want = name.encode()
    pos, end, tid = types, types + type_len, 0
    while pos < end:
        tid += 1
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        if kind == KIND_FUNC:
            s = strs + name_off
            if data[s:s + len(want) + 1] == want + b"\0":
                return tid
        pos += 12 + _trailer(kind, vlen)
    raise LookupError(f"no kernel function {name!r} in {path}")


def struct_size(name: str, path: str = VMLINUX_BTF) -> int:
    """``sizeof(struct name)`` from vmlinux BTF; raises LookupError if absent."""
    data = open(path, "rb").read()
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != BTF_MAGIC:
        raise ValueError(f"{path} is not BTF")
    types = hdr_len + type_off
    strs = hdr_len + str_off
    want = name.encode() + b"\0"
    pos, end = types, types + type_len
    while pos < end:
        name_off, info, size = struct.unpack_from("<III", data, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        if kind == KIND_STRUCT and data[strs + name_off:strs + name_off + len(want)] == want:
            return size
        pos += 12 + _trailer(kind, vlen)
    raise LookupError(f"no struct {name!r} in {path}")
