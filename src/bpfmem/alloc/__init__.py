"""bpf_mem_alloc and its version profiles."""

from .memalloc import (BpfMemAlloc, BpfMemCache, BpfMemCacheStatistics, ModelInvariantError, alloc_bulk,
                       bpf_mem_alloc, bpf_mem_alloc_destroy, bpf_mem_alloc_init, bpf_mem_cache_alloc,
                       bpf_mem_cache_free, bpf_mem_cache_free_rcu, bpf_mem_free, bpf_mem_free_rcu, bpf_mem_refill,
                       check_free_by_rcu, do_call_rcu_ttrace, free_bulk, unit_alloc, unit_free, unit_free_rcu)
from .policy import (PROFILES, V6_1, V6_2, V6_6, V6_7, V6_8, KernelWatermarks, MemAllocProfile, WatermarkPolicy,
                     get_profile)
from .sizes import LLIST_NODE_SZ, NUM_CACHES, bpf_mem_alloc_check_size, bpf_mem_cache_idx, sizes

__all__ = [
    "BpfMemAlloc", "BpfMemCache", "BpfMemCacheStatistics", "ModelInvariantError", "alloc_bulk", "bpf_mem_alloc",
    "bpf_mem_alloc_destroy", "bpf_mem_alloc_init", "bpf_mem_cache_alloc", "bpf_mem_cache_free",
    "bpf_mem_cache_free_rcu", "bpf_mem_free", "bpf_mem_free_rcu", "bpf_mem_refill", "check_free_by_rcu", "do_call_rcu_ttrace",
    "free_bulk", "unit_alloc", "unit_free", "unit_free_rcu", "PROFILES", "V6_1", "V6_2", "V6_6", "V6_7", "V6_8",
    "KernelWatermarks", "MemAllocProfile", "WatermarkPolicy", "get_profile", "LLIST_NODE_SZ", "NUM_CACHES",
    "bpf_mem_alloc_check_size", "bpf_mem_cache_idx", "sizes",
]
