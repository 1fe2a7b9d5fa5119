"""Kernels: fast implementations of one structured product on one backend, chosen by a registry.

A structure's rule states *what* it computes with the generic backend operations
(`block_matmul`, `reshape`, ...); a kernel is a faster way to compute one of its
products on one backend (the PyTorch Monarch kernel; a Triton one some day).
Rules never test for a backend by name. They ask this registry, keyed by the
product and the backend's name, and take the generic path when it answers `None`:

    kernel = kernels.select(MONARCH_ROWS, backend.name, X, blkdiag1, blkdiag2)
    if kernel is not None:
        return kernel(X, blkdiag1, blkdiag2)
    ...  # the generic path

A product is declared once by the structure that computes it
([`declare_product`][structlin.kernels.declare_product]: its key and the
signature every kernel of it takes); a new kernel is one
[`register_kernel`][structlin.kernels.register_kernel] call, with a predicate
for the conditions it needs (a real dtype, a device, a minimum size) and its
implementation named as `"module:function"`, imported on first use, so that a
PyTorch kernel costs NumPy users no `import torch`. The function is looked up
in its module on every call (one attribute read), so patching the module
(as the tests do to count calls) patches the kernel.

Selection is a dictionary lookup and a call of each candidate's predicate, no
plum dispatch: it runs in the layers' forward pass and `torch.compile` traces it.

Examples:
    >>> from structlin import kernels
    >>> from structlin.operators.monarch import MONARCH_ROWS
    >>> [k.name for k in kernels.registered(MONARCH_ROWS)]
    ['monarch-torch-rows']
    >>> kernels.select(MONARCH_ROWS, "numpy") is None  # NumPy: the generic path
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = [
    "Kernel",
    "declare_product",
    "products",
    "register_kernel",
    "registered",
    "select",
    "unregister",
]

# product key -> the signature its kernels take (documentation, and the check of a key).
_PRODUCTS: dict[str, str] = {}
# (product, backend name) -> kernels, most recently registered first.
_KERNELS: dict[tuple[str, str], tuple[Kernel, ...]] = {}


class Kernel:
    """One registered kernel: `product` on `backend`, implemented by `impl` where `applies`.

    Calling it imports `impl`'s module on first use and calls the function with the
    arguments the product's rule passes (the same ones `applies` received).

    Attributes:
        product: The product key, e.g. `"monarch: X @ M^T"`.
        backend: The backend name, e.g. `"torch"`.
        impl: `"module:function"`.
        applies: `applies(*args) -> bool`, or `None` for always.
        name: A name for messages and inspection.
    """

    __slots__ = (
        "_function",
        "_module",
        "_module_name",
        "applies",
        "backend",
        "impl",
        "name",
        "product",
    )

    def __init__(
        self,
        product: str,
        backend: str,
        impl: str,
        applies: Callable[..., bool] | None,
        name: str,
    ):
        self.product = product
        self.backend = backend
        self.impl = impl
        self.applies = applies
        self.name = name
        self._module_name, _, self._function = impl.partition(":")
        self._module: Any = None

    def __call__(self, *args: Any) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._module_name)
        return getattr(module, self._function)(*args)

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}: {self.product!r} on {self.backend} by {self.impl})"


def declare_product(key: str, signature: str) -> str:
    """Declare a product kernels can be registered for; returns `key`.

    `signature` says what its kernels take and return, for example
    `"(X (n, k p), blkdiag1 (k, q, p), blkdiag2 (l, s, r)) -> X M^T (n, l s)"`.
    Declaring a key twice with the same signature is harmless.

    Raises:
        ValueError: `key` was declared with another signature.
    """
    known = _PRODUCTS.get(key)
    if known is not None and known != signature:
        raise ValueError(
            f"kernel product {key!r} is already declared with signature {known!r}; "
            f"got {signature!r}"
        )
    _PRODUCTS[key] = signature
    return key


def products() -> dict[str, str]:
    """Every declared product: key -> the signature its kernels take."""
    return dict(_PRODUCTS)


def register_kernel(
    product: str,
    backend: str,
    impl: str,
    *,
    applies: Callable[..., bool] | None = None,
    name: str | None = None,
) -> Kernel:
    """Register `impl` (`"module:function"`) as a kernel for `product` on `backend`.

    The most recent registration is tried first; the first one whose `applies`
    accepts the arguments is used, and the rule's generic path when none does.
    `applies(*args)` receives the kernel's arguments (arrays of `backend`) and
    should be cheap: it runs on every product. The module is not imported here.

    Args:
        product: A key from [`declare_product`][structlin.kernels.declare_product]
            (the structure module declares its products, so import it first).
        backend: The backend's name (`Backend.name`), e.g. `"torch"`.
        impl: `"package.module:function"`, imported on first use.
        applies: Predicate on the arguments (dtype, device, size conditions), or
            `None` to apply always.
        name: For inspection; defaults to `impl`.

    Raises:
        ValueError: `product` is not declared, or `impl` is not `"module:function"`.

    Examples:
        >>> from structlin import kernels
        >>> from structlin.operators.monarch import MONARCH_COLS
        >>> k = kernels.register_kernel(MONARCH_COLS, "mybackend", "mypkg.monarch:apply",
        ...                             applies=lambda X, b1, b2: X.shape[1] >= 64)
        >>> kernels.unregister(k)
    """
    if product not in _PRODUCTS:
        raise ValueError(
            f"unknown kernel product {product!r}; declared: {sorted(_PRODUCTS)} (import the "
            "structure's module first, which declares its products)"
        )
    module, sep, function = impl.partition(":")
    if not (module and sep and function.isidentifier()):
        raise ValueError(f"kernel impl must be 'module:function', got {impl!r}")
    kernel = Kernel(product, backend, impl, applies, impl if name is None else name)
    _KERNELS[product, backend] = (kernel, *_KERNELS.get((product, backend), ()))
    return kernel


def unregister(kernel: Kernel) -> None:
    """Remove a kernel returned by [`register_kernel`][structlin.kernels.register_kernel]."""
    key = (kernel.product, kernel.backend)
    rest = tuple(k for k in _KERNELS.get(key, ()) if k is not kernel)
    if rest:
        _KERNELS[key] = rest
    else:
        _KERNELS.pop(key, None)


def registered(product: str | None = None) -> list[Kernel]:
    """The registered kernels (of `product`, if given), in the order they are tried."""
    return [
        k for (p, _), found in _KERNELS.items() if product is None or p == product for k in found
    ]


def select(product: str, backend: str, *args: Any) -> Kernel | None:
    """The kernel that computes `product` on `backend` for `args`, or `None` for the generic path.

    This is the rules' own lookup, so it also tells which kernel a call would use:
    `select(MONARCH_ROWS, "torch", X, blkdiag1, blkdiag2)`. Without `args` the
    predicates are not consulted (the first kernel registered for the pair).
    """
    for kernel in _KERNELS.get((product, backend), ()):
        if not args or kernel.applies is None or kernel.applies(*args):
            return kernel
    return None
