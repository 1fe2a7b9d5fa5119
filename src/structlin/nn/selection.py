"""Which layers of a model surgery touches: name filters, shared modules, tied weights.

Real models reuse objects. A module can sit under two names (a shared block), and a
parameter can be owned by two modules (GPT-2's `lm_head.weight` is
`transformer.wte.weight`). Surgery must never split either silently: a module is
edited once and every name it has sees the edit, and a layer whose parameters are
tied to another module's is left alone with a warning unless the caller asks to
untie it.

Examples:
    A [`Filter`][structlin.nn.selection.Filter] as the surgery functions take it: here the
    pattern `"mlp"` matches the layer of that name and no other.

    >>> import torch, structlin.nn as snn
    >>> model = torch.nn.ModuleDict({"attn": torch.nn.Linear(8, 8), "mlp": torch.nn.Linear(8, 8)})
    >>> report = snn.replace_linear(model, "lowrank", rank=2, filter="mlp")
    >>> isinstance(model.mlp, snn.Linear), isinstance(model.attn, snn.Linear)
    (True, False)
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

__all__ = ["Candidate", "Filter", "Selection", "select"]

Filter = Callable[[str, nn.Module], bool] | str | Sequence[str] | None
"""Which layers to edit: `None` (all), a callable `filter(name, module) -> bool`, a
pattern string, or a list of patterns. A pattern matches a qualified module name
that equals it, ends with `"." + pattern` (`"c_fc"` matches `"transformer.h.0.mlp.c_fc"`,
as PEFT's `target_modules` lists do), matches it as a glob (`"*.mlp.*"`), or matches
it whole as a regular expression (`r"h\\.[0-5]\\.mlp\\..*"`)."""

Tied = Literal["skip", "untie"]


@dataclass
class Candidate:
    """A layer surgery may edit: its names (the first is where it is reported), and the
    parameters it shares with modules outside itself."""

    names: tuple[str, ...]
    module: nn.Module
    tied_to: tuple[str, ...]  # qualified names of parameters owned elsewhere that it shares

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass
class Selection:
    """The candidates chosen, and those passed over with the reason."""

    chosen: list[Candidate]
    skipped: list[tuple[Candidate, str]]


def _pattern_matches(pattern: str, name: str) -> bool:
    if name == pattern or name.endswith("." + pattern):
        return True
    if fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:  # a glob such as "*.mlp.*" is no regular expression
        return False


def _matcher(filter: Filter) -> tuple[Callable[[str, nn.Module], bool], list[str]]:
    """A predicate for `filter`, and the patterns it was given (to report unused ones)."""
    if filter is None:
        return (lambda name, module: True), []
    if isinstance(filter, str):
        patterns = [filter]
    elif callable(filter):
        return filter, []
    else:
        patterns = list(filter) if isinstance(filter, Iterable) else []  # once: may be a generator
        if not isinstance(filter, Iterable) or not all(isinstance(p, str) for p in patterns):
            raise TypeError(
                "filter must be None, a callable filter(name, module) -> bool, a pattern string "
                f"or a list of pattern strings, got {type(filter).__name__}"
            )
    return (lambda name, module: any(_pattern_matches(p, name) for p in patterns)), patterns


def _owners(model: nn.Module) -> dict[int, list[str]]:
    """Every qualified name under which each parameter object appears."""
    found: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        found.setdefault(id(parameter), []).append(name)
    return found


def select(
    model: nn.Module,
    is_candidate: Callable[[nn.Module], bool],
    filter: Filter,
    *,
    tied: Tied,
    skip_reason: Callable[[str, nn.Module, nn.Module | None], str | None] | None = None,
    what: str,
) -> Selection:
    """The modules of `model` that `is_candidate` accepts and `filter` matches, each once.

    `skip_reason(name, module, parent)` may pass a candidate over with a reason (an
    owner that reads its weight, say). Tied candidates are skipped with a warning
    when `tied="skip"`. Warns when nothing matched, and for each pattern of a list
    that matched no candidate.

    Raises:
        ValueError: the model itself is a candidate, or `tied` is not `"skip"` or `"untie"`.
        TypeError: a `filter` of the wrong type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} needs a torch.nn.Module, got {type(model).__name__}")
    if tied not in ("skip", "untie"):
        raise ValueError(f"tied must be 'skip' or 'untie', got {tied!r}")
    matches, patterns = _matcher(filter)
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    parents: dict[int, nn.Module | None] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if not is_candidate(module):
            continue
        if name == "":
            raise ValueError(
                f"{what} edits a model's submodules and cannot replace the model itself; "
                "wrap the layer in a container (torch.nn.Sequential(layer)), or use "
                "structlin.nn.Linear.from_linear(layer, structure) for a single layer"
            )
        names.setdefault(id(module), []).append(name)
        modules[id(module)] = module
        parent_name = name.rpartition(".")[0]
        parents.setdefault(id(module), model.get_submodule(parent_name))

    owners = _owners(model)
    chosen: list[Candidate] = []
    skipped: list[tuple[Candidate, str]] = []
    used: set[str] = set()
    for key, module in modules.items():
        module_names = tuple(names[key])
        matched = [n for n in module_names if matches(n, module)]
        if not matched:
            continue
        for pattern in patterns:
            if any(_pattern_matches(pattern, n) for n in matched):
                used.add(pattern)
        own = {f"{n}.{p}" for n in module_names for p, _ in module.named_parameters()}
        tied_to = tuple(
            sorted(
                {
                    other
                    for _, parameter in module.named_parameters()
                    for other in owners.get(id(parameter), [])
                    if other not in own
                }
            )
        )
        candidate = Candidate(module_names, module, tied_to)
        reason = skip_reason(candidate.name, module, parents[key]) if skip_reason else None
        if reason is None and tied_to and tied == "skip":
            reason = (
                f"its parameters are tied to {', '.join(tied_to)}; editing it would untie them "
                "(pass tied='untie' to edit it anyway)"
            )
            warnings.warn(f"{what}: skipped {candidate.name}: {reason}", UserWarning, stacklevel=3)
        if reason is None:
            chosen.append(candidate)
        else:
            skipped.append((candidate, reason))

    if not chosen:
        if skipped:
            message = f"every matching layer was skipped ({len(skipped)}; the report says why)"
        else:
            message = f"no layer matched (filter={_describe(filter)})"
        warnings.warn(f"{what}: {message}; the model is unchanged", UserWarning, stacklevel=3)
    elif len(patterns) > 1:
        unused = [p for p in patterns if p not in used]
        if unused:
            warnings.warn(
                f"{what}: pattern(s) {', '.join(map(repr, unused))} matched no layer",
                UserWarning,
                stacklevel=3,
            )
    return Selection(chosen, skipped)


def _describe(filter: Any) -> str:
    if filter is None or isinstance(filter, (str, list, tuple)):
        return repr(filter)
    return getattr(filter, "__name__", type(filter).__name__)


def set_module(model: nn.Module, names: Iterable[str], new: nn.Module) -> None:
    """Put `new` under every one of `names` (the aliases of one shared module)."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, (nn.ModuleList, nn.Sequential)) and attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
