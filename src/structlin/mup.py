"""Structure-aware μP: initialisation scales and learning-rate multipliers from structure.

"Compute Better Spent" (Qiu et al., 2024, Section 3.2) writes the product of a
structured `d_out x d_in` matrix `W` with a vector as a chain of batched products
with dense components and fixed reshapes and permutations,

$$W x = G_k P_k \\cdots G_1 P_1 x, \\qquad G_i \\in \\mathbb{R}^{B_i \\times d^i_{out} \\times d^i_{in}},$$

and applies μP to every slice of every component separately:

- initialise `G_i` with entries `N(0, σ_i²)`, `σ_i = sqrt(min(d_in^i, d_out^i)) / d_in^i`;
- give it the Adam learning rate `κ_i η`, where `η` is the learning rate that works
  for a dense `d_out x d_in` layer and `κ_i = (d_in / d_in^i) / k`, with `k` the
  number of learnable components (the `1/k` keeps the total update of `W x`,
  which has `k` leading-order terms, the size of a dense layer's).

This module reads `(B_i, d_out^i, d_in^i)` off any operator expression with the
dispatched rule [`components`][structlin.rules.components], so the numbers follow
from the structure rather than from a table. They reproduce Table 2 of the paper:
Monarch with `b` blocks `κ = b/2` for both factors; Kronecker `sqrt(d)/2` each;
low rank `κ_U = d/(2r)`, `κ_V = 1/2`; two-core TT and BTT of rank `r`
`κ_L = sqrt(d)/(2r)`, `κ_R = sqrt(d)/2`.

Examples:
    >>> import structlin as sl
    >>> M = sl.Monarch.random(1024, 1024, nblocks=16, rng=0)
    >>> tuple(info.lr_multiplier for info in sl.mup.describe(M))
    (8.0, 8.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# A component is what an operator's leaf holds, a neutral notion the operators declare;
# μP is one reader of it (the layers and sharding are others).
from structlin import rules
from structlin.component import Component

if TYPE_CHECKING:
    from structlin.operator import LinearOperator

__all__ = ["Component", "MupInfo", "components", "describe"]


@dataclass(frozen=True)
class MupInfo:
    """What structure-aware μP needs of one parameter of a `d_out x d_in` layer.

    Attributes:
        component: The dense component the parameter holds.
        n_components: `k`, the number of learnable components of the layer.
        layer_fan_in: `d_in` of the whole layer.
        layer_fan_out: `d_out` of the whole layer.
    """

    component: Component
    n_components: int
    layer_fan_in: int
    layer_fan_out: int

    @property
    def init_std(self) -> float:
        """The component's μP initialisation scale (see [`Component.init_std`][structlin.mup.Component.init_std])."""
        return self.component.init_std

    @property
    def lr_multiplier(self) -> float:
        """Adam learning-rate multiplier `κ_i = (d_in / d_in^i) / k` relative to a dense
        layer of the same shape (Section 3.2)."""
        return self.layer_fan_in / self.component.fan_in / self.n_components

    @property
    def sgd_lr_multiplier(self) -> float:
        """SGD multiplier `κ_i = ((d_out^i / d_in^i) / (d_out / d_in)) / k` (Appendix H)."""
        c = self.component
        ratio = (c.fan_out / c.fan_in) / (self.layer_fan_out / self.layer_fan_in)
        return ratio / self.n_components


def components(op: LinearOperator) -> tuple[Component | None, ...]:
    """The dense component behind each leaf of `op`, `None` for leaves that are not
    learnable (permutation indices, Python scalars).

    Aligned with `structlin.pytree.tree_flatten(op)[0]`. Structures provide the
    rule [`structlin.rules.components`][structlin.rules.components].
    """
    return tuple(rules.components(op))


def describe(op: LinearOperator) -> tuple[MupInfo | None, ...]:
    """[`MupInfo`][structlin.mup.MupInfo] for each leaf of `op` used as a whole layer
    (`None` for leaves that are not learnable), aligned with
    `structlin.pytree.tree_flatten(op)[0]`."""
    found = components(op)
    k = sum(c is not None for c in found)
    d_out, d_in = op.shape
    return tuple(None if c is None else MupInfo(c, k, d_in, d_out) for c in found)
