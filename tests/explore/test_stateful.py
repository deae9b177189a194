"""Differential state machine over hash maps: model vs reference always, vs the kernel where BPF works."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from bpfmem.explore.stateful import HtabMachine
from bpfmem.maps import BPF_ANY, BPF_NOEXIST, BpfHtab
from bpfmem.sim import Cpu

from ..kernel import require_bpf

RUN = settings(max_examples=50, deadline=None, stateful_step_count=30, database=None,
               suppress_health_check=[HealthCheck.too_slow])
# a deliberately broken model must be caught: a single bug report, no database replaying it next time
HUNT = settings(RUN, max_examples=200, report_multiple_bugs=False, derandomize=True)


# (1) model against the reference, always
TestHtabModel = HtabMachine.TestCase
TestHtabModel.settings = RUN


class PreallocHtabMachine(HtabMachine):
    prealloc = True


TestPreallocHtabModel = PreallocHtabMachine.TestCase
TestPreallocHtabModel.settings = RUN


# (2) model against the kernel
class KernelHtabMachine(HtabMachine):
    use_kernel = True


class KernelPreallocHtabMachine(HtabMachine):
    use_kernel = True
    prealloc = True


@pytest.mark.kernel
@pytest.mark.parametrize("machine", [KernelHtabMachine, KernelPreallocHtabMachine], ids=["no_prealloc", "prealloc"])
def test_model_agrees_with_the_kernel(machine: type[HtabMachine]) -> None:
    """Return codes, contents and fdinfo memlock of the kernel map equal the model's after every step."""
    require_bpf()
    run_state_machine_as_test(machine, settings=RUN)


# (3) the comparison can fail
class IgnoresNoexist(BpfHtab):
    """A broken model: BPF_NOEXIST treated as BPF_ANY (replaces a present key instead of -EEXIST)."""

    def update(self, cpu: Cpu, key: int, flags: int = 0) -> int:
        return super().update(cpu, key, BPF_ANY if flags == BPF_NOEXIST else flags)


class BrokenNoexistMachine(HtabMachine):
    model_class = IgnoresNoexist


class ForgetsLlistNode(BpfHtab):
    """A broken model whose mem_usage() leaves out the 8-byte llist_node per element:
    only the kernel's memlock can tell."""

    def mem_usage(self) -> int:
        return super().mem_usage() - 8 * self.count


class KernelForgetsLlistNodeMachine(HtabMachine):
    use_kernel = True
    model_class = ForgetsLlistNode


def test_broken_model_is_caught_and_shrunk() -> None:
    """Hypothesis finds the NOEXIST bug without a kernel and shrinks it to: insert a key, insert it again."""
    with pytest.raises(AssertionError, match="model and reference disagree on update") as exc:
        run_state_machine_as_test(BrokenNoexistMachine, settings=HUNT)
    msg = str(exc.value)
    assert "BPF_NOEXIST" in msg and "reference -EEXIST, model 0" in msg
    steps = [n for n in getattr(exc.value, "__notes__", []) if n.startswith("state.")]
    if steps:  # the printed minimal program, when this Hypothesis attaches it as notes
        assert len([s for s in steps if s.startswith("state.update(")]) == 2, steps


@pytest.mark.kernel
def test_wrong_memlock_is_caught_by_the_kernel() -> None:
    """A model error the reference cannot see (memlock formula) fails only against the kernel."""
    require_bpf()
    with pytest.raises(AssertionError, match="kernel fdinfo memlock"):
        run_state_machine_as_test(KernelForgetsLlistNodeMachine, settings=HUNT)
