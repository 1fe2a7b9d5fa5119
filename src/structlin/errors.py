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


class DenseFallbackWarning(UserWarning):
    """An operator took a fallback that builds its dense matrix on every call.

    Issued once per operator class, where a user-defined operator lacks a rule that
    would keep the operation structured, and naming that rule. The common case: an
    operator with only a `matmat` rule used as `X @ A` or in a layer of
    [`structlin.nn`][structlin.nn] (which computes `X @ A^T`): without a structured
    `transpose` rule, `A^T` is a lazy [`Transpose`][structlin.Transpose] whose every
    application builds `A`'s dense matrix. Built-in operators never issue it.

    The result is correct; only its cost is. To make it an error while testing,
    `warnings.simplefilter("error", sl.DenseFallbackWarning)`.

    Examples:
        >>> import warnings
        >>> import numpy as np, structlin as sl
        >>> class Shift(sl.LinearOperator):  # (S x)[i] = x[i - 1], with matmat only
        ...     _children = ("like",)
        ...     def __init__(self, like):
        ...         self._set(like=like)
        ...     @property
        ...     def shape(self):
        ...         return (self.like.shape[0], self.like.shape[0])
        >>> @sl.rules.dispatch
        ... def matmat(A: Shift, X: object):
        ...     return np.concatenate([np.zeros_like(X[:1]), X[:-1]])
        >>> S = Shift(np.zeros(3))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     y = np.array([1.0, 2.0, 3.0]) @ S  # X @ A: through A^T, dense
        >>> y
        array([2., 3., 0.])
        >>> [w.category.__name__ for w in caught]
        ['DenseFallbackWarning']
        >>> "def transpose(A: Shift)" in str(caught[0].message)
        True
    """


class NotPositiveDefiniteError(ValueError):
    """A Cholesky factorisation was asked of an operator that is not positive definite.

    Raised by [`Cholesky`][structlin.Cholesky] (and by `Auto` where it chose Cholesky for
    an operator annotated [`PSD`][structlin.PSD]) wherever the values can be read; inside
    `jax.jit` the factor has NaN entries instead. A PSD annotation on a singular or
    indefinite operator is the usual cause: solve with `alg=sl.LU()` instead.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> try:
        ...     sl.solve(sl.Dense(np.array([[1.0, 2.0], [2.0, 1.0]])), np.ones(2), alg=sl.Cholesky())
        ... except sl.NotPositiveDefiniteError:
        ...     print("not positive definite")
        not positive definite
    """


class ConvergenceWarning(UserWarning):
    """An iterative algorithm stopped at `max_iters` before reaching its tolerance.

    The message gives the iterations and the relative residual reached. The result is the
    last iterate. Make it an error with `on_failure="raise"` on the algorithm
    ([`CG`][structlin.CG]), which raises [`ConvergenceError`][structlin.ConvergenceError].
    Inside `jax.jit` (or `torch.compile`) values cannot be read and nothing is issued:
    read the record that [`cg`][structlin.cg] returns.

    Examples:
        >>> import warnings
        >>> import numpy as np, structlin as sl
        >>> A = sl.PSD(sl.Diagonal(np.linspace(1.0, 100.0, 50)))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     x = sl.solve(A, np.ones(50), alg=sl.CG(tol=1e-12, max_iters=3))
        >>> [w.category.__name__ for w in caught]
        ['ConvergenceWarning']
    """


class ConvergenceError(RuntimeError):
    """An iterative algorithm with `on_failure="raise"` did not reach its tolerance.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> A = sl.PSD(sl.Diagonal(np.linspace(1.0, 100.0, 50)))
        >>> try:
        ...     sl.solve(A, np.ones(50), alg=sl.CG(tol=1e-12, max_iters=3, on_failure="raise"))
        ... except sl.ConvergenceError as e:
        ...     print("did not converge")
        did not converge
    """
