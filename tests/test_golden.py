"""Every number the model printed before the scale work, byte for byte (tests/golden/matrix.py).

The default run checks a fixed, spread-out sample of the matrix; the slow run checks all of it.
"""

from __future__ import annotations

import pytest

from tests.golden import matrix

ALL = list(matrix.points())
SAMPLE = ALL[::9]


def _check(p: tuple[str, str, int, int, int]) -> None:
    want = matrix.read(p)
    got = matrix.run(p)
    if got != want:
        import json
        a, b = json.loads(want), json.loads(got)
        diff = [k for k in a["results"][0] if a["results"][0].get(k) != b["results"][0].get(k)]
        raise AssertionError(f"{matrix.name(p)} differs from the golden file in {diff}")


@pytest.mark.parametrize("p", SAMPLE, ids=[matrix.name(p) for p in SAMPLE])
def test_golden_sample(p: tuple[str, str, int, int, int]) -> None:
    _check(p)


@pytest.mark.slow
@pytest.mark.parametrize("p", ALL, ids=[matrix.name(p) for p in ALL])
def test_golden_all(p: tuple[str, str, int, int, int]) -> None:
    _check(p)


def test_a_broken_run_fails_the_golden_files() -> None:
    """One object too many taken by a run of quiet allocations changes the printed numbers."""
    import bpfmem.alloc.memalloc as M
    import bpfmem.maps.htab as H
    p = ("v6.6", "batch_add_batch_del", 8, 2, 64)
    assert matrix.run(p) == matrix.read(p)
    orig = M.unit_alloc_run

    def broken(c: object, n: int) -> None:
        orig(c, n + 1 if len(c.free_llist) > n else n)  # type: ignore[attr-defined]
    H.unit_alloc_run = broken  # type: ignore[assignment]
    try:
        assert matrix.run(p) != matrix.read(p)
    finally:
        H.unit_alloc_run = orig  # type: ignore[assignment]
