"""Shadow state per object and the violations a schedule can show.

Problem: immediate reuse in bpf_mem_alloc means a pointer a program still
holds may point at memory that was freed and handed out again.  Whether that
is a bug depends on the user: hash-map values may be observed reused (the
kernel accepts it), a node of a lock-free structure or a refcounted object may
not.  The checker observes the model through instruments and the program
runtime, in the spirit of loom's allocation provenance and KASAN:

- per object: allocation generation, CPU, context, step; kind of the last
  free (``free`` / ``free_rcu``), the reader sequence at that free, whether it
  went back to slab;
- a program's pointer is (object, generation at acquisition).

Violations (``kind``: accepted by the kernel?):

| kind | meaning | kernel |
|---|---|---|
| ``uaf`` | access to memory returned to slab | bug (KASAN) |
| ``reused_read`` | access through a pointer whose object was reallocated since (ABA / type confusion) | accepted for htab values, a bug for the scenario's data structure otherwise |
| ``freed_read`` | access through a pointer whose object was freed (not yet reused) and is not protected for this reader: freed with ``bpf_mem_cache_free``, or freed with ``bpf_mem_cache_free_rcu`` and read outside an RCU read section | accepted where the kernel relies on type-stable memory (htab values, ``bpf_cpumask_kptr_get``) |
| ``last_ref`` | an object used after its last reference was dropped: a store to it, or a refcount raised from 0 | bug (``refcount_t: addition on 0; use-after-free``) |
| ``livelock`` | the run did not end within the explorer's step limit | bug (reported, never accepted) |
| ``reuse_before_gp`` | an object freed with ``bpf_mem_cache_free_rcu`` handed out again while a reader that entered before that free is still inside its read section (``bpf_mem_cache_free`` promises no GP, so its reuse shows up as ``reused_read``) | bug |
| ``double_free`` | an object freed twice | bug |
| ``leak`` | objects still allocated at destroy | bug |
| ``nmi_alloc_fail`` | allocation failed in NMI (re-entrancy guard) | accepted |
| ``alloc_fail`` | allocation failed in a task with the cache's refill irq_work claimed but not yet queued (another task preempted inside ``irq_work_raise()``: 6.1-6.6) | bug (fixed by 566f6de3cea3) |
| ``wrong_result`` | the scenario's oracle saw a result no sequential order allows | bug |
| ``invariant`` | allocator lists inconsistent after the run | bug |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

KINDS = ("uaf", "reused_read", "freed_read", "reuse_before_gp", "double_free", "last_ref", "leak", "nmi_alloc_fail",
         "alloc_fail", "wrong_result", "invariant", "livelock")

# frees after which an RCU reader that entered before the free may still read the object
RCU_PROTECTED_FREES = frozenset({"free_rcu", "free_after_gp"})   # the latter: a proposal's bpf_mem_cache_free


@dataclass(frozen=True)
class Violation:
    kind: str
    accepted: bool
    message: str
    step: int


@dataclass
class Shadow:
    gen: int = 0
    alloc_cpu: int = -1
    alloc_ctx: str = ""
    alloc_step: int = -1
    free_kind: str = ""
    free_seq: int = 0
    free_step: int = -1
    in_use: bool = False
    to_slab: bool = False
    dead: bool = False          # its refcount reached 0


@dataclass
class Checker:
    """An instrument (obj_alloc, obj_free, kfree) plus checks the program runtime calls."""

    step: Callable[[], int]
    reader_seq: Callable[[], int]
    active_readers: Callable[[], list[int]]
    accepted: dict[str, bool] = field(default_factory=dict)
    shadows: dict[int, Shadow] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    on_flag: Callable[[str, bool, str], None] | None = None   # e.g. write the violation into the run's listing

    def flag(self, kind: str, message: str) -> None:
        accepted = self.accepted.get(kind, False)
        if self.on_flag is not None:
            self.on_flag(kind, accepted, message)
        self.violations.append(Violation(kind, accepted, message, self.step()))

    def shadow(self, obj: Any) -> Shadow:
        s = self.shadows.get(obj.id)
        if s is None:
            s = self.shadows[obj.id] = Shadow()
        return s

    # -- instrument hooks ------------------------------------------------------------------
    def obj_alloc(self, cpu: Any, cache: Any, obj: Any) -> None:
        s = self.shadow(obj)
        if s.free_kind in RCU_PROTECTED_FREES and any(tok < s.free_seq for tok in self.active_readers()):
            self.flag("reuse_before_gp", f"{cpu}: obj#{obj.id} reused after {s.free_kind} while a reader that "
                                         f"entered before that free is still reading")
        s.gen += 1
        s.in_use = True
        s.dead = False
        s.alloc_cpu = cpu.id
        s.alloc_ctx = cpu.ctx.name.lower()
        s.alloc_step = self.step()
        s.free_kind = ""

    def obj_free(self, cpu: Any, cache: Any, obj: Any, kind: str) -> None:
        s = self.shadow(obj)
        if not s.in_use:
            self.flag("double_free", f"{cpu}: obj#{obj.id} freed twice ({kind})")
        s.in_use = False
        s.free_kind = kind
        s.free_seq = self.reader_seq() + 1
        s.free_step = self.step()

    def kfree(self, obj: Any) -> None:
        self.shadow(obj).to_slab = True

    # -- program accesses ------------------------------------------------------------------
    def access(self, who: str, obj: Any, gen: int, what: str, rcu_token: int | None = None,
               write: bool = False) -> bool:
        """Check an access through a pointer taken at generation ``gen`` by a program whose RCU read
        section (if any) has token ``rcu_token``; True if it is clean."""
        s = self.shadow(obj)
        if obj.freed or s.to_slab:
            self.flag("uaf", f"{who}: {what} of obj#{obj.id}, which went back to slab")
            return False
        if s.gen != gen:
            self.flag("reused_read", f"{who}: {what} of obj#{obj.id} (generation {gen}) after it was reallocated "
                                     f"(now generation {s.gen})")
            return False
        if not s.in_use and s.gen:
            # an RCU reader can hold a pointer to an object freed with free_rcu only if it entered before the
            # grace period that frees it began (later readers see the unpublishing store), and that GP waits
            if not (s.free_kind in RCU_PROTECTED_FREES and rcu_token is not None):
                self.flag("freed_read", f"{who}: {what} of obj#{obj.id} after it was freed ({s.free_kind}) "
                                        f"and not yet reused")
                return False
        if write and s.dead:
            self.flag("last_ref", f"{who}: {what} of obj#{obj.id} after its last reference was dropped")
            return False
        return True

    def refcount(self, who: str, obj: Any, old: int, new: int, op: str) -> None:
        """A refcount of ``obj`` went from ``old`` to ``new`` by ``op``."""
        s = self.shadow(obj)
        if old == 0 and new > 0:
            self.flag("last_ref", f"{who}: {op} raised the refcount of obj#{obj.id} from 0 (use after free)")
        if new == 0:
            s.dead = True
