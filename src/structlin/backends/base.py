"""The array operations every backend provides.

A backend is a stateless singleton that wraps one array library. Operators never
import NumPy, PyTorch or JAX directly: they ask their backend, which is chosen
from the arrays they hold (see [`structlin.backends.backend_of`][]).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

Array = Any
DType = Any
Device = Any


class Backend(abc.ABC):
    """Array operations of one library, with NumPy semantics unless stated.

    Batched linear-algebra routines (`matmul`, `solve`, `inv`, `slogdet`) treat
    the last two axes as the matrix and broadcast over the leading ones.
    """

    name: str
    # Whether arrays can be written in place (NumPy, PyTorch). Results of a library whose
    # arrays cannot (JAX) never alias anything a caller could write into, so the public
    # functions skip their check for shared memory.
    mutable: ClassVar[bool] = True
    # The module of CoLA's array functions for this library (`cola.backends.<name>`), for
    # `structlin.interop.cola`; `None` where CoLA has none.
    cola_functions: ClassVar[str | None] = None

    def __repr__(self) -> str:
        return f"<{self.name} backend>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # A backend is a singleton that operators compare by identity: a pickled or
        # copied one is the registered instance of its name.
        from structlin.backends import get_backend

        return get_backend, (self.name,)

    # -- introspection -------------------------------------------------------
    @abc.abstractmethod
    def is_array(self, x: object) -> bool:
        """Whether `x` is an array (or tracer) of this library."""

    def admit_type(self, x: Array) -> bool:
        """Called by `backend_of` for the first array of each type: `TypeError` for arrays
        of this library that structlin refuses, and whether `type(x)` may be remembered as
        a plain array type, which the fast path of `A @ x` takes as it is (see
        `plain_array`)."""
        return True

    def plain_array(self, x: Array, what: str) -> Array:
        """`x` as the library's plain array type, for arrays whose type `admit_type` does
        not remember (NumPy: a `numpy.matrix` viewed as an ndarray); `TypeError`, naming
        `what`, for arrays structlin refuses."""
        return x

    def shape(self, x: Array) -> tuple[int, ...]:
        return tuple(x.shape)

    @abc.abstractmethod
    def device(self, x: Array) -> Device:
        """The device `x` lives on (`None` where the notion does not apply)."""

    @abc.abstractmethod
    def is_floating(self, dtype: DType) -> bool:
        """Whether `dtype` is a real or complex floating-point type."""

    @abc.abstractmethod
    def is_complex(self, dtype: DType) -> bool: ...

    @abc.abstractmethod
    def is_integer(self, dtype: DType) -> bool: ...

    @abc.abstractmethod
    def result_type(self, *dtypes: DType) -> DType: ...

    @abc.abstractmethod
    def default_float(self) -> DType: ...

    @abc.abstractmethod
    def index_dtype(self) -> DType: ...

    def canonical_dtype(self, dtype: DType) -> DType:
        """`dtype` (this library's, another's, or a name such as `"float32"`) as this library's."""
        import numpy as np

        try:
            return np.dtype(dtype)
        except TypeError:  # a torch.dtype
            return np.dtype(str(dtype).removeprefix("torch."))

    def foreign_device(self, device: Device) -> Device:
        """The device an operator of this backend records when another library (CoLA)
        reports `device` for arrays of this library: PyTorch keeps its device object;
        `None` by default, for libraries with no devices (NumPy) or whose arrays place
        themselves (JAX)."""
        return None

    def pickle_device(self, value: Any) -> DeviceRef | None:
        """A picklable stand-in for `value` if it is a device object of this library that
        cannot be pickled itself (a JAX device), else `None`."""
        return None

    def canonical_device(self, device: Device) -> Device:
        """`device` (an object or a name such as `"cpu"`) as this library's device object,
        and the device arrays are created on by default for `None`; `None` where the
        library has no notion of device (NumPy) or places arrays itself (JAX)."""
        return device

    def is_concrete(self, x: Array) -> bool:
        """Whether the values of `x` can be read now (false for JAX tracers)."""
        return True

    # -- creation and conversion --------------------------------------------
    @abc.abstractmethod
    def asarray(self, x: Any, dtype: DType = None, device: Device = None) -> Array: ...

    @abc.abstractmethod
    def astype(self, x: Array, dtype: DType) -> Array: ...

    def copy(self, x: Array) -> Array:
        """A copy of `x` that shares no memory with it (JAX arrays, immutable, are returned
        as they are); differentiable where the library tracks gradients."""
        return x

    def may_share_memory(self, a: Array, b: Array) -> bool:
        """Whether a write into `a` could change `b` (a cheap, conservative test; always
        false for immutable arrays)."""
        return False

    @abc.abstractmethod
    def to_device(self, x: Array, device: Device) -> Array: ...

    @abc.abstractmethod
    def to_numpy(self, x: Array) -> Any: ...

    # Conversion between backends goes through the host: the source exports a NumPy array
    # and the name of the dtype to restore, the target imports it. Dtypes NumPy lacks
    # (bfloat16, float8) travel as float32 (complex64), which holds their values exactly.
    def export_array(self, x: Array) -> tuple[Any, str]:
        """`x` on the host as a NumPy array of a dtype NumPy has, and the name of `x`'s
        dtype (`"bfloat16"`): what `import_array` of any backend takes."""
        import numpy as np

        host = np.asarray(self.to_numpy(x))
        name = host.dtype.name
        if host.dtype.isbuiltin != 1:  # a dtype NumPy lacks (ml_dtypes' bfloat16, float8)
            wide = np.complex64 if host.dtype.kind == "c" else np.float32
            host = host.astype(wide)
        return host, name

    def import_array(self, host: Any, dtype: DType | str) -> Array:
        """An array of this library from `export_array`'s output: `host`'s values, of
        `dtype` (a name such as `"bfloat16"`, or any library's dtype)."""
        return self.asarray(host, dtype=self.canonical_dtype(dtype))

    @abc.abstractmethod
    def eye(self, n: int, dtype: DType, device: Device = None) -> Array: ...

    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...], dtype: DType, device: Device = None) -> Array: ...

    @abc.abstractmethod
    def arange(self, n: int, device: Device = None) -> Array:
        """`[0, 1, ..., n-1]` in the backend's index dtype."""

    # -- shape manipulation --------------------------------------------------
    @abc.abstractmethod
    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array: ...

    @abc.abstractmethod
    def permute_dims(self, x: Array, axes: tuple[int, ...]) -> Array: ...

    @abc.abstractmethod
    def swap_last(self, x: Array) -> Array:
        """Swap the last two axes (a view where the library has views)."""

    @abc.abstractmethod
    def take(self, x: Array, indices: Array, axis: int) -> Array: ...

    @abc.abstractmethod
    def concatenate(self, xs: list[Array], axis: int = 0) -> Array: ...

    @abc.abstractmethod
    def stack(self, xs: list[Array], axis: int = 0) -> Array: ...

    # -- elementwise and reductions -----------------------------------------
    def pad_to(self, x: Array, axis: int, size: int) -> Array:
        """`x` with zeros appended along `axis` up to length `size` (unchanged if already that long)."""
        have = x.shape[axis]
        if have >= size:
            return x
        shape = list(x.shape)
        shape[axis] = size - have
        return self.concatenate([x, self.zeros(tuple(shape), x.dtype, self.device(x))], axis)

    @abc.abstractmethod
    def conj(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def real(self, x: Array) -> Array:
        """The real part of `x` (a real `x` as it is)."""

    @abc.abstractmethod
    def abs(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def log(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def sum(self, x: Array, axis: int | None = None) -> Array: ...

    @abc.abstractmethod
    def prod(self, x: Array, axis: int | None = None) -> Array: ...

    @abc.abstractmethod
    def minimum(self, x: Array, y: Array) -> Array: ...

    @abc.abstractmethod
    def all(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def isfinite(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def sort(self, x: Array) -> Array: ...

    @abc.abstractmethod
    def argsort(self, x: Array) -> Array: ...

    # Elementwise functions and loops for the algorithms (`structlin.algorithms`): not
    # abstract, so that a backend written before them keeps working for everything else.
    def sqrt(self, x: Array) -> Array:
        return self._missing("sqrt")

    def exp(self, x: Array) -> Array:
        return self._missing("exp")

    def real(self, x: Array) -> Array:
        """The real part of `x` (`x` itself for a real array)."""
        return self._missing("real")

    def where(self, condition: Array, x: Array, y: Array) -> Array:
        return self._missing("where")

    def any(self, x: Array) -> Array:
        return self._missing("any")

    def while_loop(self, cond: Any, body: Any, state: Any) -> Any:
        """`while cond(state): state = body(state)`, with `state` a tuple of arrays.

        A Python loop by default (reading `cond`'s value each step); JAX's is
        `jax.lax.while_loop`, so that an iterative solver runs under `jax.jit`.
        """
        while bool(cond(state)):
            state = body(state)
        return state

    def implicit_solve(
        self,
        solve: Any,
        apply: Any,
        apply_adjoint: Any,
        leaves: list[Array],
        B: Array,
        symmetric: bool,
    ) -> tuple[Array, Any]:
        """`(X, record) = solve(matvec, B)` with `X = A^{-1} B`, differentiated implicitly.

        `A` is given by its array leaves and `apply(leaves, V) = A @ V`
        (`apply_adjoint(leaves, V) = A^H @ V`); `solve(matvec, B)` runs an iterative
        method with `matvec(V) = A @ V` and returns the solution and a record of its
        convergence. Where the library differentiates, the backward pass of `X` is one
        more solve, with `A^H`, rather than the unrolled iterations: for a cotangent `G`,
        `dB = A^{-H} G`, and `dA = -dB X^H` reaches `A`'s arrays through `A @ X`. Without
        automatic differentiation (NumPy) it is `solve` itself.
        """
        return solve(lambda V: apply(leaves, V), B)

    def custom_vjp(self, forward: Any, backward: Any, arrays: list[Array]) -> tuple[Array, Any]:
        """`(Y, record) = forward(arrays)`, whose backward pass is `backward(arrays, Y, G)`.

        For a computation that must not be differentiated through its steps (an iterative
        solver's loop) but has a closed-form vector-Jacobian product: for the cotangent
        `G` of `Y`, `backward` returns one cotangent per array (`None` for zero); it may
        call [`vjp`][structlin.backends.base.Backend.vjp]. `record` is not differentiated.
        Cotangents of complex arrays are in PyTorch's convention (the conjugate of JAX's),
        whatever the backend.
        Without automatic differentiation (NumPy) it is `forward(arrays)`.
        """
        return forward(arrays)

    def vjp(self, f: Any, arrays: list[Array], cotangent: Array) -> list[Array | None]:
        """The cotangents of `arrays` for `Y = f(arrays)` and the cotangent `cotangent` of
        `Y` (`None` where `Y` does not depend on one, or for integer arrays), in PyTorch's
        convention as for `custom_vjp`."""
        return self._missing("vjp")

    def _missing(self, what: str) -> Any:
        raise NotImplementedError(
            f"the {self.name} backend has no `{what}`; implement `{type(self).__name__}.{what}` "
            "to use structlin's algorithms (solvers, eigendecompositions, matrix functions) on it"
        )

    # -- linear algebra ------------------------------------------------------
    @abc.abstractmethod
    def matmul(self, a: Array, b: Array) -> Array: ...

    def block_matmul(self, a: Array, b: Array) -> Array:
        """`matmul` of two stacks that share their leading (block) axes, as the
        block-diagonal factors of BlockDiag, Monarch and BTT multiply activations.

        The same as `matmul` here; the JAX backend also lines up the operands'
        shardings along those axes (see `JaxBackend.block_matmul`).
        """
        return self.matmul(a, b)

    @abc.abstractmethod
    def einsum(self, subscripts: str, *operands: Array) -> Array: ...

    @abc.abstractmethod
    def diagonal(self, x: Array) -> Array:
        """Diagonal of the last two axes."""

    @abc.abstractmethod
    def kron(self, a: Array, b: Array) -> Array:
        """Kronecker product of two 2-D arrays."""

    # The factorisations (LU, SVD) run through LAPACK or its GPU counterparts. The four
    # public methods below check and convert their input once, then call the library:
    # - non-finite entries are refused with a ValueError where values can be read: LAPACK
    #   returns garbage on them and its SVD may never return (an uninterruptible hang).
    #   Traced values (inside `jax.jit`) cannot be read: there an SVD of non-finite input
    #   returns NaN (its input is replaced by zeros first, so that it returns at all) and
    #   LU-based routines return NaN/inf, as the libraries do;
    # - half precision (float16, bfloat16), which LAPACK lacks, is factorised in float32
    #   and the results are cast back to the input's dtype.
    def solve(self, a: Array, b: Array) -> Array:
        """`a^{-1} b` for a (batch of) square `a`; raises
        [`SingularOperatorError`][structlin.SingularOperatorError] where the
        library reports a singular matrix, and ValueError for non-finite `a`."""
        self.refuse_non_finite(a, "solve")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._solve(a, b)
        out = self.result_type(a.dtype, b.dtype)
        return self.astype(self._solve(self.astype(a, wide), self.astype(b, wide)), out)

    def inv(self, a: Array) -> Array:
        """Inverse of a (batch of) square matrices; raises like `solve`."""
        self.refuse_non_finite(a, "inv")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._inv(a)
        return self.astype(self._inv(self.astype(a, wide)), a.dtype)

    def slogdet(self, a: Array) -> tuple[Array, Array]:
        """`(sign, log|det|)` of a (batch of) square matrices; ValueError for non-finite `a`."""
        self.refuse_non_finite(a, "slogdet")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._slogdet(a)
        sign, logabsdet = self._slogdet(self.astype(a, wide))
        return self.astype(sign, a.dtype), self.astype(logabsdet, a.dtype)

    def svd(self, a: Array) -> tuple[Array, Array, Array]:
        """Thin SVD `a = U diag(S) Vh` of a (batch of) matrices, `S` descending.

        For `a` of shape `(..., m, n)` and `k = min(m, n)`: `U` is `(..., m, k)`,
        `S` is `(..., k)` (real) and `Vh` is `(..., k, n)`. ValueError for non-finite `a`.
        """
        self.refuse_non_finite(a, "svd")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._svd(a)
        u, s, vh = self._svd(self.astype(a, wide))
        real = a.dtype if not self.is_complex(a.dtype) else s.dtype
        return self.astype(u, a.dtype), self.astype(s, real), self.astype(vh, a.dtype)

    def eigh(self, a: Array) -> tuple[Array, Array]:
        """`(w, V)` with `a = V diag(w) V^H` for a (batch of) Hermitian `a` (read from one
        triangle, as `numpy.linalg.eigh`), `w` real and ascending; ValueError for
        non-finite `a`."""
        self.refuse_non_finite(a, "eigh")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._eigh(a)
        w, v = self._eigh(self.astype(a, wide))
        real = a.dtype if not self.is_complex(a.dtype) else w.dtype
        return self.astype(w, real), self.astype(v, a.dtype)

    def cholesky(self, a: Array) -> Array:
        """The lower Cholesky factor `L`, `a = L L^H`, of a (batch of) Hermitian positive
        definite `a`; raises [`NotPositiveDefiniteError`][structlin.NotPositiveDefiniteError]
        where the library reports that it is not (NaN entries inside `jax.jit`)."""
        self.refuse_non_finite(a, "cholesky")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._cholesky(a)
        return self.astype(self._cholesky(self.astype(a, wide)), a.dtype)

    def cholesky_solve(self, L: Array, b: Array) -> Array:
        """`(L L^H)^{-1} b` for a Cholesky factor `L` from `cholesky`."""
        wide = self.factor_dtype(L.dtype)
        if wide is L.dtype:
            return self._cholesky_solve(L, b)
        out = self.result_type(L.dtype, b.dtype)
        return self.astype(self._cholesky_solve(self.astype(L, wide), self.astype(b, wide)), out)

    def solve_triangular(self, a: Array, b: Array, lower: bool) -> Array:
        """`t^{-1} b` for the lower (`lower=True`) or upper triangle `t` of a (batch of)
        square `a`, `O(n^2 k)`: the entries of `a` on the other side of the diagonal are
        not read. A zero on the diagonal gives inf or nan entries, as in the libraries
        (the callers check the diagonal first); ValueError for non-finite `a`."""
        self.refuse_non_finite(a, "solve_triangular")
        wide = self.factor_dtype(a.dtype)
        if wide is a.dtype:
            return self._solve_triangular(a, b, lower)
        out = self.result_type(a.dtype, b.dtype)
        solved = self._solve_triangular(self.astype(a, wide), self.astype(b, wide), lower)
        return self.astype(solved, out)

    def _solve_triangular(self, a: Array, b: Array, lower: bool) -> Array:
        # A general solve of the triangle: right, at the cost of an LU (`O(n^3)`); the
        # libraries' own triangular solves replace it.
        return self._solve(self.triangle(a, lower), b)

    def triangle(self, x: Array, lower: bool) -> Array:
        """The lower (`lower=True`, `tril`) or upper (`triu`) triangle of the last two axes
        of `x`, diagonal included, the other entries zero."""
        return self._missing("triangle")

    # Sparse matrices (`structlin.Sparse`) are held as COO triples of plain arrays: the
    # entries `values`, and their `rows` and `cols` (integer arrays of the same length;
    # repeated positions add up). A library's sparse type is made from them for each product.
    def index_add(self, x: Array, index: Array, values: Array) -> Array:
        """A copy of `x` with `values[i]` added to `x[index[i]]` (along axis 0; repeated
        indices add up, indices out of range are dropped on JAX only); differentiable."""
        return self._missing("index_add")

    def sparse_matmul(self, values: Array, rows: Array, cols: Array, m: int, X: Array) -> Array:
        """`S @ X` for the `(m, X.shape[0])` sparse matrix `S` of the COO triples, `O(nnz k)`:
        by default a gather of `X`'s rows and a scatter-add into the result (`O(nnz k)`
        memory); the libraries' sparse products replace it."""
        scaled = values[:, None] * self.take(X, cols, 0)
        return self.index_add(
            self.zeros((m, X.shape[1]), scaled.dtype, self.device(X)), rows, scaled
        )

    def sparse_entries(self, x: Any) -> tuple[Array, Array, Array, tuple[int, int]] | None:
        """`(values, rows, cols, shape)` of a 2-D sparse matrix of this library (`rows` and
        `cols` in `index_dtype`), `None` if `x` is not one (a dense array, another
        library's object); `TypeError` for a sparse layout structlin does not take."""
        return None

    def sparse_factor(self, values: Array, rows: Array, cols: Array, n: int) -> Any:
        """An exact sparse LU factorisation of the square `n x n` matrix of the COO triples,
        with `solve(B)` and `slogdet()`, or `None` where the library has none (the default:
        PyTorch and JAX have no sparse direct solver on every device). Raises
        [`SingularOperatorError`][structlin.SingularOperatorError] for a singular matrix."""
        return None

    def has_sparse_factor(self) -> bool:
        """Whether `sparse_factor` factorises (read by the planner, without values)."""
        return False

    def _eigh(self, a: Array) -> tuple[Array, Array]:
        return self._missing("_eigh")

    def _cholesky(self, a: Array) -> Array:
        return self._missing("_cholesky")

    def _cholesky_solve(self, L: Array, b: Array) -> Array:
        return self._missing("_cholesky_solve")

    def factor_dtype(self, dtype: DType) -> DType:
        """The dtype LAPACK factorises `dtype` in: float32 (complex64) for half precision."""
        name = str(dtype).removeprefix("torch.")
        if name in ("float16", "bfloat16"):
            return self.canonical_dtype("float32")
        if name == "complex32":
            return self.canonical_dtype("complex64")
        return dtype

    def refuse_non_finite(self, a: Array, what: str) -> None:
        """ValueError if `a` has inf or nan entries (nothing for traced values)."""
        from structlin._checks import finite

        finite(a, f"{what}: the matrix to factorise (shape {tuple(a.shape)})")

    @abc.abstractmethod
    def _solve(self, a: Array, b: Array) -> Array:
        """`solve` in the library, for finite input of a dtype LAPACK takes."""

    @abc.abstractmethod
    def _inv(self, a: Array) -> Array: ...

    @abc.abstractmethod
    def _slogdet(self, a: Array) -> tuple[Array, Array]: ...

    @abc.abstractmethod
    def _svd(self, a: Array) -> tuple[Array, Array, Array]: ...


class DeviceRef(abc.ABC):
    """What `Backend.pickle_device` puts in a pickle in place of a device object."""

    @abc.abstractmethod
    def device(self) -> Device:
        """The device, looked up again in the loading process."""
