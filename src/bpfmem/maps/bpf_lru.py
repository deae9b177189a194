"""bpf_lru: the lists behind LRU hash maps, which never say "full".

Problem: a bounded cache must take a new key when it is full.  An LRU hash map
(``BPF_MAP_TYPE_LRU_HASH``, ``LRU_PERCPU_HASH``) is preallocated like a plain
hash map, but when no element is free an update *evicts* one: it takes an old
element out of the hash table and reuses it at once.  Which key goes depends
on per-CPU local lists, ref bits set by program lookups and a rotation that
looks at most ``nr_scans`` nodes — so an update can evict a key it did not
name, even the key it is updating.

Models: kernel/bpf/bpf_lru_list.c at v6.18, names verbatim.  Two layouts:

- common LRU (default): one global list with active, inactive and free lists;
  each CPU keeps a local free list and a local pending list (nodes it handed
  out), refilled ``target_free`` at a time from the global free list, else by
  shrinking the inactive list (``bpf_lru_list_pop_free_to_local``); when even
  that finds nothing, it steals from the CPUs' local lists in turn.
- per-CPU LRU (``BPF_F_NO_COMMON_LRU``): one active/inactive/free list per
  CPU; a CPU evicts only from its own list (``PERCPU_FREE_TARGET`` = 4).

``target_free`` is ``clamp(nr_elems / num_possible_cpus() / 2, 1, 128)``
since 6.16 (d4adf1c9ee77, "bpf: Adjust free target to avoid global starvation
of LRU map"); before, always ``LOCAL_FREE_TARGET`` (128).

The lists are intrusive circular doubly linked lists with sentinel heads, as
in the kernel, because eviction order depends on exactly where a node sits.
The locks are not modelled (operations run one at a time).
"""

from __future__ import annotations

from typing import Callable

BPF_LRU_LIST_T_ACTIVE, BPF_LRU_LIST_T_INACTIVE, BPF_LRU_LIST_T_FREE = 0, 1, 2
BPF_LRU_LOCAL_LIST_T_FREE, BPF_LRU_LOCAL_LIST_T_PENDING = 3, 4
NR_BPF_LRU_LIST_T, NR_BPF_LRU_LIST_COUNT, NR_BPF_LRU_LOCAL_LIST_T = 3, 2, 2
LOCAL_FREE_TARGET = 128
LOCAL_NR_SCANS = LOCAL_FREE_TARGET
PERCPU_FREE_TARGET = 4
PERCPU_NR_SCANS = PERCPU_FREE_TARGET
# sizes for the memory breakdown (x86-64): struct bpf_lru_list (3 list heads, 2 counts, a pointer, a lock,
# cache-line aligned) and struct bpf_lru_locallist (2 list heads, next_steal, a lock)
SIZEOF_BPF_LRU_LIST = 128
SIZEOF_BPF_LRU_LOCALLIST = 48


class ListHead:
    """``struct list_head``: a sentinel, or the ``list`` member of a node."""

    __slots__ = ("prev", "next")

    def __init__(self) -> None:
        self.prev: ListHead = self
        self.next: ListHead = self


class BpfLruNode(ListHead):
    """``struct bpf_lru_node`` inside a ``htab_elem``; ``owner`` is what the map hangs on it."""

    __slots__ = ("cpu", "type", "ref", "owner", "hash")

    def __init__(self, owner: object) -> None:
        super().__init__()
        self.hash = 0           # the element's hash (``lru->hash_offset``); the model's hash is the key
        self.cpu = 0
        self.type = BPF_LRU_LIST_T_FREE
        self.ref = 0
        self.owner = owner


def list_del(e: ListHead) -> None:
    e.prev.next = e.next
    e.next.prev = e.prev


def list_add(e: ListHead, head: ListHead) -> None:
    """Insert after ``head`` (at the front)."""
    nxt = head.next
    nxt.prev = e
    e.next = nxt
    e.prev = head
    head.next = e


def list_move(e: ListHead, head: ListHead) -> None:
    list_del(e)
    list_add(e, head)


def list_empty(head: ListHead) -> bool:
    return head.next is head


def reversed_nodes(head: ListHead) -> list[BpfLruNode]:
    """``list_for_each_entry_safe_reverse``: tail to head, a snapshot so nodes may move."""
    out: list[BpfLruNode] = []
    e = head.prev
    while e is not head:
        out.append(e)  # type: ignore[arg-type]
        e = e.prev
    return out


class BpfLruList:
    """``struct bpf_lru_list``: active, inactive and free lists, counts of the first two."""

    def __init__(self) -> None:
        self.lists = [ListHead() for _ in range(NR_BPF_LRU_LIST_T)]
        self.counts = [0] * NR_BPF_LRU_LIST_COUNT
        self.next_inactive_rotation: ListHead = self.lists[BPF_LRU_LIST_T_INACTIVE]


class BpfLruLocallist:
    """``struct bpf_lru_locallist``: a CPU's local free and pending lists."""

    def __init__(self, cpu: int) -> None:
        self.free = ListHead()
        self.pending = ListHead()
        self.next_steal = cpu


class BpfLru:
    """``struct bpf_lru`` (``bpf_lru_init``): ``del_from_htab(node)`` takes a node's element out of the
    hash table and says whether it could (``htab_lru_map_delete_node``)."""

    def __init__(self, ncpus: int, percpu: bool, del_from_htab: Callable[[BpfLruNode], bool]) -> None:
        self.ncpus = ncpus
        self.percpu = percpu
        self.del_from_htab = del_from_htab
        if percpu:
            self.percpu_lru = [BpfLruList() for _ in range(ncpus)]
            self.nr_scans = PERCPU_NR_SCANS
        else:
            self.common_lru = BpfLruList()
            self.local_list = [BpfLruLocallist(cpu) for cpu in range(ncpus)]
            self.nr_scans = LOCAL_NR_SCANS
        self.target_free = LOCAL_FREE_TARGET

    # -- moving nodes ---------------------------------------------------------------------------
    @staticmethod
    def _count_inc(l: BpfLruList, t: int) -> None:
        if t < NR_BPF_LRU_LIST_COUNT:
            l.counts[t] += 1

    @staticmethod
    def _count_dec(l: BpfLruList, t: int) -> None:
        if t < NR_BPF_LRU_LIST_COUNT:
            l.counts[t] -= 1

    def __bpf_lru_node_move_to_free(self, l: BpfLruList, node: BpfLruNode, free_list: ListHead,
                                    tgt_free_type: int) -> None:
        if node is l.next_inactive_rotation:
            l.next_inactive_rotation = node.prev
        self._count_dec(l, node.type)
        node.type = tgt_free_type
        list_move(node, free_list)

    def __bpf_lru_node_move_in(self, l: BpfLruList, node: BpfLruNode, tgt_type: int) -> None:
        self._count_inc(l, tgt_type)
        node.type = tgt_type
        node.ref = 0
        list_move(node, l.lists[tgt_type])

    def __bpf_lru_node_move(self, l: BpfLruList, node: BpfLruNode, tgt_type: int) -> None:
        if node.type != tgt_type:
            self._count_dec(l, node.type)
            self._count_inc(l, tgt_type)
            node.type = tgt_type
        node.ref = 0
        if node is l.next_inactive_rotation:
            l.next_inactive_rotation = node.prev
        list_move(node, l.lists[tgt_type])

    # -- rotation and shrinking ---------------------------------------------------------------
    def __bpf_lru_list_rotate_active(self, l: BpfLruList) -> None:
        active = l.lists[BPF_LRU_LIST_T_ACTIVE]
        first_node = active.next
        i = 0
        for node in reversed_nodes(active):
            self.__bpf_lru_node_move(l, node, BPF_LRU_LIST_T_ACTIVE if node.ref else BPF_LRU_LIST_T_INACTIVE)
            i += 1
            if i == self.nr_scans or node is first_node:
                break

    def __bpf_lru_list_rotate_inactive(self, l: BpfLruList) -> None:
        inactive = l.lists[BPF_LRU_LIST_T_INACTIVE]
        if list_empty(inactive):
            return
        last = l.next_inactive_rotation.next
        if last is inactive:
            last = last.next
        cur = l.next_inactive_rotation
        nxt = cur
        i = 0
        while i < self.nr_scans:
            if cur is inactive:
                cur = cur.prev
                continue
            nxt = cur.prev
            if cur.ref:  # type: ignore[attr-defined]
                self.__bpf_lru_node_move(l, cur, BPF_LRU_LIST_T_ACTIVE)  # type: ignore[arg-type]
            if cur is last:
                break
            cur = nxt
            i += 1
        l.next_inactive_rotation = nxt

    def __bpf_lru_list_shrink_inactive(self, l: BpfLruList, tgt_nshrink: int, free_list: ListHead,
                                       tgt_free_type: int) -> int:
        nshrinked = i = 0
        for node in reversed_nodes(l.lists[BPF_LRU_LIST_T_INACTIVE]):
            if node.ref:
                self.__bpf_lru_node_move(l, node, BPF_LRU_LIST_T_ACTIVE)
            elif self.del_from_htab(node):
                self.__bpf_lru_node_move_to_free(l, node, free_list, tgt_free_type)
                nshrinked += 1
                if nshrinked == tgt_nshrink:
                    break
            i += 1
            if i == self.nr_scans:
                break
        return nshrinked

    def __bpf_lru_list_rotate(self, l: BpfLruList) -> None:
        if l.counts[BPF_LRU_LIST_T_INACTIVE] < l.counts[BPF_LRU_LIST_T_ACTIVE]:    # bpf_lru_list_inactive_low
            self.__bpf_lru_list_rotate_active(l)
        self.__bpf_lru_list_rotate_inactive(l)

    def __bpf_lru_list_shrink(self, l: BpfLruList, tgt_nshrink: int, free_list: ListHead, tgt_free_type: int) -> int:
        """Shrink unreferenced inactive nodes; failing that, force one off inactive (else active)."""
        n = self.__bpf_lru_list_shrink_inactive(l, tgt_nshrink, free_list, tgt_free_type)
        if n:
            return n
        inactive = l.lists[BPF_LRU_LIST_T_INACTIVE]
        force = inactive if not list_empty(inactive) else l.lists[BPF_LRU_LIST_T_ACTIVE]
        for node in reversed_nodes(force):
            if self.del_from_htab(node):
                self.__bpf_lru_node_move_to_free(l, node, free_list, tgt_free_type)
                return 1
        return 0

    # -- common LRU ---------------------------------------------------------------------------
    def __local_list_flush(self, l: BpfLruList, loc_l: BpfLruLocallist) -> None:
        for node in reversed_nodes(loc_l.pending):
            self.__bpf_lru_node_move_in(l, node, BPF_LRU_LIST_T_ACTIVE if node.ref else BPF_LRU_LIST_T_INACTIVE)

    def bpf_lru_list_pop_free_to_local(self, loc_l: BpfLruLocallist) -> None:
        l = self.common_lru
        self.__local_list_flush(l, loc_l)
        self.__bpf_lru_list_rotate(l)
        nfree = 0
        free = l.lists[BPF_LRU_LIST_T_FREE]
        e = free.next
        while e is not free:
            nxt = e.next
            self.__bpf_lru_node_move_to_free(l, e, loc_l.free, BPF_LRU_LOCAL_LIST_T_FREE)  # type: ignore[arg-type]
            nfree += 1
            if nfree == self.target_free:
                break
            e = nxt
        if nfree < self.target_free:
            self.__bpf_lru_list_shrink(l, self.target_free - nfree, loc_l.free, BPF_LRU_LOCAL_LIST_T_FREE)

    @staticmethod
    def __local_list_add_pending(loc_l: BpfLruLocallist, cpu: int, node: BpfLruNode) -> None:
        node.cpu = cpu
        node.type = BPF_LRU_LOCAL_LIST_T_PENDING
        node.ref = 0
        list_add(node, loc_l.pending)

    @staticmethod
    def __local_list_pop_free(loc_l: BpfLruLocallist) -> BpfLruNode | None:
        if list_empty(loc_l.free):
            return None
        node: BpfLruNode = loc_l.free.next  # type: ignore[assignment]
        list_del(node)
        return node

    def __local_list_pop_pending(self, loc_l: BpfLruLocallist) -> BpfLruNode | None:
        for force in (False, True):
            for node in reversed_nodes(loc_l.pending):
                if (not node.ref or force) and self.del_from_htab(node):
                    list_del(node)
                    return node
        return None

    def bpf_common_lru_pop_free(self, cpu: int) -> BpfLruNode | None:
        loc_l = self.local_list[cpu]
        node = self.__local_list_pop_free(loc_l)
        if node is None:
            self.bpf_lru_list_pop_free_to_local(loc_l)
            node = self.__local_list_pop_free(loc_l)
        if node is not None:
            self.__local_list_add_pending(loc_l, cpu, node)
            return node
        # steal from the local free/pending lists of every CPU, round robin from next_steal
        first_steal = steal = loc_l.next_steal
        while True:
            steal_loc_l = self.local_list[steal]
            node = self.__local_list_pop_free(steal_loc_l)
            if node is None:
                node = self.__local_list_pop_pending(steal_loc_l)
            steal = (steal + 1) % self.ncpus        # get_next_cpu()
            if node is not None or steal == first_steal:
                break
        loc_l.next_steal = steal
        if node is not None:
            self.__local_list_add_pending(loc_l, cpu, node)
        return node

    def bpf_common_lru_push_free(self, node: BpfLruNode) -> None:
        if node.type == BPF_LRU_LOCAL_LIST_T_PENDING:
            node.type = BPF_LRU_LOCAL_LIST_T_FREE
            node.ref = 0
            list_move(node, self.local_list[node.cpu].free)
            return
        self.__bpf_lru_node_move(self.common_lru, node, BPF_LRU_LIST_T_FREE)    # bpf_lru_list_push_free

    # -- per-CPU LRU --------------------------------------------------------------------------
    def bpf_percpu_lru_pop_free(self, cpu: int) -> BpfLruNode | None:
        l = self.percpu_lru[cpu]
        self.__bpf_lru_list_rotate(l)
        free_list = l.lists[BPF_LRU_LIST_T_FREE]
        if list_empty(free_list):
            self.__bpf_lru_list_shrink(l, PERCPU_FREE_TARGET, free_list, BPF_LRU_LIST_T_FREE)
        if list_empty(free_list):
            return None
        node: BpfLruNode = free_list.next  # type: ignore[assignment]
        node.ref = 0
        self.__bpf_lru_node_move(l, node, BPF_LRU_LIST_T_INACTIVE)
        return node

    def bpf_percpu_lru_push_free(self, node: BpfLruNode) -> None:
        self.__bpf_lru_node_move(self.percpu_lru[node.cpu], node, BPF_LRU_LIST_T_FREE)

    # -- the API hashtab.c uses ---------------------------------------------------------------
    def bpf_lru_pop_free(self, cpu: int) -> BpfLruNode | None:
        """``bpf_lru_pop_free()``: a free node for ``cpu``, evicting if needed; None when nothing is left."""
        return self.bpf_percpu_lru_pop_free(cpu) if self.percpu else self.bpf_common_lru_pop_free(cpu)

    def bpf_lru_push_free(self, node: BpfLruNode) -> None:
        """``bpf_lru_push_free()``: a node back to where it came from."""
        if self.percpu:
            self.bpf_percpu_lru_push_free(node)
        else:
            self.bpf_common_lru_push_free(node)

    def bpf_lru_populate(self, nodes: list[BpfLruNode], scaled_target: bool = True) -> None:
        """``bpf_lru_populate()``: every node on a free list.  ``scaled_target``: 6.16+ (d4adf1c9ee77)
        sets ``target_free`` from the map size; before, it stays ``LOCAL_FREE_TARGET``."""
        if self.percpu:                         # bpf_percpu_lru_populate: equal runs, one per CPU
            pcpu_entries = len(nodes) // self.ncpus
            for i, node in enumerate(nodes):
                cpu = min(i // max(pcpu_entries, 1), self.ncpus - 1)
                node.cpu, node.type, node.ref = cpu, BPF_LRU_LIST_T_FREE, 0
                list_add(node, self.percpu_lru[cpu].lists[BPF_LRU_LIST_T_FREE])
            return
        for node in nodes:                      # bpf_common_lru_populate
            node.type, node.ref = BPF_LRU_LIST_T_FREE, 0
            list_add(node, self.common_lru.lists[BPF_LRU_LIST_T_FREE])
        if scaled_target:
            self.target_free = min(max(len(nodes) // self.ncpus // 2, 1), LOCAL_FREE_TARGET)

    def sizeof(self) -> int:
        """Bytes of the per-CPU list heads (``alloc_percpu`` in ``bpf_lru_init``)."""
        return self.ncpus * (SIZEOF_BPF_LRU_LIST if self.percpu else SIZEOF_BPF_LRU_LOCALLIST)
