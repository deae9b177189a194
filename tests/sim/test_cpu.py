"""Contexts nest as in the kernel; irq_work runs when interrupts come back on."""

from __future__ import annotations

import pytest

from bpfmem.sim import Context, ContextError, IrqWork, Machine, irq_work_queue


def test_context_nesting_rules() -> None:
    cpu = Machine(1).cpus[0]
    cpu.enter(Context.SOFTIRQ)
    cpu.enter(Context.HARDIRQ)
    with pytest.raises(ContextError):
        cpu.enter(Context.HARDIRQ)       # hard IRQs are off inside a hard IRQ
    cpu.enter(Context.NMI)
    with pytest.raises(ContextError):
        cpu.enter(Context.NMI)           # no NMI inside NMI
    cpu.exit(Context.NMI)
    cpu.exit(Context.HARDIRQ)
    cpu.exit(Context.SOFTIRQ)
    cpu.local_irq_save()
    with pytest.raises(ContextError):
        cpu.enter(Context.HARDIRQ)       # IRQs disabled
    cpu.enter(Context.NMI)               # NMIs are not maskable
    cpu.exit(Context.NMI)
    cpu.local_irq_restore()
    with pytest.raises(ContextError):
        cpu.local_irq_restore()


def test_irq_work_runs_at_irq_restore_once_however_often_raised() -> None:
    cpu = Machine(1).cpus[0]
    ran: list[Context] = []
    work = IrqWork(lambda w, c: ran.append(c.ctx))
    cpu.local_irq_save()
    assert irq_work_queue(cpu, work)
    assert not irq_work_queue(cpu, work)   # already pending
    assert ran == []
    cpu.local_irq_restore()
    assert ran == [Context.HARDIRQ]
    assert irq_work_queue(cpu, work)       # IRQs on: the self-IPI runs it now
    assert ran == [Context.HARDIRQ, Context.HARDIRQ]


def test_irq_work_from_nmi_waits_for_the_nmi_to_end() -> None:
    cpu = Machine(1).cpus[0]
    ran = []
    work = IrqWork(lambda w, c: ran.append(1))
    cpu.enter(Context.NMI)
    irq_work_queue(cpu, work)
    assert ran == []
    cpu.exit(Context.NMI)
    assert ran == [1]


def test_without_self_ipi_irq_work_waits_for_the_tick() -> None:
    m = Machine(1, self_ipi=False, tick_ns=4_000_000)
    cpu = m.cpus[0]
    ran = []
    m.engine.run(until=1_000_000)
    irq_work_queue(cpu, IrqWork(lambda w, c: ran.append(m.now)))
    assert ran == []
    m.engine.run(until=10_000_000)
    assert ran == [4_000_000]
