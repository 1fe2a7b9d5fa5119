"""The operator protocol, checked where it matters: which rules a class provides, and a
warning, once per class, where a missing rule makes every call build a dense matrix.

The protocol itself is stated in [`LinearOperator`][structlin.LinearOperator]'s docstring
and in [`structlin.rules`][structlin.rules]. It cannot be checked when a class is defined:
rules are registered below the class (`@dispatch def matmat(A: MyOperator, X)` follows
`class MyOperator`), and may be registered later still. So it is checked on use, where a
fallback is taken that costs a dense matrix per call. That path only runs for operators
without the rule (built-in operators all have it), and it already costs `O(mn)`, so the
set lookup that remembers a warned class costs nothing that matters.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import plum

from structlin import rules
from structlin.errors import DenseFallbackWarning
from structlin.operator import LinearOperator

__all__ = ["RULES", "dense_fallback", "provides"]

# The rules of the protocol, in the order `provides` reports them.
RULES = (
    "matmat",
    "rmatmat",
    "transpose",
    "adjoint",
    "to_dense",
    "inv",
    "solve",
    "slogdet",
    "diag",
    "trace",
    "components",
)

# (class, rule) pairs already warned about.
_warned: set[tuple[type, str]] = set()


def provides(cls: type) -> dict[str, bool]:
    """For each rule of [`RULES`][], whether `cls` has a method of its own (one more
    specific than the generic `LinearOperator` fallback).

    Two-argument rules are resolved with `object` for the array argument, as the
    structures register them (`matmat(A: MyOperator, X: object)`).
    """
    found = {}
    for name in RULES:
        rule = getattr(rules, name)
        if name == "rmatmat":
            ours, generic = (object, cls), (object, LinearOperator)
        elif name in ("matmat", "solve"):
            ours, generic = (cls, object), (LinearOperator, object)
        else:
            ours, generic = (cls,), (LinearOperator,)
        found[name] = _resolve(rule, ours) is not _resolve(rule, generic)
    return found


def _resolve(rule: Any, types: tuple[type, ...]) -> Any:
    try:
        return rule.function.resolve_method(plum.Signature(*types))[0]
    except LookupError:  # plum's NotFound/Ambiguous lookup errors
        return None


def dense_fallback(op: Any, conjugate: bool) -> None:
    """Called where a lazy transpose (`conjugate=False`) or adjoint (`conjugate=True`) of
    `op` builds `op`'s dense matrix to apply it, which it does on every call.

    Warns with a [`DenseFallbackWarning`][structlin.DenseFallbackWarning], once per class,
    if `op`'s class has no structured rule for that transpose, naming the rule to register.
    An explicit lazy node around an operator that has one (`sl.Transpose(L)`) asked for the
    node and is not warned about. `op` is the innermost operator of nested lazy nodes.
    """
    cls = type(op)
    rule = "adjoint" if conjugate else "transpose"
    if (cls, rule) in _warned:
        return
    _warned.add((cls, rule))
    has = provides(cls)
    if has[rule]:
        return
    name = cls.__name__
    m, n = op.shape
    if conjugate:
        fix = (
            f"`@structlin.rules.dispatch def adjoint(A: {name})` returning a structured "
            f"operator for A^H (for instance the {name} of the conjugated transposed values)"
        )
        what = "A.H (and x @ A.H, and the layers of a complex operator)"
    else:
        fix = (
            f"`@structlin.rules.dispatch def transpose(A: {name})` returning a structured "
            f"operator for A^T (or, for `X @ A` alone, "
            f"`@structlin.rules.dispatch def rmatmat(X: object, A: {name})`)"
        )
        what = "A.T, x @ A.T and the layers of structlin.nn (which compute X @ A^T)"
        if not has["rmatmat"]:
            what = "X @ A, " + what
    warnings.warn(
        f"{name} has no structured {rule} rule, so {what} build its dense {m} x {n} matrix "
        f"on every call (O(mn) memory, O(mn) time per column, through the {name} matmat "
        f"rule applied to the identity); register {fix}. Warned once per class.",
        DenseFallbackWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside structlin and the libraries it calls
    through (plum, PyTorch's module call, JAX's tracing): the user's line that took the
    fallback. What Python 3.12's `skip_file_prefixes` does."""
    frame, level = sys._getframe(2), 2  # 1 is `dense_fallback`, which warns
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_LIBRARIES):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 2


_LIBRARIES = ("structlin.", "plum", "beartype", "torch", "jax")
