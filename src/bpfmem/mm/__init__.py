"""Memory management: kmalloc size classes, percpu, pages, memcg."""

from dataclasses import dataclass

from ..sim import Machine
from .gfp import GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT, GFP_USER, __GFP_ACCOUNT, __GFP_NORETRY, __GFP_NOWARN, __GFP_ZERO
from .memcg import PAGE_COUNTER_MAX, ActiveMemcg, MemCgroup, MemcgStatistics
from .percpu import PCPU_MIN_UNIT_SIZE, Percpu, pcpu_obj_full_size
from .slab import (KMALLOC_MAX_CACHE_SIZE, KMALLOC_SIZES, OBJCG_PTR_SIZE, PAGE_SIZE, MemObj, Slab, SlabStatistics,
                   UseAfterFreeError, get_order, kmalloc_charge, kmalloc_size_class)


@dataclass(frozen=True)
class MmStatistics:
    slab: SlabStatistics
    root: MemcgStatistics


class Mm:
    """The memory of one machine: slab ledger, percpu allocator, memcg root."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.slab = Slab(machine)
        self.percpu = Percpu(machine, self.slab)
        self.root_memcg = MemCgroup("/")
        self.root_memcg.instruments = machine.instruments
        self.memcg_ctx = ActiveMemcg(machine.num_possible_cpus(), self.root_memcg)

    def statistics(self) -> MmStatistics:
        return MmStatistics(self.slab.statistics(), self.root_memcg.statistics())


__all__ = [
    "GFP_ATOMIC", "GFP_KERNEL", "GFP_NOWAIT", "GFP_USER", "__GFP_ACCOUNT", "__GFP_NORETRY", "__GFP_NOWARN",
    "__GFP_ZERO", "PAGE_COUNTER_MAX", "ActiveMemcg", "MemCgroup", "MemcgStatistics", "PCPU_MIN_UNIT_SIZE", "Percpu",
    "pcpu_obj_full_size", "KMALLOC_MAX_CACHE_SIZE", "KMALLOC_SIZES", "OBJCG_PTR_SIZE", "PAGE_SIZE", "MemObj", "Slab",
    "SlabStatistics", "UseAfterFreeError", "get_order", "kmalloc_charge", "kmalloc_size_class", "Mm", "MmStatistics",
]
