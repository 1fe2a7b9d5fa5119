"""The core the structured layers share, whatever their framework.

[`structlin.nn.Linear`][structlin.nn.Linear] (PyTorch),
[`structlin.nn.jax.Linear`][structlin.nn.jax.Linear] (a JAX pytree) and
[`structlin.nn.nnx.Linear`][structlin.nn.nnx.Linear] (flax) hold the same thing: the
leaves of an operator `W`, of which the learnable dense components are trained, a
bias, and with weight normalisation a gain `γ_i` and a scale `σ_i` per component.
What is decided here is decided once for all of them:

- [`Layout`][structlin.nn._layer.Layout]: what an operator's leaves are in a layer
  (their names, roles `PARAM`, `BUFFER`, `CONST` and μP roles), read off the operator
  with its checks and messages by [`layout`][structlin.nn._layer.layout]; it rebuilds
  `W` from the layer's values, weight-normalised;
- initialisation scales, weight-normalisation scales `σ_i`, the bias argument, the
  checks of a layer's input and their messages, the forward pass, and the learning-rate
  multiplier for an optimizer.

A framework brings its arrays through a [`Framework`][structlin.nn._layer.Framework]:
four array functions. Needs neither PyTorch nor JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from structlin import pytree, rules
from structlin.backends import backend_of, get_backend, is_array
from structlin.mup import MupInfo, describe
from structlin.nn.structures import leaf_names
from structlin.operator import LinearOperator

# How a leaf of `W` is held: a trained parameter (a floating-point learnable component),
# a fixed array (permutation indices, array scalars), or a Python constant.
PARAM, BUFFER, CONST = "param", "buffer", "const"
Optimizer = Literal["adam", "sgd"]


class Framework(Protocol):
    """The array functions of a framework that the shared core calls."""

    def cast(self, x: Any, dtype: Any) -> Any: ...
    def maximum(self, a: Any, b: Any) -> Any: ...
    def rsqrt(self, x: Any) -> Any: ...
    def mean_square(self, x: Any) -> Any:
        """`mean(x²)`, accumulated in at least float32."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything about a layer's `W` but its array values; hashable, so the JAX layer
    keeps it as static pytree data.

    Attributes:
        in_features: `d_in`.
        out_features: `d_out`.
        weight_norm: Whether the `PARAM` leaves are weight-normalised.
        treedef: The tree definition of `W`.
        names: A name per leaf ([`leaf_names`][structlin.nn.structures.leaf_names]).
        roles: `PARAM`, `BUFFER` or `CONST` per leaf.
        infos: The μP role of each `PARAM` leaf, `None` for the others.
        consts: The value of each `CONST` leaf, `None` for the others.
    """

    in_features: int
    out_features: int
    weight_norm: bool
    treedef: pytree.TreeDef | None
    names: tuple[str, ...]
    roles: tuple[str, ...]
    infos: tuple[MupInfo | None, ...]
    consts: tuple[Any, ...]

    @property
    def mup(self) -> dict[str, MupInfo]:
        """The μP role of each trained component, by name, in leaf order."""
        return {n: i for n, i in zip(self.names, self.infos, strict=True) if i is not None}

    def operator(
        self,
        values: Sequence[Any],
        framework: Framework,
        gains: Sequence[Any] = (),
        sigmas: Sequence[Any] = (),
    ) -> LinearOperator:
        """`W` from one value per leaf (those of `CONST` leaves are ignored), with each
        component `G_i` weight-normalised by its gain and `σ_i` if gains are given."""
        norm = iter(zip(gains, sigmas, strict=True))
        leaves = []
        for value, role, const in zip(values, self.roles, self.consts, strict=True):
            if role == CONST:
                value = const
            elif role == PARAM and len(gains):
                value = normalised(value, *next(norm), framework)
            leaves.append(value)
        return pytree.tree_unflatten(self.treedef, leaves)

    def leaves(self, node: Any) -> list[Any]:
        """The leaves of `node`, an operator of this layout's tree definition, in leaf order.

        Guided by the tree definition rather than by the leaves' types, so it also reads
        operators that JAX rebuilt with tuples or other containers as leaves.
        """
        return [leaf for _, leaf in pytree.tree_leaves_with_path(self.treedef, node)]


def layout(op: Any, weight_norm: bool) -> tuple[Layout, list[Any]]:
    """The layout of a layer holding `op`, and `op`'s leaves.

    Raises:
        TypeError: `op` is not an operator, has complex values, or has no `components` rule.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"Linear.from_operator needs a structlin operator, got {type(op).__name__}; "
            "wrap an array with structlin.Dense"
        )
    leaves, treedef = pytree.tree_flatten(op)
    infos = describe(op)
    roles = []
    for leaf, info in zip(leaves, infos, strict=True):
        backend = backend_of(leaf) if is_array(leaf) else None
        if isinstance(leaf, complex) or (backend is not None and backend.is_complex(leaf.dtype)):
            dtype = getattr(leaf, "dtype", "complex")
            raise TypeError(
                f"Linear layers are real, but {type(op).__name__} has complex values "
                f"(dtype {dtype}); take the real part or use a real operator"
            )
        floating = backend is not None and backend.is_floating(leaf.dtype)
        roles.append(
            CONST if backend is None else PARAM if info is not None and floating else BUFFER
        )
    out = Layout(
        in_features=op.shape[1],
        out_features=op.shape[0],
        weight_norm=bool(weight_norm),
        treedef=treedef,
        names=tuple(leaf_names(treedef)),
        roles=tuple(roles),
        infos=tuple(i if r == PARAM else None for i, r in zip(infos, roles, strict=True)),
        consts=tuple(v if r == CONST else None for v, r in zip(leaves, roles, strict=True)),
    )
    return out, leaves


# -- initialisation and weight normalisation ------------------------------------------
def init_std(info: MupInfo, zero_init_last: bool) -> float:
    """The standard deviation a fresh component is drawn with: its μP scale, or 0 for a
    component that writes the output when `zero_init_last` (Section 3.2)."""
    return 0.0 if zero_init_last and info.component.last else info.init_std


def sigma(info: MupInfo, value: Any = None) -> float:
    """The weight-normalisation scale `σ_i` of a component: its μP scale, or for a layer
    built from an operator (`value` given) the component's RMS where that is larger, so
    that the layer computes the operator."""
    if value is None:
        return info.init_std
    a = np.asarray(backend_of(value).export_array(value)[0], dtype=np.float64)
    return max(info.init_std, float(np.sqrt(np.mean(a * a))) if a.size else 0.0)


def normalised(G: Any, gain: Any, sigma: Any, framework: Framework) -> Any:
    """`γ min(1, σ / RMS(G)) G` for either framework; `gain` of shape `()` or `(1,)`."""
    # gain * min(1, sigma / RMS(G)) * G, written as sigma / sqrt(max(mean(G^2), sigma^2)):
    # the same value, but finite gradients at G = 0 (no sqrt(0) on the selected branch).
    mean_square = framework.mean_square(G)
    sigma = framework.cast(sigma, mean_square.dtype)
    scale = sigma * framework.rsqrt(framework.maximum(mean_square, sigma * sigma))
    return G * framework.cast(gain.reshape(()) * scale, G.dtype)


# -- conversion and the bias ------------------------------------------------------------
def convert(x: Any, backend: str) -> Any:
    """A copy of array `x`, of any backend, as an array of `backend` with `x`'s values and
    dtype: through the backends' own conversion, which carries dtypes NumPy lacks (bfloat16)."""
    host, dtype = backend_of(x).export_array(x)
    return get_backend(backend).import_array(host, dtype)


def check_bias(bias: Any, d_out: int) -> Any:
    """`None` for no bias, `True` for a zero bias, else the array `bias` of shape `(d_out,)`.

    Raises:
        TypeError: `bias` is not a bool or an array.
        ValueError: its shape is not `(d_out,)`.
    """
    if bias is False or bias is None:
        return None
    if bias is True:
        return True
    if not is_array(bias):
        raise TypeError(
            f"bias must be a bool or an array of shape ({d_out},), got {type(bias).__name__}"
        )
    if tuple(bias.shape) != (d_out,):
        raise ValueError(f"bias must have shape ({d_out},), got {tuple(bias.shape)}")
    return bias


# -- the forward pass --------------------------------------------------------------------
def check_shape(layer: str, shape: tuple[int, ...], features: int | None) -> None:
    """An input has at least one axis and, if `features` is given, a last axis that long.
    Reads static facts only, so the check traces under `torch.compile` and `jax.jit`."""
    if len(shape) == 0:
        wanted = (
            f"shape (..., {features}), their last axis of size {features} (in_features)"
            if features is not None
            else "at least one axis"
        )
        raise ValueError(f"{layer} got a 0-d input (shape ()); inputs have {wanted}")
    if features is not None and shape[-1] != features:
        raise ValueError(
            f"{layer} got an input of shape {tuple(shape)}; its last axis must have size "
            f"{features} (in_features)"
        )


def check_kind(
    layer: str, dtype: Any, params: Any, *, complex_: bool, floating: bool, cast: str
) -> None:
    """An input of `dtype` is real floating-point, for a layer of `params` dtype; `cast`
    is the code that would convert it (`x.to(torch.float32)`)."""
    if complex_:
        raise TypeError(
            f"{layer} has real {params} parameters but got a complex input (dtype {dtype}); "
            "structured layers are real: apply the layer to x.real and x.imag separately"
        )
    if not floating:
        raise TypeError(
            f"{layer} has {params} parameters but got an input of dtype {dtype}; cast the "
            f"input ({cast})"
        )


def forward(layout: Layout, op: LinearOperator, bias: Any, x: Any, framework: Framework) -> Any:
    """`x @ W^T + b` over the last axis of `x`, through `W`'s structured transpose and
    the row-layout rule `rmatmat` (no dense matrix is formed)."""
    d_in, d_out = layout.in_features, layout.out_features
    lead = x.shape[:-1]
    y = rules.rmatmat(x.reshape(-1, d_in), rules.transpose(op)).reshape(*lead, d_out)
    return y if bias is None else y + framework.cast(bias, y.dtype)


# -- learning rates ------------------------------------------------------------------------
def check_optimizer(optimizer: str) -> None:
    if optimizer not in ("adam", "sgd"):
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose 'adam' (also for AdamW) or 'sgd'"
        )


def multiplier(info: MupInfo | None, optimizer: Optimizer) -> float:
    """The learning-rate multiplier of a parameter of μP role `info` (1 without one)."""
    if info is None:
        return 1.0
    return float(info.sgd_lr_multiplier if optimizer == "sgd" else info.lr_multiplier)
