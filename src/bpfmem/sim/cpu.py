"""CPUs and execution contexts, with the kernel's nesting rules.

Problem: whether kernel code may be interrupted, and by what, decides the
behaviour of an any-context allocator.  A CPU runs in one of four contexts and
they nest only upward::

    TASK -> SOFTIRQ -> HARDIRQ -> NMI      (NMI may also nest in NMI-free code
                                            with IRQs off; HARDIRQ needs IRQs on)

``local_irq_save``/``local_irq_restore`` keep a disable depth.  An ``irq_work``
raised on a CPU (``sim.irq_work``) runs in HARDIRQ context as soon as that CPU
has interrupts enabled again, which is what the x86 self-IPI does; without a
self-IPI (``Cpu.self_ipi = False``) it waits for the next tick.

Labelled interruption points: code the kernel can interrupt calls
``cpu.point(label)`` where an IRQ or NMI could arrive.  With no hook installed
this is one attribute test; an explorer installs ``point_hook`` and may deliver
a nested interrupt right there (an interrupt on one CPU runs to completion
before the interrupted code resumes, so nesting is a plain call).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .engine import Engine
    from .irq_work import IrqWork


class Context(IntEnum):
    TASK = 0
    SOFTIRQ = 1
    HARDIRQ = 2
    NMI = 3


class ContextError(RuntimeError):
    """An illegal context transition (e.g. a hard IRQ while IRQs are off)."""


class Cpu:
    """One CPU: its context stack, IRQ-disable depth and pending irq_work."""

    __slots__ = ("id", "engine", "ctx_stack", "irq_off", "irq_work_list", "self_ipi",
                 "tick_ns", "point_hook", "_tick_timer", "online", "node")

    def __init__(self, cpu_id: int, engine: Engine, *, self_ipi: bool = True,
                 tick_ns: int = 4_000_000, node: int = 0) -> None:
        self.id = cpu_id
        self.engine = engine
        self.ctx_stack: list[Context] = [Context.TASK]
        self.irq_off = 0
        self.irq_work_list: list[IrqWork] = []
        self.self_ipi = self_ipi
        self.tick_ns = tick_ns
        self.point_hook: Callable[[Cpu, str], None] | None = None
        self._tick_timer = None
        self.online = True
        self.node = node

    def __repr__(self) -> str:
        return f"cpu{self.id}"

    @property
    def ctx(self) -> Context:
        return self.ctx_stack[-1]

    def in_interrupt(self) -> bool:
        return self.ctx_stack[-1] != Context.TASK

    def irqs_disabled(self) -> bool:
        return self.irq_off > 0

    # -- interrupt masking ---------------------------------------------------
    def local_irq_save(self) -> None:
        self.irq_off += 1

    def local_irq_restore(self) -> None:
        self.irq_off -= 1
        if self.irq_off < 0:
            raise ContextError(f"{self}: unbalanced local_irq_restore")
        if self.irq_off == 0 and self.irq_work_list and self.self_ipi:
            self.deliver_irq_work()

    # -- context transitions -------------------------------------------------
    def enter(self, ctx: Context) -> None:
        """Enter an interrupt context on top of the current one."""
        cur = self.ctx_stack[-1]
        if ctx == Context.NMI:
            if cur == Context.NMI:
                raise ContextError(f"{self}: NMI cannot nest in NMI")
        elif ctx == Context.HARDIRQ:
            if self.irq_off or cur >= Context.HARDIRQ:
                raise ContextError(f"{self}: hard IRQ with IRQs off or in {cur.name}")
        elif ctx == Context.SOFTIRQ:
            if cur != Context.TASK or self.irq_off:
                raise ContextError(f"{self}: softirq only from task context with IRQs on")
        else:
            raise ContextError("TASK is not entered, it is the bottom of the stack")
        self.ctx_stack.append(ctx)
        if ctx >= Context.HARDIRQ:
            self.irq_off += 1

    def exit(self, ctx: Context) -> None:
        if self.ctx_stack[-1] != ctx or len(self.ctx_stack) == 1:
            raise ContextError(f"{self}: exit {ctx.name} but in {self.ctx_stack[-1].name}")
        self.ctx_stack.pop()
        if ctx >= Context.HARDIRQ:
            self.local_irq_restore()

    def point(self, label: str) -> None:
        """A labelled point where the kernel could be interrupted."""
        hook = self.point_hook
        if hook is not None:
            hook(self, label)

    # -- irq_work delivery -----------------------------------------------------
    def deliver_irq_work(self) -> None:
        """Run pending irq_work in HARDIRQ context (the self-IPI handler)."""
        if self.irq_off or self.ctx_stack[-1] >= Context.HARDIRQ:
            return
        self.enter(Context.HARDIRQ)
        try:
            while self.irq_work_list:
                work = self.irq_work_list.pop(0)
                work.run(self)
        finally:
            self.exit(Context.HARDIRQ)

    def arm_tick(self) -> None:
        """Without a self-IPI, pending irq_work runs at the next tick."""
        if self._tick_timer is not None:
            return
        now = self.engine.now
        nxt = (now // self.tick_ns + 1) * self.tick_ns
        self._tick_timer = self.engine.at(nxt, self._tick)

    def _tick(self) -> None:
        self._tick_timer = None
        if self.irq_work_list:
            self.deliver_irq_work()
