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
