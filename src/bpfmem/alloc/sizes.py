"""Size classes of the ``size == 0`` bpf_mem_alloc (bpf_obj_new's allocator).

Models: kernel/bpf/memalloc.c ``sizes[]``, ``size_index[]`` and
``bpf_mem_cache_idx()``, v6.2+ (with Hou Tao's off-by-one fix 36024d023d13,
backported to 6.1.y; v6.1 as released used ``fls(size - 1) - 1``).

``size`` includes the 8-byte llist header.  Index 0 and 1 are 96 and 192 so
the table can mirror kmalloc's.
"""

from __future__ import annotations

NUM_CACHES = 11
LLIST_NODE_SZ = 8
BPF_MEM_ALLOC_SIZE_MAX = 4096
sizes: tuple[int, ...] = (96, 192, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)

# size_index[(size - 1) / 8] + 1 is the kmalloc-style index for size <= 192.
size_index: tuple[int, ...] = (
    3,  # 8
    3,  # 16
    4,  # 24
    4,  # 32
    5, 5, 5, 5,  # 40..64
    1, 1, 1, 1,  # 72..96
    6, 6, 6, 6,  # 104..128
    2, 2, 2, 2, 2, 2, 2, 2,  # 136..192
)


def fls(x: int) -> int:
    """Find last set bit, 1-based (``fls(1) == 1``, ``fls(0) == 0``)."""
    return x.bit_length()


def bpf_mem_cache_idx(size: int, *, v61_off_by_one: bool = False) -> int:
    """``bpf_mem_cache_idx()``: cache index for ``size`` bytes, or -1."""
    if size == 0 or size > BPF_MEM_ALLOC_SIZE_MAX:
        return -1
    if size <= 192:
        return size_index[(size - 1) // 8] - 1
    return fls(size - 1) - (1 if v61_off_by_one else 2)


def bpf_mem_alloc_check_size(percpu: bool, size: int) -> int:
    """``bpf_mem_alloc_check_size()`` (≈6.7): 0 or -E2BIG."""
    if percpu and size > BPF_MEM_ALLOC_SIZE_MAX:
        return -7
    if not percpu and size > BPF_MEM_ALLOC_SIZE_MAX - LLIST_NODE_SZ:
        return -7
    return 0
