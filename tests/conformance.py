"""The conformance kit, now public as `structlin.testing`: this module re-exports it for
the tests, which import it as `conformance`.

`check_operator` here is the per-case check the tests have always called,
`check_operator(built, backend, dtype, gen, ...)`: the kit's
[`check_case`][structlin.testing.check_case]. The kit's own `check_operator` takes an
operator and runs that check on every backend and dtype.

New operators join by adding a case to `tests/operators/test_conformance.py` (or by
calling `structlin.testing.check_operator` from their own test module).
"""

from __future__ import annotations

from structlin.testing import (
    BACKENDS,
    DTYPES,
    RTOL,
    Built,
    Gen,
    assert_close,
    examples,
    to_backend,
    to_numpy,
)
from structlin.testing import check_case as check_operator

__all__ = [
    "BACKENDS",
    "DTYPES",
    "RTOL",
    "Built",
    "Gen",
    "assert_close",
    "check_operator",
    "examples",
    "to_backend",
    "to_numpy",
]
