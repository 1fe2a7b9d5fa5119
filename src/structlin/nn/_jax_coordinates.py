"""The coordinate check for JAX models (pytrees holding [`structlin.nn.jax.Linear`][structlin.nn.jax.Linear]
layers and arrays); public as [`structlin.nn.jax.coord_check`][structlin.nn.jax.coord_check].

JAX has no forward hooks, so the model's `apply` returns the activations to record
itself. Adam and SGD are written out here (a few lines of tree maps) so that the check
needs no optimizer library; the μP multipliers come from
[`mup_lr_multipliers`][structlin.nn.jax.mup_lr_multipliers] with `base_fan_in`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from structlin.nn import _coord
from structlin.nn._coord import CoordCheck, CoordRecord
from structlin.nn._optax import mup_lr_multipliers, scale_updates

__all__ = ["coord_check"]

OUTPUT = "<output>"
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def coord_check(
    init: Callable[[jax.Array, int], Any],
    apply: Callable[[Any, Any], Any],
    widths: Sequence[int],
    data: Sequence[tuple[Any, Any]] | tuple[Any, Any],
    *,
    steps: int = 4,
    lr: float = 1e-2,
    optimizer: str = "adam",
    parametrization: str = "mup",
    base_fan_in: int | None = None,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    seeds: int | Sequence[int] = 1,
) -> CoordCheck:
    """The coordinate check of [`structlin.nn.coord_check`][structlin.nn.coord_check] for
    a JAX model: train `init(key, width)` a few steps at each width and record how large
    its activations are and how far training moves them.

    For each width and seed the parameters come from `init(jax.random.key(seed), width)`
    and are trained for `steps` steps of Adam (`β = (0.9, 0.999)`, `ε = 1e-8`) or SGD
    on the batches of `data`, each leaf's step scaled by its multiplier from
    [`mup_lr_multipliers`][structlin.nn.jax.mup_lr_multipliers]`(params, optimizer,
    base_fan_in=base_fan_in)` under μP, by 1 under `"sp"`. Before training and after
    each step, the activations `apply` returns for the first batch are recorded as
    `mean |h_t|` and `mean |h_t - h_0|`.

    Args:
        init: `init(key, width)` returns the parameters: a pytree of arrays and
            [`Linear`][structlin.nn.jax.Linear] layers.
        apply: `apply(params, inputs)` returns the outputs, or `(outputs, activations)`
            with `activations` a dict from names to the arrays to record.
        widths: At least two widths.
        data: A sequence of `(inputs, targets)` batches, or one batch.
        steps: Optimizer steps per width.
        lr: The learning rate (tuned at width `base_fan_in`, under μP).
        optimizer: `"adam"` or `"sgd"`.
        parametrization: `"mup"` or `"sp"` (one learning rate for every leaf).
        base_fan_in: The width `lr` is tuned at under μP (default: the smallest).
        loss_fn: `loss_fn(outputs, targets)`; default softmax cross-entropy for integer
            targets, mean squared error otherwise.
        seeds: How many seeds (`0..seeds-1`) or which ones; values are averaged.

    Returns:
        A [`CoordCheck`][structlin.nn.CoordCheck].

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from structlin.nn.jax import Linear, coord_check
        >>> def init(key, d):
        ...     k1, k2 = jax.random.split(key)
        ...     return {"inp": Linear.init(k1, 8, d, "dense"), "hid": Linear.init(k2, d, d, "btt", rank=1),
        ...             "head": Linear.init(k2, d, 4, "dense", zero_init_last=True)}  # μP's zero readout
        >>> def apply(p, x):
        ...     h = jax.nn.relu(p["hid"](jax.nn.relu(p["inp"](x))))
        ...     return p["head"](h), {"hidden": h}
        >>> x = jax.random.normal(jax.random.key(1), (32, 8))
        >>> y = jax.random.randint(jax.random.key(2), (32,), 0, 4)
        >>> coord_check(init, apply, [64, 256], (x, y), steps=3).unstable(factor=2)
        []
    """
    widths = _coord.check_arguments(widths, steps, lr, optimizer, parametrization)
    batches = _batches(data)
    base_fan_in = widths[0] if base_fan_in is None else base_fan_in
    loss_fn = loss_fn or _default_loss
    records: list[CoordRecord] = []
    for seed in _coord.seeds_of(seeds):
        for width in widths:
            params = init(jax.random.key(seed), width)
            kappa = (
                mup_lr_multipliers(params, optimizer, base_fan_in=base_fan_in)
                if parametrization == "mup"
                else jax.tree_util.tree_map(lambda _: 1.0, params)
            )
            records += _run(
                params, kappa, apply, width, seed, batches, steps, lr, optimizer, loss_fn
            )
    return CoordCheck(tuple(records), parametrization, optimizer, float(lr))


def _batches(data: Any) -> list[tuple[Any, Any]]:
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tuple):
        return [data]
    batches = list(data)
    if not batches:
        raise ValueError("data must hold at least one (inputs, targets) batch")
    return batches


def _default_loss(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    if jnp.issubdtype(jnp.asarray(targets).dtype, jnp.integer):
        logp = jax.nn.log_softmax(outputs, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
    return jnp.mean((outputs - targets) ** 2)


def _split(result: Any) -> tuple[Any, dict[str, Any]]:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        return result
    return result, {}


def _trainable(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)


def _run(
    params: Any,
    kappa: Any,
    apply: Callable,
    width: int,
    seed: int,
    batches: list[tuple[Any, Any]],
    steps: int,
    lr: float,
    optimizer: str,
    loss_fn: Callable,
) -> list[CoordRecord]:
    def loss(p: Any, x: Any, y: Any) -> jax.Array:
        return loss_fn(_split(apply(p, x))[0], y)

    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros_like(p) if _trainable(p) else None, params)
    state = (zeros, zeros, 0)

    @jax.jit
    def step(p: Any, state: Any, x: Any, y: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss, allow_int=True)(p, x, y)
        grads = jax.tree_util.tree_map(
            lambda g, q: g if _trainable(q) else None, grads, p, is_leaf=lambda g: g is None
        )
        m, v, t = state
        if optimizer == "adam":
            (b1, b2), t = ADAM_BETAS, t + 1
            m = _map(lambda m_, g: b1 * m_ + (1 - b1) * g, m, grads)
            v = _map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, v, grads)
            update = _map(
                lambda m_, v_: (m_ / (1 - b1**t)) / (jnp.sqrt(v_ / (1 - b2**t)) + ADAM_EPS), m, v
            )
        else:
            update = grads
        update = scale_updates(update, kappa)
        new = jax.tree_util.tree_map(
            lambda q, u: q if u is None else q - lr * u, p, update, is_leaf=lambda u: u is None
        )
        return new, (m, v, t)

    probe = jax.jit(lambda p, x: _split(apply(p, x)))
    records: list[CoordRecord] = []
    first: dict[str, np.ndarray] = {}
    for t in range(steps + 1):
        if t:
            x, y = batches[(t - 1) % len(batches)]
            params, state = step(params, state, x, y)
        out, activations = probe(params, batches[0][0])
        named = {**{k: np.asarray(v, np.float64) for k, v in activations.items()}}
        named[OUTPUT] = np.asarray(out, np.float64)
        if t == 0:
            first = named
        for name, h in named.items():
            records.append(
                CoordRecord(
                    width=width,
                    seed=seed,
                    step=t,
                    module=name,
                    size=float(np.mean(np.abs(h))),
                    update=float(np.mean(np.abs(h - first[name])))
                    if first[name].shape == h.shape
                    else float("nan"),
                )
            )
    return records


def _map(f: Callable, a: Any, b: Any) -> Any:
    """`f` leaf by leaf over two trees whose untrained leaves are `None`."""
    return jax.tree_util.tree_map(
        lambda x, y: None if x is None else f(x, y), a, b, is_leaf=lambda x: x is None
    )
