"""Operators as pytrees.

An operator flattens into its leaves (arrays, and scalars of a
[`ScalarMul`][structlin.ScalarMul]) and a hashable tree definition holding
its static metadata. This is what lets JAX trace operators through `jit`,
`vmap` and `grad`, and lets layers turn an operator's arrays into parameters.

Every `LinearOperator` subclass is registered with JAX as soon as JAX is in use:
at definition time if JAX is already imported, otherwise when structlin first
meets a JAX array. Call [`register_with_jax`][structlin.pytree.register_with_jax]
to register eagerly (for example before passing a NumPy-built operator to
`jax.jit`).

Examples:
    >>> import numpy as np, structlin as sl
    >>> from structlin import pytree
    >>> K = sl.Kron(np.eye(2), 3.0 * np.eye(2))
    >>> leaves, treedef = pytree.tree_flatten(K)
    >>> [leaf.shape for leaf in leaves]
    [(2, 2), (2, 2)]
    >>> type(pytree.tree_unflatten(treedef, [2 * leaf for leaf in leaves])).__name__
    'Kron'
    >>> pytree.tree_map(lambda a: a.astype(np.float32), K).dtype
    dtype('float32')
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from structlin import backends

__all__ = [
    "TreeDef",
    "register_with_jax",
    "tree_flatten",
    "tree_leaves_with_path",
    "tree_map",
    "tree_unflatten",
]

_CLASSES: list[type] = []
_OPERATOR_TYPES: set[type] = set()  # the same classes, for a membership test
_JAX_REGISTERED: set[type] = set()
_SENTINEL = object()


class TreeDef(NamedTuple):
    """The structure of a flattened operator: its class, static data and child structure."""

    cls: type
    static: tuple[Any, ...]
    children: tuple[Any, ...]  # per child: None (a leaf), TreeDef, or a tuple of those


def _flatten_one(op: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    children = tuple(getattr(op, name) for name in op._children)
    static = tuple(getattr(op, name) for name in op._static)
    return children, static


def _unflatten_one(cls: type, static: tuple[Any, ...], children: tuple[Any, ...]) -> Any:
    # Bypasses __init__ on purpose: JAX rebuilds operators from tracers or
    # placeholder objects, which no constructor check could accept.
    op = object.__new__(cls)
    for name, value in zip(cls._static, static, strict=True):
        object.__setattr__(op, name, value)
    for name, value in zip(cls._children, children, strict=True):
        object.__setattr__(op, name, value)
    return op


def _is_operator(x: Any) -> bool:
    # Every operator class registers itself when it is defined (`LinearOperator.__init_subclass__`),
    # so this module needs no import of the base class, which imports it.
    return type(x) in _OPERATOR_TYPES


def tree_flatten(op: Any) -> tuple[list[Any], TreeDef | None]:
    """Flatten an operator into `(leaves, treedef)`; a non-operator is its own single leaf."""
    leaves: list[Any] = []

    def visit(node: Any) -> Any:
        if _is_operator(node):
            children, static = _flatten_one(node)
            return TreeDef(type(node), static, tuple(visit(c) for c in children))
        if isinstance(node, tuple):
            return tuple(visit(c) for c in node)
        leaves.append(node)
        return None

    return leaves, visit(op)


def tree_unflatten(treedef: TreeDef | None, leaves: list[Any]) -> Any:
    """Inverse of [`tree_flatten`][structlin.pytree.tree_flatten]."""
    it = iter(leaves)

    def build(node: Any) -> Any:
        if node is None:
            return next(it)
        if isinstance(node, TreeDef):
            return _unflatten_one(node.cls, node.static, tuple(build(c) for c in node.children))
        return tuple(build(c) for c in node)

    out = build(treedef)
    if next(it, _SENTINEL) is not _SENTINEL:
        raise ValueError("tree_unflatten got more leaves than the tree definition holds")
    return out


def tree_leaves_with_path(
    treedef: TreeDef | None, node: Any = _SENTINEL
) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf of the tree `treedef` describes, in leaf order, with its path.

    A path is the attribute names and tuple indices from the root to the leaf,
    `("blocks", "0")`; the root leaf of a lone array has the empty path. With
    `node`, an operator of this structure, each leaf is read from it, guided by
    `treedef` rather than by the leaves' types (so an operator JAX rebuilt with
    tuples or other containers as leaves is read too); without it each leaf is `None`.

    Examples:
        >>> import numpy as np, structlin as sl
        >>> from structlin import pytree
        >>> M = sl.Monarch.random(16, 16, nblocks=4, rng=0)
        >>> [path for path, _ in pytree.tree_leaves_with_path(pytree.tree_flatten(M)[1])]
        [('blocks', '0'), ('blocks', '1')]
    """
    out: list[tuple[tuple[str, ...], Any]] = []

    def visit(d: Any, n: Any, path: tuple[str, ...]) -> None:
        if d is None:
            out.append((path, None if n is _SENTINEL else n))
        elif isinstance(d, TreeDef):
            for attr, child in zip(d.cls._children, d.children, strict=True):
                visit(child, n if n is _SENTINEL else getattr(n, attr), (*path, attr))
        else:
            items = (_SENTINEL,) * len(d) if n is _SENTINEL else n
            for i, (child, item) in enumerate(zip(d, items, strict=True)):
                visit(child, item, (*path, str(i)))

    visit(treedef, node, ())
    return out


def tree_map(f: Callable[[Any], Any], op: Any) -> Any:
    """Apply `f` to every leaf of `op` and rebuild the operator from the results."""
    leaves, treedef = tree_flatten(op)
    return tree_unflatten(treedef, [f(leaf) for leaf in leaves])


def _register_jax(cls: type) -> None:
    if cls in _JAX_REGISTERED:
        return
    import jax

    jax.tree_util.register_pytree_node(
        cls,
        lambda op: _flatten_one(op),
        lambda static, children: _unflatten_one(cls, static, children),
    )
    _JAX_REGISTERED.add(cls)


def register_with_jax() -> None:
    """Register every operator class with `jax.tree_util` (imports JAX)."""
    for cls in _CLASSES:
        _register_jax(cls)


def register(cls: type) -> None:
    """Record an operator class; registered with JAX now if JAX is in use, else later."""
    _CLASSES.append(cls)
    _OPERATOR_TYPES.add(cls)
    if sys.modules.get("jax") is not None:
        _register_jax(cls)


backends._ON_JAX_LOAD.append(register_with_jax)
