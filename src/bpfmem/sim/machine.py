"""A machine: the engine, its CPUs, the scheduler, instruments and workqueues.

Everything below ``backend`` receives one ``Machine`` and takes time, CPUs and
choices from it; nothing reads a global.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .cpu import Cpu
from .engine import Engine
from .instruments import Instruments
from .sched import RandomScheduler, Scheduler
from .workqueue import Workqueue


@dataclass(frozen=True)
class MachineStatistics:
    now_ns: int
    cpus: int
    online_cpus: int


class Machine:
    """``ncpus`` possible (and online) CPUs sharing one engine and scheduler."""

    def __init__(self, ncpus: int, sched: Scheduler | None = None, *, self_ipi: bool = True,
                 tick_ns: int = 4_000_000, wq_delay_ns: int = 50_000) -> None:
        if ncpus < 1:
            raise ValueError(f"ncpus must be >= 1, got {ncpus}")
        self.engine = Engine()
        self.sched: Scheduler = sched if sched is not None else RandomScheduler(0)
        self.instruments = Instruments()
        self.cpus = [Cpu(i, self.engine, self_ipi=self_ipi, tick_ns=tick_ns) for i in range(ncpus)]
        self.system_dfl_wq = Workqueue(self.engine, "system_dfl_wq", wq_delay_ns)
        # False: interchangeable objects (on free lists, waiting for grace periods) are counted, not
        # made one by one; nothing may then ask which object is which (no checker, no explorer)
        self.identity = True
        # with counted objects: batches of map operations run by runs of quiet keys (maps/batch.py);
        # False runs them key by key (the same numbers, slower)
        self.batching = True
        self._cpuhp: list[tuple[Callable[[Cpu], None] | None, Callable[[Cpu], None] | None]] = []

    @property
    def now(self) -> int:
        return self.engine.now

    # -- CPU hotplug (kernel/cpu.c): callbacks in registration order on the way up, reversed on the way down
    def cpuhp_setup_state(self, startup: Callable[[Cpu], None] | None,
                          teardown: Callable[[Cpu], None] | None) -> None:
        """``cpuhp_setup_state()``: ``startup`` runs for a CPU coming online, ``teardown`` for one going down."""
        self._cpuhp.append((startup, teardown))

    def cpu_down(self, cpu_id: int) -> None:
        """``remove_cpu()``: the teardown callbacks run, then the CPU is offline (nothing runs on it)."""
        cpu = self.cpus[cpu_id]
        if not cpu.online:
            raise ValueError(f"cpu{cpu_id} is already offline")
        if sum(c.online for c in self.cpus) == 1:
            raise ValueError("the last online CPU cannot go down")
        for _, teardown in reversed(self._cpuhp):
            if teardown is not None:
                teardown(cpu)
        cpu.online = False

    def cpu_up(self, cpu_id: int) -> None:
        """``add_cpu()``: the CPU is online, then the startup callbacks run."""
        cpu = self.cpus[cpu_id]
        if cpu.online:
            raise ValueError(f"cpu{cpu_id} is already online")
        cpu.online = True
        for startup, _ in self._cpuhp:
            if startup is not None:
                startup(cpu)

    def num_possible_cpus(self) -> int:
        return len(self.cpus)

    def statistics(self) -> MachineStatistics:
        return MachineStatistics(self.engine.now, len(self.cpus), sum(c.online for c in self.cpus))
