"""bench obj on the running kernel: bpf_obj_new/bpf_obj_drop of a struct from the program's own BTF."""

from __future__ import annotations

import json

import pytest

from bpfmem.cli import main

from . import require_bpf

pytestmark = pytest.mark.kernel


def test_the_program_btf_is_what_makes_bpf_obj_new_load() -> None:
    """The same program with the type id of the BTF's ``int`` instead of ``struct obj`` is refused, and the
    verifier's reason is the one line the user sees."""
    require_bpf()
    from bpfmem.kernel.obj_prog import ObjProgram
    with ObjProgram(objects=8) as prog:
        prog.run()
        assert prog.allocated() == 8
    with pytest.raises(OSError, match="type ID argument must be of a struct"):
        ObjProgram(objects=8, type_id=1)


def test_bench_obj_on_the_kernel_counts_every_object_and_puts_the_model_beside_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    require_bpf()
    assert main(["bench", "obj", "--backend", "kernel", "--rounds", "300", "--warmup", "50", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    k, m = d["kernel"], d["result"]
    assert k["modelled"] is False and m["modelled"] is True
    assert k["failed_allocations"] == 0                   # every bpf_obj_new returned an object
    assert k["us_per_round"] > 0 and k["kmallocs_per_round"] >= 0
    assert m["cpus"] == k["machine_cpus"] and m["round_us"] == pytest.approx(k["us_per_round"], abs=0.01)


def test_bench_obj_kernel_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    require_bpf()
    assert main(["bench", "obj", "--backend", "kernel", "--objects", "65"]) == 2
    err = capsys.readouterr().err
    assert "--objects" in err and "1..64" in err


@pytest.mark.parametrize("kind", ["percpu", "cpumask"])
def test_the_other_global_allocator_users_run_on_the_kernel(kind: str) -> None:
    require_bpf()
    from bpfmem.kernel.obj_prog import run_obj_kernel
    r = run_obj_kernel(1, 16, 64, rounds=50, warmup=5, kind=kind)
    assert r["failed_allocations"] == 0 and r["us_per_round"] > 0 and r["kind"] == kind
