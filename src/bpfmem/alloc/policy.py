"""Version profiles and watermark policies of bpf_mem_alloc, as strategy objects.

Problem: memalloc.c changed shape three times (6.1, 6.2, 6.6) and the versions
differ in exactly three decisions (then 6.7 moved irq_work_raise() before the IRQ
restore: ``raise_after_irq_restore``; 6.8 shrank the per-CPU caches:
``percpu_small_caches``).  Each profile answers them; the mechanism in
``memalloc.py`` is written once.

1. ``reuse_sources(c)``: before kmalloc, may a refill take objects that
   are on their way to slab?  6.1: no.  6.2 (0893d6007db5): yes, from the
   cache's own list not yet handed to RCU.  6.6 (04fabf00b4d3): yes, from
   ``free_by_rcu_ttrace`` and then from ``waiting_for_gp_ttrace``.
2. ``free_bulk_target(c)``: whose slab-bound list gets trimmed objects?
   6.1/6.2: the trimming cache.  6.6 (822fb26bdb55): ``c->tgt``, the owner of
   the last object freed here (the allocation hint).
3. ``ttrace_needs_call_rcu()``: what the tasks-trace callback does.  6.1: always
   chain ``call_rcu`` before freeing.  6.2+: free at once when
   ``rcu_trace_implies_rcu_gp()``.

List names: in 6.1/6.2 the slab-bound lists were called ``free_by_rcu`` and
``waiting_for_gp``; 6.6 renamed them ``free_by_rcu_ttrace`` and
``waiting_for_gp_ttrace`` and reused the old names for the
``bpf_mem_cache_free_rcu`` path.  The model always uses the 6.6 names;
``list_names`` gives each profile's own spelling for output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .memalloc import BpfMemCache


class WatermarkPolicy(Protocol):
    """Sets ``low_watermark``, ``high_watermark`` and ``batch`` of a cache."""

    def init_refill_work(self, c: BpfMemCache) -> None: ...


class KernelWatermarks:
    """``init_refill_work()`` (memalloc.c, 6.1+; per-CPU caches 1/3 since 6.8, 0e2ba9f96f9b)."""

    def __init__(self, percpu_small: bool = True) -> None:
        self.percpu_small = percpu_small

    def init_refill_work(self, c: BpfMemCache) -> None:
        if c.percpu_size and self.percpu_small:
            c.low_watermark, c.high_watermark = 1, 3
        elif c.unit_size <= 256:
            c.low_watermark, c.high_watermark = 32, 96
        else:
            c.low_watermark = max(32 * 256 // c.unit_size, 1)
            c.high_watermark = max(96 * 256 // c.unit_size, 3)
        c.batch = max((c.high_watermark - c.low_watermark) // 4 * 3, 1)


class MemAllocProfile:
    """The behaviour of one kernel version.  Subclasses override the decisions."""

    name = "base"
    kernel = ""
    uses_hint = False
    # per-CPU caches: 1/3/1 watermarks and a prefill of 1 (0e2ba9f96f9b, 5b95e638f134: 6.8); before, the
    # unit-size rule of every other cache
    percpu_small_caches = False
    # percpu objects of any size (``bpf_mem_alloc_init(ma, 0, true)``, bpf_global_percpu_ma): 6.7 (41a5db8d8161)
    percpu_size_classes = False
    has_free_rcu = False
    # 6.1-6.6 restore IRQs before irq_work_raise() in unit_alloc/unit_free(_rcu); 6.7 raises first
    # (566f6de3cea3, 62cf51cb0ebe).  Same memory and speed; the difference is a preemption window
    # (``memalloc.irq_work_raise_irqs_on``).  The proposals inherit the order of the 6.2 base they were posted on.
    raise_after_irq_restore = False
    # fault injection for the explorer (no kernel has these): False plants "free_rcu reuses at once";
    # in ``planted`` (cold paths only): "lose_extra_rcu" makes check_free_by_rcu drop free_llist_extra_rcu,
    # "ttrace_as_rcu" makes do_call_rcu_ttrace wait for a normal RCU GP instead of a tasks-trace GP
    free_rcu_waits_for_gp = True
    planted: frozenset[str] = frozenset()
    list_names: dict[str, str] = {
        "free_by_rcu_ttrace": "free_by_rcu_ttrace",
        "waiting_for_gp_ttrace": "waiting_for_gp_ttrace",
    }

    def __init__(self, watermarks: WatermarkPolicy | None = None) -> None:
        self.watermarks: WatermarkPolicy = watermarks or KernelWatermarks(percpu_small=self.percpu_small_caches)

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        """Slab-bound lists alloc_bulk may take objects from, in order."""
        return ()

    def free_bulk_target(self, c: BpfMemCache) -> BpfMemCache:
        return c

    def ttrace_needs_call_rcu(self, trace_implies_rcu_gp: bool) -> bool:
        """After the tasks-trace GP, must a normal RCU GP follow before kfree?"""
        return not trace_implies_rcu_gp

    # -- hooks of the proposals (alloc/proposals.py); kernel profiles keep memalloc.c's paths --------
    proposal = False
    # what bpf_mem_cache_free() promises, as the checker sees it: "free" reusable at once; "free_after_gp"
    # not reused nor freed before an RCU grace period (the proposals)
    free_kind = "free"

    def init_cache(self, c: BpfMemCache) -> None:
        """Set up ``c.prop``, a proposal's own per-cache state (kernel profiles: none)."""

    def unit_free(self, c: BpfMemCache, obj: Any) -> None:
        raise NotImplementedError       # only called when c.prop is set

    def refill(self, c: BpfMemCache) -> None:
        raise NotImplementedError

    def quiet_frees(self, c: BpfMemCache) -> int:
        """How many ``unit_free()`` calls in a row only push and count (a proposal's runs; c.active == 0)."""
        return 0

    def unit_free_run(self, c: BpfMemCache, objs: list[Any]) -> None:
        raise NotImplementedError

    def drain(self, c: BpfMemCache) -> int:
        return 0

    def callbacks_in_flight(self, c: BpfMemCache) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<profile {self.name}>"


class V6_1(MemAllocProfile):
    """6.1: kmalloc-only refill, own slab-bound list, tasks-trace then call_rcu."""

    name = "v6.1"
    kernel = "6.1 (kernel/bpf/memalloc.c as merged in 7c8199e24fa0 and follow-ups)"
    raise_after_irq_restore = True
    list_names = {"free_by_rcu_ttrace": "free_by_rcu", "waiting_for_gp_ttrace": "waiting_for_gp"}

    def ttrace_needs_call_rcu(self, trace_implies_rcu_gp: bool) -> bool:
        return True  # 6.1 never asked rcu_trace_implies_rcu_gp()


class V6_2(MemAllocProfile):
    """6.2: refill reuses objects not yet handed to RCU (0893d6007db5)."""

    name = "v6.2"
    kernel = "6.2-6.5 (Hou Tao, 'Misc optimizations for bpf mem allocator')"
    raise_after_irq_restore = True
    list_names = {"free_by_rcu_ttrace": "free_by_rcu", "waiting_for_gp_ttrace": "waiting_for_gp"}

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        return (c.free_by_rcu_ttrace,)


class V6_6(MemAllocProfile):
    """6.6: ``_ttrace`` lists, ``tgt`` hint, reuse from both ttrace lists."""

    name = "v6.6"
    kernel = "6.6 (Alexei Starovoitov, 'bpf: Introduce bpf_mem_cache_free_rcu()')"
    uses_hint = True
    has_free_rcu = True
    raise_after_irq_restore = True

    def reuse_sources(self, c: BpfMemCache) -> tuple[list, ...]:
        return (c.free_by_rcu_ttrace, c.waiting_for_gp_ttrace)

    def free_bulk_target(self, c: BpfMemCache) -> BpfMemCache:
        return c.tgt


class V6_7(V6_6):
    """6.7: the 6.6 allocator raising its irq_work before restoring IRQs (566f6de3cea3, 62cf51cb0ebe)."""

    name = "v6.7"
    kernel = "6.7 (Hou Tao, 'bpf: Enable IRQ after irq_work_raise() completes')"
    raise_after_irq_restore = False
    percpu_size_classes = True


class V6_8(V6_7):
    """6.8-6.19: per-CPU caches with 1/3/1 watermarks and a prefill of 1 (0e2ba9f96f9b, 5b95e638f134)."""

    name = "v6.8"
    kernel = "6.8-6.19 (Yonghong Song, 'bpf: Use smaller low/high marks for percpu allocation')"
    percpu_small_caches = True


PROFILES: dict[str, type[MemAllocProfile]] = {"v6.1": V6_1, "v6.2": V6_2, "v6.6": V6_6, "v6.7": V6_7, "v6.8": V6_8}


def get_profile(name: str) -> MemAllocProfile:
    try:
        return PROFILES[name]()
    except KeyError:
        raise ValueError(f"unknown bpf_mem_alloc profile {name!r}; allowed: {', '.join(PROFILES)}") from None
