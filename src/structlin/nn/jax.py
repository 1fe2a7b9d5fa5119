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
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from structlin import pytree, rules
from structlin.backends import is_array
from structlin.mup import MupInfo, describe
from structlin.nn import structures
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

Optimizer = Literal["adam", "sgd"]
_OPTIMIZERS = ("adam", "sgd")


class _Static:
    """A leaf held as static data (a Python scalar, an integer or other fixed array):
    hashable and compared by value, as JAX requires of a pytree's auxiliary data."""

    __slots__ = ("_key", "value")

    def __init__(self, value: Any):
        self.value = value
        if is_array(value):
            a = np.asarray(value)
            self._key: tuple[Any, ...] = ("array", a.shape, str(a.dtype), a.tobytes())
        else:
            self._key = ("scalar", type(value), value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"_Static({self.value!r})"


class _Meta(NamedTuple):
    """A layer's static data: everything but its trained arrays. `names`, `infos` and
    `statics` have one entry per leaf of the operator; `sigmas` one per trained leaf."""

    in_features: int
    out_features: int
    structure: str
    weight_norm: bool
    treedef: pytree.TreeDef | None
    names: tuple[str, ...]
    infos: tuple[MupInfo | None, ...]
    statics: tuple[_Static | None, ...]  # None where the leaf is a trained array
    sigmas: tuple[float, ...]  # empty without weight normalisation


@jax.tree_util.register_pytree_node_class
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
    trained, and `jax.grad` sees only floating-point leaves.

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
    dense); no dense matrix is formed.

    Weight normalisation (Section 5.1) uses each component as
    `γ_i min(1, σ_i / RMS(G_i)) G_i = γ_i σ_i / sqrt(max(mean(G_i²), σ_i²)) G_i`,
    with a learnable gain `γ_i` (initially 1) and `σ_i` the component's μP scale,
    so no component's RMS entry grows past `γ_i σ_i`.

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

    __slots__ = ("_meta", "_params", "bias", "gains")

    _meta: _Meta
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

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy would restore the slots through __setattr__, which refuses.
        return (Linear._make, (self._meta, self._params, self.bias, self.gains))

    @classmethod
    def _make(
        cls, meta: _Meta, params: Any, bias: jax.Array | None, gains: tuple[Any, ...]
    ) -> Linear:
        # Bypasses __init__ (as pytree unflattening must: JAX rebuilds layers from
        # tracers and placeholder objects).
        layer = object.__new__(cls)
        for name, value in (("_meta", meta), ("_params", params), ("bias", bias), ("gains", gains)):
            object.__setattr__(layer, name, value)
        return layer

    @classmethod
    def _from_named(cls, meta: _Meta, named: Mapping[str, Any]) -> Linear:
        """The layer of static data `meta` whose trained leaves are `named`, keyed as
        [`named_parameters`][structlin.nn.jax.Linear.named_parameters] gives them
        (the inverse of that method). No checks: the `flax.nnx` module calls it on
        every forward pass, with its own `nnx.Param` values."""
        mup = [n for n, s in zip(meta.names, meta.statics, strict=True) if s is None]
        trained = iter([named[n] for n in mup])
        params = pytree.tree_unflatten(
            meta.treedef, [None if s is not None else next(trained) for s in meta.statics]
        )
        gains = tuple(named[f"{n}_gain"] for n in mup) if meta.weight_norm else ()
        return cls._make(meta, params, named.get("bias"), gains)

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
        leaves, treedef = pytree.tree_flatten(template)
        infos = describe(template)
        if isinstance(key, int):
            key = jax.random.key(key)
        subkeys = iter(jax.random.split(key, sum(info is not None for info in infos)))
        values: list[Any] = []
        for leaf, info in zip(leaves, infos, strict=True):
            if info is None:
                values.append(jnp.asarray(leaf) if is_array(leaf) else leaf)
                continue
            subkey = next(subkeys)  # drawn even when zeroed, so the other components do not move
            if zero_init_last and info.component.last:
                values.append(jnp.zeros(leaf.shape, dtype))
            else:
                values.append(jax.random.normal(subkey, leaf.shape, dtype) * info.init_std)
        sigmas = [info.init_std for info in infos if info is not None]
        return cls._build(
            template, treedef, values, infos, structure, bias, weight_norm, sigmas, dtype
        )

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
        `np.asarray(t.detach().cpu())` (PyTorch is not imported here). Its
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
        if not isinstance(op, LinearOperator):
            raise TypeError(
                f"Linear.from_operator needs a structlin operator, got {type(op).__name__}; "
                "wrap an array with structlin.Dense"
            )
        leaves, treedef = pytree.tree_flatten(op)
        infos = describe(op)
        values = [_to_jax(leaf) if is_array(leaf) else leaf for leaf in leaves]
        for v in values:
            complex_ = jnp.iscomplexobj(v) if is_array(v) else isinstance(v, complex)
            if complex_:
                raise TypeError(
                    f"Linear layers are real, but {type(op).__name__} has complex values; "
                    "take the real part or use a real operator"
                )
        floats = [v for v in values if is_array(v) and jnp.issubdtype(v.dtype, jnp.floating)]
        if dtype is None:
            dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
        elif not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"Linear.from_operator needs a floating-point dtype, got {dtype!r}")
        values = [
            v.astype(dtype) if is_array(v) and jnp.issubdtype(v.dtype, jnp.floating) else v
            for v in values
        ]
        sigmas = [
            max(info.init_std, _rms(v)) if weight_norm else info.init_std
            for v, info in zip(values, infos, strict=True)
            if _trained(v, info)
        ]
        return cls._build(
            op, treedef, values, infos, type(op).__name__, bias, weight_norm, sigmas, dtype
        )

    @classmethod
    def _build(
        cls,
        op: LinearOperator,
        treedef: pytree.TreeDef | None,
        values: list[Any],
        infos: tuple[MupInfo | None, ...],
        structure: str,
        bias: bool | Any,
        weight_norm: bool,
        sigmas: list[float],
        dtype: DTypeLike,
    ) -> Linear:
        trained = [_trained(v, info) for v, info in zip(values, infos, strict=True)]
        meta = _Meta(
            in_features=op.shape[1],
            out_features=op.shape[0],
            structure=structure,
            weight_norm=bool(weight_norm),
            treedef=treedef,
            names=tuple(structures.leaf_names(treedef)),
            infos=tuple(info if t else None for info, t in zip(infos, trained, strict=True)),
            statics=tuple(None if t else _Static(v) for v, t in zip(values, trained, strict=True)),
            sigmas=tuple(float(s) for s in sigmas) if weight_norm else (),
        )
        params = pytree.tree_unflatten(
            treedef, [v if t else None for v, t in zip(values, trained, strict=True)]
        )
        gains = tuple(jnp.ones((), dtype) for _ in meta.sigmas)
        return cls._make(meta, params, _make_bias(bias, meta.out_features, dtype), gains)

    # -- pytree ------------------------------------------------------------------
    def tree_flatten(self) -> tuple[tuple[Any, ...], _Meta]:
        """JAX's flattening: children `(operator of trained arrays, bias, gains)`; the rest is static."""
        return (self._params, self.bias, self.gains), self._meta

    @classmethod
    def tree_unflatten(cls, meta: _Meta, children: tuple[Any, ...]) -> Linear:
        """Inverse of [`tree_flatten`][structlin.nn.jax.Linear.tree_flatten]; no checks, so
        JAX can rebuild layers of tracers or placeholders."""
        params, bias, gains = children
        return cls._make(meta, params, bias, tuple(gains))

    # -- metadata ----------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """`d_in`."""
        return self._meta.in_features

    @property
    def out_features(self) -> int:
        """`d_out`."""
        return self._meta.out_features

    @property
    def structure(self) -> str:
        """The structure name given to [`init`][structlin.nn.jax.Linear.init], or the
        operator's class name for [`from_operator`][structlin.nn.jax.Linear.from_operator]."""
        return self._meta.structure

    @property
    def weight_norm(self) -> bool:
        """Whether the components are weight-normalised."""
        return self._meta.weight_norm

    @property
    def mup(self) -> dict[str, MupInfo]:
        """[`MupInfo`][structlin.mup.MupInfo] of each learnable component, by leaf name."""
        m = self._meta
        return {n: i for n, i, s in zip(m.names, m.infos, m.statics, strict=True) if s is None}

    @property
    def sigmas(self) -> dict[str, float]:
        """The weight-normalisation scale `σ_i` of each learnable component, by leaf name
        (empty without weight normalisation)."""
        return dict(zip(self.mup, self._meta.sigmas, strict=False))

    def named_parameters(self) -> dict[str, Any]:
        """The trained leaves by name, as in the PyTorch layer: the components (`blocks_0`,
        ...), `bias` if present, and `<name>_gain` with weight normalisation."""
        out = dict(zip(self.mup, self._trained_values(), strict=True))
        if self.bias is not None:
            out["bias"] = self.bias
        out.update({f"{name}_gain": g for name, g in zip(self.mup, self.gains, strict=False)})
        return out

    def _trained_values(self) -> list[Any]:
        values = _gather(self._meta.treedef, self._params)
        return [v for v, s in zip(values, self._meta.statics, strict=True) if s is None]

    def _operator(self, trained: list[Any]) -> LinearOperator:
        it = iter(trained)
        leaves = [next(it) if s is None else s.value for s in self._meta.statics]
        return pytree.tree_unflatten(self._meta.treedef, leaves)

    # -- the operator ------------------------------------------------------------
    @property
    def op(self) -> LinearOperator:
        """`W` as a structlin operator of the raw components (before weight normalisation)."""
        return self._operator(self._trained_values())

    @property
    def operator(self) -> LinearOperator:
        """The effective `W`: [`op`][structlin.nn.jax.Linear.op] with each component
        `G_i` replaced by `γ_i σ_i / sqrt(max(mean(G_i²), σ_i²)) G_i` when weight
        normalisation is on. Differentiable with respect to the layer's leaves."""
        trained = self._trained_values()
        if self.weight_norm:
            trained = [
                _normalised(G, gain, sigma)
                for G, gain, sigma in zip(trained, self.gains, self._meta.sigmas, strict=True)
            ]
        return self._operator(trained)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`y = x @ W^T + b` for `x` of shape `(..., in_features)`; `y` has shape `(..., out_features)`.

        Raises:
            ValueError: `x` is 0-d or its last axis is not `in_features` long.
            TypeError: `x` is complex, integer or boolean (the layer is real; a
                floating-point `x` of another precision is promoted as JAX promotes).
        """
        x = jnp.asarray(x)
        d_in, d_out = self.in_features, self.out_features
        _check_input(x, f"Linear({d_in} -> {d_out})", d_in, self._dtype())
        lead = x.shape[:-1]
        y = rules.rmatmat(x.reshape(-1, d_in), rules.transpose(self.operator))
        y = y.reshape(*lead, d_out)
        if self.bias is not None:
            y = y + self.bias.astype(y.dtype)
        return y

    def _dtype(self) -> Any:
        # The dtype of the layer's parameters, named in input errors.
        if self.bias is not None:
            return self.bias.dtype
        return next((jnp.result_type(v) for v in self._trained_values()), None)

    def to_dense(self) -> tuple[jax.Array, jax.Array | None]:
        """`(W, b)`: the effective `d_out x d_in` matrix and the bias (`None` without one).

        `O(d_out d_in)` memory; for densifying a trained layer ("reverse
        sparsification") or checking it.
        """
        return rules.to_dense(self.operator), self.bias

    def _multipliers(self, optimizer: Optimizer) -> Linear:
        infos = [i for i, s in zip(self._meta.infos, self._meta.statics, strict=True) if s is None]
        attr = "sgd_lr_multiplier" if optimizer == "sgd" else "lr_multiplier"
        kappas = iter([float(getattr(info, attr)) for info in infos])
        params = pytree.tree_unflatten(
            self._meta.treedef,
            [None if s is not None else next(kappas) for s in self._meta.statics],
        )
        bias = None if self.bias is None else 1.0
        return Linear._make(self._meta, params, bias, tuple(1.0 for _ in self.gains))

    def __repr__(self) -> str:
        summary = structures.layer_summary(
            self.in_features,
            self.out_features,
            self.structure,
            self.bias is not None,
            self.weight_norm,
        )
        return f"Linear({summary})"


def _trained(value: Any, info: MupInfo | None) -> bool:
    return info is not None and is_array(value) and jnp.issubdtype(value.dtype, jnp.floating)


def _rms(value: Any) -> float:
    a = np.asarray(value, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def _normalised(G: jax.Array, gain: jax.Array, sigma: float) -> jax.Array:
    # gain * min(1, sigma / RMS(G)) * G, written as sigma / sqrt(max(mean(G^2), sigma^2)):
    # the same value, but finite gradients at G = 0 (no sqrt(0) on the selected branch).
    mean_square = jnp.mean(jnp.square(G))
    scale = sigma * jax.lax.rsqrt(jnp.maximum(mean_square, sigma * sigma))
    return G * (gain * scale).astype(G.dtype)


def _gather(treedef: pytree.TreeDef | None, node: Any) -> list[Any]:
    """The leaves of `node`, an operator built from `treedef`, in `tree_flatten` order."""
    return [leaf for _, leaf in pytree.tree_leaves_with_path(treedef, node)]


def _to_jax(x: Any) -> jax.Array:
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
        return jnp.array(x)
    # A PyTorch tensor (duck-typed: PyTorch is not imported here). NumPy has no
    # bfloat16, so those go through float32, which holds them exactly.
    t = x.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        return jnp.asarray(np.asarray(t.float()), jnp.bfloat16)
    return jnp.array(np.asarray(t))


def _make_bias(bias: bool | Any, d_out: int, dtype: DTypeLike) -> jax.Array | None:
    if bias is False or bias is None:
        return None
    if bias is True:
        return jnp.zeros((d_out,), dtype)
    if not is_array(bias):
        raise TypeError(
            f"bias must be a bool or an array of shape ({d_out},), got {type(bias).__name__}"
        )
    value = _to_jax(bias).astype(dtype)
    if value.shape != (d_out,):
        raise ValueError(f"bias must have shape ({d_out},), got {tuple(value.shape)}")
    return value


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
    if optimizer not in _OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose 'adam' (also for AdamW) or 'sgd'"
        )

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
    attr = "sgd_lr_multiplier" if optimizer == "sgd" else "lr_multiplier"

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
            return float(getattr(info, attr))
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


def _check_input(x: jax.Array, layer: str, features: int, dtype: Any) -> None:
    """Check a JAX layer's input at trace time: at least one axis, the last `features`
    long, and a real floating-point dtype (shapes and dtypes are static under `jit`)."""
    if x.ndim == 0:
        raise ValueError(
            f"{layer} got a 0-d input (shape ()); inputs have shape (..., {features}), "
            f"their last axis of size {features} (in_features)"
        )
    if x.shape[-1] != features:
        raise ValueError(
            f"{layer} got an input of shape {tuple(x.shape)}; its last axis must have size "
            f"{features} (in_features)"
        )
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(
            f"{layer} has real {dtype} parameters but got a complex input (dtype {x.dtype}); "
            "structured layers are real: apply the layer to x.real and x.imag separately"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{layer} has {dtype} parameters but got an input of dtype {x.dtype}; cast the "
            f"input (x.astype(jnp.{dtype}))"
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
