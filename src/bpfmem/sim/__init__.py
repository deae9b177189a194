"""The engine: time, CPUs, contexts, irq_work, workqueues, the scheduler, instruments."""

from .cpu import Context, ContextError, Cpu
from .engine import NSEC_PER_MSEC, NSEC_PER_SEC, NSEC_PER_USEC, Engine, Timer
from .instruments import Instruments
from .machine import Machine
from .irq_work import IrqWork, irq_work_claim, irq_work_queue, irq_work_queue_claimed, irq_work_sync
from .sched import (FirstScheduler, RandomScheduler, RecordingScheduler, ReplayScheduler, Schedule,
                    Scheduler, uniform_ns)
from .workqueue import Workqueue

__all__ = [
    "Context", "ContextError", "Cpu", "Machine", "Engine", "Timer", "Instruments", "IrqWork", "irq_work_claim",
    "irq_work_queue", "irq_work_queue_claimed", "irq_work_sync", "FirstScheduler", "RandomScheduler", "RecordingScheduler", "ReplayScheduler",
    "Schedule", "Scheduler", "uniform_ns", "Workqueue", "NSEC_PER_MSEC", "NSEC_PER_SEC", "NSEC_PER_USEC",
]
