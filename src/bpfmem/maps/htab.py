"""BPF hash maps: where their elements come from and where they go.

Models: kernel/bpf/hashtab.c @ v6.18 (``htab_map_alloc``,
``htab_map_update_elem``, ``htab_map_delete_elem``, ``alloc_htab_elem``,
``free_htab_elem``, ``is_map_full``, ``htab_map_mem_usage``,
``htab_map_free``), with element storage as a strategy:

- ``MemAllocElems`` (``BPF_F_NO_PREALLOC``, 6.1+): elements from
  ``bpf_mem_alloc`` (``htab->ma``; percpu values from ``htab->pcpu_ma``),
  freed with ``bpf_mem_cache_free`` (reusable at once) or, as a proposal,
  ``bpf_mem_cache_free_rcu``.
- ``PreallocElems`` (default flags): ``max_entries + num_possible_cpus()``
  elements in one ``bpf_map_area_alloc``, a ``pcpu_freelist`` and one spare
  element per CPU (``extra_elems``) swapped in on update-replace.
- ``LruElems`` (LRU types, always preallocated): ``max_entries`` elements on
  a ``bpf_lru`` (maps/bpf_lru.py); a full map evicts instead of failing.
- ``KmallocRcuElems`` (``BPF_F_NO_PREALLOC`` before 6.1): one
  ``bpf_map_kmalloc_node(GFP_NOWAIT)`` per element, ``call_rcu`` + kfree on
  free.

Element: ``struct htab_elem`` (48 B) + round_up(key, 8) + round_up(value, 8)
(8 for the percpu pointer of percpu maps).  Update of an existing key of a
``BPF_MAP_TYPE_HASH`` builds a new element and frees the old one after the
bucket unlock; a ``BPF_MAP_TYPE_PERCPU_HASH`` copies the value in place
(``__htab_percpu_map_update_elem``, ``pcpu_copy_value``): no alloc, no free.

Creation refuses exactly what the kernel refuses, with its errno and in its
order (``map_create_prologue`` with ``htab_map_alloc_check``, then
``htab_map_alloc_limits``, the allocations, ``bpf_obj_name_cpy``);
``htab_map_create_check`` is the same without allocating.

Deviations: buckets are not modelled one by one (a dict finds keys; the bucket
array is charged exactly); hashing,
special fields (timers, kptrs) and rqspinlock failures are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Callable, Protocol, Sequence

from ..alloc import (V6_6, BpfMemAlloc, BpfMemCache, MemAllocProfile, bpf_mem_alloc_destroy, bpf_mem_alloc_init,
                     bpf_mem_cache_alloc, bpf_mem_cache_free, bpf_mem_cache_free_rcu)
from ..alloc.memalloc import (QUIET_FOREVER, quiet_allocs, quiet_free_rcus, quiet_frees, quiet_replaces,
                              unit_alloc_run, unit_free_rcu_run, unit_free_run, unit_replace_run)
from ..alloc.percpu_freelist import PcpuFreelist
from ..mm import (GFP_NOWAIT, __GFP_ACCOUNT, __GFP_NOWARN, MemCgroup, MemObj, Mm, kmalloc_charge, kmalloc_size_class,
                  pcpu_obj_full_size)
from ..rcu import Rcu, call_rcu, rcu_barrier
from ..sim import Cpu, Machine
from .bpf_lru import BpfLru, BpfLruNode
from .batch import delete_runs, runs_allowed, update_runs
from .base import (BPF_EXIST, BPF_F_ACCESS_MASK, BPF_F_LOCK, BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC,
                   BPF_F_NUMA_NODE, BPF_F_ZERO_SEED, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH,
                   BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_NOEXIST, E2BIG, EEXIST, EINVAL, ENOENT,
                   ENOMEM, ENOTSUPP, EPERM, NUMA_NO_NODE, PAGE_SIZE, ROOT, BpfError, Creds, MapAttr,
                   bpf_map_area_alloc, bpf_map_area_free, bpf_map_attr_numa_node, bpf_map_flags_access_ok,
                   bpf_obj_name_cpy, map_create_prologue, round_up, roundup_pow_of_two)

SIZEOF_HTAB_ELEM = 48
# sizeof(struct bpf_htab) depends on the build (it embeds struct bpf_map): 896 B on this machine kind's
# 6.18.44 kernel (BTF; struct bpf_map 296 B), 832 B on the build measured first (struct bpf_map 232 B).
SIZEOF_BPF_HTAB = 896
SIZEOF_BUCKET = 16
HASHTAB_MAP_LOCK_COUNT = 8
LLIST_NODE_SZ = 8
KMALLOC_MAX_SIZE = 1 << 22  # x86-64: 4 MiB (order-10 pages)
PCPU_MIN_UNIT_SIZE = 32 << 10
U32_MAX = (1 << 32) - 1
HTAB_CREATE_FLAG_MASK = (BPF_F_NO_PREALLOC | BPF_F_NO_COMMON_LRU | BPF_F_NUMA_NODE | BPF_F_ACCESS_MASK
                         | BPF_F_ZERO_SEED)   # 0x1DF
HTAB_MAP_TYPES = (BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH)

_NOWAIT_ACCOUNT = GFP_NOWAIT | __GFP_NOWARN | __GFP_ACCOUNT


class ElemStore(Protocol):
    """Where a hash map's elements come from and go back to."""

    def alloc(self, htab: BpfHtab, cpu: Cpu, old: MemObj | None) -> MemObj | int: ...
    def after_replace(self, htab: BpfHtab, cpu: Cpu, old: MemObj) -> None: ...
    def free(self, htab: BpfHtab, cpu: Cpu, elem: MemObj) -> None: ...
    def breakdown(self, htab: BpfHtab) -> dict[str, int]: ...
    def destroy(self, htab: BpfHtab) -> None: ...
    def signature(self, cpus: Sequence[int]) -> tuple[object, ...] | None: ...

    # runs of quiet keys (maps/batch.py); only stores with ``runs`` True are asked
    runs: bool
    def quiet_replaces(self, cpu: Cpu) -> int: ...
    def quiet_news(self, cpu: Cpu) -> int: ...
    def quiet_deletes(self, cpu: Cpu) -> int: ...
    def replace_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> int: ...
    def new_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> int: ...
    def delete_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> None: ...


def ma_object_bytes(ma: BpfMemAlloc, ncpus: int) -> tuple[int, int]:
    """(payload, charge) of one object of fixed-size allocator ``ma``."""
    c = ma.all_caches()[0]
    if c.percpu_size:
        return (c.percpu_size + c.unit_size * ncpus,
                kmalloc_charge(c.percpu_size) + pcpu_obj_full_size(c.unit_size, ncpus))
    return c.unit_size, kmalloc_charge(c.unit_size)


def cache_breakdown(ma: BpfMemAlloc, live: int, ncpus: int, prefix: str = "") -> dict[str, int]:
    """Payload bytes of ``live`` in-use objects and of each list of ``ma``
    (free_llist per CPU), plus ``slab_rounding``: what slab and memcg add."""
    payload, charge = ma_object_bytes(ma, ncpus)
    out: dict[str, int] = {prefix + "live": live * payload}
    names = ma.profile.list_names
    nobj = live
    for c in ma.all_caches():
        for name, lst in c.lists().items():
            key = f"{prefix}{name}/cpu{c.cpu.id}" if name == "free_llist" else prefix + names.get(name, name)
            out[key] = out.get(key, 0) + len(lst) * payload
            nobj += len(lst)
    out[prefix + "slab_rounding"] = nobj * (charge - payload)
    return out


class MemAllocElems:
    """``BPF_F_NO_PREALLOC`` on bpf_mem_alloc (6.1+)."""

    def __init__(self, htab: BpfHtab, profile: MemAllocProfile, free_rcu: bool = False,
                 delayed_free: bool = False) -> None:
        self.ma = BpfMemAlloc(htab.m, htab.mm, htab.rcu, profile)
        self.pcpu_ma: BpfMemAlloc | None = None
        self.free_rcu = free_rcu
        # RFC v3 5/6 "delayed_free" (a benchmark knob, never merged): each element waits for its own
        # call_rcu() before bpf_mem_cache_free(), as bpf_cpumask did in 6.4-6.5
        self.delayed_free = delayed_free
        self.pending_rcu = 0
        # counted objects: consecutive call_rcu()s of one CPU share one queue entry (call_coalesced); the
        # elements wait in order, per CPU, for their callback
        self._delayed: dict[int, list[MemObj]] = {}
        self._delayed_batch: dict[int, object] = {}
        if free_rcu and not profile.has_free_rcu:
            raise ValueError(f"bpf_mem_cache_free_rcu needs profile v6.6 or later, not {profile.name}")
        objcg = htab.memcg
        bpf_mem_alloc_init(self.ma, htab.elem_size, False, objcg)
        if htab.percpu:
            self.pcpu_ma = BpfMemAlloc(htab.m, htab.mm, htab.rcu, type(profile)())
            bpf_mem_alloc_init(self.pcpu_ma, round_up(htab.attr.value_size, 8), True, objcg)
        # runs of quiet keys need counted objects and the kernel's free_rcu (not the planted reuse);
        # delayed_free runs call by call
        self.runs = self.ma.anon and (not free_rcu or profile.free_rcu_waits_for_gp) and not delayed_free

    def alloc(self, htab: BpfHtab, cpu: Cpu, old: MemObj | None) -> MemObj | int:
        if old is None and htab.count >= htab.attr.max_entries:   # is_map_full()
            return -E2BIG
        htab.count += 1                                            # inc_elem_count()
        l_new = bpf_mem_cache_alloc(self.ma, cpu)
        if l_new is None:
            htab.count -= 1
            return -ENOMEM
        if self.pcpu_ma is not None:
            pptr = bpf_mem_cache_alloc(self.pcpu_ma, cpu)
            if pptr is None:
                bpf_mem_cache_free(self.ma, cpu, l_new)
                htab.count -= 1
                return -ENOMEM
            if not self.ma.anon:
                l_new.payload = pptr  # l->ptr_to_pptr (without identities: pcpu_ma's cache of this CPU)
        return l_new

    # -- runs of quiet keys (maps/batch.py) ----------------------------------------
    def _caches(self, cpu: Cpu) -> tuple[BpfMemCache, BpfMemCache | None]:
        pc = self.pcpu_ma.cache[cpu.id] if self.pcpu_ma is not None else None  # type: ignore[index]
        return self.ma.cache[cpu.id], pc  # type: ignore[index]

    def quiet_replaces(self, cpu: Cpu) -> int:
        """Updates of present keys in a row on ``cpu`` where neither allocator acts."""
        c, pc = self._caches(cpu)
        m = quiet_replaces(c, self.free_rcu)
        return m if pc is None else min(m, quiet_replaces(pc, self.free_rcu))

    def quiet_news(self, cpu: Cpu) -> int:
        """Updates of absent keys in a row on ``cpu`` where neither allocator acts."""
        c, pc = self._caches(cpu)
        m = quiet_allocs(c)
        return m if pc is None else min(m, quiet_allocs(pc))

    def quiet_deletes(self, cpu: Cpu) -> int:
        """Deletes of present keys in a row on ``cpu`` where neither allocator acts."""
        c, pc = self._caches(cpu)
        q = quiet_free_rcus if self.free_rcu else quiet_frees
        m = q(c)
        return m if pc is None else min(m, q(pc))

    def _pptrs(self, elems: list[BpfMemCache]) -> list[BpfMemCache]:
        caches = self.pcpu_ma.cache  # type: ignore[union-attr]
        return [caches[e.cpu.id] for e in elems]  # type: ignore[index]

    def replace_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> int:
        """``htab_map_update_elem`` of present keys, each quiet: ``alloc_htab_elem`` then
        ``free_htab_elem(l_old)`` per key, as counts."""
        table = htab.table
        olds = list(map(table.__getitem__, keys))
        c, pc = self._caches(cpu)
        table.update(zip(keys, repeat(c)))      # unit_alloc() hands out "an object of c"
        unit_replace_run(c, olds, self.free_rcu)
        if pc is not None:
            every = self.free_rcu or pc.prop is not None       # a proposal frees every old one its own way
            unit_replace_run(pc, self._pptrs(olds if every else olds[-1:]), self.free_rcu)
        return len(keys)

    def new_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> int:
        """``htab_map_update_elem`` of absent keys, each quiet and with room in the map."""
        n = len(keys)
        c, pc = self._caches(cpu)
        htab.table.update(zip(keys, repeat(c)))
        htab.count += n
        self.ma.outstanding += n
        unit_alloc_run(c, n)
        if pc is not None:
            self.pcpu_ma.outstanding += n  # type: ignore[union-attr]
            unit_alloc_run(pc, n)
        return n

    def delete_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> None:
        """``htab_map_delete_elem`` of present keys, each quiet."""
        n = len(keys)
        olds = list(map(htab.table.pop, keys))
        c, pc = self._caches(cpu)
        htab.count -= n
        self.ma.outstanding -= n
        run = unit_free_rcu_run if self.free_rcu else unit_free_run
        if pc is not None:
            self.pcpu_ma.outstanding -= n  # type: ignore[union-attr]
            run(pc, self._pptrs(olds))
        run(c, olds)

    def after_replace(self, htab: BpfHtab, cpu: Cpu, old: MemObj) -> None:
        self.free(htab, cpu, old)

    def free(self, htab: BpfHtab, cpu: Cpu, elem: MemObj) -> None:
        """``free_htab_elem()`` -> ``htab_elem_free()``."""
        htab.count -= 1
        if self.delayed_free:
            # RFC v3 5/6: the percpu value goes back at once, the element after call_rcu()
            if self.pcpu_ma is not None:
                pptr = self.pcpu_ma.cache[elem.cpu.id] if self.ma.anon else elem.payload  # type: ignore[index]
                if not self.ma.anon:
                    elem.payload = None
                bpf_mem_cache_free(self.pcpu_ma, cpu, pptr)
            self.pending_rcu += 1
            if self.ma.anon:
                self._delayed.setdefault(cpu.id, []).append(elem)
                self._delayed_batch[cpu.id] = htab.rcu.rcu.call_coalesced(
                    self._delayed_batch.get(cpu.id), self._htab_elem_free_rcu_n, cpu)
                return
            call_rcu(htab.rcu, self._htab_elem_free_rcu, cpu, elem)
            return
        free = bpf_mem_cache_free_rcu if self.free_rcu else bpf_mem_cache_free
        if self.pcpu_ma is not None:
            if self.ma.anon:
                pptr = self.pcpu_ma.cache[elem.cpu.id]  # type: ignore[index, union-attr]
            else:
                pptr, elem.payload = elem.payload, None
            free(self.pcpu_ma, cpu, pptr)
        free(self.ma, cpu, elem)

    def _htab_elem_free_rcu(self, cpu: Cpu, elem: MemObj) -> None:
        """RFC v3 5/6 ``htab_elem_free_rcu()``: ``bpf_mem_cache_free(l->ma, l)`` on the callback's CPU."""
        self.pending_rcu -= 1
        bpf_mem_cache_free(self.ma, cpu, elem)

    def _htab_elem_free_rcu_n(self, n: int, cpu: Cpu) -> None:
        """``htab_elem_free_rcu()`` for the ``n`` oldest counted elements this CPU queued, in order."""
        queue = self._delayed[cpu.id]
        elems, queue[:n] = queue[:n], []
        for elem in elems:
            self._htab_elem_free_rcu(cpu, elem)

    def breakdown(self, htab: BpfHtab) -> dict[str, int]:
        ncpus = htab.m.num_possible_cpus()
        out = cache_breakdown(self.ma, self.ma.outstanding - self.pending_rcu, ncpus)
        if self.delayed_free:
            out["delayed_free_call_rcu"] = self.pending_rcu * ma_object_bytes(self.ma, ncpus)[0]
        if self.pcpu_ma is not None:
            out.update(cache_breakdown(self.pcpu_ma, self.pcpu_ma.outstanding, ncpus, "pcpu_ma:"))
        return out

    def signature(self, cpus: Sequence[int]) -> tuple[object, ...] | None:
        """Counts that decide what these CPUs' caches do next (None: not covered: percpu values and
        free_rcu, whose cycles always allocate or call RCU)."""
        if self.pcpu_ma is not None or self.free_rcu or not self.runs or self.ma.profile.proposal:
            return None
        out = []
        for cpu in cpus:
            c = self.ma.cache[cpu]  # type: ignore[index]
            out.append((c.free_cnt, c.active, c.refill_work.pending, c.tgt.cpu.id, c.call_rcu_in_progress,
                        c.call_rcu_ttrace_in_progress, len(c.free_llist_extra), len(c.free_by_rcu),
                        len(c.waiting_for_gp), len(c.free_llist_extra_rcu), len(c.free_by_rcu_ttrace),
                        len(c.waiting_for_gp_ttrace)))
        return tuple(out)

    def destroy(self, htab: BpfHtab) -> None:
        if self.pending_rcu:        # RFC v3 5/6: htab_map_free() starts with rcu_barrier() when delayed_free
            rcu_barrier(htab.rcu, self._destroy)
            return
        self._destroy()

    def _destroy(self) -> None:
        if self.pcpu_ma is not None:
            bpf_mem_alloc_destroy(self.pcpu_ma)
        bpf_mem_alloc_destroy(self.ma)


def prealloc_area(htab: BpfHtab, num_entries: int) -> tuple[MemObj, list[MemObj]]:
    """``prealloc_init()``: one ``bpf_map_area_alloc`` for ``num_entries`` elements, and the elements."""
    area = bpf_map_area_alloc(htab.mm, htab.elem_size * num_entries, htab.memcg)
    if area is None:
        raise BpfError(ENOMEM, "prealloc_init: bpf_map_area_alloc")
    return area, [MemObj(-(i + 1), htab.elem_size, htab.elem_size, 0, None, "prealloc") for i in range(num_entries)]


class PreallocElems:
    """Preallocated elements on a pcpu_freelist with per-CPU ``extra_elems``."""

    runs = False        # batches go key by key

    def __init__(self, htab: BpfHtab) -> None:
        ncpus = htab.m.num_possible_cpus()
        self.has_extra = not htab.percpu
        self.num_entries = htab.attr.max_entries + (ncpus if self.has_extra else 0)
        self.area: MemObj | None
        self.area, self.elems = prealloc_area(htab, self.num_entries)
        self.freelist: PcpuFreelist[MemObj] = PcpuFreelist(ncpus)
        self.freelist.populate(self.elems)
        self.extra_elems: list[MemObj | None] = [None] * ncpus
        if self.has_extra:                      # alloc_extra_elems()
            for cpu in range(ncpus):
                self.extra_elems[cpu] = self.freelist.pop(cpu)

    def alloc(self, htab: BpfHtab, cpu: Cpu, old: MemObj | None) -> MemObj | int:
        if old is not None and self.has_extra:
            l_new = self.extra_elems[cpu.id]
            self.extra_elems[cpu.id] = old
            assert l_new is not None
            return l_new
        node = self.freelist.pop(cpu.id)
        if node is None:
            return -E2BIG
        htab.count += 1
        return node

    def after_replace(self, htab: BpfHtab, cpu: Cpu, old: MemObj) -> None:
        """Nothing: ``alloc`` made the old element this CPU's extra element (percpu maps never replace)."""

    def free(self, htab: BpfHtab, cpu: Cpu, elem: MemObj) -> None:
        htab.count -= 1
        self.freelist.push(cpu.id, elem)

    def breakdown(self, htab: BpfHtab) -> dict[str, int]:
        es = htab.elem_size
        assert self.area is not None
        n_extra = sum(1 for e in self.extra_elems if e is not None)
        return {
            "live": htab.count * es,
            "pcpu_freelist": len(self.freelist) * es,
            "extra_elems": n_extra * es,
            "area_rounding": self.area.charge - es * self.num_entries,
        }

    def signature(self, cpus: Sequence[int]) -> tuple[object, ...] | None:
        return tuple((len(self.freelist.freelist[c]), self.extra_elems[c] is not None) for c in cpus)

    def destroy(self, htab: BpfHtab) -> None:
        bpf_map_area_free(htab.mm, self.area)
        self.area = None


class LruElems:
    """LRU maps: ``max_entries`` preallocated elements on a ``bpf_lru`` (``prealloc_init`` with
    ``htab_is_lru``: no ``extra_elems``).  An element is popped before the bucket lock
    (``prealloc_lru_pop``), evicting an old key when none is free, and pushed back on delete or
    replace (``htab_lru_push_free``)."""

    runs = False

    def __init__(self, htab: BpfHtab, scaled_target: bool = True) -> None:
        ncpus = htab.m.num_possible_cpus()
        self.num_entries = htab.max_entries
        self.area: MemObj | None
        self.area, elems = prealloc_area(htab, self.num_entries)
        self.htab = htab
        self.lru = BpfLru(ncpus, bool(htab.attr.map_flags & BPF_F_NO_COMMON_LRU), self.htab_lru_map_delete_node)
        for elem in elems:
            elem.hdr = BpfLruNode(elem)
        self.lru.bpf_lru_populate([e.hdr for e in elems], scaled_target)
        self.evicted = 0

    def htab_lru_map_delete_node(self, node: BpfLruNode) -> bool:
        """``htab_lru_map_delete_node()``: unlink the element if it is still in its bucket."""
        htab = self.htab
        if htab.table.get(node.hash) is not node.owner:
            return False
        del htab.table[node.hash]
        htab.count -= 1
        self.evicted += 1
        return True

    def prealloc_lru_pop(self, htab: BpfHtab, cpu: Cpu, key: int) -> MemObj | None:
        node = self.lru.bpf_lru_pop_free(cpu.id)
        if node is None:
            return None
        node.hash = key
        htab.count += 1                         # bpf_map_inc_elem_count()
        return node.owner  # type: ignore[return-value]

    def free(self, htab: BpfHtab, cpu: Cpu, elem: MemObj) -> None:
        """``htab_lru_push_free()``."""
        htab.count -= 1
        self.lru.bpf_lru_push_free(elem.hdr)

    def alloc(self, htab: BpfHtab, cpu: Cpu, old: MemObj | None) -> MemObj | int:
        raise AssertionError("LRU maps allocate in htab_lru_map_update_elem")

    def after_replace(self, htab: BpfHtab, cpu: Cpu, old: MemObj) -> None:
        raise AssertionError("LRU maps free in htab_lru_map_update_elem")

    def breakdown(self, htab: BpfHtab) -> dict[str, int]:
        es = htab.elem_size
        assert self.area is not None
        return {"live": htab.count * es, "lru_lists": (self.num_entries - htab.count) * es,
                "area_rounding": self.area.charge - es * self.num_entries}

    def signature(self, cpus: Sequence[int]) -> tuple[object, ...] | None:
        return None

    def destroy(self, htab: BpfHtab) -> None:
        bpf_map_area_free(htab.mm, self.area)
        self.area = None


class KmallocRcuElems:
    """Before 6.1: ``bpf_map_kmalloc_node(GFP_NOWAIT)`` per element, ``call_rcu`` + kfree."""

    def __init__(self, htab: BpfHtab) -> None:
        self.pending = 0
        self.anon = not htab.m.identity
        self.runs = self.anon
        self._batch: list[object] | None = None     # the newest coalesced call_rcu (no identities)

    # -- runs of keys (maps/batch.py): kmalloc raises no irq_work, so every key is quiet ------
    def quiet_replaces(self, cpu: Cpu) -> int:
        return QUIET_FOREVER

    quiet_news = quiet_deletes = quiet_replaces

    def replace_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> int:
        """``htab_map_update_elem`` of present keys: a kmalloc and a ``call_rcu`` of the old element
        per key, up to the first refused kmalloc (counted by the slab); returns the keys done."""
        k = htab.mm.slab.kmalloc_anon(htab.elem_size, _NOWAIT_ACCOUNT, htab.memcg, len(keys))
        if k:
            htab.table.update(zip(keys[:k], repeat(self)))  # type: ignore[arg-type]
            self.pending += k
            self._batch = htab.rcu.rcu.call_coalesced(self._batch, self._htab_elem_free_rcu_n, htab, n=k)
        return k

    def new_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> int:
        """``htab_map_update_elem`` of absent keys with room in the map: a kmalloc each."""
        k = htab.mm.slab.kmalloc_anon(htab.elem_size, _NOWAIT_ACCOUNT, htab.memcg, len(keys))
        if k:
            htab.table.update(zip(keys[:k], repeat(self)))  # type: ignore[arg-type]
            htab.count += k
        return k

    def delete_run(self, htab: BpfHtab, cpu: Cpu, keys: Sequence[int]) -> None:
        """``htab_map_delete_elem`` of present keys: a ``call_rcu`` each."""
        n = len(keys)
        pop = htab.table.pop
        for key in keys:
            pop(key)
        htab.count -= n
        self.pending += n
        self._batch = htab.rcu.rcu.call_coalesced(self._batch, self._htab_elem_free_rcu_n, htab, n=n)

    def alloc(self, htab: BpfHtab, cpu: Cpu, old: MemObj | None) -> MemObj | int:
        if old is None and htab.count >= htab.attr.max_entries:
            return -E2BIG
        htab.count += 1
        if self.anon:                           # the element is one of many alike: counted, not made
            if htab.mm.slab.kmalloc_anon(htab.elem_size, _NOWAIT_ACCOUNT, htab.memcg, 1) != 1:
                htab.count -= 1
                return -ENOMEM
            return self                         # type: ignore[return-value]
        l_new = htab.mm.slab.kmalloc_node(htab.elem_size, _NOWAIT_ACCOUNT, htab.memcg)
        if l_new is None:
            htab.count -= 1
            return -ENOMEM
        return l_new

    def after_replace(self, htab: BpfHtab, cpu: Cpu, old: MemObj) -> None:
        self.free(htab, cpu, old)

    def free(self, htab: BpfHtab, cpu: Cpu, elem: MemObj) -> None:
        """``free_htab_elem()`` (5.x): ``call_rcu(&l->rcu, htab_elem_free_rcu)``."""
        htab.count -= 1
        self.pending += 1
        if self.anon:                           # one queue entry for consecutive frees: the same GP
            self._batch = htab.rcu.rcu.call_coalesced(self._batch, self._htab_elem_free_rcu_n, htab)
            return
        call_rcu(htab.rcu, self._htab_elem_free_rcu, htab, elem)

    def _htab_elem_free_rcu(self, htab: BpfHtab, elem: MemObj) -> None:
        self.pending -= 1
        htab.mm.slab.kfree(elem)

    def _htab_elem_free_rcu_n(self, n: int, htab: BpfHtab) -> None:
        """``htab_elem_free_rcu`` for ``n`` counted elements."""
        self.pending -= n
        htab.mm.slab.kfree_anon(kmalloc_size_class(htab.elem_size), kmalloc_charge(htab.elem_size), htab.memcg, n)

    def breakdown(self, htab: BpfHtab) -> dict[str, int]:
        es = htab.elem_size
        return {"live": htab.count * es, "call_rcu": self.pending * es,
                "slab_rounding": (htab.count + self.pending) * (kmalloc_charge(es) - es)}

    def signature(self, cpus: Sequence[int]) -> tuple[object, ...] | None:
        return None  # every operation allocates or frees: never periodic

    def destroy(self, htab: BpfHtab) -> None:
        return None


@dataclass(frozen=True)
class HtabStatistics:
    count: int
    max_entries: int
    elem_size: int
    n_buckets: int
    mem_usage: int
    charged: int


class BpfHtab:
    """``struct bpf_htab``: a hash map of one of the three element stores."""

    def __init__(self, machine: Machine, mm: Mm, rcu: Rcu, attr: MapAttr, memcg: MemCgroup | None, *,
                 profile: MemAllocProfile | None = None, elems: str = "ma", free_rcu: bool = False,
                 sizeof_bpf_htab: int = SIZEOF_BPF_HTAB, creds: Creds = ROOT, nr_node_ids: int = 1,
                 lru_scaled_target: bool = True) -> None:
        """``BPF_MAP_CREATE`` of a hash map: ``map_create()`` around ``htab_map_alloc()``; raises ``BpfError``
        with the kernel's errno (``creds``: the creator's capabilities; ``nr_node_ids``: NUMA nodes;
        ``lru_scaled_target``: LRU maps size ``target_free`` from the map, 6.16+)."""
        kattr = map_create_prologue(attr, htab_map_alloc_check, creds, nr_node_ids)
        self.m, self.mm, self.rcu, self.attr, self.memcg = machine, mm, rcu, attr, memcg
        self.lru = kattr.map_type in (BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH)
        self.percpu = attr.map_type in (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH)
        self.spin_lock = False      # the value holds a struct bpf_spin_lock (from BTF; bench maps have none)
        self.memlock_footprint = False  # fdinfo memlock by bpf_map_memory_footprint() (before 6.4)
        self.prealloc = not attr.map_flags & BPF_F_NO_PREALLOC
        self.elem_size = SIZEOF_HTAB_ELEM + round_up(attr.key_size, 8) + \
            (8 if self.percpu else round_up(attr.value_size, 8))
        self.count = 0
        self.table: dict[int, MemObj] = {}
        self.sizeof_bpf_htab = sizeof_bpf_htab
        self._buckets: MemObj | None = None
        self._htab_obj = bpf_map_area_alloc(mm, sizeof_bpf_htab, memcg)
        if self._htab_obj is None:
            raise BpfError(ENOMEM, "htab_map_alloc: struct bpf_htab")
        try:
            self.max_entries, self.n_buckets = htab_map_alloc_limits(kattr, machine.num_possible_cpus())
        except BpfError:
            self._free_area()
            raise
        self._buckets = bpf_map_area_alloc(mm, SIZEOF_BUCKET * self.n_buckets, memcg)
        if self._buckets is None:
            self._free_area()
            raise BpfError(ENOMEM, "htab_map_alloc: buckets")
        self.elems_kind = "prealloc" if self.prealloc else elems
        try:
            self.elems: ElemStore
            if self.lru:
                self.elems = LruElems(self, lru_scaled_target)
            elif self.prealloc:
                self.elems = PreallocElems(self)
            elif elems in ("ma", "ma_delayed_free"):
                self.elems = MemAllocElems(self, profile or V6_6(), free_rcu, elems == "ma_delayed_free")
            elif elems == "kmalloc_rcu":
                self.elems = KmallocRcuElems(self)
            else:
                raise ValueError(f"element store must be 'ma' or 'kmalloc_rcu', got {elems!r}")
        except BpfError:
            self._free_area()
            raise
        self.closed = False
        try:
            bpf_obj_name_cpy(attr.map_name)         # map_create(), after ops->map_alloc()
        except BpfError:
            self.close()                            # free_map: ops->map_free()
            raise

    def _free_area(self) -> None:
        bpf_map_area_free(self.mm, self._htab_obj)
        bpf_map_area_free(self.mm, self._buckets)
        self._htab_obj = self._buckets = None

    # -- map ops --------------------------------------------------------------
    def update(self, cpu: Cpu, key: int, flags: int = 0, init: Callable[[MemObj], None] | None = None) -> int:
        """``htab_map_update_elem()``: 0 or -errno.  ``init`` stands for ``alloc_htab_elem()``'s copy of
        key and value into the new element, before ``hlist_nulls_add_head_rcu()`` publishes it."""
        if flags & ~BPF_F_LOCK > BPF_EXIST or (flags & BPF_F_LOCK and (self.percpu or not self.spin_lock)):
            return -EINVAL      # percpu: flags > BPF_EXIST; BPF_F_LOCK needs a bpf_spin_lock in the value
        if self.lru:
            return self._lru_update(cpu, key, flags, init)
        cpu.irq_off += 1                                # htab_lock_bucket(): IRQs off
        if cpu.point_hook is not None:
            cpu.point_hook(cpu, "htab_update:locked")
        l_old = self.table.get(key)
        if l_old is not None:
            if flags & ~BPF_F_LOCK == BPF_NOEXIST:
                self._unlock(cpu)
                return -EEXIST
        elif flags & ~BPF_F_LOCK == BPF_EXIST:
            self._unlock(cpu)
            return -ENOENT
        if l_old is not None and (self.percpu or flags & BPF_F_LOCK):
            # __htab_percpu_map_update_elem(): "per-cpu hash map can update value in-place"
            # (pcpu_copy_value); BPF_F_LOCK: copy_map_value_locked() into the old element
            # (6.18 does this before taking the bucket lock): no allocation, nothing freed
            if init is not None:
                init(l_old)
            self._unlock(cpu)
            return 0
        l_new = self.elems.alloc(self, cpu, l_old)
        if l_new.__class__ is int:
            self._unlock(cpu)
            return l_new  # type: ignore[return-value]
        if init is not None:
            init(l_new)  # type: ignore[arg-type]
        self.table[key] = l_new  # type: ignore[assignment]
        self._unlock(cpu)
        if l_old is not None:
            self.elems.after_replace(self, cpu, l_old)
        return 0

    def _lru_update(self, cpu: Cpu, key: int, flags: int, init: Callable[[MemObj], None] | None) -> int:
        """``htab_lru_map_update_elem()`` and ``__htab_lru_percpu_map_update_elem()`` (6.18).

        The new element is popped *before* the bucket lock, because popping may evict (which takes
        bucket locks): so the pop can evict any key — the one being updated too, which then makes a
        ``BPF_EXIST`` update fail with -ENOENT — even when the update itself then fails.  A per-CPU LRU
        map with ``BPF_EXIST`` pops nothing and copies the value in place; an existing key of a per-CPU
        map is also updated in place (its ref bit set) and the popped element goes back."""
        elems: LruElems = self.elems  # type: ignore[assignment]
        mode = flags & ~BPF_F_LOCK
        l_new = None
        if not (self.percpu and mode == BPF_EXIST):
            l_new = elems.prealloc_lru_pop(self, cpu, key)
            if l_new is None:
                return -ENOMEM
        cpu.irq_off += 1
        if cpu.point_hook is not None:
            cpu.point_hook(cpu, "htab_update:locked")
        l_old = self.table.get(key)
        ret = 0
        inserted = False
        if l_old is not None and mode == BPF_NOEXIST:
            ret = -EEXIST
        elif l_old is None and mode == BPF_EXIST:
            ret = -ENOENT
        elif self.percpu and l_old is not None:
            l_old.hdr.ref = 1                           # bpf_lru_node_set_ref; pcpu_copy_value in place
            if init is not None:
                init(l_old)
        else:
            assert l_new is not None
            if init is not None:
                init(l_new)
            self.table[key] = l_new
            inserted = True
            if l_old is not None:
                l_new.hdr.ref = 1                       # replacing: the new element starts referenced
        self._unlock(cpu)
        if l_new is not None and not inserted:
            elems.free(self, cpu, l_new)                # popped but not used: an error, or copied in place
        elif inserted and l_old is not None:
            elems.free(self, cpu, l_old)                # the replaced element
        return ret

    def delete(self, cpu: Cpu, key: int) -> int:
        """``htab_map_delete_elem()``: 0 or -ENOENT."""
        cpu.irq_off += 1
        if cpu.point_hook is not None:
            cpu.point_hook(cpu, "htab_delete:locked")
        elem = self.table.pop(key, None)
        self._unlock(cpu)
        if elem is None:
            return -ENOENT
        self.elems.free(self, cpu, elem)
        return 0

    def update_batch(self, cpu: Cpu, keys: Sequence[int], flags: int, errors: dict[int, int]) -> int:
        """``htab_map_update_elem`` for each key in turn (``BPF_MAP_UPDATE_BATCH``,
        a ``bpf_loop`` in a program); failures counted in ``errors`` by errno.
        Returns the number of successful updates."""
        if flags & ~BPF_F_LOCK > BPF_EXIST or (flags & BPF_F_LOCK and (self.percpu or not self.spin_lock)):
            errors[EINVAL] = errors.get(EINVAL, 0) + len(keys)
            return 0
        if runs_allowed(self, cpu, keys):
            return update_runs(self, cpu, keys, flags, errors)
        ok = 0
        for key in keys:
            r = self.update(cpu, key, flags)
            if r:
                errors[-r] = errors.get(-r, 0) + 1
            else:
                ok += 1
        return ok

    def delete_batch(self, cpu: Cpu, keys: Sequence[int], errors: dict[int, int]) -> int:
        """``htab_map_delete_elem`` for each key in turn; returns the number deleted."""
        if runs_allowed(self, cpu, keys):
            return delete_runs(self, cpu, keys, errors)
        ok = 0
        for key in keys:
            if self.delete(cpu, key):
                errors[ENOENT] = errors.get(ENOENT, 0) + 1
            else:
                ok += 1
        return ok

    def lookup(self, cpu: Cpu, key: int, sys: bool = False) -> MemObj | None:
        """``htab_map_lookup_elem()``: the element (the program's pointer), or None (lockless).  LRU maps:
        a program's lookup sets the element's ref bit (``htab_lru_map_lookup_elem``), a syscall's does not
        (``htab_lru_map_lookup_elem_sys``, ``sys``)."""
        if cpu.point_hook is not None:
            cpu.point_hook(cpu, "htab_lookup")
        elem = self.table.get(key)
        if self.lru and elem is not None and not sys:
            elem.hdr.ref = 1
        return elem

    @staticmethod
    def _unlock(cpu: Cpu) -> None:
        cpu.irq_off -= 1
        if not cpu.irq_off and cpu.irq_work_list and cpu.self_ipi:
            cpu.deliver_irq_work()

    # -- accounting -----------------------------------------------------------
    def mem_usage(self) -> int:
        """``htab_map_mem_usage()`` (6.4-6.18, 304849a27b34): what fdinfo shows as ``memlock``; before 6.4
        (``memlock_footprint``, and the pre-6.1 kmalloc_rcu store) ``bpf_map_memory_footprint()``."""
        np_ = self.m.num_possible_cpus()
        v = round_up(self.attr.value_size, 8)
        if self.memlock_footprint or self.elems_kind == "kmalloc_rcu":
            # round_up(max_entries * round_up(key_size + bpf_map_value_size(), 8), PAGE_SIZE), where a per-CPU
            # map's value size is round_up(value_size, 8) for every possible CPU
            value = v * np_ if self.percpu else self.attr.value_size
            return round_up(self.max_entries * round_up(self.attr.key_size + value, 8), PAGE_SIZE)
        usage = self.sizeof_bpf_htab + SIZEOF_BUCKET * self.n_buckets + 4 * np_ * HASHTAB_MAP_LOCK_COUNT
        if self.prealloc:
            assert isinstance(self.elems, (PreallocElems, LruElems))
            n = self.elems.num_entries
            usage += self.elem_size * n
            if self.percpu:
                usage += v * np_ * n
            elif not self.lru:
                usage += 8 * np_        # extra_elems pointers
        else:
            n = self.count
            usage += (self.elem_size + LLIST_NODE_SZ) * n
            if self.percpu:
                usage += 16 * n + v * np_ * n
        return usage

    def breakdown(self) -> dict[str, int]:
        """Charged bytes by where they sit; sums to the map's memcg charge."""
        out = {"htab": self._htab_obj.charge if self._htab_obj else 0,
               "buckets": self._buckets.charge if self._buckets else 0}
        out.update(self.elems.breakdown(self))
        return out

    def uncharged(self) -> dict[str, int]:
        """Bytes the map holds that no cgroup pays for: allocated in ``htab_map_alloc()`` before
        ``bpf_map_save_memcg()`` sets ``map->objcg`` (``bpf_map_alloc_percpu`` then charges the root
        memcg) or without ``__GFP_ACCOUNT`` (``alloc_percpu``): the per-CPU values of a preallocated per-CPU
        map, the ``extra_elems`` pointers, the per-CPU element counter and an LRU map's per-CPU lists.
        Measured: a preallocated per-CPU map's charge does not grow with its values (docs/kernel-map.md)."""
        np_ = self.m.num_possible_cpus()
        out = {"elem_count": 8 * np_}                           # bpf_map_init_elem_count()
        if self.prealloc and self.percpu:
            out["pcpu_values"] = round_up(self.attr.value_size, 8) * np_ * self.elems.num_entries  # type: ignore[union-attr]
        if self.prealloc and not self.percpu and not self.lru:
            out["extra_elems"] = 8 * np_                        # alloc_extra_elems(): one pointer per CPU
        if self.lru:
            out["lru_lists"] = self.elems.lru.sizeof()  # type: ignore[union-attr]
        return out

    def close(self) -> None:
        """``htab_map_free()``: free every element, destroy the allocators, free the area."""
        if self.closed:
            return
        self.closed = True
        cpu = self.m.cpus[0]
        if isinstance(self.elems, MemAllocElems):
            self.elems.delayed_free = False     # htab_elem_free(htab, l, destroy=true): no call_rcu
        for key in list(self.table):
            self.elems.free(self, cpu, self.table.pop(key))
        self.elems.destroy(self)
        self._free_area()

    def statistics(self) -> HtabStatistics:
        return HtabStatistics(self.count, self.max_entries, self.elem_size, self.n_buckets, self.mem_usage(),
                              sum(self.breakdown().values()))


def htab_map_alloc_check(attr: MapAttr, creds: Creds = ROOT) -> None:
    """``htab_map_alloc_check()`` (kernel/bpf/hashtab.c, 6.18) for the four hash map types, in its order.

    ``attr`` is what the kernel passes: BPF_F_TOKEN_FD already cleared by
    ``map_create``.  There is no key-size cap (key 1 MiB is accepted, as
    measured); key + value is bounded by ``KMALLOC_MAX_SIZE - sizeof(struct
    htab_elem)`` (largest accepted sum 4194255).
    """
    if attr.map_type not in HTAB_MAP_TYPES:
        raise ValueError(f"htab: map_type {attr.map_type} is not a hash map type")
    percpu = attr.map_type in (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH)
    lru = attr.map_type in (BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH)
    flags = attr.map_flags
    percpu_lru = bool(flags & BPF_F_NO_COMMON_LRU)
    prealloc = not flags & BPF_F_NO_PREALLOC
    numa_node = bpf_map_attr_numa_node(attr)
    if flags & BPF_F_ZERO_SEED and not creds.cap_sys_admin:
        raise BpfError(EPERM, "htab: BPF_F_ZERO_SEED needs CAP_SYS_ADMIN")
    if flags & ~HTAB_CREATE_FLAG_MASK or not bpf_map_flags_access_ok(flags):
        raise BpfError(EINVAL, f"htab: map_flags 0x{flags:x} outside HTAB_CREATE_FLAG_MASK or "
                               "BPF_F_RDONLY_PROG with BPF_F_WRONLY_PROG")
    if not lru and percpu_lru:
        raise BpfError(EINVAL, "htab: BPF_F_NO_COMMON_LRU on a non-LRU map")
    if lru and not prealloc:
        raise BpfError(ENOTSUPP, "htab: LRU maps cannot be BPF_F_NO_PREALLOC")
    if numa_node != NUMA_NO_NODE and (percpu or percpu_lru):
        raise BpfError(EINVAL, "htab: a NUMA node for a per-CPU map or per-CPU LRU lists")
    if attr.max_entries == 0 or attr.key_size == 0 or attr.value_size == 0:
        raise BpfError(EINVAL, "htab: max_entries, key_size and value_size must be > 0")
    if attr.key_size + attr.value_size >= KMALLOC_MAX_SIZE - SIZEOF_HTAB_ELEM:
        raise BpfError(E2BIG, "htab: key_size + value_size >= KMALLOC_MAX_SIZE - sizeof(struct htab_elem)")
    if percpu and round_up(attr.value_size, 8) > PCPU_MIN_UNIT_SIZE:
        raise BpfError(E2BIG, "htab: percpu value_size > PCPU_MIN_UNIT_SIZE")


def htab_map_alloc_limits(attr: MapAttr, ncpus: int) -> tuple[int, int]:
    """The refusals inside ``htab_map_alloc()`` (6.18): (max_entries, n_buckets) or -E2BIG.

    BPF_F_NO_COMMON_LRU rounds max_entries up to a multiple of the possible
    CPUs (in u32: down if that wraps); more than 2^31 entries, or more than
    ``U32_MAX / sizeof(struct bucket)`` buckets, is -E2BIG, so the largest
    usable max_entries is 2^27.
    """
    max_entries = attr.max_entries
    if attr.map_flags & BPF_F_NO_COMMON_LRU:
        up = (-(-max_entries // ncpus) * ncpus) & U32_MAX
        max_entries = up if up >= max_entries else max_entries // ncpus * ncpus
    if max_entries > 1 << 31:
        raise BpfError(E2BIG, "htab_map_alloc: max_entries > 2^31")
    n_buckets = roundup_pow_of_two(max_entries)
    if n_buckets > U32_MAX // SIZEOF_BUCKET:
        raise BpfError(E2BIG, f"htab_map_alloc: {n_buckets} buckets > U32_MAX / sizeof(struct bucket)")
    return max_entries, n_buckets


def htab_map_create_check(attr: MapAttr, ncpus: int, creds: Creds = ROOT, nr_node_ids: int = 1) -> tuple[int, int]:
    """Every refusal of ``BPF_MAP_CREATE`` for a hash map (LRU types included) but allocation failures
    (-ENOMEM), in the kernel's order, without allocating; returns (max_entries, n_buckets)."""
    kattr = map_create_prologue(attr, htab_map_alloc_check, creds, nr_node_ids)
    limits = htab_map_alloc_limits(kattr, ncpus)
    bpf_obj_name_cpy(attr.map_name)
    return limits


def parked_objects(htab: BpfHtab) -> int:
    """Objects freed by the map but not yet back in the slab: on bpf_mem_alloc's per-CPU lists
    (free_llist, free_by_rcu, waiting_for_gp and the tasks-trace lists) or, before 6.1, waiting in
    ``call_rcu``.  Preallocated maps park nothing: every element lives in the preallocated area."""
    elems = htab.elems
    if isinstance(elems, MemAllocElems):
        mas = [elems.ma] + ([elems.pcpu_ma] if elems.pcpu_ma is not None else [])
        return sum(len(lst) for ma in mas for c in ma.all_caches() for lst in c.lists().values())
    if isinstance(elems, KmallocRcuElems):
        return elems.pending
    return 0
