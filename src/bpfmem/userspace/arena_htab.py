"""The seed's example: a hash table with linked-list buckets living in an arena.

Layout of the kernel selftests (bpf_arena_htab.h, bpf_arena_list.h); every
pointer is 8 bytes in memory and holds the *user* form::

    struct htab             { u64 buckets; s32 n_buckets; }
    struct htab_bucket      { u64 first; }                    /* arena_list_head */
    struct hashtab_elem     { s32 hash; s32 key; s32 value; s32 pad;
                              u64 next; u64 pprev; }          /* arena_list_node */

The same code runs as a BPF program (``BpfSide``: 32-bit pointers, casts on
store) or as user space (``UserSide``: 64-bit pointers), so a table built by
one side is read by the other.
"""

from __future__ import annotations

import ctypes as C
from typing import Iterator

from .arena_api import PAGE_SIZE, PageFragAllocator, Side, load_struct, store_struct


class Htab(C.Structure):
    _fields_ = [("buckets", C.c_uint64), ("n_buckets", C.c_int32), ("_pad", C.c_int32)]


class HtabElem(C.Structure):
    _fields_ = [("hash", C.c_int32), ("key", C.c_int32), ("value", C.c_int32), ("_pad", C.c_int32),
                ("next", C.c_uint64), ("pprev", C.c_uint64)]


NEXT_OFF = HtabElem.next.offset  # type: ignore[attr-defined]


def htab_hash(key: int) -> int:
    """``htab_hash()`` of the selftests: the key itself."""
    return key & 0x7FFF_FFFF


class ArenaHtab:
    """A hash table in an arena, operated by one ``Side``."""

    def __init__(self, side: Side, alloc: PageFragAllocator, ptr: int) -> None:
        self.side, self.alloc, self.ptr = side, alloc, ptr

    @classmethod
    def create(cls, side: Side, alloc: PageFragAllocator, n_buckets: int) -> ArenaHtab:
        """``htab_init()``: the struct from the allocator, the bucket array from whole pages."""
        ptr = alloc.alloc(C.sizeof(Htab))
        if not ptr:
            raise MemoryError("arena full: cannot allocate struct htab")
        pages = -(-n_buckets * 8 // PAGE_SIZE)
        buckets = side.alloc_pages(pages)
        if not buckets:
            raise MemoryError("arena full: cannot allocate the bucket array")
        side.write(buckets, bytes(n_buckets * 8))
        store_struct(side, ptr, Htab(side.stored(buckets), n_buckets, 0))
        return cls(side, alloc, ptr)

    def _htab(self) -> Htab:
        return load_struct(self.side, Htab, self.ptr)

    def _bucket(self, h: Htab, hash_: int) -> int:
        return self.side.loaded(h.buckets) + (hash_ % h.n_buckets) * 8

    def _first(self, head: int) -> int:
        return self.side.loaded(int.from_bytes(self.side.read(head, 8), "little"))

    def _find(self, head: int, key: int) -> int:
        node = self._first(head)
        while node:
            e = load_struct(self.side, HtabElem, node)
            if e.key == key:
                return node
            node = self.side.loaded(e.next)
        return 0

    def update(self, key: int, value: int) -> None:
        """``htab_update_elem()``: replace the value or add an element at the bucket head."""
        side = self.side
        head = self._bucket(self._htab(), htab_hash(key))
        node = self._find(head, key)
        if node:
            e = load_struct(side, HtabElem, node)
            e.value = value
            store_struct(side, node, e)
            return
        node = self.alloc.alloc(C.sizeof(HtabElem))
        if not node:
            raise MemoryError("arena full: cannot allocate an element")
        first = self._first(head)
        store_struct(side, node, HtabElem(htab_hash(key), key, value, 0, side.stored(first), side.stored(head)))
        if first:                                     # first->pprev = &node->next
            side.write(first + HtabElem.pprev.offset,  # type: ignore[attr-defined]
                       side.stored(node + NEXT_OFF).to_bytes(8, "little"))
        side.write(head, side.stored(node).to_bytes(8, "little"))

    def lookup(self, key: int) -> int | None:
        node = self._find(self._bucket(self._htab(), htab_hash(key)), key)
        return load_struct(self.side, HtabElem, node).value if node else None

    def delete(self, key: int) -> bool:
        """Unlink (``*pprev = next; next->pprev = pprev``) and free the element."""
        side = self.side
        node = self._find(self._bucket(self._htab(), htab_hash(key)), key)
        if not node:
            return False
        e = load_struct(side, HtabElem, node)
        side.write(side.loaded(e.pprev), e.next.to_bytes(8, "little"))
        if e.next:
            side.write(side.loaded(e.next) + HtabElem.pprev.offset,  # type: ignore[attr-defined]
                       e.pprev.to_bytes(8, "little"))
        self.alloc.free(node)
        return True

    def items(self) -> Iterator[tuple[int, int]]:
        """Every (key, value), following the pointers bucket by bucket."""
        h = self._htab()
        base = self.side.loaded(h.buckets)
        for b in range(h.n_buckets):
            node = self._first(base + b * 8)
            while node:
                e = load_struct(self.side, HtabElem, node)
                yield e.key, e.value
                node = self.side.loaded(e.next)
