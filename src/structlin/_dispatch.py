"""The dispatcher every structlin rule is registered with, and the rules' call path.

Rules are plum `Function`s. Only the API common to `plum-dispatch` and CoLA's
fork `cola-plum-dispatch` is used (`Dispatcher`, type-annotated methods,
`Signature`, `Function.resolve_method`), so structlin keeps working when
`cola-ml` replaces the `plum` module.

Each rule is wrapped in a [`Rule`][structlin._dispatch.Rule] that resolves an
implementation once per tuple of argument types and then calls it directly.
That keeps plum out of the hot path (a dictionary lookup instead of a plum
call) and, because the cached path is plain Python, lets `torch.compile`
trace through rules without graph breaks once they have been resolved
(plum itself is compiled with mypyc and cannot be traced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plum

__all__ = ["Dispatcher", "Rule", "dense_method", "dispatch", "is_dense_method"]


class _Docstring:
    """The class docstring on the class, the plum function's (all methods') on instances."""

    def __get__(self, rule: Rule | None, owner: type) -> str | None:
        return owner._class_doc if rule is None else rule.function.__doc__


class Rule:
    """A plum `Function` with a cache of the implementation for each tuple of argument types.

    Calling a rule looks up `tuple(type(a) for a in args)`; on a miss plum resolves
    the method once (raising plum's `NotFoundLookupError` or `AmbiguousLookupError`
    as usual). Arguments that are classes (as in `project(W, Monarch)`) are
    dispatched by value, through plum, on every call. Registering any new method
    through the structlin dispatcher empties every rule's cache.
    """

    _class_doc = __doc__
    __doc__ = _Docstring()  # type: ignore[assignment]

    def __init__(self, function: plum.Function):
        self.function = function
        self.__name__ = function.__name__
        # The implementation for each tuple of argument types met so far.
        self.cache: dict[tuple[type, ...], Callable[..., Any]] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        types = tuple(map(type, args))
        impl = self.cache.get(types)
        if impl is None:
            impl = self.resolve(*types)
        # Most rules take no keywords; a call without `**` is the cheaper one.
        return impl(*args, **kwargs) if kwargs else impl(*args)

    def resolve(self, *types: type) -> Callable[..., Any]:
        """The implementation this rule runs for arguments of `types`, resolved now and cached.

        Looking `types` up in `cache` first, and calling the implementation, is `rule(*args)`
        without the cost of calling an object: the hot path of `A @ x` does so.
        """
        if any(issubclass(t, type) for t in types):
            impl: Callable[..., Any] = self.function  # a class argument: plum matches `type[X]`
        else:
            impl = self.function.resolve_method(plum.Signature(*types))[0]
        self.cache[types] = impl
        return impl

    def clear_cache(self) -> None:
        self.cache.clear()

    @property
    def methods(self) -> Any:
        """The registered methods (plum's `Function.methods`)."""
        return self.function.methods

    @property
    def signatures(self) -> list[tuple[tuple[Any, ...], Callable[..., Any]]]:
        """`(types, implementation)` of each registered method, in either plum: plum's
        methods hold a `Signature`, the methods of CoLA's fork are `Signature`s."""
        registered = []
        for method in self.function.methods:
            signature = getattr(method, "signature", method)
            registered.append((tuple(signature.types), method.implementation))
        return registered

    def __repr__(self) -> str:
        return f"<structlin rule {self.__name__} with {len(self.function.methods)} methods>"


class Dispatcher:
    """A plum `Dispatcher` whose functions are [`Rule`][structlin._dispatch.Rule]s.

    Use it as plum's: `@dispatch` on a type-annotated function adds a method
    to the rule of that name.
    """

    def __init__(self) -> None:
        self._plum = plum.Dispatcher()
        self._rules: dict[str, Rule] = {}
        # A `Rule` subclass for the rules whose every call needs a check first.
        self.rule_classes: dict[str, type[Rule]] = {}

    def __call__(self, f: Callable[..., Any]) -> Rule:
        function = self._plum(f)
        rule = self._rules.get(f.__name__)
        if rule is None or rule.function is not function:
            cls = self.rule_classes.get(f.__name__, Rule)
            rule = self._rules[f.__name__] = cls(function)
        for each in self._rules.values():
            each.clear_cache()
        return rule

    def declare(self, f: Callable[..., Any]) -> Rule:
        """The rule named `f.__name__`, with `f`'s docstring and no method yet.

        For a rule whose methods all live elsewhere (the lazy expression that is its
        generic fallback, and the structures' own methods): declaring it in
        `structlin.rules` gives it its public name and documentation without
        importing the modules above that hold the methods.
        """
        # Both plums keep a dispatcher's functions by name; a later `@dispatch` of the same
        # name adds its method to this function.
        function = self._plum.functions.setdefault(f.__name__, plum.Function(f))
        rule = self._rules.get(f.__name__)
        if rule is None:
            cls = self.rule_classes.get(f.__name__, Rule)
            rule = self._rules[f.__name__] = cls(function)
        return rule


def dense_method(f: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a rule's method as one that works on the dense matrix (`O(n^3)` factorisations,
    `O(n^2)` memory): the generic fallbacks and `Dense`'s own. Put it under `@dispatch`.

    `structlin.algorithms.Auto` and [`explain`][structlin.explain] read the mark to tell
    an exact structured rule from a dense one without calling either.
    """
    f.__structlin_dense__ = True  # type: ignore[attr-defined]
    return f


def is_dense_method(impl: Callable[..., Any]) -> bool:
    """Whether `impl` (a resolved method) is marked by [`dense_method`][structlin._dispatch.dense_method]."""
    return getattr(impl, "__structlin_dense__", False)


class _DenseRule(Rule):
    """`to_dense`, which refuses a dense matrix larger than the memory it would live in
    (see `structlin._checks.allocation`) before any method allocates it."""

    def __call__(self, A: Any) -> Any:
        m, n = A.shape
        if m * n >= 1 << 20:  # fewer entries take too little memory to be worth a check
            from structlin._checks import dense_allocation

            dense_allocation(A)
        return super().__call__(A)


dispatch = Dispatcher()
# Set before any module registers a method: the first registration creates the rule.
dispatch.rule_classes["to_dense"] = _DenseRule
