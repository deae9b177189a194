"""BPF maps built on the allocators."""

from .base import (BPF_ANY, BPF_EXIST, BPF_F_NO_PREALLOC, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_NOEXIST,
                   E2BIG, EEXIST, EINVAL, ENOENT, ENOMEM, ERRNO_NAMES, BpfError, MapAttr, bpf_map_area_alloc)
from .htab import BpfHtab, HtabStatistics, htab_map_alloc_check

__all__ = ["BPF_ANY", "BPF_EXIST", "BPF_F_NO_PREALLOC", "BPF_MAP_TYPE_HASH", "BPF_MAP_TYPE_PERCPU_HASH",
           "BPF_NOEXIST", "E2BIG", "EEXIST", "EINVAL", "ENOENT", "ENOMEM", "ERRNO_NAMES", "BpfError", "MapAttr",
           "bpf_map_area_alloc", "BpfHtab", "HtabStatistics", "htab_map_alloc_check"]
