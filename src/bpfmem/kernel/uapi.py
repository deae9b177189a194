"""The parts of include/uapi/linux/bpf.h that bpfmem uses, as ctypes layouts.

Numbers were checked against the BTF of a 6.18 kernel.  Each command gets its
own ``Structure`` (the member of ``union bpf_attr`` it uses), so a call passes
exactly the bytes the kernel reads.
"""

from __future__ import annotations

import ctypes as C

# commands (enum bpf_cmd)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_LOAD = 18
BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28

CMD_NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("BPF_") and isinstance(v, int)}

# map types
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_SK_STORAGE = 24
BPF_MAP_TYPE_INODE_STORAGE = 28
BPF_MAP_TYPE_TASK_STORAGE = 29
BPF_MAP_TYPE_CGRP_STORAGE = 32
BPF_MAP_TYPE_ARENA = 33

# program types
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PROG_TYPE_TRACING = 26
BPF_PROG_TYPE_LSM = 29
BPF_PROG_TYPE_SYSCALL = 31

# attach types (enum bpf_attach_type)
BPF_TRACE_RAW_TP = 23
BPF_LSM_MAC = 27

# flags
BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_MMAPABLE = 1 << 10
BPF_F_SLEEPABLE = 1 << 4

# x86-64 syscall number of bpf(2)
NR_BPF_X86_64 = 321
NR_BPF_AARCH64 = 280


class MapCreateAttr(C.Structure):
    _fields_ = [("map_type", C.c_uint32), ("key_size", C.c_uint32), ("value_size", C.c_uint32),
                ("max_entries", C.c_uint32), ("map_flags", C.c_uint32), ("inner_map_fd", C.c_uint32),
                ("numa_node", C.c_uint32), ("map_name", C.c_char * 16), ("map_ifindex", C.c_uint32),
                ("btf_fd", C.c_uint32), ("btf_key_type_id", C.c_uint32), ("btf_value_type_id", C.c_uint32),
                ("btf_vmlinux_value_type_id", C.c_uint32), ("map_extra", C.c_uint64)]


class MapElemAttr(C.Structure):
    _fields_ = [("map_fd", C.c_uint32), ("_pad", C.c_uint32), ("key", C.c_uint64), ("value", C.c_uint64),
                ("flags", C.c_uint64)]


class MapBatchAttr(C.Structure):
    _fields_ = [("in_batch", C.c_uint64), ("out_batch", C.c_uint64), ("keys", C.c_uint64), ("values", C.c_uint64),
                ("count", C.c_uint32), ("map_fd", C.c_uint32), ("elem_flags", C.c_uint64), ("flags", C.c_uint64)]


class ProgLoadAttr(C.Structure):
    _fields_ = [("prog_type", C.c_uint32), ("insn_cnt", C.c_uint32), ("insns", C.c_uint64), ("license", C.c_uint64),
                ("log_level", C.c_uint32), ("log_size", C.c_uint32), ("log_buf", C.c_uint64),
                ("kern_version", C.c_uint32), ("prog_flags", C.c_uint32), ("prog_name", C.c_char * 16),
                ("prog_ifindex", C.c_uint32), ("expected_attach_type", C.c_uint32), ("prog_btf_fd", C.c_uint32),
                ("func_info_rec_size", C.c_uint32), ("func_info", C.c_uint64), ("func_info_cnt", C.c_uint32),
                ("line_info_rec_size", C.c_uint32), ("line_info", C.c_uint64), ("line_info_cnt", C.c_uint32),
                ("attach_btf_id", C.c_uint32), ("attach_prog_fd", C.c_uint32), ("core_relo_cnt", C.c_uint32),
                ("fd_array", C.c_uint64), ("core_relos", C.c_uint64), ("core_relo_rec_size", C.c_uint32),
                ("log_true_size", C.c_uint32)]


class TestRunAttr(C.Structure):
    _fields_ = [("prog_fd", C.c_uint32), ("retval", C.c_uint32), ("data_size_in", C.c_uint32),
                ("data_size_out", C.c_uint32), ("data_in", C.c_uint64), ("data_out", C.c_uint64),
                ("repeat", C.c_uint32), ("duration", C.c_uint32), ("ctx_size_in", C.c_uint32),
                ("ctx_size_out", C.c_uint32), ("ctx_in", C.c_uint64), ("ctx_out", C.c_uint64),
                ("flags", C.c_uint32), ("cpu", C.c_uint32), ("batch_size", C.c_uint32)]


class RawTracepointOpenAttr(C.Structure):
    """``attr.raw_tracepoint``: ``name`` NULL for a program that names its attach point (tp_btf, LSM)."""
    _fields_ = [("name", C.c_uint64), ("prog_fd", C.c_uint32), ("_pad", C.c_uint32), ("cookie", C.c_uint64)]


class InfoAttr(C.Structure):
    _fields_ = [("bpf_fd", C.c_uint32), ("info_len", C.c_uint32), ("info", C.c_uint64)]


class BtfLoadAttr(C.Structure):
    _fields_ = [("btf", C.c_uint64), ("btf_log_buf", C.c_uint64), ("btf_size", C.c_uint32),
                ("btf_log_size", C.c_uint32), ("btf_log_level", C.c_uint32), ("btf_log_true_size", C.c_uint32)]


class BpfMapInfo(C.Structure):
    _fields_ = [("type", C.c_uint32), ("id", C.c_uint32), ("key_size", C.c_uint32), ("value_size", C.c_uint32),
                ("max_entries", C.c_uint32), ("map_flags", C.c_uint32), ("name", C.c_char * 16),
                ("ifindex", C.c_uint32), ("btf_vmlinux_value_type_id", C.c_uint32), ("netns_dev", C.c_uint64),
                ("netns_ino", C.c_uint64), ("btf_id", C.c_uint32), ("btf_key_type_id", C.c_uint32),
                ("btf_value_type_id", C.c_uint32), ("btf_vmlinux_id", C.c_uint32), ("map_extra", C.c_uint64)]
