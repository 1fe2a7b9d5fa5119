"""Bridges to other linear-algebra libraries.

- [`to_cola`][structlin.to_cola] and [`from_cola`][structlin.from_cola]
  ([`structlin.interop.cola`][structlin.interop.cola]): operators to and from
  [CoLA](https://github.com/wilson-labs/cola) (`pip install 'structlin[cola]'`).
- [`to_scipy`][structlin.to_scipy] ([`structlin.interop.scipy`][structlin.interop.scipy]):
  a NumPy operator as a `scipy.sparse.linalg.LinearOperator`.

Each library is imported only when its bridge is first called, so importing
structlin never needs CoLA or SciPy.
"""

from __future__ import annotations

from structlin.interop.cola import from_cola, to_cola
from structlin.interop.scipy import to_scipy

__all__ = ["from_cola", "to_cola", "to_scipy"]
