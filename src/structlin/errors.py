"""Exceptions raised by structlin."""

from __future__ import annotations


class SingularOperatorError(ValueError):
    """An inverse, solve or log-determinant was asked of a singular operator.

    Raised eagerly wherever the values can be inspected (NumPy, PyTorch, JAX
    outside `jit`). Inside `jax.jit` values are abstract, so a singular operator
    produces `inf`/`nan` entries instead, as `jax.numpy.linalg.solve` does.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> try:
        ...     sl.inv(sl.Diagonal(np.array([1.0, 0.0])))
        ... except sl.SingularOperatorError:
        ...     print("singular")
        singular
        >>> issubclass(sl.SingularOperatorError, ValueError)
        True
    """
