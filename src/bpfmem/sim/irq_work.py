"""irq_work: deferred work raised from any context, run in hard-IRQ context.

Models: kernel/irq_work.c (6.x).  ``irq_work_queue`` sets the work pending and
returns False if it already was (the work runs once however often it is
raised).  On x86 the raising CPU sends itself an IPI, so the work runs as soon
as interrupts are enabled again on that CPU (``Cpu.local_irq_restore``); on an
architecture without that interrupt it runs at the next tick.

Deviation: IRQ_WORK_LAZY and cross-CPU ``irq_work_queue_on`` are not modelled.
"""

from __future__ import annotations

from typing import Callable

from .cpu import Cpu


class IrqWork:
    """``struct irq_work``: a callback plus its pending flag."""

    __slots__ = ("func", "pending", "raised", "runs")

    def __init__(self, func: Callable[[IrqWork, Cpu], None]) -> None:
        self.func = func
        self.pending = False
        self.raised = 0
        self.runs = 0

    def run(self, cpu: Cpu) -> None:
        self.pending = False
        self.runs += 1
        self.func(self, cpu)


def irq_work_claim(work: IrqWork) -> bool:
    """``irq_work_claim()``: mark ``work`` pending; False if it already was (then nothing is queued)."""
    if work.pending:
        return False
    work.pending = True
    work.raised += 1
    return True


def irq_work_queue(cpu: Cpu, work: IrqWork) -> bool:
    """Queue ``work`` on ``cpu``; False if it was already pending."""
    if not irq_work_claim(work):
        return False
    irq_work_queue_claimed(cpu, work)
    return True


def irq_work_queue_claimed(cpu: Cpu, work: IrqWork) -> None:
    """``__irq_work_queue_local()`` after a successful claim: the work goes on the CPU's list and the
    self-IPI (or the next tick) runs it.  Between the two a task may be preempted with the work pending
    but not yet queued (the window of 566f6de3cea3)."""
    cpu.irq_work_list.append(work)
    if cpu.self_ipi:
        if not cpu.irq_off and not cpu.in_interrupt():
            cpu.deliver_irq_work()
    else:
        cpu.arm_tick()


def irq_work_sync(cpu: Cpu, work: IrqWork) -> None:
    """Wait until ``work`` is not pending: here, run it now if it is."""
    if work.pending and work in cpu.irq_work_list:
        cpu.irq_work_list.remove(work)
        work.run(cpu)
