"""JAX layers: [`Linear`][structlin.nn.jax.Linear], a pytree `y = W x + b` with a structured `W`, and structure-aware μP for optax.

A layer is an immutable pytree, so `jax.jit`, `jax.grad` and `jax.vmap` take it
as they take a dict of arrays, and `optax.apply_updates(layer, updates)` gives the
updated layer. Its learnable leaves are the dense components `G_i` of `W`
("Compute Better Spent", Section 3.2); each knows its μP role
([`MupInfo`][structlin.mup.MupInfo]): it is drawn from `N(0, σ_i²)` with
`σ_i = sqrt(min(d_in^i, d_out^i)) / d_in^i`, and its Adam learning rate is `κ_i η`
with `κ_i = (d_in / d_in^i) / k` for `k` learnable components and `η` the learning
rate of a dense `d_out x d_in` layer. [`mup_lr_multipliers`][structlin.nn.jax.mup_lr_multipliers]
collects the `κ_i` of every layer in a model into a pytree of floats and
[`scale_by_mup`][structlin.nn.jax.scale_by_mup] applies them in an optax chain;
[`decay_mask`][structlin.nn.jax.decay_mask] keeps weight decay off vectors and
scalars (biases, gains), as [`param_groups`][structlin.nn.param_groups] does in PyTorch:

```python
import jax, optax
from structlin.nn.jax import Linear, decay_mask, mup_lr_multipliers, scale_by_mup

k1, k2 = jax.random.split(jax.random.key(0))
params = {"up": Linear.init(k1, 1024, 4096, "btt", rank=4),
          "down": Linear.init(k2, 4096, 1024, "btt", rank=4, zero_init_last=True)}
tx = optax.chain(
    optax.scale_by_adam(),
    # optional; before scale_by_mup, as in PyTorch's AdamW groups; matrices only
    optax.add_decayed_weights(0.1, mask=decay_mask),
    scale_by_mup(mup_lr_multipliers(params)),
    optax.scale(-1e-3),
)
```

`mup_lr_multipliers` and `decay_mask` also take a `flax.nnx` model (or its
`nnx.state(model, nnx.Param)`), whose structured layers are
[`structlin.nn.nnx.Linear`][structlin.nn.nnx.Linear]: each `nnx.Param`'s μP role
is read from its `mup` metadata.

Only JAX, NumPy and structlin are imported here (flax only where a flax object
is passed in); the PyTorch layers are in [`structlin.nn`][structlin.nn] and the
structure names in [`structlin.nn.structures`][structlin.nn.structures].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from structlin import pytree, rules
from structlin.mup import MupInfo
from structlin.nn import _layer, _width, structures
from structlin.nn._jax_coordinates import coord_check
from structlin.nn._optax import (
    ScaleByMup,
    ScaleByMupState,
    decay_mask,
    mup_lr_multipliers,
    scale_by_mup,
    scale_updates,
)
from structlin.operator import LinearOperator

__all__ = [
    "Linear",
    "mup_lr_multipliers",
    "decay_mask",
    "scale_updates",
    "scale_by_mup",
    "ScaleByMup",
    "ScaleByMupState",
    "coord_check",
]

# Operator classes defined before JAX was imported are registered only when
# structlin first meets a JAX array; a layer's operator must be a JAX pytree now.
pytree.register_with_jax()

Optimizer = _layer.Optimizer


class _Jax:
    """The array functions of the shared layer core, in JAX."""

    cast = staticmethod(lambda x, dtype: jnp.asarray(x, dtype))
    maximum = staticmethod(jnp.maximum)
    rsqrt = staticmethod(jax.lax.rsqrt)

    @staticmethod
    def mean_square(G: jax.Array) -> jax.Array:
        return jnp.mean(jnp.square(G), dtype=jnp.promote_types(G.dtype, jnp.float32))


class _Frozen:
    """A fixed array of `W` (permutation indices) held as static data: hashable and
    compared by value, as JAX requires of a pytree's auxiliary data."""

    __slots__ = ("_key", "value")

    def __init__(self, value: jax.Array):
        a = np.asarray(value)
        self.value = value
        self._key = (a.shape, str(a.dtype), a.tobytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)


class Linear:
    """`y = W x + b` applied to the last axis of `x`, with `W` a structured `d_out x d_in`
    operator: an immutable JAX pytree.

    The pytree's children are the operator's trained arrays (held in an operator of
    the same structure, so gradients come back as one), the bias (or `None`) and
    the weight-normalisation gains (a tuple of 0-d arrays, empty when off). Its
    static data are the sizes, the structure name, the scales `σ_i`, the
    per-component [`MupInfo`][structlin.mup.MupInfo]s and the leaves that are not
    learnable components (integer permutation indices, Python and array scalars:
    the buffers of the PyTorch layer), so `jax.grad` sees only floating-point
    leaves. The layer declares them as operators do (`_children`, `_static`) and is
    registered with JAX by [`structlin.pytree`][structlin.pytree] like them.

    Each learnable component `G_i` has a name as in the PyTorch layer (`blocks_0`,
    `U`, `cores_1`, ...; see [`leaf_names`][structlin.nn.structures.leaf_names]) and
    its μP role in `layer.mup[name]`.

    Build a layer with [`Linear.init`][structlin.nn.jax.Linear.init] (a structure
    name, parameters drawn at the μP scale) or
    [`Linear.from_operator`][structlin.nn.jax.Linear.from_operator] (any operator
    expression); calling `Linear(...)` directly is an error.

    The forward pass computes `x @ W^T` through `W`'s structured transpose and the
    row-layout rule [`rmatmat`][structlin.rmatmat], at the cost of `W`'s matmat
    (for Monarch with `b` blocks about `2 d^2 / b` flops per row against `d^2` for
    dense); no dense matrix is formed. Initialisation, weight normalisation
    (Section 5.1: `G_i` used as `γ_i min(1, σ_i / RMS(G_i)) G_i`), the bias and the
    input checks are those of the PyTorch layer [`structlin.nn.Linear`][structlin.nn.Linear]
    (one shared core), so the two compute the same function from the same arrays;
    the gains `γ_i` are 0-d here and of shape `(1,)` there, for FSDP2.

    Attributes:
        bias: The bias, shape `(d_out,)`, or `None`.
        gains: The gains `γ_i`, one 0-d array per learnable component in leaf order
            (empty without weight normalisation).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from structlin.nn.jax import Linear
        >>> layer = Linear.init(jax.random.key(0), 64, 32, "monarch", nblocks=4)
        >>> layer(jnp.ones((5, 64))).shape
        (5, 32)
        >>> sorted(layer.mup)
        ['blocks_0', 'blocks_1']
        >>> layer.mup["blocks_0"].lr_multiplier
        2.0
    """

    _children = ("_params", "bias", "gains")
    # The layout of W, the structure name, the sigmas, and W's fixed arrays (None elsewhere).
    _static = ("_layout", "_structure", "_sigmas", "_buffers")

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError(
            "build a structlin.nn.jax.Linear with Linear.init(key, in_features, out_features, "
            "structure, ...) or Linear.from_operator(op)"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Linear is immutable; build a new layer (e.g. with jax.tree_util.tree_map) "
            f"instead of setting {name!r}"
        )

    # -- construction ------------------------------------------------------------
    @classmethod
    def init(
        cls,
        key: jax.Array | int,
        in_features: int,
        out_features: int,
        structure: str = "dense",
        *,
        bias: bool = True,
        weight_norm: bool = False,
        zero_init_last: bool = False,
        dtype: DTypeLike = jnp.float32,
        **spec: Any,
    ) -> Linear:
        """A fresh `d_out x d_in` layer of `structure` with components drawn at their μP scale.

        Each learnable component `G_i` gets entries `N(0, σ_i²)`,
        `σ_i = sqrt(min(d_in^i, d_out^i)) / d_in^i`, from its own subkey of `key`
        (`jax.random.split`); the bias is zero and the weight-normalisation gains
        are 1, with `σ_i` as the weight-normalisation scale.

        Args:
            key: A JAX PRNG key (`jax.random.key(seed)`), or an integer seed.
            in_features: `d_in`.
            out_features: `d_out`.
            structure: A registered structure's name (`"monarch"`, `"btt"`, ...; see
                [`structlin.nn.structures`][structlin.nn.structures]).
            bias: Whether to add a learnable bias `b` of shape `(d_out,)`.
            weight_norm: Reparameterise each component as in
                [`Linear`][structlin.nn.jax.Linear].
            zero_init_last: Zero the components that write the layer's output (the
                last layer of a residual branch, Section 3.2): the layer starts at
                `W = 0` and gradients still reach those components through the others.
            dtype: A floating-point dtype for every array.
            **spec: The structure's options (`nblocks`, `rank`, `factors`, `ncores`).

        Raises:
            ValueError: an unknown structure, or sizes the structure cannot take.
            TypeError: an option the structure does not take, or a non-floating `dtype`.

        Examples:
            >>> import jax
            >>> from structlin.nn.jax import Linear
            >>> layer = Linear.init(0, 16, 8, "lowrank", rank=2, zero_init_last=True)
            >>> W, b = layer.to_dense()
            >>> W.shape, float(abs(W).max()), b.shape
            ((8, 16), 0.0, (8,))
        """
        template = structures.template(structure, in_features, out_features, **spec)
        layout, leaves = _layer.layout(template, weight_norm)
        key = jax.random.key(key) if isinstance(key, int) else key
        subkeys = iter(jax.random.split(key, len(layout.mup)))
        dtype = _floating("Linear.init", dtype)
        values = [
            # Drawn even when zeroed, so that the other components do not move.
            jax.random.normal(next(subkeys), leaf.shape, dtype)
            * _layer.init_std(info, zero_init_last)
            if info is not None
            else leaf
            for leaf, info in zip(leaves, layout.infos, strict=True)
        ]
        return cls._build(layout, structure, values, bias, dtype, measured=False)

    @classmethod
    def from_operator(
        cls,
        op: LinearOperator,
        bias: bool | Any = False,
        *,
        weight_norm: bool = False,
        dtype: DTypeLike | None = None,
    ) -> Linear:
        """A layer computing `y = op x + b`, with JAX copies of `op`'s arrays.

        `op` may be any operator expression of any backend: NumPy and JAX arrays
        are copied with `jnp.array`, PyTorch tensors through
        `np.asarray(t.detach().cpu())` (PyTorch is not imported here; bfloat16
        tensors stay bfloat16). Its
        floating-point learnable components become the trained leaves; every
        other leaf (integer permutation indices, Python and array scalars) is held
        as static data and never trained. With `weight_norm`, each `σ_i` is the
        larger of the component's μP scale and its current RMS, so the layer
        computes exactly `op` when built.

        Args:
            op: The `d_out x d_in` operator.
            bias: `False`, `True` (a zero bias) or an array of shape `(d_out,)`.
            weight_norm: As in [`Linear`][structlin.nn.jax.Linear].
            dtype: Floating-point dtype of the arrays; by default that of `op`'s
                floating-point arrays as JAX holds them (float64 becomes float32
                unless `jax_enable_x64` is set).

        Raises:
            TypeError: `op` is not an operator, has complex values, or has no
                `components` rule; `bias` is not a bool or an array.
            ValueError: `bias` has the wrong shape.

        Examples:
            >>> import numpy as np, jax.numpy as jnp, structlin as sl
            >>> from structlin.nn.jax import Linear
            >>> op = sl.Monarch.random(16, 16, nblocks=4, rng=0).T
            >>> layer = Linear.from_operator(op, bias=np.arange(16.0))
            >>> W, b = layer.to_dense()
            >>> bool(jnp.allclose(W, op.to_dense(), atol=1e-6)), sorted(layer.mup)
            (True, ['blocks_0', 'blocks_1'])
        """
        layout, leaves = _layer.layout(op, weight_norm)
        dtype = None if dtype is None else _floating("Linear.from_operator", dtype)
        return cls._build(layout, type(op).__name__, leaves, bias, dtype, measured=True)

    @classmethod
    def _build(
        cls,
        layout: _layer.Layout,
        structure: str,
        leaves: list[Any],
        bias: Any,
        dtype: Any,
        *,
        measured: bool,
    ) -> Linear:
        roles = layout.roles
        values = [
            v if r == _layer.CONST else _to_jax(v) for v, r in zip(leaves, roles, strict=True)
        ]
        if dtype is None:  # that of the floating-point arrays, as JAX holds them
            floats = [
                v.dtype for v in values if jnp.issubdtype(getattr(v, "dtype", int), jnp.floating)
            ]
            dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
        values = [
            v if r == _layer.CONST else _to_jax(v, dtype)
            for v, r in zip(values, roles, strict=True)
        ]
        params = [v if r == _layer.PARAM else None for v, r in zip(values, roles, strict=True)]
        buffers = tuple(
            _Frozen(v) if r == _layer.BUFFER else None for v, r in zip(values, roles, strict=True)
        )
        named = dict(zip(layout.names, values, strict=True))
        sigmas = tuple(
            _layer.sigma(info, named[name] if measured else None)
            for name, info in layout.mup.items()
            if layout.weight_norm
        )
        bias = _layer.check_bias(bias, layout.out_features)
        if bias is not None:
            bias = jnp.zeros(layout.out_features, dtype) if bias is True else _to_jax(bias, dtype)
        gains = tuple(jnp.ones((), dtype) for _ in sigmas)
        static = (layout, structure, sigmas, buffers)
        return cls._make(static, pytree.tree_unflatten(layout.treedef, params), bias, gains)

    @classmethod
    def _make(
        cls, static: tuple[Any, ...], params: Any, bias: Any, gains: tuple[Any, ...]
    ) -> Linear:
        # Through the pytree declaration, as JAX rebuilds layers (bypassing __init__).
        return pytree.tree_unflatten(
            pytree.TreeDef(cls, static, (None,) * 3), [params, bias, gains]
        )

    def tree_flatten(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """JAX's flattening, as declared by `_children` and `_static`: children `(operator
        of trained arrays, bias, gains)`; the rest is static."""
        static = tuple(getattr(self, n) for n in self._static)
        return tuple(getattr(self, n) for n in self._children), static

    @classmethod
    def tree_unflatten(cls, static: tuple[Any, ...], children: tuple[Any, ...]) -> Linear:
        """Inverse of [`tree_flatten`][structlin.nn.jax.Linear.tree_flatten]; no checks, so
        JAX can rebuild layers of tracers or placeholders."""
        return cls._make(static, *children)

    # -- metadata ----------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """`d_in`."""
        return self._layout.in_features

    @property
    def out_features(self) -> int:
        """`d_out`."""
        return self._layout.out_features

    @property
    def structure(self) -> str:
        """The structure name given to [`init`][structlin.nn.jax.Linear.init], or the
        operator's class name for [`from_operator`][structlin.nn.jax.Linear.from_operator]."""
        return self._structure

    @property
    def weight_norm(self) -> bool:
        """Whether the components are weight-normalised."""
        return self._layout.weight_norm

    @property
    def mup(self) -> dict[str, MupInfo]:
        """[`MupInfo`][structlin.mup.MupInfo] of each learnable component, by leaf name."""
        return self._layout.mup

    @property
    def sigmas(self) -> dict[str, float]:
        """The weight-normalisation scale `σ_i` of each learnable component, by leaf name
        (empty without weight normalisation)."""
        return dict(zip(self.mup, self._sigmas, strict=False))

    def named_parameters(self) -> dict[str, Any]:
        """The trained leaves by name, as in the PyTorch layer: the components (`blocks_0`,
        ...), `bias` if present, and `<name>_gain` with weight normalisation."""
        out = dict(zip(self.mup, self._trained(), strict=True))
        if self.bias is not None:
            out["bias"] = self.bias
        out.update({f"{name}_gain": g for name, g in zip(self.mup, self.gains, strict=False)})
        return out

    def _trained(self) -> list[Any]:
        leaves = self._layout.leaves(self._params)
        return [v for v, r in zip(leaves, self._layout.roles, strict=True) if r == _layer.PARAM]

    def _operator(self, gains: tuple[Any, ...]) -> LinearOperator:
        trained = iter(self._trained())
        values = [
            b.value if b is not None else next(trained) if r == _layer.PARAM else None
            for b, r in zip(self._buffers, self._layout.roles, strict=True)
        ]
        return self._layout.operator(values, _Jax, gains, self._sigmas)

    # -- the operator ------------------------------------------------------------
    @property
    def op(self) -> LinearOperator:
        """`W` as a structlin operator of the raw components (before weight normalisation)."""
        return self._operator(())

    @property
    def operator(self) -> LinearOperator:
        """The effective `W`: [`op`][structlin.nn.jax.Linear.op] with each component
        `G_i` replaced by `γ_i σ_i / sqrt(max(mean(G_i²), σ_i²)) G_i` when weight
        normalisation is on. Differentiable with respect to the layer's leaves."""
        return self._operator(self.gains)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`y = x @ W^T + b` for `x` of shape `(..., in_features)`; `y` has shape `(..., out_features)`.

        Raises:
            ValueError: `x` is 0-d or its last axis is not `in_features` long.
            TypeError: `x` is complex, integer or boolean (the layer is real; a
                floating-point `x` of another precision is promoted as JAX promotes).
        """
        x = jnp.asarray(x)
        name = f"Linear({self.in_features} -> {self.out_features})"
        _layer.check_shape(name, x.shape, self.in_features)
        params = self.bias if self.bias is not None else next(iter(self._trained()), None)
        dtype = getattr(params, "dtype", None)  # named in the messages
        _layer.check_kind(
            name,
            x.dtype,
            dtype,
            complex_=jnp.issubdtype(x.dtype, jnp.complexfloating),
            floating=jnp.issubdtype(x.dtype, jnp.floating),
            cast=f"x.astype(jnp.{dtype})",
        )
        return _layer.forward(self._layout, self.operator, self.bias, x, _Jax)

    def to_dense(self) -> tuple[jax.Array, jax.Array | None]:
        """`(W, b)`: the effective `d_out x d_in` matrix and the bias (`None` without one).

        `O(d_out d_in)` memory; for densifying a trained layer ("reverse
        sparsification") or checking it.
        """
        return rules.to_dense(self.operator), self.bias

    def _multipliers(self, optimizer: Optimizer, base_fan_in: int | None = None) -> Linear:
        """This layer's learning-rate multipliers, as a layer of floats: `κ_i` of each
        component, and with `base_fan_in` μP's width factors."""
        weight = bias = 1.0
        if base_fan_in is not None:
            weight = _width.weight(self.out_features, self.in_features, base_fan_in, optimizer)
            bias = _width.vector(self.out_features, base_fan_in, optimizer)
        kappas = iter([_layer.multiplier(info, optimizer) * weight for info in self.mup.values()])
        roles = self._layout.roles
        params = [next(kappas) if r == _layer.PARAM else None for r in roles]
        params = pytree.tree_unflatten(self._layout.treedef, params)
        gains = (1.0,) * len(self.gains)
        return Linear._make(
            self.tree_flatten()[1], params, None if self.bias is None else bias, gains
        )

    def __repr__(self) -> str:
        summary = structures.layer_summary(
            self.in_features,
            self.out_features,
            self.structure,
            self.bias is not None,
            self.weight_norm,
        )
        return f"Linear({summary})"


pytree.register(Linear)


def _to_jax(x: Any, dtype: DTypeLike | None = None) -> jax.Array:
    """`x` (an array of any backend) as a JAX array; floating-point ones in `dtype` if given."""
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        out = jnp.asarray(x)
    else:  # another library's array (PyTorch is not imported here)
        out = _layer.convert(x, "jax")
    floating = dtype is not None and jnp.issubdtype(out.dtype, jnp.floating)
    return out.astype(dtype) if floating else out


def _floating(where: str, dtype: Any) -> Any:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where} needs a floating-point dtype, got {dtype!r}")
    return dtype
