"""Shared fixtures: a small model world (machine, mm, rcu, a map memcg)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bpfmem.mm import MemCgroup, Mm
from bpfmem.rcu import Rcu
from bpfmem.sim import Machine, RandomScheduler

MS = 1_000_000


@dataclass
class World:
    m: Machine
    mm: Mm
    rcu: Rcu
    memcg: MemCgroup

    def run_ms(self, ms: float) -> None:
        self.m.engine.run(until=self.m.engine.now + int(ms * MS))


def make_world(ncpus: int = 2, seed: int = 0, **rcu_kw: object) -> World:
    m = Machine(ncpus, RandomScheduler(seed))
    mm = Mm(m)
    rcu = Rcu(m, **rcu_kw)  # type: ignore[arg-type]
    return World(m, mm, rcu, mm.root_memcg.child("map"))


@pytest.fixture
def world() -> World:
    return make_world()
