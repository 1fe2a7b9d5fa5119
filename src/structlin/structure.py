"""Named structures: one record per structure, registered once, next to its operator class.

A layer's `structure="monarch"` names a [`Structure`][structlin.structure.Structure]
record: the operator class, the layer's options and their defaults, how to build the
template operator of a `d_out x d_in` layer and how to project a dense `W` onto it.
Each built-in structure registers its record at the bottom of its operator's module
(`structlin/operators/monarch.py` registers `"monarch"`); everything that names
structures reads this registry: the PyTorch and JAX layers,
[`replace_linear`][structlin.nn.replace_linear],
[`add_adapters`][structlin.nn.add_adapters],
[`MonarchMixer`][structlin.nn.MonarchMixer] and the error messages that list them. A
structure registered later, by a user, works in all of them. The
[Adding a structure](../guides/adding-a-structure.md) guide walks through one.

Registrations are global to the process; names are unique.

Examples:
    >>> from structlin.structure import get_structure, registered_structures
    >>> "monarch" in registered_structures()
    True
    >>> monarch = get_structure("monarch")
    >>> monarch.operator.__name__, monarch.complete(64, 32, {})
    ('Monarch', {'nblocks': 4})
    >>> monarch.leaf_names(64, 32)
    ['blocks_0', 'blocks_1']
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from structlin import _checks, pytree
from structlin.backends import Array
from structlin.operator import LinearOperator

__all__ = [
    "Structure",
    "balanced_factors",
    "get_structure",
    "leaf_names",
    "register_structure",
    "registered_structures",
    "unregister_structure",
]


@dataclasses.dataclass(frozen=True, eq=False)  # records compare (and hash) by identity
class Structure:
    """A named structure for layers: its operator class, options and how to build one.

    The callables take the layer's sizes `d_in, d_out` and its options as keywords
    (completed with the defaults and checked):

    - `template(zeros, d_in, d_out, **options)` returns the `d_out x d_in` operator
      whose arrays are `zeros(*shape)`; layers read their parameters' shapes and the
      operator's tree structure from it, then allocate and initialise them;
    - `check(d_in, d_out, **options)` (optional) returns the options normalised
      (e.g. tuples of ints) or raises a `ValueError` for sizes the structure cannot take;
    - `project_options(d_in, d_out, **options)` (optional) returns the keywords of
      [`structlin.project`][structlin.project] for `operator`
      (by default the options themselves), so projecting a layer onto the structure is
      the operator's own `project` rule;
    - `layout(d_in, d_out, **options)` (optional) returns the default layout, for a
      structure whose operator has more than one (Monarch's block shapes).

    Attributes:
        name: The name layers take (`structure="monarch"`).
        operator: The operator class a layer of this structure holds.
        template: Builds the layer's operator from `zeros` (see above).
        options: Each option's default: a value, or a callable `default(d_in, d_out)`.
            An option passed as `None` takes its default.
        sizes: The options that are positive integers, checked (`4.0` refused, never
            truncated) before `check` runs.
        check: Checks and normalises the completed options (see above).
        project_options: The options as [`structlin.project`][structlin.project]'s keywords.
        layout: The default layout (see above).
        doc_options: The options column of the structures table (options and defaults).
        doc_operator: The operator column (a link to the class, in Markdown).
        doc_parameters: The parameter-count column.

    Examples:
        >>> import numpy as np
        >>> import structlin as sl
        >>> from structlin.structure import Structure
        >>> wide = Structure(
        ...     "wide_lowrank",
        ...     sl.LowRank,
        ...     lambda zeros, d_in, d_out, *, rank: sl.LowRank(zeros(d_out, rank), zeros(rank, d_in)),
        ...     options={"rank": lambda d_in, d_out: min(d_in, d_out) // 2},
        ...     sizes=("rank",),
        ... )
        >>> wide.complete(8, 6, {}), wide.build(8, 6).shape
        ({'rank': 3}, (6, 8))
    """

    name: str
    operator: type[LinearOperator]
    template: Callable[..., LinearOperator]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sizes: tuple[str, ...] = ()
    check: Callable[..., Mapping[str, Any]] | None = None
    project_options: Callable[..., Mapping[str, Any]] | None = None
    layout: Callable[..., Any] | None = None
    doc_options: str = ""
    doc_operator: str = ""
    doc_parameters: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"Structure: name must be a Python identifier such as 'monarch', got {self.name!r}"
            )
        if not (isinstance(self.operator, type) and issubclass(self.operator, LinearOperator)):
            raise TypeError(
                f"Structure {self.name!r}: operator must be a LinearOperator subclass, "
                f"got {self.operator!r}"
            )
        for field in ("template", "check", "project_options", "layout"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise TypeError(
                    f"Structure {self.name!r}: {field} must be callable, got {type(value).__name__}"
                )
        if self.template is None:
            raise TypeError(f"Structure {self.name!r}: template is required")
        options = dict(self.options)
        sizes = tuple(self.sizes)
        unknown = [name for name in sizes if name not in options]
        if unknown:
            raise ValueError(
                f"Structure {self.name!r}: sizes names {unknown[0]!r}, which is not an option; "
                f"its options: {', '.join(options) or 'none'}"
            )
        object.__setattr__(self, "options", MappingProxyType(options))
        object.__setattr__(self, "sizes", sizes)

    def complete(self, d_in: int, d_out: int, spec: Mapping[str, Any]) -> dict[str, Any]:
        """`spec` checked against the options and completed with their defaults.

        Raises:
            TypeError: an option the structure does not take (the message names the
                nearest one and all of them), or a size that is not an integer.
            ValueError: sizes that are not positive, or that the structure cannot take.
        """
        _checks.keywords(f"structure {self.name!r}", sorted(spec), tuple(self.options))
        d_in, d_out = _checks.size(d_in, "d_in"), _checks.size(d_out, "d_out")
        out = {name: v for name, v in spec.items() if v is not None}  # None: the default
        for name, default in self.options.items():
            if name not in out:
                out[name] = default(d_in, d_out) if callable(default) else default
        for name in self.sizes:
            out[name] = _checks.size(out[name], f"{self.name}: {name}")
        if self.check is not None:
            out = dict(self.check(d_in, d_out, **out))
        return out

    def build(
        self, d_in: int, d_out: int, *, dtype: Any = np.float32, **spec: Any
    ) -> LinearOperator:
        """The `d_out x d_in` template operator, its arrays NumPy zeros of `dtype`."""
        spec = self.complete(d_in, d_out, spec)

        def zeros(*shape: int) -> Array:
            return np.zeros(shape, dtype)

        return self.template(zeros, d_in, d_out, **spec)

    def project(self, W: Array, **spec: Any) -> LinearOperator:
        """The operator of this structure nearest to the `(d_out, d_in)` matrix `W`
        ([`structlin.project`][structlin.project] onto `operator`),
        with the shapes [`build`][structlin.structure.Structure.build] gives."""
        # The checked public function; `structlin.functions` imports the modules that
        # register structures (the dense leaf among them), so it is imported on use.
        from structlin.functions import project

        d_out, d_in = W.shape
        spec = self.complete(d_in, d_out, spec)
        options = (
            spec if self.project_options is None else self.project_options(d_in, d_out, **spec)
        )
        return project(W, self.operator, **options)

    def leaf_names(self, d_in: int, d_out: int, **spec: Any) -> list[str]:
        """The parameter names of a `d_out x d_in` layer, in the template's leaf order
        (see [`leaf_names`][structlin.structure.leaf_names])."""
        return leaf_names(pytree.tree_flatten(self.build(d_in, d_out, **spec))[1])

    def row(self) -> str:
        """This structure's row of the structures table (Markdown)."""
        cells = (f'`"{self.name}"`', self.doc_options, self.doc_operator, self.doc_parameters)
        return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


_REGISTRY: dict[str, Structure] = {}


def register_structure(record: Structure) -> Structure:
    """Register `record` under its name, for layers and everything else that takes a
    structure name; returns it.

    Raises:
        TypeError: `record` is not a [`Structure`][structlin.structure.Structure].
        ValueError: a structure of that name is already registered.
    """
    if not isinstance(record, Structure):
        raise TypeError(
            f"register_structure takes a structlin.structure.Structure, got {type(record).__name__}"
        )
    existing = _REGISTRY.get(record.name)
    if existing is not None:
        raise ValueError(
            f"structure {record.name!r} is already registered (for {existing.operator.__name__}); "
            f"choose another name, or call unregister_structure({record.name!r}) first"
        )
    _REGISTRY[record.name] = record
    return record


def unregister_structure(name: str) -> Structure:
    """Remove the structure `name` from the registry (for tests); returns its record.

    Raises:
        ValueError: no structure of that name is registered.
    """
    record = get_structure(name)
    del _REGISTRY[record.name]
    return record


def registered_structures() -> tuple[str, ...]:
    """The names of the registered structures, sorted: the built-ins and any registered since."""
    return tuple(sorted(_REGISTRY))


def get_structure(name: str) -> Structure:
    """The record of the structure `name`.

    Raises:
        ValueError: no structure of that name is registered; the message names the
            nearest registered one and all of them.
    """
    record = _REGISTRY.get(name) if isinstance(name, str) else None
    if record is None:
        names = registered_structures()
        near = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown structure {name!r}{hint}; choose one of {', '.join(names)}")
    return record


def balanced_factors(d: int, c: int) -> tuple[int, ...]:
    """`c` factors of `d`, sorted, as close to `d^(1/c)` as divisibility allows.

    Each factor is the largest divisor of what remains that is at most its
    `c`-th root, so `balanced_factors(30, 2) == (5, 6)` and a prime `d` gives
    `(1, ..., 1, d)`.

    Examples:
        >>> from structlin.structure import balanced_factors
        >>> balanced_factors(4096, 3), balanced_factors(20, 2), balanced_factors(7, 2)
        ((16, 16, 16), (4, 5), (1, 7))
    """
    out = []
    for left in range(c, 1, -1):
        root = round(d ** (1 / left))
        f = max(f for f in range(1, root + 2) if d % f == 0 and f**left <= d)
        out.append(f)
        d //= f
    return tuple(sorted((*out, d)))


def leaf_names(treedef: pytree.TreeDef | None) -> list[str]:
    """A parameter name for every leaf of an operator: its attribute path joined by `_`.

    `treedef` is the tree definition from
    [`structlin.pytree.tree_flatten`][structlin.pytree.tree_flatten]; the names are
    in the order of its leaves (`blocks_0`, `U`, `ops_1_cores_0`, and `array` for a
    lone array). The PyTorch and JAX layers name their parameters with it.

    Examples:
        >>> from structlin import pytree
        >>> from structlin.structure import get_structure, leaf_names
        >>> leaf_names(pytree.tree_flatten(get_structure("monarch").build(16, 16))[1])
        ['blocks_0', 'blocks_1']
    """
    return [
        "_".join(name.lstrip("_") for name in path) or "array"
        for path, _ in pytree.tree_leaves_with_path(treedef)
    ]
