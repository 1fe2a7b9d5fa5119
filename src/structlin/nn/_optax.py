"""The optax side of the JAX layers: structure-aware μP multipliers, the weight-decay mask and
the transformation that applies the multipliers, for trees of
[`structlin.nn.jax.Linear`][structlin.nn.jax.Linear] layers and `flax.nnx` models.

Public through [`structlin.nn.jax`][structlin.nn.jax], as the PyTorch optimizer helpers
(`structlin.nn.optim`) are through [`structlin.nn`][structlin.nn]. Imports neither optax
nor flax (a flax object is recognised once flax is in use).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from structlin.mup import MupInfo
from structlin.nn import _layer, _width
from structlin.nn._layer import Optimizer


def _is_linear(node: Any) -> bool:
    from structlin.nn.jax import Linear  # which re-exports this module's names

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
    return lambda node: _is_linear(node) or isinstance(node, nnx.Variable)


def mup_lr_multipliers(
    tree: Any, optimizer: Optimizer = "adam", *, base_fan_in: int | None = None
) -> Any:
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

    With `base_fan_in = d_0`, the learning rate tuned at width `d_0` transfers: every
    layer's components and bias also get μP's width factor, as in PyTorch's
    [`param_groups`][structlin.nn.param_groups] (Adam: `d_0 / d_in` for a layer's
    components, 1 for its bias; SGD: `d_out / d_in` and `d_out / d_0`), and vectors
    outside layers (norm gains) the vector factor (1 for Adam, `n / d_0` for SGD). Other
    arrays outside layers get 1: make the readout and input layers structlin layers
    (`"dense"` ones where they are dense), or scale them yourself.

    Multiply a dense layer's learning rate `η` by them, with
    [`scale_by_mup`][structlin.nn.jax.scale_by_mup] in an optax chain or
    [`scale_updates`][structlin.nn.jax.scale_updates] by hand.

    Args:
        tree: A pytree of arrays and layers, a `flax.nnx` module, or an
            `nnx.State` of variables.
        optimizer: `"adam"` (Adam, AdamW and other entry-wise normalised optimizers)
            or `"sgd"`.
        base_fan_in: `d_0` for μP width transfer, or `None`.

    Returns:
        A pytree of floats shaped like `tree`'s trained leaves (for an nnx model,
        like `nnx.state(model, nnx.Param)` with its variables replaced by floats).

    Raises:
        ValueError: an unknown `optimizer`, an `nnx.State` of plain arrays (the
            μP metadata lives on the variables, which `nnx.as_pure` has removed), or a
            `base_fan_in` below 1.
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

    if base_fan_in is not None:
        _width.check_base_fan_in(base_fan_in)

    def one(node: Any) -> Any:
        if _is_linear(node):
            return node._multipliers(optimizer, base_fan_in)
        if nnx is not None and isinstance(node, nnx.Variable):
            info = node.get_metadata().get("mup")
            if info is None:
                return _vector_factor(node)
            if not isinstance(info, MupInfo):
                raise TypeError(
                    f"the 'mup' metadata of an nnx variable must be a structlin.mup.MupInfo, "
                    f"got {type(info).__name__}"
                )
            width = 1.0
            if base_fan_in is not None:
                width = _width.weight(info.layer_fan_out, info.layer_fan_in, base_fan_in, optimizer)
            return _layer.multiplier(info, optimizer) * width
        return _vector_factor(node)

    def _vector_factor(node: Any) -> float:
        """A bias or norm gain outside structlin's layers: μP's vector factor (SGD)."""
        get_value = getattr(node, "get_value", None)  # an nnx variable's array (newer flax)
        shape = np.shape(get_value() if callable(get_value) else getattr(node, "value", node))
        if base_fan_in is None or len(shape) > 1:
            return 1.0
        return _width.vector(int(np.prod(shape)), base_fan_in, optimizer)

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
