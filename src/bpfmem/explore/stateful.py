"""Random hash-map operation sequences, checked on the model, a reference and the real kernel.

Problem: the model hash map (``maps.htab.BpfHtab``) claims to return what the
kernel's ``htab_map_update_elem`` / ``htab_map_delete_elem`` /
``htab_map_lookup_elem`` return and to report what ``htab_map_mem_usage``
reports (fdinfo ``memlock``).  Hand-written tests check the sequences someone
thought of; a disagreement on another one (replace while full, NOEXIST after
a delete, EXIST on a key another CPU freed, ...) goes unnoticed.

Mechanism: ``HtabMachine`` is a Hypothesis ``RuleBasedStateMachine``.  Each
rule draws one operation (update with key, flags and CPU; delete; lookup) and
applies it to up to three maps of the same attributes:

- a Python dict, the reference: the documented semantics (``BPF_NOEXIST`` on a
  present key -> -EEXIST, ``BPF_EXIST`` on a missing one -> -ENOENT, a new key
  in a full map -> -E2BIG, else 0), so the run means something without a kernel;
- the model ``BpfHtab`` on a fresh model world;
- when ``use_kernel`` is set, a real ``BPF_MAP_TYPE_HASH`` created with bpf(2)
  (key: 4-byte little-endian u32, value: zero bytes), whose errno is compared
  with the model's -errno.

After every step the invariants check the model's ``count`` and contents
against the reference and, with the kernel, the kernel's contents and its
fdinfo ``memlock`` against the model's ``mem_usage()``.  The model world has
``num_possible_cpus()`` of the running kernel when the kernel takes part, so
the per-CPU terms of the formula match.  On a failure Hypothesis shrinks the
sequence to a minimal one and prints it as steps.

Parameters are class attributes (``max_entries``, ``value_size``,
``prealloc``, ``model_cpus``, ``use_kernel``, ``model_class``): subclass to
vary them.  Run with ``Machine.TestCase`` or
``hypothesis.stateful.run_state_machine_as_test(Machine)``.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ..kernel.btf import struct_size
from ..kernel.probe import possible_cpus
from ..kernel.syscall import (BpfMap, BpfSyscallError, fdinfo, map_create, map_delete_elem, map_lookup_elem,
                              map_update_elem)
from ..maps.base import (BPF_ANY, BPF_EXIST, BPF_F_NO_PREALLOC, BPF_MAP_TYPE_HASH, BPF_NOEXIST, E2BIG, EEXIST,
                         ENOENT, ERRNO_NAMES, MapAttr)
from ..maps.htab import BpfHtab
from ..mm import Mm
from ..rcu import Rcu
from ..sim import Cpu, Machine, RandomScheduler

KEYS = st.integers(0, 11)
FLAGS = st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST])
CPUS = st.integers(0, 1)
FLAG_NAMES = {BPF_ANY: "BPF_ANY", BPF_NOEXIST: "BPF_NOEXIST", BPF_EXIST: "BPF_EXIST"}
KEY_SPACE = range(12)


def rc_name(rc: int | None) -> str:
    """``0``, ``-EEXIST``, ... for messages (None: not run)."""
    if rc is None:
        return "-"
    return "0" if rc == 0 else f"-{ERRNO_NAMES.get(-rc, str(-rc))}"


def kernel_rc(fn: Callable[[], object]) -> int:
    """Run one bpf(2) call: 0 on success, -errno on ``BpfSyscallError``."""
    try:
        fn()
    except BpfSyscallError as e:
        return -e.errno
    return 0


def kernel_unavailable_reason() -> str | None:
    """Why a kernel hash map cannot be created here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root for bpf(2) map creation"
    try:
        map_create(BPF_MAP_TYPE_HASH, 4, 8, 1, BPF_F_NO_PREALLOC).close()
    except OSError as e:
        return f"bpf(2) unusable here: {e}"
    return None


class HtabMachine(RuleBasedStateMachine):
    """Differential state machine over one hash map: reference dict, model, optionally the kernel."""

    max_entries: ClassVar[int] = 8
    key_size: ClassVar[int] = 4
    value_size: ClassVar[int] = 8
    prealloc: ClassVar[bool] = False
    model_cpus: ClassVar[int] = 2
    use_kernel: ClassVar[bool] = False
    model_class: ClassVar[type[BpfHtab]] = BpfHtab

    @classmethod
    def num_cpus(cls) -> int:
        """CPUs of the model world: the kernel's possible CPUs when it takes part, else ``model_cpus``."""
        return possible_cpus() if cls.use_kernel else cls.model_cpus

    @classmethod
    def map_flags(cls) -> int:
        return 0 if cls.prealloc else BPF_F_NO_PREALLOC

    def __init__(self) -> None:
        super().__init__()
        self.ncpus = self.num_cpus()
        self.machine = Machine(self.ncpus, RandomScheduler(0))
        self.mm = Mm(self.machine)
        self.rcu = Rcu(self.machine)
        self.memcg = self.mm.root_memcg.child("map")
        self.attr = MapAttr(BPF_MAP_TYPE_HASH, self.key_size, self.value_size, self.max_entries, self.map_flags())
        # with the kernel taking part, the model uses the running build's struct size (it varies by build)
        layout = {"sizeof_bpf_htab": struct_size("bpf_htab")} if self.use_kernel else {}
        self.model = self.model_class(self.machine, self.mm, self.rcu, self.attr, self.memcg, **layout)
        self.ref: dict[int, bytes] = {}
        self.value = bytes(self.value_size)
        self.kmap: BpfMap | None = None
        if self.use_kernel:
            self.kmap = map_create(BPF_MAP_TYPE_HASH, self.key_size, self.value_size, self.max_entries,
                                   self.map_flags(), name="bpfmem_sm")

    def teardown(self) -> None:
        if self.kmap is not None:
            self.kmap.close()
            self.kmap = None
        self.model.close()

    # -- helpers ---------------------------------------------------------------
    def kkey(self, key: int) -> bytes:
        return struct.pack("<I", key)

    def cpu(self, n: int) -> Cpu:
        return self.machine.cpus[n % self.ncpus]

    def ref_update(self, key: int, flags: int) -> int:
        """The reference semantics of an update; applies it on success."""
        present = key in self.ref
        if flags == BPF_NOEXIST and present:
            return -EEXIST
        if flags == BPF_EXIST and not present:
            return -ENOENT
        if not present and len(self.ref) >= self.max_entries:
            return -E2BIG
        self.ref[key] = self.value
        return 0

    def ref_delete(self, key: int) -> int:
        return 0 if self.ref.pop(key, None) is not None else -ENOENT

    # -- rules -----------------------------------------------------------------
    @rule(key=KEYS, flags=FLAGS, cpu=CPUS)
    def update(self, key: int, flags: int, cpu: int) -> None:
        expected = self.ref_update(key, flags)
        got = self.model.update(self.cpu(cpu), key, flags)
        kern: int | None = None
        if self.kmap is not None:
            kmap = self.kmap
            kern = kernel_rc(lambda: map_update_elem(kmap, self.kkey(key), self.value, flags))
        what = (f"update(key={key}, {FLAG_NAMES[flags]}, cpu={cpu}) with {len(self.ref)} keys in the reference: "
                f"reference {rc_name(expected)}, model {rc_name(got)}, kernel {rc_name(kern)}")
        if kern is not None:
            assert got == kern, "model and kernel disagree on " + what
        assert got == expected, "model and reference disagree on " + what

    @rule(key=KEYS, cpu=CPUS)
    def delete(self, key: int, cpu: int) -> None:
        expected = self.ref_delete(key)
        got = self.model.delete(self.cpu(cpu), key)
        kern: int | None = None
        if self.kmap is not None:
            kmap = self.kmap
            kern = kernel_rc(lambda: map_delete_elem(kmap, self.kkey(key)))
        what = f"delete(key={key}): reference {rc_name(expected)}, model {rc_name(got)}, kernel {rc_name(kern)}"
        if kern is not None:
            assert got == kern, "model and kernel disagree on " + what
        assert got == expected, "model and reference disagree on " + what

    @rule(key=KEYS, cpu=CPUS)
    def lookup(self, key: int, cpu: int) -> None:
        expected = key in self.ref
        got = self.model.lookup(self.cpu(cpu), key) is not None
        what = f"lookup(key={key}): reference {expected}, model {got}"
        if self.kmap is not None:
            value = map_lookup_elem(self.kmap, self.kkey(key))
            what += f", kernel {value is not None}"
            assert got == (value is not None), "model and kernel disagree on " + what
            assert value is None or value == self.value, f"kernel returned value {value!r} for key {key}"
        assert got == expected, "model and reference disagree on " + what

    # -- invariants ------------------------------------------------------------
    @invariant()
    def model_matches_reference(self) -> None:
        assert self.model.count == len(self.ref), \
            f"model count {self.model.count} != {len(self.ref)} keys in the reference {sorted(self.ref)}"
        assert set(self.model.table) == set(self.ref), \
            f"model keys {sorted(self.model.table)} != reference keys {sorted(self.ref)}"

    @invariant()
    def kernel_matches_model(self) -> None:
        if self.kmap is None:
            return
        kmap = self.kmap
        present = {k for k in KEY_SPACE if map_lookup_elem(kmap, self.kkey(k)) is not None}
        assert present == set(self.model.table), \
            f"kernel keys {sorted(present)} != model keys {sorted(self.model.table)}"
        memlock = int(fdinfo(kmap)["memlock"])
        usage = self.model.mem_usage()
        assert memlock == usage, \
            (f"kernel fdinfo memlock {memlock} != model mem_usage() {usage} "
             f"(count {self.model.count}, {self.ncpus} possible CPUs)")
