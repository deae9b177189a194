"""kmalloc as SLUB on x86-64 does it: size classes, rounding, memcg charge.

Models: mm/slub.c + include/linux/slab.h (``kmalloc_node``, ``kfree``,
``ksize``, ``kmalloc_large``), v6.18, x86-64 with 4 KiB pages.

Problem: a BPF object's cost is not its size.  kmalloc rounds up to a size
class, and with ``__GFP_ACCOUNT`` the object lands in a ``kmalloc-cg-*`` cache
whose slab also keeps one ``obj_cgroup`` pointer (8 B) per object, which is
charged too.  Measured on the reference machine (docs/measurements.md §3): charge =
class + 8 for every class up to 8 KiB.  Above ``KMALLOC_MAX_CACHE_SIZE`` (8 KiB)
kmalloc takes whole pages (``kmalloc_large``: ``PAGE_SIZE << get_order(size)``),
charged as pages with no per-object pointer.

Classes: 8 16 32 64 96 128 192 256 512 1k 2k 4k 8k (no 8-byte BPF objects
exist: the smallest bpf_mem_alloc unit is 16).

Failure injection: ``Slab.fail_after`` makes allocations fail after that many
more successes (None: never), as a way to model an exhausted system.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..sim import Machine
from .gfp import __GFP_ACCOUNT, __GFP_HIGH

_GFP_ACCOUNT = __GFP_ACCOUNT  # a class body would mangle the kernel's double-underscore name
_GFP_HIGH = __GFP_HIGH
from .memcg import MemCgroup

PAGE_SIZE = 4096
PAGE_SHIFT = 12
KMALLOC_SIZES: tuple[int, ...] = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
KMALLOC_MAX_CACHE_SIZE = 8192
OBJCG_PTR_SIZE = 8


def get_order(size: int) -> int:
    """``get_order()``: smallest order with ``PAGE_SIZE << order >= size``."""
    order = 0
    while (PAGE_SIZE << order) < size:
        order += 1
    return order


@lru_cache(maxsize=None)
def kmalloc_size_class(size: int) -> int:
    """Bytes kmalloc really hands out for a request of ``size`` (``ksize``)."""
    if size <= 0:
        raise ValueError(f"kmalloc size must be > 0, got {size}")
    if size <= KMALLOC_MAX_CACHE_SIZE:
        for c in KMALLOC_SIZES:
            if c >= size:
                return c
    return PAGE_SIZE << get_order(size)


@lru_cache(maxsize=None)
def kmalloc_charge(size: int) -> int:
    """memcg bytes charged for an accounted kmalloc of ``size``."""
    cls = kmalloc_size_class(size)
    return cls + OBJCG_PTR_SIZE if cls <= KMALLOC_MAX_CACHE_SIZE else cls


class MemObj:
    """One allocated object (slab object, page run, percpu area or vmalloc area).

    ``hdr`` is the first word of the object: while a bpf_mem_alloc object is
    free it is the llist link, while allocated (6.6+) the owning cache.
    ``payload`` carries a linked second allocation (the percpu area of a
    percpu bpf_mem_alloc object).
    """

    __slots__ = ("id", "size", "ksize", "charge", "memcg", "kind", "hdr", "payload", "freed", "fields")

    def __init__(self, oid: int, size: int, ksize: int, charge: int, memcg: MemCgroup | None, kind: str) -> None:
        self.id = oid
        self.size = size
        self.ksize = ksize
        self.charge = charge
        self.memcg = memcg
        self.kind = kind
        self.hdr: Any = None
        self.payload: MemObj | None = None
        self.freed = False
        self.fields: dict[str, Any] | None = None   # what model programs store in the object

    def __repr__(self) -> str:
        return f"obj#{self.id}"


class UseAfterFreeError(RuntimeError):
    """Double free or free of memory the model already returned."""


@dataclass(frozen=True)
class SlabStatistics:
    allocated_objects: int
    allocated_bytes: int
    kmalloc_calls: int
    kfree_calls: int
    failures: int


class Slab:
    """The kmalloc allocator of one machine."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self._next_id = 0
        self.live_objects = 0
        self.live_bytes = 0
        self.kmalloc_calls = 0
        self.kmalloc_bytes = 0
        self.kfree_calls = 0
        self.failures = 0
        self.fail_after: int | None = None

    def _new(self, size: int, ksize: int, charge: int, gfp: int, memcg: MemCgroup | None, kind: str) -> MemObj | None:
        self.kmalloc_calls += 1
        if self.fail_after is not None:
            if self.fail_after <= 0:
                self.failures += 1
                return None
            self.fail_after -= 1
        charged = memcg if (gfp & _GFP_ACCOUNT and memcg is not None) else None
        if charged is not None and not charged.try_charge(charge):
            if not gfp & _GFP_HIGH:
                self.failures += 1
                return None
            charged.force_charge(charge)                   # GFP_ATOMIC: past the limit
        self._next_id += 1
        obj = MemObj(self._next_id, size, ksize, charge if charged is not None else 0, charged, kind)
        self.live_objects += 1
        self.live_bytes += ksize
        self.kmalloc_bytes += ksize
        ins = self.m.instruments
        if ins.active:
            ins.emit("kmalloc", obj)
        return obj

    def kmalloc_node(self, size: int, gfp: int, memcg: MemCgroup | None, node: int = -1) -> MemObj | None:
        """``kmalloc_node()``; charged to ``memcg`` when ``gfp`` has __GFP_ACCOUNT."""
        ksize = kmalloc_size_class(size)
        kind = "slab" if ksize <= KMALLOC_MAX_CACHE_SIZE else "pages"
        return self._new(size, ksize, kmalloc_charge(size), gfp, memcg, kind)

    def alloc_pages(self, nbytes: int, gfp: int, memcg: MemCgroup | None, kind: str = "pages") -> MemObj | None:
        """Whole pages (``vmalloc`` areas, page runs): charged per page."""
        npages = -(-nbytes // PAGE_SIZE)
        return self._new(nbytes, npages * PAGE_SIZE, npages * PAGE_SIZE, gfp, memcg, kind)

    def alloc_raw(self, size: int, charge: int, gfp: int, memcg: MemCgroup | None, kind: str) -> MemObj | None:
        """An allocation whose charge another module computed (percpu)."""
        return self._new(size, size, charge, gfp, memcg, kind)

    # -- objects without identities: what n calls would do, in one step ---------------------------
    def kmalloc_anon(self, size: int, gfp: int, memcg: MemCgroup | None, n: int) -> int:
        """``n`` calls of ``kmalloc_node(size)`` whose objects nobody will tell apart: the number that
        succeed before the first refusal (memcg limit or ``fail_after``), with every counter, charge,
        peak and ``failcnt`` as the calls would leave them.  No instrument may be listening."""
        ksize = kmalloc_size_class(size)
        return self._new_anon(ksize, kmalloc_charge(size), gfp, memcg, n)

    def alloc_raw_anon(self, size: int, charge: int, gfp: int, memcg: MemCgroup | None, n: int) -> int:
        """``n`` calls of ``alloc_raw`` (percpu areas), likewise."""
        return self._new_anon(size, charge, gfp, memcg, n)

    def _new_anon(self, ksize: int, charge: int, gfp: int, memcg: MemCgroup | None, n: int) -> int:
        """``_new`` called up to ``n`` times, stopping at the first failure (as ``alloc_bulk`` does)."""
        if n <= 0:
            return 0
        charged = memcg if (gfp & _GFP_ACCOUNT and memcg is not None) else None
        if gfp & _GFP_HIGH and charged is not None:
            raise ValueError("counted allocations are GFP_NOWAIT refills; a forced (GFP_ATOMIC) charge goes one by one")
        fa = self.fail_after
        by_fail = n if fa is None else max(fa, 0)           # successes fail_after allows
        by_memcg = n
        if charged is not None and charge > 0:
            c: MemCgroup | None = charged
            while c is not None:
                by_memcg = min(by_memcg, max((c.limit - c.usage) // charge, 0))
                c = c.parent
        k = min(n, by_fail, by_memcg)
        refuser: MemCgroup | None = None
        if k == n:
            self.kmalloc_calls += k
            if fa is not None:
                self.fail_after = fa - k
        else:
            self.kmalloc_calls += k + 1                       # the call that failed counts too
            self.failures += 1
            if k == by_fail:                                  # fail_after is checked before the charge
                if fa is not None:
                    self.fail_after = fa - k
            else:
                if fa is not None:
                    self.fail_after = fa - k - 1
                c = charged
                after = k * charge
                while c is not None:                          # the lowest level that is full refuses
                    if c.usage + after + charge > c.limit:
                        refuser = c
                        break
                    c = c.parent
        if k and charged is not None:
            total = k * charge
            c = charged
            while c is not None:
                u = c.usage + total
                c.usage = u
                if u > c.peak:
                    c.peak = u
                c = c.parent
        if refuser is not None:
            refuser.failcnt += 1
        self.live_objects += k
        self.live_bytes += k * ksize
        self.kmalloc_bytes += k * ksize
        return k

    def kmalloc_one_anon(self, ksize: int, charge: int, memcg: MemCgroup | None) -> bool:
        """``kmalloc_anon`` of one accounted object (``ksize``/``charge`` precomputed): the same counters,
        charge and failure point, without the bulk arithmetic."""
        if self.fail_after is not None:
            return self._new_anon(ksize, charge, _GFP_ACCOUNT, memcg, 1) == 1
        self.kmalloc_calls += 1
        if memcg is not None and not memcg.try_charge(charge):
            self.failures += 1
            return False
        self.live_objects += 1
        self.live_bytes += ksize
        self.kmalloc_bytes += ksize
        return True

    def force_anon(self, ksize: int, charge: int, memcg: MemCgroup) -> None:
        """One counted object whose charge ``try_charge`` refused, forced past the limit (``__GFP_HIGH``)."""
        memcg.force_charge(charge)
        self.live_objects += 1
        self.live_bytes += ksize
        self.kmalloc_bytes += ksize

    def kfree_anon(self, ksize: int, charge: int, memcg: MemCgroup | None, n: int) -> None:
        """``n`` calls of ``kfree`` on objects of one kind (same size, charge and memcg)."""
        if n <= 0:
            return
        self.kfree_calls += n
        self.live_objects -= n
        self.live_bytes -= n * ksize
        if memcg is not None and charge:
            memcg.uncharge(n * charge)

    def kfree(self, obj: MemObj) -> None:
        """``kfree()``: uncharge and forget the object."""
        if obj.freed:
            raise UseAfterFreeError(f"double free of {obj!r}")
        obj.freed = True
        self.kfree_calls += 1
        self.live_objects -= 1
        self.live_bytes -= obj.ksize
        if obj.memcg is not None:
            obj.memcg.uncharge(obj.charge)
        ins = self.m.instruments
        if ins.active:
            ins.emit("kfree", obj)

    def statistics(self) -> SlabStatistics:
        return SlabStatistics(self.live_objects, self.live_bytes, self.kmalloc_calls, self.kfree_calls, self.failures)
