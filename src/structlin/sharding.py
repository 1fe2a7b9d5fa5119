"""Sharding structured operators and layers over a JAX device mesh, block by block.

A block-diagonal factor `B = diag(B_1, ..., B_b)` multiplies each block on its own,
so a device that holds whole blocks, and the rows of the activations those blocks
read, computes its share of `B x` with no communication at all. What moves data
is the permutation between two factors: in a Monarch matrix `P_2 B_2 P_1 B_1`,
`P_1` sends every block of `B_1`'s output to every block of `B_2`'s input, an
all-to-all in which each device keeps `1/s` of its activations and sends the rest
(`s` devices). [`block_shardings`][structlin.block_shardings] places every block
stack of an operator or layer along that block axis and replicates the rest;
`jax.jit` then runs the products where the blocks are.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from structlin import rules
from structlin.operator import LinearOperator
from structlin.pytree import tree_flatten, tree_unflatten

if TYPE_CHECKING:
    import jax

__all__ = ["block_shardings"]


def block_shardings(tree: Any, mesh: jax.sharding.Mesh, axis: str = "blocks") -> Any:
    """A `NamedSharding` for every array in `tree` that shards block stacks over `axis`.

    Every learnable component with a block axis (the blocks of
    [`BlockDiag`][structlin.BlockDiag] and of each [`Monarch`][structlin.Monarch]
    factor, the `N_<t` or `M_>t` axis of a [`BTT`][structlin.BTT] core; see
    [`Component.block_axes`][structlin.mup.Component]) is split along that axis
    over the mesh axis `axis`, so each device holds whole blocks. Where a core has
    two block axes the longer one that splits evenly is used (axis 0 on a tie).
    Every other array (dense and low-rank factors, Kronecker factors, permutation
    indices, biases, weight-normalisation gains, data) is replicated.

    `tree` is any pytree holding operators and [`structlin.nn.jax.Linear`][structlin.nn.jax.Linear]
    layers; the result has its structure, ready for `jax.device_put(tree, shardings)`
    or `jax.jit(..., in_shardings=...)`. Under a mesh with `Explicit` axes
    (`jax.make_mesh`'s default) the products reshard the activations where the
    blocks need them; under `Auto` axes XLA's propagation does the same.

    Examples:
        ```python
        mesh = jax.make_mesh((4,), ("blocks",))
        layer = Linear.init(jax.random.key(0), 1024, 1024, "monarch", nblocks=32)
        layer = jax.device_put(layer, sl.block_shardings(layer, mesh))
        ```

    Args:
        tree: Operators, layers and arrays, in any pytree.
        mesh: The device mesh.
        axis: The mesh axis (or a tuple of mesh axes) that splits the blocks.

    Raises:
        TypeError: `mesh` is not a `jax.sharding.Mesh`, or `axis` is not a string or
            a tuple of strings.
        ValueError: `axis` is not an axis of `mesh`, or a block stack's block count
            does not split evenly over it (the message names the stack's shape and
            the mesh axis size).
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    meshes = tuple(
        cls
        for cls in (jax.sharding.Mesh, getattr(jax.sharding, "AbstractMesh", None))
        if cls is not None
    )
    if not isinstance(mesh, meshes):
        raise TypeError(
            f"block_shardings: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__} "
            f"{mesh!r}; build one with jax.make_mesh((ndevices,), ('blocks',))"
        )
    if isinstance(axis, list):
        axis = tuple(axis)
    names = axis if isinstance(axis, tuple) else (axis,)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"block_shardings: axis must be a mesh axis name (a string) or a tuple of them, "
            f"got {axis!r}; the mesh has axes {tuple(mesh.shape)}"
        )
    missing = [n for n in names if n not in mesh.shape]
    if missing:
        raise ValueError(
            f"block_shardings: mesh axes {tuple(mesh.shape)} have no {missing[0]!r}; pass one "
            "of them as axis="
        )
    devices = math.prod(mesh.shape[n] for n in names)
    replicated = NamedSharding(mesh, PartitionSpec())

    def operator_shardings(op: LinearOperator) -> LinearOperator:
        leaves, treedef = tree_flatten(op)
        found = rules.components(op)
        specs = [
            None  # a layer's static leaf: no array to place
            if leaf is None
            else replicated
            if component is None or not component.block_axes
            else NamedSharding(mesh, _block_spec(leaf.shape, component.block_axes, axis, devices))
            for leaf, component in zip(leaves, found, strict=True)
        ]
        return tree_unflatten(treedef, specs)

    def shardings(node: Any) -> Any:
        if isinstance(node, LinearOperator):
            return operator_shardings(node)
        return None if node is None else replicated

    return jax.tree.map(shardings, tree, is_leaf=lambda x: isinstance(x, LinearOperator))


def _block_spec(
    shape: tuple[int, ...], block_axes: tuple[int, ...], axis: str | tuple[str, ...], devices: int
) -> Any:
    from jax.sharding import PartitionSpec

    candidates = [a for a in block_axes if shape[a] % devices == 0]
    if not candidates:
        sizes = ", ".join(str(shape[a]) for a in block_axes)
        raise ValueError(
            f"block_shardings: a block stack of shape {shape} has {sizes} blocks along its "
            f"block axes {block_axes}, which do not split evenly over mesh axis {axis!r} of "
            f"size {devices}; choose a block count that is a multiple of {devices}, or a "
            "smaller mesh axis"
        )
    best = max(candidates, key=lambda a: shape[a])
    spec: list[Any] = [None] * len(shape)
    spec[best] = axis
    return PartitionSpec(*spec)
