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

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from structlin import pytree, rules
from structlin.backends import is_array
from structlin.mup import MupInfo
from structlin.nn import _layer, structures
from structlin.operator import LinearOperator

__all__ = [
    "Linear",
    "mup_lr_multipliers",
    "decay_mask",
    "scale_updates",
    "scale_by_mup",
    "ScaleByMup",
    "ScaleByMupState",
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
    static data are the sizes, the structure name, the weight-normalisation scales
    `σ_i` and the per-component [`MupInfo`][structlin.mup.MupInfo]s. Leaves that are
    not learnable components (integer permutation indices, Python and array
    scalars) are static too: like the buffers of the PyTorch layer, they are never
    trained, and `jax.grad` sees only floating-point leaves. The layer declares its
    children and static data as operators do (`_children`, `_static`), and is
    registered with JAX by [`structlin.pytree`][structlin.pytree] like them.

    Each learnable component `G_i` (a leaf named as in the PyTorch layer:
    `blocks_0`, `U`, `cores_1`, ...; see [`leaf_names`][structlin.nn.structures.leaf_names])
    has `layer.mup[name]`: its fans `(d_out^i, d_in^i)`, the number `k` of
    components, its initialisation scale `σ_i = sqrt(min(d_in^i, d_out^i)) / d_in^i`
    and its Adam learning-rate multiplier `κ_i = (d_in / d_in^i) / k`.

    Build a layer with [`Linear.init`][structlin.nn.jax.Linear.init] (a structure
    name, parameters drawn at the μP scale) or
    [`Linear.from_operator`][structlin.nn.jax.Linear.from_operator] (any operator
    expression); calling `Linear(...)` directly is an error.

    The forward pass computes `x @ W^T` through `W`'s structured transpose and the
    row-layout rule [`rmatmat`][structlin.rmatmat], at the cost of `W`'s matmat
    (for Monarch with `b` blocks about `2 d^2 / b` flops per row against `d^2` for
    dense); no dense matrix is formed. Initialisation, weight normalisation, the
    bias and the input checks are those of the PyTorch layer
    [`structlin.nn.Linear`][structlin.nn.Linear] (one shared core), so the two
    compute the same function from the same arrays.

    Weight normalisation (Section 5.1) uses each component as
    `γ_i min(1, σ_i / RMS(G_i)) G_i = γ_i σ_i / sqrt(max(mean(G_i²), σ_i²)) G_i`,
    with a learnable gain `γ_i` (initially 1) and `σ_i` the component's μP scale,
    so no component's RMS entry grows past `γ_i σ_i`. The gains are 0-d here; the
    PyTorch layer stores them with shape `(1,)` for FSDP2 (the same values).

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

    _layout: _layer.Layout
    _structure: str
    _sigmas: tuple[float, ...]
    _buffers: tuple[_Frozen | None, ...]
    _params: Any  # the operator with None in place of its static leaves
    bias: jax.Array | None
    gains: tuple[jax.Array, ...]

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

    def _with(self, params: Any, bias: Any, gains: tuple[Any, ...]) -> Linear:
        """This layer's static data with other children, as JAX's unflattening does."""
        static = tuple(getattr(self, name) for name in self._static)
        treedef = pytree.TreeDef(Linear, static, (None, None, None))
        return pytree.tree_unflatten(treedef, [params, bias, tuple(gains)])

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
            structure: One of `"dense"`, `"lowrank"`, `"kron"`, `"blockdiag"`,
                `"monarch"`, `"tt"`, `"btt"`; see [`structlin.nn.structures`][structlin.nn.structures].
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
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"Linear.init needs a floating-point dtype, got {dtype!r}")
        template = structures.template(structure, in_features, out_features, **spec)
        layout, leaves = _layer.layout(template, weight_norm)
        key = jax.random.key(key) if isinstance(key, int) else key
        subkeys = iter(jax.random.split(key, len(layout.mup)))
        values = [
            # Drawn even when zeroed, so that the other components do not move.
            jax.random.normal(next(subkeys), leaf.shape, dtype)
            * _layer.init_std(info, zero_init_last)
            if info is not None
            else leaf
            for leaf, info in zip(leaves, layout.infos, strict=True)
        ]
        sigmas = [_layer.sigma(info) for info in layout.mup.values()]
        return cls._build(layout, structure, values, bias, sigmas, dtype)

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
        values = [
            v if r == _layer.CONST else _to_jax(v)
            for v, r in zip(leaves, layout.roles, strict=True)
        ]
        if dtype is None:
            floats = [
                v.dtype for v in values if is_array(v) and jnp.issubdtype(v.dtype, jnp.floating)
            ]
            dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
        elif not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"Linear.from_operator needs a floating-point dtype, got {dtype!r}")
        values = [
            v if r == _layer.CONST else _to_jax(v, dtype)
            for v, r in zip(values, layout.roles, strict=True)
        ]
        named = dict(zip(layout.names, values, strict=True))
        sigmas = [_layer.sigma(i, named[n] if weight_norm else None) for n, i in layout.mup.items()]
        return cls._build(layout, type(op).__name__, values, bias, sigmas, dtype)

    @classmethod
    def _build(
        cls,
        layout: _layer.Layout,
        structure: str,
        values: list[Any],
        bias: Any,
        sigmas: list[float],
        dtype: DTypeLike,
    ) -> Linear:
        roles = layout.roles
        values = [
            v if r == _layer.CONST else _to_jax(v, dtype)
            for v, r in zip(values, roles, strict=True)
        ]
        buffers = tuple(
            _Frozen(v) if r == _layer.BUFFER else None for v, r in zip(values, roles, strict=True)
        )
        params = [v if r == _layer.PARAM else None for v, r in zip(values, roles, strict=True)]
        bias = _layer.check_bias(bias, layout.out_features)
        if bias is not None:
            bias = (
                jnp.zeros((layout.out_features,), dtype) if bias is True else _to_jax(bias, dtype)
            )
        sigmas = tuple(float(s) for s in sigmas) if layout.weight_norm else ()
        treedef = pytree.TreeDef(cls, (layout, structure, sigmas, buffers), (None, None, None))
        params = pytree.tree_unflatten(layout.treedef, params)
        return pytree.tree_unflatten(
            treedef, [params, bias, tuple(jnp.ones((), dtype) for _ in sigmas)]
        )

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

    def _multipliers(self, optimizer: Optimizer) -> Linear:
        kappas = iter([_layer.multiplier(info, optimizer) for info in self.mup.values()])
        roles = self._layout.roles
        params = [next(kappas) if r == _layer.PARAM else None for r in roles]
        params = pytree.tree_unflatten(self._layout.treedef, params)
        return self._with(params, None if self.bias is None else 1.0, (1.0,) * len(self.gains))

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
        a, bfloat16 = _layer.to_numpy(x)
        out = jnp.asarray(a, jnp.bfloat16 if bfloat16 else None)
    floating = dtype is not None and jnp.issubdtype(out.dtype, jnp.floating)
    return out.astype(dtype) if floating else out


def _is_linear(node: Any) -> bool:
    return isinstance(node, Linear)


def _flax_nnx() -> Any:
    """The `flax.nnx` module if something has imported it, else `None`.

    A flax object can only exist once `flax.nnx` is imported, so looking in
    `sys.modules` recognises one without this module ever importing flax.
    """
    return sys.modules.get("flax.nnx")


def _nnx_params(nnx: Any, tree: Any) -> Any:
    """`tree`, or the state of its `nnx.Param`s if it is a `flax.nnx` module: the
    tree that `nnx.Optimizer(model, tx, wrt=nnx.Param)` hands to `tx`."""
    if nnx is not None and isinstance(tree, nnx.Module):
        return nnx.state(tree, nnx.Param)
    return tree


def _is_leaf_for(nnx: Any) -> Callable[[Any], bool]:
    """Stop at layers and, when flax is in use, at `nnx.Variable`s (whose metadata is
    read whole rather than flattened away)."""
    if nnx is None:
        return _is_linear
    return lambda node: isinstance(node, (Linear, nnx.Variable))


def mup_lr_multipliers(tree: Any, optimizer: Optimizer = "adam") -> Any:
    """Learning-rate multipliers for every leaf of `tree`: a pytree of Python floats.

    `tree` is any pytree that may hold [`Linear`][structlin.nn.jax.Linear] layers
    (a dict or list of layers, a model's parameters, plus other arrays). The result
    has the same structure: inside a layer, component `G_i` gets
    `κ_i = (d_in / d_in^i) / k` for Adam ("Compute Better Spent", Section 3.2), or
    `κ_i = ((d_out^i / d_in^i) / (d_out / d_in)) / k` for SGD (Appendix H); every
    other leaf (biases, gains, arrays outside layers) gets `1.0`. These reproduce
    Table 2 of the paper: Monarch with `b` blocks `b/2` for both factors, Kronecker
    `sqrt(d)/2`, low rank `d/(2r)` for `U` and `1/2` for `V`, two-core TT and BTT
    `sqrt(d)/(2r)` and `sqrt(d)/2`.

    `tree` may also be a `flax.nnx` model, whose `nnx.Param`s are taken (as
    `nnx.Optimizer(model, tx, wrt=nnx.Param)` takes them), or an `nnx.State` of
    `nnx.Variable`s, such as `nnx.state(model, wrt)` for another `wrt`. A
    variable with `mup` metadata (a [`MupInfo`][structlin.mup.MupInfo]; the
    components of [`structlin.nn.nnx.Linear`][structlin.nn.nnx.Linear] have it)
    gets its `κ_i`, every other one `1.0`; the result has the structure of the
    plain-array updates the optimizer computes.

    Multiply a dense layer's learning rate `η` by them, with
    [`scale_by_mup`][structlin.nn.jax.scale_by_mup] in an optax chain or
    [`scale_updates`][structlin.nn.jax.scale_updates] by hand.

    Args:
        tree: A pytree of arrays and layers, a `flax.nnx` module, or an
            `nnx.State` of variables.
        optimizer: `"adam"` (Adam, AdamW and other entry-wise normalised optimizers)
            or `"sgd"`.

    Returns:
        A pytree of floats shaped like `tree`'s trained leaves (for an nnx model,
        like `nnx.state(model, nnx.Param)` with its variables replaced by floats).

    Raises:
        ValueError: an unknown `optimizer`, or an `nnx.State` of plain arrays (the
            μP metadata lives on the variables, which `nnx.as_pure` has removed).
        TypeError: a variable's `mup` metadata is not a `MupInfo`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from structlin.nn.jax import Linear, mup_lr_multipliers
        >>> params = {"mlp": Linear.init(0, 1024, 1024, "kron"), "scale": jnp.ones(3)}
        >>> m = mup_lr_multipliers(params)
        >>> m["mlp"].named_parameters(), m["scale"]
        ({'factors_0_array': 16.0, 'factors_1_array': 16.0, 'bias': 1.0}, 1.0)
    """
    _layer.check_optimizer(optimizer)

    nnx = _flax_nnx()
    tree = _nnx_params(nnx, tree)
    is_leaf = _is_leaf_for(nnx)
    if nnx is not None and isinstance(tree, nnx.State):
        leaves = jax.tree_util.tree_leaves(tree, is_leaf=is_leaf)
        if leaves and not any(isinstance(leaf, nnx.Variable) for leaf in leaves):
            # Every multiplier would silently be 1: refuse rather than train at the dense rate.
            raise ValueError(
                "mup_lr_multipliers got an nnx.State of plain arrays, which has lost the μP "
                "metadata of its variables; pass the model or nnx.state(model, nnx.Param) "
                "instead of a pure state"
            )

    def one(node: Any) -> Any:
        if isinstance(node, Linear):
            return node._multipliers(optimizer)
        if nnx is not None and isinstance(node, nnx.Variable):
            info = node.get_metadata().get("mup")
            if info is None:
                return 1.0
            if not isinstance(info, MupInfo):
                raise TypeError(
                    f"the 'mup' metadata of an nnx variable must be a structlin.mup.MupInfo, "
                    f"got {type(info).__name__}"
                )
            return _layer.multiplier(info, optimizer)
        return 1.0

    return jax.tree_util.tree_map(one, tree, is_leaf=is_leaf)


def decay_mask(tree: Any) -> Any:
    """Which leaves weight decay should touch: `True` for matrices and batches of
    matrices (`ndim >= 2`), `False` for vectors and scalars.

    The rule of PyTorch's [`param_groups`][structlin.nn.param_groups]: structured
    components and dense weights decay; biases, weight-normalisation gains and
    the scales and offsets of norms do not. Give it to optax as the mask of the
    decay, either called on the parameters or as the function itself (optax
    calls it on the parameters then):

        optax.adamw(lr, weight_decay=0.1, mask=decay_mask)
        optax.add_decayed_weights(0.1, mask=decay_mask(params))

    `tree` is any pytree of arrays and [`Linear`][structlin.nn.jax.Linear] layers
    (the result has its structure, a layer becoming a layer of booleans), a
    `flax.nnx` model (its `nnx.Param`s are taken, as `nnx.Optimizer(...,
    wrt=nnx.Param)` takes them) or an `nnx.State`, of variables or of arrays
    (each variable becomes one boolean).

    Args:
        tree: The parameters.

    Returns:
        A pytree of Python bools, a prefix of `tree`'s structure.

    Examples:
        >>> import jax.numpy as jnp
        >>> from structlin.nn.jax import Linear, decay_mask
        >>> params = {"mlp": Linear.init(0, 64, 64, "monarch", weight_norm=True),
        ...           "norm_scale": jnp.ones(64)}
        >>> mask = decay_mask(params)
        >>> mask["mlp"].named_parameters(), mask["norm_scale"]
        ({'blocks_0': True, 'blocks_1': True, 'bias': False, 'blocks_0_gain': False, 'blocks_1_gain': False}, False)
    """
    nnx = _flax_nnx()
    tree = _nnx_params(nnx, tree)

    def one(leaf: Any) -> bool:
        if nnx is not None and isinstance(leaf, nnx.Variable):
            leaf = leaf.get_value()
        # np.ndim reads `.ndim` first, so tracers and shape-only structs work too.
        return bool(np.ndim(leaf) >= 2)

    is_leaf = None if nnx is None else (lambda node: isinstance(node, nnx.Variable))
    return jax.tree_util.tree_map(one, tree, is_leaf=is_leaf)


def scale_updates(updates: Any, multipliers: Any) -> Any:
    """`u * m` leaf by leaf: each update scaled by its learning-rate multiplier.

    `multipliers` is a pytree of the structure of `updates` (from
    [`mup_lr_multipliers`][structlin.nn.jax.mup_lr_multipliers] of the parameters);
    a `None` in `updates` stays `None`. Python-float multipliers keep each
    update's dtype.

    Raises:
        ValueError: the two trees have different structures (JAX's message).

    Examples:
        >>> from structlin.nn.jax import scale_updates
        >>> scale_updates({"a": 1.0, "b": None}, {"a": 3.0, "b": 1.0})
        {'a': 3.0, 'b': None}
    """
    return jax.tree_util.tree_map(
        lambda u, m: None if u is None else u * m,
        updates,
        multipliers,
        is_leaf=lambda u: u is None,
    )


class ScaleByMupState(NamedTuple):
    """The (empty) optimizer state of [`scale_by_mup`][structlin.nn.jax.scale_by_mup]."""


class ScaleByMup(NamedTuple):
    """A gradient transformation with the fields of `optax.GradientTransformation`
    (`init`, `update`), so `optax.chain` takes it; built by
    [`scale_by_mup`][structlin.nn.jax.scale_by_mup]."""

    init: Callable[[Any], ScaleByMupState]
    """`params -> state` (an empty state)."""
    update: Callable[..., tuple[Any, ScaleByMupState]]
    """`(updates, state, params=None) -> (updates * multipliers, state)`."""


def scale_by_mup(multipliers: Any) -> ScaleByMup:
    """An optax-style transformation multiplying each update by its μP multiplier `κ_i`.

    Place it after the optimizer's normalisation and before the learning rate,

        optax.chain(optax.scale_by_adam(), scale_by_mup(m), optax.scale(-lr))

    so component `G_i` moves by `-κ_i lr` times Adam's normalised step, with
    `κ_i = (d_in / d_in^i) / k` and `lr` the learning rate of a dense layer
    ("Compute Better Spent", Section 3.2). A weight decay
    (`optax.add_decayed_weights`) placed before it is scaled by `κ_i` too, as in
    PyTorch's AdamW with per-group learning rates. Does not import optax.

    Args:
        multipliers: A pytree of floats of the parameters' structure, from
            [`mup_lr_multipliers`][structlin.nn.jax.mup_lr_multipliers].

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from structlin.nn.jax import Linear, mup_lr_multipliers, scale_by_mup
        >>> layer = Linear.init(0, 16, 16, "monarch", nblocks=4, bias=False)
        >>> tx = scale_by_mup(mup_lr_multipliers(layer))
        >>> grads = jax.grad(lambda l: jnp.sum(l(jnp.ones(16)) ** 2))(layer)
        >>> updates, state = tx.update(grads, tx.init(layer))
        >>> g, u = grads.named_parameters(), updates.named_parameters()
        >>> bool(jnp.allclose(u["blocks_1"], 2.0 * g["blocks_1"]))
        True
    """

    def init(params: Any) -> ScaleByMupState:
        del params
        return ScaleByMupState()

    def update(
        updates: Any, state: ScaleByMupState, params: Any = None
    ) -> tuple[Any, ScaleByMupState]:
        del params
        return scale_updates(updates, multipliers), state

    return ScaleByMup(init, update)
