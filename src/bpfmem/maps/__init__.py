"""BPF maps built on the allocators."""

from .base import (BPF_ANY, BPF_EXIST, BPF_F_NO_PREALLOC, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH,
                   BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_NOEXIST, E2BIG, EEXIST, EINVAL, ENOENT,
                   ENOMEM, ENOTSUPP, EPERM, ERRNO_NAMES, ROOT, BpfError, Creds, MapAttr, bpf_map_area_alloc,
                   bpf_obj_name_cpy, check_attr_range, map_create_check, map_create_prologue)
from .htab import (BpfHtab, HtabStatistics, htab_map_alloc_check, htab_map_alloc_limits, htab_map_create_check)

__all__ = ["BPF_ANY", "BPF_EXIST", "BPF_F_NO_PREALLOC", "BPF_MAP_TYPE_HASH", "BPF_MAP_TYPE_LRU_HASH",
           "BPF_MAP_TYPE_LRU_PERCPU_HASH", "BPF_MAP_TYPE_PERCPU_HASH", "BPF_NOEXIST", "E2BIG", "EEXIST", "EINVAL",
           "ENOENT", "ENOMEM", "ENOTSUPP", "EPERM", "ERRNO_NAMES", "ROOT", "BpfError", "Creds", "MapAttr",
           "bpf_map_area_alloc", "bpf_obj_name_cpy", "check_attr_range", "map_create_check", "map_create_prologue",
           "BpfHtab", "HtabStatistics", "htab_map_alloc_check", "htab_map_alloc_limits", "htab_map_create_check"]
