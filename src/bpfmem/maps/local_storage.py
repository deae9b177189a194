"""BPF local storage: task, cgroup, socket and inode storage, whose elements live as long as their owner.

Models: kernel/bpf/bpf_local_storage.c with bpf_task_storage.c, bpf_cgrp_storage.c,
net/core/bpf_sk_storage.c and bpf_inode_storage.c, per release (``LocalStorageProfile``):

- 6.1-6.3: every element (``selem``, ``72 + value_size`` bytes) and the owner's ``struct
  bpf_local_storage`` (168 B; 176 from 6.4) come from ``bpf_map_kzalloc`` charged to the map's memcg.
  Delete (helper or syscall): ``call_rcu_tasks_trace`` then ``kfree_rcu`` (6.1) or ``kfree`` (6.2,
  d39d1445d377: the tasks-trace GP implies an RCU GP).  Owner destroyed: ``kfree_rcu``.
- 6.4-6.18 (08a7ce384e33, 6ae9d5e99e1d): task and cgroup storage allocate both from per-map
  ``bpf_mem_alloc``s (``selem_ma``, ``storage_ma``); a program may hold the owner's pointer inside
  kmalloc.  Owner destroyed (``bpf_local_storage_destroy``, ``reuse_now = true``: the owner already went
  through an RCU GP): ``bpf_mem_cache_free``, reusable at once.  Delete (``reuse_now = false``): a
  tasks-trace GP, then ``bpf_mem_cache_raw_free`` (to slab, no reuse).  Socket and inode storage stay on
  kzalloc (vanilla RCU when ``reuse_now``).
- 6.19 (f484f4a3e058 series): ``bpf_ma`` is gone; task and cgroup storage use ``kmalloc_nolock``,
  ``reuse_now`` frees after an RCU GP, delete after a tasks-trace GP; socket and inode unchanged.
- 7.0 (merge db975debcb8c): the same allocation; ``struct bpf_local_storage`` is 184 B.

Who pays: every element and storage is charged to the map's memcg (``map->objcg``, the creator's), in
any context.  Socket storage is also charged to the socket (``bpf_sk_storage_charge``: ``optmem_max``,
20 KiB before 6.8, 128 KiB from 6.8, 4944566706b2): past it the update fails with ENOMEM.  Syscall
updates pass GFP_ATOMIC: a kzalloc'd element is charged past a memcg limit (``__GFP_HIGH``); a
``bpf_mem_alloc`` element fails once the refill (GFP_NOWAIT) is refused.

Deviations: buckets are charged but not modelled one by one; the per-type ``cache_idx`` is assigned but
lookups do not walk the owner's list (a dict finds the element); ``BPF_F_LOCK``, ``BPF_F_CLONE``, uptrs
and the pre-7.0 per-CPU ``busy`` counters (-EBUSY under recursion) are not modelled; the 6.13 change
that frees after the unlock is not visible in memory.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from weakref import WeakKeyDictionary

from ..alloc import V6_8, BpfMemAlloc, BpfMemCache, bpf_mem_alloc_destroy, bpf_mem_alloc_init, bpf_mem_cache_free
from ..alloc.memalloc import (_free_anon, bpf_mem_cache_alloc_flags, bpf_mem_cache_raw_free, quiet_allocs,
                              quiet_replaces, unit_alloc_run, unit_replace_run)
from ..mm import (GFP_ATOMIC, GFP_KERNEL, GFP_NOWAIT, PAGE_COUNTER_MAX, __GFP_ACCOUNT, __GFP_NOWARN, __GFP_ZERO,
                  MemCgroup, Mm, kmalloc_charge, kmalloc_size_class)
from ..mm.gfp import __GFP_HIGH
from ..rcu import Rcu, call_rcu_tasks_trace
from ..sim import Cpu, Machine
from .base import (BPF_EXIST, BPF_F_NO_PREALLOC, BPF_NOEXIST, E2BIG, EEXIST, EINVAL, ENOENT, ENOMEM, BpfError,
                   bpf_map_area_alloc, bpf_map_area_free, roundup_pow_of_two)

# enum bpf_map_type
STORAGE_MAP_TYPES = {"socket": 24, "inode": 28, "task": 29, "cgroup": 32}
KINDS = tuple(STORAGE_MAP_TYPES)
SELEM_DATA_OFFSET = 72            # offsetof(struct bpf_local_storage_elem, sdata.data): elem_size = 72 + value
SIZEOF_SELEM = 128                # sizeof(struct bpf_local_storage_elem) (6.18 BTF)
SIZEOF_SMAP = 480                 # sizeof(struct bpf_local_storage_map) (6.18 BTF)
SIZEOF_BUCKET = 16
BPF_LOCAL_STORAGE_CACHE_SIZE = 16
MAX_BPF_STACK = 512
KMALLOC_MAX_SIZE = 1 << 22
# min(KMALLOC_MAX_SIZE - MAX_BPF_STACK - sizeof(selem), U16_MAX - sizeof(selem))
BPF_LOCAL_STORAGE_MAX_VALUE_SIZE = min(KMALLOC_MAX_SIZE - MAX_BPF_STACK - SIZEOF_SELEM, 0xFFFF - SIZEOF_SELEM)
LLIST_NODE_SZ = 8
OPTMEM_MAX_BEFORE_6_8 = 20480
OPTMEM_MAX = 131072               # net.core.optmem_max default from 6.8 (4944566706b2)
# a class body would mangle the kernel's double-underscore names
_ACCOUNT = __GFP_ACCOUNT
_HIGH = __GFP_HIGH
_NOWARN_ACCOUNT_ZERO = __GFP_NOWARN | __GFP_ACCOUNT | __GFP_ZERO


@dataclass(frozen=True)
class LocalStorageProfile:
    """How one release allocates and frees local storage (``bpf_local_storage_map_alloc``'s ``bpf_ma`` or
    ``use_kmalloc_nolock``, ``bpf_selem_free``, ``bpf_local_storage_free``)."""

    name: str
    kernel: str
    storage_size: int                       # sizeof(struct bpf_local_storage)
    bpf_ma_kinds: frozenset[str]            # kinds on selem_ma/storage_ma (6.4-6.18)
    nolock_kinds: frozenset[str]            # kinds on kmalloc_nolock (6.19+)
    trace_implies_rcu: bool                 # 6.2+: kfree right after the tasks-trace GP
    optmem_max: int
    commit: str
    # what delete (reuse_now = false) waits for: the kernel's tasks-trace GP; the explorer's what-ifs:
    # "rcu" (the seed's BPF_MA_FREE_AFTER_GP on local storage: raw free after a normal RCU GP), "now"
    # (delete treated like destroy: bpf_mem_cache_free, reusable at once)
    delete_waits: str = "tasks_trace"

    def allocator(self, kind: str) -> str:
        """``bpf_ma``, ``kmalloc_nolock`` or ``kzalloc``."""
        if kind in self.bpf_ma_kinds:
            return "bpf_ma"
        if kind in self.nolock_kinds:
            return "kmalloc_nolock"
        return "kzalloc"


_TC = frozenset({"task", "cgroup"})
PROFILES: dict[str, LocalStorageProfile] = {p.name: p for p in (
    LocalStorageProfile("v6.1", "6.1", 168, frozenset(), frozenset(), False, OPTMEM_MAX_BEFORE_6_8, "-"),
    LocalStorageProfile("v6.2", "6.2-6.3", 168, frozenset(), frozenset(), True, OPTMEM_MAX_BEFORE_6_8,
                        "d39d1445d377"),
    LocalStorageProfile("v6.4", "6.4-6.7", 176, _TC, frozenset(), True, OPTMEM_MAX_BEFORE_6_8,
                        "08a7ce384e33, 6ae9d5e99e1d"),
    LocalStorageProfile("v6.8", "6.8-6.18", 176, _TC, frozenset(), True, OPTMEM_MAX, "4944566706b2 (optmem_max)"),
    LocalStorageProfile("v6.19", "6.19", 176, frozenset(), _TC, True, OPTMEM_MAX, "f484f4a3e058, 0e854e553569"),
    LocalStorageProfile("v7.0", "7.0", 184, frozenset(), _TC, True, OPTMEM_MAX, "merge db975debcb8c"),
)}


def profile_for_release(release: str) -> LocalStorageProfile:
    """The local-storage profile of ``v6.1`` .. ``v6.19``, ``v7.0`` (or a profile name)."""
    if release in PROFILES:
        return PROFILES[release]
    try:
        major, minor = (int(x) for x in release.lstrip("v").split(".")[:2])
    except ValueError:
        raise ValueError(f"unknown kernel release {release!r} for local storage; allowed: v6.1..v6.19, v7.0") from None
    if major == 7 and minor == 0:
        return PROFILES["v7.0"]
    if major != 6 or not 1 <= minor <= 19:
        raise ValueError(f"no local-storage profile for {release!r}; allowed: v6.1..v6.19, v7.0")
    name = "v6.1" if minor == 1 else "v6.2" if minor <= 3 else "v6.4" if minor <= 7 else \
        "v6.8" if minor <= 18 else "v6.19"
    return PROFILES[name]


@dataclass(frozen=True)
class AnonKmalloc:
    """A counted kmalloc'd object (no identity): what ``kfree_anon`` needs to give it back."""

    ksize: int
    charge: int
    memcg: MemCgroup | None


class Owner:
    """A task, cgroup, socket or inode: ``owner->bpf_storage`` and, for sockets, ``sk_omem_alloc``."""

    __slots__ = ("kind", "name", "storage", "omem", "destroyed")

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.storage: LocalStorage | None = None
        self.omem = 0
        self.destroyed = False

    def __repr__(self) -> str:
        return f"Owner({self.kind}, {self.name})"


class LocalStorage:
    """``struct bpf_local_storage``: the owner's list of elements, one per map, and 16 cache slots."""

    __slots__ = ("owner", "obj", "smap", "alloc", "selems", "cache")

    def __init__(self, owner: Owner | None, obj: Any, smap: BpfLocalStorageMap | None, alloc: str) -> None:
        self.owner = owner
        self.obj = obj                       # the allocation (a MemObj, or a counted object)
        self.smap = smap                     # whose storage_ma it came from (6.4-6.18)
        self.alloc = alloc                   # bpf_ma, kmalloc_nolock or kzalloc
        self.selems: dict[int, Selem] = {}
        self.cache: list[Selem | None] = [None] * BPF_LOCAL_STORAGE_CACHE_SIZE


class Selem:
    """``struct bpf_local_storage_elem``."""

    __slots__ = ("smap", "obj", "alloc")

    def __init__(self, smap: BpfLocalStorageMap, obj: Any, alloc: str) -> None:
        self.smap = smap
        self.obj = obj
        self.alloc = alloc


class BpfLocalStorageMap:
    """One ``BPF_MAP_TYPE_{TASK,CGRP,SK,INODE}_STORAGE`` map (``bpf_local_storage_map_alloc``)."""

    _next_id = 0

    def __init__(self, m: Machine, mm: Mm, rcu: Rcu, kind: str, value_size: int, memcg: MemCgroup | None,
                 profile: LocalStorageProfile, *, flags: int = BPF_F_NO_PREALLOC, max_entries: int = 0,
                 key_size: int = 4, btf: bool = True) -> None:
        bpf_local_storage_map_alloc_check(kind, key_size, value_size, max_entries, flags, btf)
        self.m, self.mm, self.rcu, self.kind, self.profile = m, mm, rcu, kind, profile
        self.value_size = value_size
        self.elem_size = SELEM_DATA_OFFSET + value_size
        self.memcg = memcg
        self.alloc = profile.allocator(kind)
        BpfLocalStorageMap._next_id += 1
        self.id = BpfLocalStorageMap._next_id
        self.cache_idx = _cache_idx_get(mm, kind)
        ncpus = m.num_possible_cpus()
        self.nbuckets = max(2, roundup_pow_of_two(ncpus))
        area = bpf_map_area_alloc(mm, SIZEOF_SMAP, memcg)
        if area is None:
            raise BpfError(ENOMEM, "bpf_local_storage_map_alloc: smap")
        self.area = area
        # bpf_map_kvcalloc(buckets): map->objcg is not saved yet, so the root cgroup (nobody) pays
        self.buckets = mm.slab.kmalloc_node(SIZEOF_BUCKET * self.nbuckets, GFP_KERNEL | _ACCOUNT, None)
        self.selem_ma: BpfMemAlloc | None = None
        self.storage_ma: BpfMemAlloc | None = None
        if self.alloc == "bpf_ma":
            self.selem_ma = BpfMemAlloc(m, mm, rcu, V6_8())
            self.storage_ma = BpfMemAlloc(m, mm, rcu, V6_8())
            bpf_mem_alloc_init(self.selem_ma, self.elem_size, False, memcg)
            bpf_mem_alloc_init(self.storage_ma, profile.storage_size, False, memcg)
        self.elems: dict[int, Owner] = {}          # id(owner) -> owner, for the map's walk at map_free
        self.pending_rcu = 0                       # selems and storages waiting for a grace period
        self.pending = {"selem": 0, "storage": 0}
        self._tokens: dict[int, AnonKmalloc] = {}      # one counted-object token per size
        self.counted_live = 0                           # counted owners (one element and storage each)
        self.counted_origin: dict[int, int] = {}        # bpf_mem_alloc: counted owners by the CPU they came from
        self._rcu_q: tuple[deque[tuple[str, Any, bool]], deque[tuple[str, Any, bool]]] = (deque(), deque())
        self._rcu_batch: list[Any] = [None, None]
        self.freed = False

    # -- the element and the storage -----------------------------------------------------------------
    def _charge_owner(self, owner: Owner, size: int) -> bool:
        """``mem_charge()``: only sockets limit it (``bpf_sk_storage_charge``: ``optmem_max``)."""
        if self.kind != "socket":
            return True
        optmem = self.profile.optmem_max
        if size <= optmem and owner.omem + size < optmem:
            owner.omem += size
            return True
        return False

    def _uncharge_owner(self, owner: Owner | None, size: int) -> None:
        if self.kind == "socket" and owner is not None:
            owner.omem -= size

    def _kmalloc(self, size: int, gfp: int) -> Any:
        """``bpf_map_kzalloc`` / ``bpf_map_kmalloc_nolock``: one object charged to the map's memcg.  Without
        identities (``Machine.identity`` off) the object is counted, and stands for itself as ``AnonKmalloc``."""
        slab = self.mm.slab
        if self.m.identity:
            return slab.kmalloc_node(size, gfp | _NOWARN_ACCOUNT_ZERO, self.memcg)
        tok = self._tokens.get(size)
        if tok is None:
            tok = self._tokens[size] = AnonKmalloc(kmalloc_size_class(size), kmalloc_charge(size), self.memcg)
        if slab.kmalloc_one_anon(tok.ksize, tok.charge, self.memcg):
            return tok
        if gfp & _HIGH and self.memcg is not None and slab.fail_after is None:
            slab.failures -= 1                     # refused, then forced past the limit (GFP_ATOMIC)
            slab.force_anon(tok.ksize, tok.charge, self.memcg)
            return tok
        return None

    def _kfree(self, obj: Any) -> None:
        if isinstance(obj, AnonKmalloc):
            self.mm.slab.kfree_anon(obj.ksize, obj.charge, obj.memcg, 1)
        else:
            self.mm.slab.kfree(obj)

    def bpf_selem_alloc(self, cpu: Cpu, owner: Owner, gfp: int, charge: bool = True) -> Selem | None:
        """``bpf_selem_alloc()``: charge the owner, then the element from this map's allocator."""
        if charge and not self._charge_owner(owner, self.elem_size):
            return None
        if self.alloc == "bpf_ma":
            obj: Any = bpf_mem_cache_alloc_flags(self.selem_ma, cpu, gfp)  # type: ignore[arg-type]
        else:
            obj = self._kmalloc(self.elem_size, gfp if self.alloc == "kzalloc" else GFP_NOWAIT)
        if obj is None:
            if charge:
                self._uncharge_owner(owner, self.elem_size)
            return None
        return Selem(self, obj, self.alloc)

    def bpf_selem_free(self, cpu: Cpu, selem: Selem, reuse_now: bool) -> None:
        """``bpf_selem_free()``: what each allocator does after unlinking."""
        if selem.alloc == "bpf_ma":
            ma = selem.smap.selem_ma
            waits = "now" if reuse_now else self.profile.delete_waits
            if waits == "now":
                bpf_mem_cache_free(ma, cpu, selem.obj)            # the owner went through a GP: reuse now
            else:
                self._after(waits == "rcu", selem.obj, "selem", True)
            return
        self._after(reuse_now, selem.obj, "selem", False)

    def _after(self, vanilla_rcu: bool, obj: Any, what: str, raw: bool) -> None:
        """``call_rcu`` (``reuse_now``) or ``call_rcu_tasks_trace``, then free ``obj``: ``raw`` through
        ``bpf_mem_cache_raw_free``, else ``kfree``; 6.1 chains a ``kfree_rcu`` after the tasks-trace GP.
        ``what`` (selem or storage) counts what waits, by kind, for the memory report.  Consecutive calls of
        one flavour share a queue entry (``call_coalesced``); the frees run in call order."""
        self.pending_rcu += 1
        self.pending[what] += 1
        if not vanilla_rcu and not self.profile.trace_implies_rcu:
            # 6.1: the tasks-trace callback does kfree_rcu (still pending until that RCU GP ends)
            call_rcu_tasks_trace(self.rcu, lambda *_: self._queue_free(True, obj, what, raw))
            return
        self._queue_free(vanilla_rcu, obj, what, raw)

    def _queue_free(self, vanilla_rcu: bool, obj: Any, what: str, raw: bool) -> None:
        flavour = self.rcu.rcu if vanilla_rcu else self.rcu.tasks_trace
        k = 0 if vanilla_rcu else 1
        self._rcu_q[k].append((what, obj, raw))
        self._rcu_batch[k] = flavour.call_coalesced(self._rcu_batch[k], self._run_rcu_q, k)

    def _run_rcu_q(self, n: int, k: int) -> None:
        """The ``n`` oldest frees queued on flavour ``k`` (0: RCU, 1: tasks trace), after their grace period;
        a counted entry stands for element, storage, element, storage... frees in that order."""
        q = self._rcu_q[k]
        pending = self.pending
        while n:
            head = q[0]
            if head[0] is _COUNTED:
                rem, storage_first = head[1], head[2]
                take = min(n, rem)
                selems = take // 2 if storage_first else (take + 1) // 2
                storages = take - selems
                e, st = head[3], head[4]
                if isinstance(e, AnonKmalloc):
                    self.mm.slab.kfree_anon(e.ksize, e.charge, e.memcg, selems)
                    self.mm.slab.kfree_anon(st.ksize, st.charge, st.memcg, storages)
                else:                           # bpf_mem_cache_raw_free of counted objects of those caches
                    _free_anon(e, selems)
                    e.ma.outstanding -= selems
                    _free_anon(st, storages)
                    st.ma.outstanding -= storages
                self.pending_rcu -= take
                pending["selem"] -= selems
                pending["storage"] -= storages
                n -= take
                if take == rem:
                    q.popleft()
                else:
                    head[1], head[2] = rem - take, storage_first ^ bool(take & 1)
                continue
            what, obj, raw = q.popleft()
            n -= 1
            self.pending_rcu -= 1
            pending[what] -= 1
            if raw:
                _raw_free(obj)
            else:
                self._kfree(obj)

    # -- counted owners: many identical owners as numbers (the bench's count mode) ----------------------
    def counted_ok(self) -> bool:
        """Whether owners may be counted instead of made one by one, with every number unchanged: elements
        and storages from kmalloc (no per-CPU cache state), no memcg limit or failure injection (the order of
        the allocations cannot matter), the tasks-trace GP implying an RCU GP (6.2+), no identities."""
        c = self.memcg
        while c is not None:
            if c.limit != PAGE_COUNTER_MAX:
                return False
            c = c.parent
        return (self.alloc != "bpf_ma" and self.profile.trace_implies_rcu and not self.m.identity
                and self.mm.slab.fail_after is None and self.profile.delete_waits == "tasks_trace"
                and (self.kind != "socket" or self.elem_size + self.profile.storage_size < self.profile.optmem_max))

    def _counted_tokens(self) -> tuple[AnonKmalloc, AnonKmalloc]:
        e = self._tokens.get(self.elem_size)
        if e is None:
            e = self._tokens[self.elem_size] = AnonKmalloc(kmalloc_size_class(self.elem_size),
                                                           kmalloc_charge(self.elem_size), self.memcg)
        size = self.profile.storage_size
        st = self._tokens.get(size)
        if st is None:
            st = self._tokens[size] = AnonKmalloc(kmalloc_size_class(size), kmalloc_charge(size), self.memcg)
        return e, st

    def counted_create(self, k: int) -> None:
        """``k`` owners' first elements, each with its storage (``counted_ok`` maps only)."""
        e, st = self._counted_tokens()
        slab = self.mm.slab
        if slab.kmalloc_anon(self.elem_size, _NOWARN_ACCOUNT_ZERO, self.memcg, k) != k or \
                slab.kmalloc_anon(self.profile.storage_size, _NOWARN_ACCOUNT_ZERO, self.memcg, k) != k:
            raise AssertionError("a counted create failed: counted_ok() promised no limit")
        self.counted_live += k

    def counted_end(self, k: int, reuse_now: bool) -> None:
        """``k`` counted owners lose their only element: ended (``reuse_now``: an RCU GP) or deleted (a
        tasks-trace GP); each takes its storage along."""
        self.counted_live -= k
        self.pending_rcu += 2 * k
        self.pending["selem"] += k
        self.pending["storage"] += k
        e, st = self._counted_tokens()
        self._counted_entry(reuse_now, k, e, st)

    def _counted_entry(self, vanilla_rcu: bool, k: int, e: Any, st: Any) -> None:
        """``k`` element + storage frees queued as one counted entry (2k callbacks, in call order)."""
        idx = 0 if vanilla_rcu else 1
        flavour = self.rcu.rcu if vanilla_rcu else self.rcu.tasks_trace
        self._rcu_q[idx].append([_COUNTED, 2 * k, False, e, st])
        self._rcu_batch[idx] = flavour.call_coalesced(self._rcu_batch[idx], self._run_rcu_q, idx, n=2 * k)

    # -- counted owners on bpf_mem_alloc (6.4-6.18 task and cgroup storage) -------------------------------
    def counted_ok_ma(self) -> bool:
        """``counted_ok`` for ``bpf_mem_alloc`` maps: runs of quiet cache operations (memalloc's ``*_run``)
        move counts; the operation that reaches a watermark runs one by one, as the kernel does it."""
        c = self.memcg
        while c is not None:
            if c.limit != PAGE_COUNTER_MAX:
                return False
            c = c.parent
        return (self.alloc == "bpf_ma" and self.profile.trace_implies_rcu and not self.m.identity
                and self.mm.slab.fail_after is None and self.profile.delete_waits == "tasks_trace")

    def _caches(self, cpu_id: int) -> tuple[Any, Any]:
        return self.selem_ma.cache[cpu_id], self.storage_ma.cache[cpu_id]  # type: ignore[union-attr,index]

    def counted_create_ma(self, cpu: Cpu, k: int) -> None:
        """``k`` owners created on ``cpu``: element then storage from this CPU's caches."""
        sc, tc = self._caches(cpu.id)
        sma, tma = self.selem_ma, self.storage_ma
        done = 0
        while done < k:
            m = min(k - done, quiet_allocs(sc), quiet_allocs(tc))
            if m:
                unit_alloc_run(sc, m)
                unit_alloc_run(tc, m)
                sma.outstanding += m  # type: ignore[union-attr]
                tma.outstanding += m  # type: ignore[union-attr]
                done += m
                continue
            if bpf_mem_cache_alloc_flags(sma, cpu, GFP_ATOMIC) is None or \
                    bpf_mem_cache_alloc_flags(tma, cpu, GFP_ATOMIC) is None:  # type: ignore[arg-type]
                raise AssertionError("a counted create failed: counted_ok_ma() promised no limit")
            done += 1
        self.counted_live += k
        self.counted_origin[cpu.id] = self.counted_origin.get(cpu.id, 0) + k

    def counted_replace_ma(self, cpu: Cpu, k: int, origin: int) -> None:
        """``k`` times: an owner created on ``cpu``, then one created on ``origin`` ended here (``reuse_now``:
        element and storage back into this CPU's caches)."""
        sc, tc = self._caches(cpu.id)
        osc, otc = self._caches(origin)
        sma, tma = self.selem_ma, self.storage_ma
        done = 0
        while done < k:
            m = min(k - done, quiet_replaces(sc, False), quiet_replaces(tc, False))
            if m:
                unit_replace_run(sc, [osc] * m, False)
                unit_replace_run(tc, [otc] * m, False)
                done += m
                continue
            if bpf_mem_cache_alloc_flags(sma, cpu, GFP_ATOMIC) is None or \
                    bpf_mem_cache_alloc_flags(tma, cpu, GFP_ATOMIC) is None:  # type: ignore[arg-type]
                raise AssertionError("a counted create failed: counted_ok_ma() promised no limit")
            bpf_mem_cache_free(sma, cpu, osc)  # type: ignore[arg-type]
            bpf_mem_cache_free(tma, cpu, otc)  # type: ignore[arg-type]
            done += 1
        self.counted_origin[cpu.id] = self.counted_origin.get(cpu.id, 0) + k
        self.counted_origin[origin] -= k

    def counted_end_ma(self, cpu: Cpu, k: int, origin: int) -> None:
        """``k`` owners created on ``origin`` ended on ``cpu`` without creating any (``reuse_now``)."""
        osc, otc = self._caches(origin)
        for _ in range(k):
            bpf_mem_cache_free(self.selem_ma, cpu, osc)  # type: ignore[arg-type]
            bpf_mem_cache_free(self.storage_ma, cpu, otc)  # type: ignore[arg-type]
        self.counted_live -= k
        self.counted_origin[origin] -= k

    def counted_delete_ma(self, k: int, origin: int) -> None:
        """``k`` owners created on ``origin`` lose their only element by a delete: element and storage wait
        for a tasks-trace GP, then ``bpf_mem_cache_raw_free``."""
        osc, otc = self._caches(origin)
        self.counted_live -= k
        self.counted_origin[origin] -= k
        self.pending_rcu += 2 * k
        self.pending["selem"] += k
        self.pending["storage"] += k
        self._counted_entry(False, k, osc, otc)

    def bpf_local_storage_alloc(self, cpu: Cpu, owner: Owner, first: Selem, gfp: int) -> int:
        """``bpf_local_storage_alloc()``: the owner's first element brings its ``struct bpf_local_storage``."""
        size = self.profile.storage_size
        if not self._charge_owner(owner, size):
            return -ENOMEM
        if self.alloc == "bpf_ma":
            obj: Any = bpf_mem_cache_alloc_flags(self.storage_ma, cpu, gfp)  # type: ignore[arg-type]
        else:
            obj = self._kmalloc(size, gfp if self.alloc == "kzalloc" else GFP_NOWAIT)
        if obj is None:
            self._uncharge_owner(owner, size)
            return -ENOMEM
        st = LocalStorage(owner, obj, self if self.alloc == "bpf_ma" else None, self.alloc)
        owner.storage = st
        self._link(st, first)
        return 0

    def bpf_local_storage_free(self, cpu: Cpu, st: LocalStorage, storage_smap: BpfLocalStorageMap | None,
                               reuse_now: bool) -> None:
        """``bpf_local_storage_free()``: ``storage_smap`` is ``local_storage->smap`` as the caller read it
        before unlinking (the map whose storage_ma the storage came from, or NULL once that map's element left)."""
        if st.alloc == "bpf_ma":
            if not reuse_now and self.profile.delete_waits == "now" and storage_smap is not None:
                bpf_mem_cache_free(storage_smap.storage_ma, cpu, st.obj)
            elif not reuse_now:
                self._after(self.profile.delete_waits == "rcu", st.obj, "storage", True)
            elif storage_smap is not None:
                bpf_mem_cache_free(storage_smap.storage_ma, cpu, st.obj)
            else:   # the element that made it is long gone (its map may be too): call_rcu, then raw free
                self._after(True, st.obj, "storage", True)
            return
        self._after(reuse_now, st.obj, "storage", False)

    def _link(self, st: LocalStorage, selem: Selem) -> None:
        st.selems[self.id] = selem
        st.cache[self.cache_idx] = selem
        self.elems[id(st.owner)] = st.owner  # type: ignore[assignment]

    # -- syscalls and helpers --------------------------------------------------------------------------
    def update(self, cpu: Cpu, owner: Owner, flags: int = 0, gfp: int = GFP_ATOMIC) -> int:
        """``bpf_local_storage_update()``: 0 or -errno.  Syscalls pass GFP_ATOMIC; sleepable programs
        GFP_KERNEL (then only BPF_NOEXIST creates, as ``bpf_*_storage_get(F_CREATE)`` does)."""
        if self.freed:
            raise BpfError(EINVAL, "update on a freed map")
        if owner.destroyed:
            return -ENOENT
        if flags & ~0x4 > BPF_EXIST:
            return -EINVAL
        if gfp == GFP_KERNEL and flags != BPF_NOEXIST:
            return -EINVAL
        st = owner.storage
        old = st.selems.get(self.id) if st is not None else None
        if old is not None and flags == BPF_NOEXIST:
            return -EEXIST
        if old is None and flags == BPF_EXIST:
            return -ENOENT
        if st is None or not st.selems:
            selem = self.bpf_selem_alloc(cpu, owner, gfp)
            if selem is None:
                return -ENOMEM
            err = self.bpf_local_storage_alloc(cpu, owner, selem, gfp)
            if err:
                self._free_unused(cpu, selem)
                self._uncharge_owner(owner, self.elem_size)
            return err
        # under local_storage->lock: a replacement is not charged to the owner again
        selem = self.bpf_selem_alloc(cpu, owner, gfp, charge=old is None)
        if selem is None:
            return -ENOMEM
        self._link(st, selem)
        if old is not None:
            self.bpf_selem_free(cpu, old, reuse_now=False)
        return 0

    def _free_unused(self, cpu: Cpu, selem: Selem) -> None:
        """An element no program has seen: back at once (``bpf_mem_cache_free`` or ``kfree``)."""
        if selem.alloc == "bpf_ma":
            bpf_mem_cache_free(self.selem_ma, cpu, selem.obj)
        else:
            self._kfree(selem.obj)

    def lookup(self, owner: Owner) -> bool:
        st = owner.storage
        return st is not None and self.id in st.selems

    def delete(self, cpu: Cpu, owner: Owner) -> int:
        """``bpf_*_storage_delete`` / ``BPF_MAP_DELETE_ELEM``: ``bpf_selem_unlink(selem, reuse_now=false)``."""
        st = owner.storage
        selem = st.selems.get(self.id) if st is not None else None
        if selem is None:
            return -ENOENT
        self._unlink(cpu, st, selem, False, st.smap)  # type: ignore[union-attr]
        return 0

    def _unlink(self, cpu: Cpu, st: LocalStorage, selem: Selem, reuse_now: bool,
                storage_smap: BpfLocalStorageMap | None) -> None:
        """``bpf_selem_unlink_storage_nolock`` + free: the last element takes the storage with it."""
        smap = selem.smap
        del st.selems[smap.id]
        if st.cache[smap.cache_idx] is selem:
            st.cache[smap.cache_idx] = None
        smap.elems.pop(id(st.owner), None)
        owner = st.owner
        last = not st.selems
        smap._uncharge_owner(owner, smap.elem_size + (self.profile.storage_size if last else 0))
        if st.smap is smap:
            st.smap = None          # 6.4-6.18: this map may go away before the storage does
        smap.bpf_selem_free(cpu, selem, reuse_now)
        if last:
            if owner is not None:
                owner.storage = None
            st.owner = None
            smap.bpf_local_storage_free(cpu, st, storage_smap, reuse_now)

    def map_free(self, cpu: Cpu) -> None:
        """``bpf_local_storage_map_free()``: unlink every element (``reuse_now``: ``synchronize_rcu`` first),
        then the allocators (6.4-6.18: after the RCU barriers) and the map."""
        for owner in list(self.elems.values()):
            st = owner.storage
            if st is not None and self.id in st.selems:
                self._unlink(cpu, st, st.selems[self.id], True, st.smap)
        if self.counted_live and self.alloc == "bpf_ma":
            for origin, k in sorted(self.counted_origin.items()):
                if k:
                    self.counted_end_ma(cpu, k, origin)
        elif self.counted_live:
            self.counted_end(self.counted_live, reuse_now=True)
        self.freed = True
        _cache_idx_free(self.mm, self.kind, self.cache_idx)
        self.mm.slab.kfree(self.buckets)  # type: ignore[arg-type]
        bpf_map_area_free(self.mm, self.area)

        def destroy(*_: Any) -> None:
            for ma in (self.selem_ma, self.storage_ma):
                if ma is not None:
                    bpf_mem_alloc_destroy(ma)
        if self.selem_ma is not None:
            self.rcu.rcu.barrier(lambda: self.rcu.tasks_trace.barrier(destroy))

    # -- memory ------------------------------------------------------------------------------------------
    def breakdown(self, storages: int | None = None) -> dict[str, int]:
        """Payload bytes by where they sit, and ``slab_rounding`` (what kmalloc classes and the per-object
        memcg pointer add): live elements, the owners' storages this map allocated (``storages``: how many
        are live, when the caller counts them across maps), each allocator list, waiting for a grace period."""
        unit_hdr = LLIST_NODE_SZ if self.alloc == "bpf_ma" else 0
        e_pay, s_pay = self.elem_size + unit_hdr, self.profile.storage_size + unit_hdr
        e_chg, s_chg = kmalloc_charge(e_pay), kmalloc_charge(s_pay)
        n = len(self.elems) + self.counted_live
        if storages is None:
            storages = sum(1 for o in self.elems.values() if o.storage is not None) + self.counted_live
        out = {"live selems": n * e_pay, "bpf_local_storage": storages * s_pay,
               "waiting for GP (selems)": self.pending["selem"] * e_pay,
               "waiting for GP (storages)": self.pending["storage"] * s_pay}
        objs_e = n + self.pending["selem"]
        objs_s = storages + self.pending["storage"]
        for name, ma, pay in (("selem_ma", self.selem_ma, e_pay), ("storage_ma", self.storage_ma, s_pay)):
            if ma is None:
                continue
            for c in ma.all_caches():
                for lname, lst in c.lists().items():
                    key = f"{name} {lname}/cpu{c.cpu.id}" if lname == "free_llist" else f"{name} {lname}"
                    out[key] = out.get(key, 0) + len(lst) * pay
                    if name == "selem_ma":
                        objs_e += len(lst)
                    else:
                        objs_s += len(lst)
        out["slab_rounding"] = objs_e * (e_chg - e_pay) + objs_s * (s_chg - s_pay)
        return out


def _raw_free(obj: Any) -> None:
    """``bpf_mem_cache_raw_free()``: needs no allocator, only the object (whose header names its cache)."""
    c = obj if isinstance(obj, BpfMemCache) else obj.hdr
    bpf_mem_cache_raw_free(c.ma, obj)


def bpf_local_storage_map_alloc_check(kind: str, key_size: int, value_size: int, max_entries: int, flags: int,
                                      btf: bool) -> None:
    """``bpf_local_storage_map_alloc_check()``: EINVAL for flags other than NO_PREALLOC (and CLONE), no
    NO_PREALLOC, max_entries, a key that is not an int fd, no value, no BTF; E2BIG past the value limit."""
    if kind not in STORAGE_MAP_TYPES:
        raise ValueError(f"storage kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if (flags & ~(BPF_F_NO_PREALLOC | (1 << 9)) or not flags & BPF_F_NO_PREALLOC or max_entries
            or key_size != 4 or not value_size or not btf):
        raise BpfError(EINVAL, "bpf_local_storage_map_alloc_check")
    if value_size > BPF_LOCAL_STORAGE_MAX_VALUE_SIZE:
        raise BpfError(E2BIG, "bpf_local_storage_map_alloc_check: value_size")


def bpf_local_storage_destroy(cpu: Cpu, owner: Owner) -> None:
    """``bpf_local_storage_destroy()``: the owner is going away (task freed, socket destructed...): every
    element of every map, ``reuse_now = true``."""
    owner.destroyed = True
    st = owner.storage
    if st is None:
        return
    storage_smap = st.smap                 # read once, before the unlinks clear it
    for selem in list(st.selems.values()):
        selem.smap._unlink(cpu, st, selem, True, storage_smap)


def _cache_idx_get(mm: Mm, kind: str) -> int:
    """``bpf_local_storage_cache_idx_get()``: the least used of the kind's 16 slots."""
    counts = _cache_counts(mm, kind)
    idx = min(range(BPF_LOCAL_STORAGE_CACHE_SIZE), key=lambda i: counts[i])
    counts[idx] += 1
    return idx


def _cache_idx_free(mm: Mm, kind: str, idx: int) -> None:
    _cache_counts(mm, kind)[idx] -= 1


_COUNTED = object()          # marks a counted entry of the grace-period queues


# per machine: each kind's ``struct bpf_local_storage_cache`` (``idx_usage_counts``)
_CACHES: WeakKeyDictionary[Mm, dict[str, list[int]]] = WeakKeyDictionary()


def _cache_counts(mm: Mm, kind: str) -> list[int]:
    return _CACHES.setdefault(mm, {}).setdefault(kind, [0] * BPF_LOCAL_STORAGE_CACHE_SIZE)
