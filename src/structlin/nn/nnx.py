"""`flax.nnx` layers: [`Linear`][structlin.nn.nnx.Linear], a structured `y = W x + b` as an `nnx.Module`.

The module holds the learnable components `G_i` of `W` as `nnx.Param`s named as
in the PyTorch layer and the pytree layer (`blocks_0`, `U`, `cores_1`, ...,
`bias`, `<name>_gain`), each component with its μP role
([`MupInfo`][structlin.mup.MupInfo]) as the variable's `mup` metadata. Its
forward pass is that of the pytree layer [`structlin.nn.jax.Linear`][structlin.nn.jax.Linear]
on the current values, so both compute the same thing. The optax helpers of
[`structlin.nn.jax`][structlin.nn.jax] take an nnx model directly:
[`mup_lr_multipliers`][structlin.nn.jax.mup_lr_multipliers] reads the metadata and
[`decay_mask`][structlin.nn.jax.decay_mask] keeps weight decay off vectors and scalars.

```python
import jax, optax
from flax import nnx
import structlin.nn.nnx as snnx
from structlin.nn.jax import decay_mask, mup_lr_multipliers, scale_by_mup


class MLP(nnx.Module):
    def __init__(self, d, *, rngs):
        self.up = snnx.Linear(d, 4 * d, "btt", rank=2, rngs=rngs)
        self.down = snnx.Linear(4 * d, d, "btt", rank=2, zero_init_last=True, rngs=rngs)

    def __call__(self, x):
        return x + self.down(jax.nn.gelu(self.up(x)))


model = MLP(256, rngs=nnx.Rngs(0))
tx = optax.chain(
    optax.scale_by_adam(),
    optax.add_decayed_weights(0.1, mask=decay_mask),  # matrices only
    scale_by_mup(mup_lr_multipliers(model)),  # κ_i per component, 1 elsewhere
    optax.scale(-1e-3),
)
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
```

Needs flax (`pip install 'structlin[flax]'`); [`structlin.nn.jax`][structlin.nn.jax]
does not.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

try:
    from flax import nnx
except ModuleNotFoundError as error:
    if error.name is None or error.name.split(".")[0] != "flax":
        raise
    raise ImportError(
        "structlin.nn.nnx needs flax: pip install 'structlin[flax]' "
        "(the pytree layers in structlin.nn.jax need only JAX)"
    ) from error

from structlin.mup import MupInfo
from structlin.nn import jax as _pytree_layers
from structlin.operator import LinearOperator

__all__ = ["Linear"]


class _Adopt:
    """Passed as `rngs` by [`Linear.from_layer`][structlin.nn.nnx.Linear.from_layer]:
    nnx builds a module only through its `__init__`, so adopting an existing
    layer goes through there too, without drawing new parameters."""

    __slots__ = ("layer",)

    def __init__(self, layer: _pytree_layers.Linear):
        self.layer = layer


class Linear(nnx.Module):
    """`y = W x + b` applied to the last axis of `x`, with `W` a structured
    `d_out x d_in` operator: a `flax.nnx` module.

    Each learnable component `G_i` of `W` is an `nnx.Param` attribute named as
    in the PyTorch layer (`blocks_0`, `U`, `cores_1`, ...; see
    [`leaf_names`][structlin.nn.structures.leaf_names]) whose `mup` metadata is
    its [`MupInfo`][structlin.mup.MupInfo] (`layer.blocks_0.mup.lr_multiplier`):
    fans `(d_out^i, d_in^i)`, initialisation scale
    `σ_i = sqrt(min(d_in^i, d_out^i)) / d_in^i` and Adam learning-rate multiplier
    `κ_i = (d_in / d_in^i) / k` ("Compute Better Spent", Section 3.2);
    components are drawn from `N(0, σ_i²)`. The bias and, with weight
    normalisation, each component's 0-d gain (`<name>_gain`) are `nnx.Param`s
    without `mup` metadata. Leaves of
    `W` that are not learnable (integer permutation indices, Python and array
    scalars) are static attributes, never variables, so neither `nnx.grad` nor
    an `nnx.Optimizer` sees them.

    The forward pass rebuilds the pytree layer
    [`structlin.nn.jax.Linear`][structlin.nn.jax.Linear] from the current values
    ([`to_layer`][structlin.nn.nnx.Linear.to_layer]) and applies it, so the two
    layers compute the same function at the same cost (that of `W`'s
    structured matmat; no dense matrix is formed), under `nnx.jit` too. Weight
    normalisation and zero initialisation are those of the pytree layer.

    Attributes:
        bias: The bias, an `nnx.Param` of shape `(d_out,)`, or `None`.

    Args:
        in_features: `d_in`.
        out_features: `d_out`.
        structure: A registered structure name (`"monarch"`, `"lowrank"`, ...); see
            [`structlin.nn.structures`][structlin.nn.structures] for the table.
        rngs: The `nnx.Rngs` whose `params` stream draws the components (one key
            per layer, split over its components).
        bias: Whether to add a learnable bias `b` of shape `(d_out,)`, initially zero.
        weight_norm: Use each component as `γ_i min(1, σ_i / RMS(G_i)) G_i` with a
            learnable 0-d gain `γ_i` (`<name>_gain`, initially 1), Section 5.1.
        zero_init_last: Zero the components that write the layer's output (the
            last layer of a residual branch); gradients still reach them.
        dtype: A floating-point dtype for every parameter.
        **spec: The structure's options (`nblocks`, `rank`, `factors`, `ncores`).

    Raises:
        ValueError: an unknown structure, or sizes the structure cannot take.
        TypeError: an option the structure does not take, a non-floating `dtype`,
            or `rngs` that is not an `nnx.Rngs`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import structlin.nn.nnx as snnx
        >>> layer = snnx.Linear(64, 32, "monarch", nblocks=4, rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((5, 64))).shape
        (5, 32)
        >>> sorted(nnx.state(layer, nnx.Param))
        ['bias', 'blocks_0', 'blocks_1']
        >>> layer.blocks_0.mup.lr_multiplier
        2.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        structure: str = "dense",
        *,
        rngs: nnx.Rngs,
        bias: bool = True,
        weight_norm: bool = False,
        zero_init_last: bool = False,
        dtype: DTypeLike = jnp.float32,
        **spec: Any,
    ):
        if isinstance(rngs, _Adopt):
            layer = rngs.layer
        elif isinstance(rngs, nnx.Rngs):
            layer = _pytree_layers.Linear.init(
                rngs.params(),
                in_features,
                out_features,
                structure,
                bias=bias,
                weight_norm=weight_norm,
                zero_init_last=zero_init_last,
                dtype=dtype,
                **spec,
            )
        else:
            raise TypeError(
                f"structlin.nn.nnx.Linear needs rngs=nnx.Rngs(seed), got {type(rngs).__name__}"
            )
        # The pytree layer without its arrays (sizes, leaf names, MupInfos, permutation
        # indices): hashable, so nnx keeps it in the graph definition as static data. Its
        # leaves are the named parameters, in order.
        named = layer.named_parameters()
        self._treedef = jax.tree_util.tree_structure(layer)
        self._names = tuple(named)
        infos = layer.mup
        for name, value in named.items():
            if name != "bias" and hasattr(Linear, name):
                raise ValueError(
                    f"the operator has a leaf named {name!r}, which is also an attribute of "
                    "structlin.nn.nnx.Linear; rename that child of the operator class"
                )
            info = infos.get(name)
            setattr(self, name, nnx.Param(value) if info is None else nnx.Param(value, mup=info))
        if layer.bias is None:
            self.bias = None

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_layer(cls, layer: _pytree_layers.Linear) -> Linear:
        """A module holding the arrays of the pytree layer `layer`, computing what it computes.

        Args:
            layer: A [`structlin.nn.jax.Linear`][structlin.nn.jax.Linear].

        Returns:
            The module; its parameters are `layer`'s arrays (JAX arrays are
            immutable, so nothing is shared that could change under either).

        Raises:
            TypeError: `layer` is not a `structlin.nn.jax.Linear`.

        Examples:
            >>> import jax.numpy as jnp
            >>> import structlin.nn.jax as sjax, structlin.nn.nnx as snnx
            >>> layer = sjax.Linear.init(0, 16, 8, "lowrank", rank=2)
            >>> module = snnx.Linear.from_layer(layer)
            >>> bool(jnp.array_equal(module(jnp.ones(16)), layer(jnp.ones(16))))
            True
        """
        if not isinstance(layer, _pytree_layers.Linear):
            raise TypeError(
                f"Linear.from_layer needs a structlin.nn.jax.Linear, got {type(layer).__name__}; "
                "for an operator use Linear.from_operator"
            )
        return cls(layer.in_features, layer.out_features, layer.structure, rngs=_Adopt(layer))

    @classmethod
    def from_operator(
        cls,
        op: LinearOperator,
        bias: bool | Any = False,
        *,
        weight_norm: bool = False,
        dtype: DTypeLike | None = None,
    ) -> Linear:
        """A module computing `y = op x + b`, with JAX copies of `op`'s arrays.

        As [`structlin.nn.jax.Linear.from_operator`][structlin.nn.jax.Linear.from_operator]:
        `op` is any operator expression of any backend, its floating-point
        learnable components become `nnx.Param`s with their μP metadata, and its
        other leaves stay static.

        Args:
            op: The `d_out x d_in` operator.
            bias: `False`, `True` (a zero bias) or an array of shape `(d_out,)`.
            weight_norm: As in [`Linear`][structlin.nn.nnx.Linear], with each `σ_i`
                at least the component's current RMS, so the module computes `op`.
            dtype: Floating-point dtype of the parameters; by default that of `op`.

        Returns:
            The module.

        Raises:
            TypeError: `op` is not an operator or has complex values; `bias` is
                not a bool or an array.
            ValueError: `bias` has the wrong shape.

        Examples:
            >>> import jax.numpy as jnp, structlin as sl
            >>> import structlin.nn.nnx as snnx
            >>> op = sl.Monarch.random(16, 16, nblocks=4, rng=0)
            >>> module = snnx.Linear.from_operator(op)
            >>> bool(jnp.allclose(module(jnp.eye(16)), op.to_dense().T, atol=1e-6))
            True
        """
        layer = _pytree_layers.Linear.from_operator(op, bias, weight_norm=weight_norm, dtype=dtype)
        return cls.from_layer(layer)

    # -- the pytree layer --------------------------------------------------------
    def to_layer(self) -> _pytree_layers.Linear:
        """The pytree layer [`structlin.nn.jax.Linear`][structlin.nn.jax.Linear] of the
        current parameter values: the functional core of the forward pass, and
        a way out of nnx (to `jax.jit`, equinox or a checkpoint of pytrees)."""
        leaves = [getattr(self, name)[...] for name in self._names]
        return jax.tree_util.tree_unflatten(self._treedef, leaves)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`y = x @ W^T + b` for `x` of shape `(..., in_features)`; `y` has shape `(..., out_features)`.

        Raises:
            ValueError: the last axis of `x` is not `in_features` long.
        """
        return self.to_layer()(x)

    # -- metadata ----------------------------------------------------------------
    @property
    def in_features(self) -> int:
        """`d_in`."""
        return self.to_layer().in_features

    @property
    def out_features(self) -> int:
        """`d_out`."""
        return self.to_layer().out_features

    @property
    def structure(self) -> str:
        """The structure name, or the operator's class name for
        [`from_operator`][structlin.nn.nnx.Linear.from_operator]."""
        return self.to_layer().structure

    @property
    def weight_norm(self) -> bool:
        """Whether the components are weight-normalised."""
        return self.to_layer().weight_norm

    @property
    def mup(self) -> dict[str, MupInfo]:
        """[`MupInfo`][structlin.mup.MupInfo] of each learnable component, by name (the
        same objects as the components' `mup` metadata)."""
        return self.to_layer().mup

    @property
    def operator(self) -> LinearOperator:
        """The effective `W` as a structlin operator of the current values (weight
        normalisation applied). Differentiable under `nnx.grad`."""
        return self.to_layer().operator

    def to_dense(self) -> tuple[jax.Array, jax.Array | None]:
        """`(W, b)`: the effective `d_out x d_in` matrix and the bias (`None` without one).
        `O(d_out d_in)` memory."""
        return self.to_layer().to_dense()
