"""bpf(2) through ctypes: typed calls, errors as exceptions, file descriptors that close.

No libbpf: each wrapper fills one ``uapi`` layout and calls ``syscall(__NR_bpf)``.
A failure raises ``BpfSyscallError`` carrying errno, the command and the
attributes that were passed, never a bare -1.  Objects (maps, programs, BTF)
are ``BpfFd``: close them with ``with`` or ``close()``; a finaliser closes any
that leaked.
"""

from __future__ import annotations

import ctypes as C
import errno as errno_mod
import os
import platform
import weakref
from typing import Any, Sequence

from . import uapi as U

_libc = C.CDLL(None, use_errno=True)
_libc.syscall.restype = C.c_long


def nr_bpf() -> int:
    m = platform.machine()
    if m in ("x86_64", "AMD64"):
        return U.NR_BPF_X86_64
    if m in ("aarch64", "arm64"):
        return U.NR_BPF_AARCH64
    raise OSError(errno_mod.ENOSYS, f"bpf(2) number unknown for machine {m}")


class BpfSyscallError(OSError):
    """A bpf(2) command failed: ``errno``, ``cmd`` name and the attributes passed."""

    def __init__(self, err: int, cmd: int, attrs: dict[str, Any], log: str = "") -> None:
        self.cmd = U.CMD_NAMES.get(cmd, str(cmd))
        self.attrs = attrs
        self.log = log
        shown = ", ".join(f"{k}={v}" for k, v in attrs.items())
        msg = f"{self.cmd}({shown}): {errno_mod.errorcode.get(err, err)} ({os.strerror(err)})"
        if log:
            msg += "\nverifier log:\n" + log
        super().__init__(err, msg)

    def __str__(self) -> str:
        return self.args[1]


def _attrs_of(attr: C.Structure) -> dict[str, Any]:
    out = {}
    for name, _t in attr._fields_:  # type: ignore[attr-defined]
        v = getattr(attr, name)
        if name.startswith("_") or v in (0, b""):
            continue
        out[name] = v
    return out


def bpf(cmd: int, attr: C.Structure, log: C.Array[C.c_char] | None = None) -> int:
    """Call bpf(cmd, &attr, sizeof(attr)); return the result or raise ``BpfSyscallError``."""
    ret = _libc.syscall(nr_bpf(), C.c_int(cmd), C.byref(attr), C.c_uint(C.sizeof(attr)))
    if ret < 0:
        err = C.get_errno()
        text = log.value.decode(errors="replace") if log is not None else ""
        raise BpfSyscallError(err, cmd, _attrs_of(attr), text)
    return int(ret)


class BpfFd:
    """An owned file descriptor of a BPF object; closes deterministically."""

    def __init__(self, fd: int, kind: str) -> None:
        self.fd = fd
        self.kind = kind
        self._finalizer = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        if self._finalizer.alive:
            self._finalizer()

    def release(self) -> int:
        """Give up ownership: return the fd, which this object will no longer close."""
        self._finalizer.detach()
        return self.fd

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> BpfFd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __int__(self) -> int:
        return self.fd

    def __repr__(self) -> str:
        return f"<{self.kind} fd {self.fd}{' closed' if self.closed else ''}>"


PERCPU_MAP_TYPES = (U.BPF_MAP_TYPE_PERCPU_HASH, 6, 10, 21)   # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE


class BpfMap(BpfFd):
    def __init__(self, fd: int, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int) -> None:
        super().__init__(fd, "map")
        self.map_type, self.key_size, self.value_size = map_type, key_size, value_size
        self.max_entries, self.map_flags = max_entries, flags

    @property
    def value_stride(self) -> int:
        """Bytes of one element's value in user buffers: per-CPU maps pass ``round_up(value_size, 8)``
        for every possible CPU (``bpf_map_value_size()``), other maps ``value_size``."""
        if self.map_type in PERCPU_MAP_TYPES:
            from .probe import possible_cpus
            return (self.value_size + 7) // 8 * 8 * possible_cpus()
        return self.value_size


BPF_OBJ_NAME_LEN = 16


def check_attr_range(field: str, value: int, bits: int = 32) -> None:
    """``ValueError`` unless ``value`` fits the ``__u{bits}`` field ``attr.{field}``.

    ctypes would keep only the low bits (max_entries 2^32 would reach the
    kernel as 0), so a value the field cannot hold is refused before the
    call.  The text is the model's (``bpfmem.maps.base.check_attr_range``).
    """
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{field}={value} does not fit attr.{field} (__u{bits}, 0..{(1 << bits) - 1}): "
                         "bpf(2) cannot pass it")


def obj_name(name: str | bytes) -> bytes:
    """The bytes of a 16-byte ``map_name``/``prog_name`` field: UTF-8 of a ``str``, cut to 16 bytes.

    Nothing is shortened silently: the kernel's ``bpf_obj_name_cpy()`` reads
    up to a NUL, and 16 bytes without one (any longer name) is -EINVAL.
    """
    raw = name.encode() if isinstance(name, str) else bytes(name)
    return raw[:BPF_OBJ_NAME_LEN]


def check_map_create_attr(key_size: int, value_size: int, max_entries: int, flags: int = 0, *, map_type: int = 0,
                          map_extra: int = 0, numa_node: int = 0) -> None:
    """What ``map_create`` refuses before any syscall (``ValueError``): values no attr field can hold.
    Call it before forking a creator (``cgroup.create_in`` forwards only ``OSError``)."""
    for field, v in (("map_type", map_type), ("key_size", key_size), ("value_size", value_size),
                     ("max_entries", max_entries), ("map_flags", flags), ("numa_node", numa_node)):
        check_attr_range(field, v)
    check_attr_range("map_extra", map_extra, 64)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0, *,
               name: str | bytes = "", map_extra: int = 0, numa_node: int = 0, btf_fd: int = 0,
               btf_key_type_id: int = 0, btf_value_type_id: int = 0) -> BpfMap:
    """``BPF_MAP_CREATE``.  ``ValueError`` for a value no attr field can hold (never truncated);
    ``numa_node`` is read by the kernel only with ``BPF_F_NUMA_NODE``; ``name`` as ``obj_name``."""
    check_map_create_attr(key_size, value_size, max_entries, flags, map_type=map_type, map_extra=map_extra,
                          numa_node=numa_node)
    for field, v in (("btf_fd", btf_fd), ("btf_key_type_id", btf_key_type_id),
                     ("btf_value_type_id", btf_value_type_id)):
        check_attr_range(field, v)
    a = U.MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                        map_flags=flags, map_name=obj_name(name), map_extra=map_extra, numa_node=numa_node,
                        btf_fd=btf_fd, btf_key_type_id=btf_key_type_id, btf_value_type_id=btf_value_type_id)
    return BpfMap(bpf(U.BPF_MAP_CREATE, a), map_type, key_size, value_size, max_entries, flags)


def _buf(data: bytes) -> C.Array[C.c_char]:
    return C.create_string_buffer(data, len(data))


def map_update_elem(m: BpfMap, key: bytes, value: bytes, flags: int = U.BPF_ANY) -> None:
    k, v = _buf(key), _buf(value)
    bpf(U.BPF_MAP_UPDATE_ELEM, U.MapElemAttr(map_fd=m.fd, key=C.addressof(k), value=C.addressof(v), flags=flags))


def map_lookup_elem(m: BpfMap, key: bytes) -> bytes | None:
    """``BPF_MAP_LOOKUP_ELEM``: the value (every CPU's for a per-CPU map), or None for ENOENT."""
    k, v = _buf(key), C.create_string_buffer(m.value_stride)
    try:
        bpf(U.BPF_MAP_LOOKUP_ELEM, U.MapElemAttr(map_fd=m.fd, key=C.addressof(k), value=C.addressof(v)))
    except BpfSyscallError as e:
        if e.errno == errno_mod.ENOENT:
            return None
        raise
    return v.raw


def map_delete_elem(m: BpfMap, key: bytes) -> None:
    """``BPF_MAP_DELETE_ELEM`` (the value field must stay 0, else EINVAL)."""
    k = _buf(key)
    bpf(U.BPF_MAP_DELETE_ELEM, U.MapElemAttr(map_fd=m.fd, key=C.addressof(k)))


def map_lookup_and_delete_elem(m: BpfMap, key: bytes) -> bytes:
    k, v = _buf(key), C.create_string_buffer(m.value_stride)
    bpf(U.BPF_MAP_LOOKUP_AND_DELETE_ELEM, U.MapElemAttr(map_fd=m.fd, key=C.addressof(k), value=C.addressof(v)))
    return v.raw


def map_get_next_key(m: BpfMap, key: bytes | None) -> bytes | None:
    """``BPF_MAP_GET_NEXT_KEY``: the next key, or None at the end."""
    nk = C.create_string_buffer(m.key_size)
    k = _buf(key) if key is not None else None
    try:
        bpf(U.BPF_MAP_GET_NEXT_KEY, U.MapElemAttr(map_fd=m.fd, key=C.addressof(k) if k is not None else 0,
                                                  value=C.addressof(nk)))
    except BpfSyscallError as e:
        if e.errno == errno_mod.ENOENT:
            return None
        raise
    return nk.raw


def map_update_batch(m: BpfMap, keys: C.Array[Any], values: C.Array[Any], count: int, elem_flags: int = 0,
                     start: int = 0) -> int:
    """``BPF_MAP_UPDATE_BATCH`` of keys[start:start+count] (elem_flags only 0 or BPF_F_LOCK);
    returns how many were updated.  Values are read from the same offset of ``values``."""
    a = U.MapBatchAttr(keys=C.addressof(keys) + start * m.key_size,
                       values=C.addressof(values) + start * m.value_stride, count=count, map_fd=m.fd,
                       elem_flags=elem_flags)
    return _batch(U.BPF_MAP_UPDATE_BATCH, a)


def map_delete_batch(m: BpfMap, keys: C.Array[Any], count: int, start: int = 0) -> int:
    """``BPF_MAP_DELETE_BATCH`` of keys[start:start+count]: stops at the first missing key (ENOENT);
    returns how many were deleted."""
    a = U.MapBatchAttr(keys=C.addressof(keys) + start * m.key_size, count=count, map_fd=m.fd)
    return _batch(U.BPF_MAP_DELETE_BATCH, a)


def _batch(cmd: int, a: U.MapBatchAttr) -> int:
    """Run a batch command; on failure the error's ``attrs['done']`` says how many elements were done."""
    try:
        bpf(cmd, a)
    except BpfSyscallError as e:
        e.attrs["done"] = a.count
        raise
    return int(a.count)


def map_info(m: BpfFd) -> U.BpfMapInfo:
    info = U.BpfMapInfo()
    bpf(U.BPF_OBJ_GET_INFO_BY_FD, U.InfoAttr(bpf_fd=m.fd, info_len=C.sizeof(info), info=C.addressof(info)))
    return info


def btf_load(blob: bytes) -> BpfFd:
    b = _buf(blob)
    log = C.create_string_buffer(64 * 1024)
    a = U.BtfLoadAttr(btf=C.addressof(b), btf_size=len(blob), btf_log_buf=C.addressof(log),
                      btf_log_size=len(log), btf_log_level=1)
    return BpfFd(bpf(U.BPF_BTF_LOAD, a, log), "btf")


def prog_load(prog_type: int, insns: bytes, *, name: str = "", flags: int = 0, license: str = "GPL",
              log_size: int = 1 << 20) -> BpfFd:
    """``BPF_PROG_LOAD``; on failure the error carries the verifier log."""
    code = _buf(insns)
    lic = C.create_string_buffer(license.encode())
    log = C.create_string_buffer(log_size)
    a = U.ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=C.addressof(code),
                       license=C.addressof(lic), log_level=1, log_size=log_size, log_buf=C.addressof(log),
                       prog_flags=flags, prog_name=obj_name(name))
    try:
        return BpfFd(bpf(U.BPF_PROG_LOAD, a, log), "prog")
    except BpfSyscallError as e:
        if not e.log:  # retry without log on success paths only; keep what the kernel wrote
            e.log = log.value.decode(errors="replace")
        raise


def prog_test_run(prog: BpfFd, data: bytes = b"", repeat: int = 0, ctx: bytes | None = None) -> tuple[int, int]:
    """``BPF_PROG_TEST_RUN``: returns (retval, duration ns per run)."""
    d = _buf(data) if data else None
    cbuf = _buf(ctx) if ctx else None
    a = U.TestRunAttr(prog_fd=prog.fd, data_size_in=len(data), data_in=C.addressof(d) if d is not None else 0,
                      repeat=repeat, ctx_size_in=len(ctx) if ctx else 0,
                      ctx_in=C.addressof(cbuf) if cbuf is not None else 0)
    bpf(U.BPF_PROG_TEST_RUN, a)
    return int(a.retval), int(a.duration)


def u32_array(values: Sequence[int]) -> C.Array[C.c_uint32]:
    return (C.c_uint32 * len(values))(*values)


def fdinfo(fd: BpfFd | int) -> dict[str, str]:
    """/proc/self/fdinfo/FD as a dict (``memlock``, ``map_type``, ...)."""
    out = {}
    with open(f"/proc/self/fdinfo/{int(fd)}") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def prog_load_attach(prog_type: int, insns: bytes, *, expected_attach_type: int, attach_btf_id: int = 0,
                     name: str = "", flags: int = 0, license: str = "GPL", log_size: int = 1 << 20) -> BpfFd:
    """``BPF_PROG_LOAD`` of a program that names its attach point at load time (tp_btf, fentry, LSM):
    ``expected_attach_type`` and ``attach_btf_id`` (a vmlinux BTF id; ``attach_btf_obj_fd`` 0 means
    vmlinux).  On failure the error carries the verifier log, as ``prog_load``."""
    code = _buf(insns)
    lic = C.create_string_buffer(license.encode())
    log = C.create_string_buffer(log_size)
    a = U.ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=C.addressof(code),
                       license=C.addressof(lic), log_level=1, log_size=log_size, log_buf=C.addressof(log),
                       prog_flags=flags, prog_name=obj_name(name), expected_attach_type=expected_attach_type,
                       attach_btf_id=attach_btf_id)
    try:
        return BpfFd(bpf(U.BPF_PROG_LOAD, a, log), "prog")
    except BpfSyscallError as e:
        if not e.log:
            e.log = log.value.decode(errors="replace")
        raise


def raw_tracepoint_open(prog: BpfFd, name: str | None = None) -> BpfFd:
    """``BPF_RAW_TRACEPOINT_OPEN``: attach ``prog`` and return the link (closing it detaches).

    ``name``: the tracepoint of a ``BPF_PROG_TYPE_RAW_TRACEPOINT`` program ("kmalloc"); None for a
    program whose attach point came with the load (tp_btf, fentry/fexit, LSM:
    ``bpf_raw_tp_link_attach()`` then takes ``attach_func_name`` or attaches the trampoline)."""
    raw = C.create_string_buffer(name.encode()) if name is not None else None
    a = U.RawTracepointOpenAttr(name=C.addressof(raw) if raw is not None else 0, prog_fd=prog.fd)
    return BpfFd(bpf(U.BPF_RAW_TRACEPOINT_OPEN, a), "link")
