"""[`Component`][structlin.mup.Component]: what one leaf of an operator holds, as batched dense matrices.

Operators declare their leaves' components through the rule
[`components`][structlin.rules.components]. Structure-aware μP
([`structlin.mup`][structlin.mup], which exports this class), the layers of
[`structlin.nn`][structlin.nn] and [`block_shardings`][structlin.block_shardings]
read them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["Component"]


@dataclass(frozen=True)
class Component:
    """A learnable dense component `G_i`: `batch` dense matrices of shape `(fan_out, fan_in)`.

    One leaf of an operator's pytree. `first` marks a component that reads the
    operator's input, `last` one whose output is (a term of) the operator's
    output: zeroing every `last` component zeroes the operator while gradients
    still reach those components through the others (the zero initialisation of
    residual-branch outputs, Section 3.2).

    Attributes:
        batch: Number of independent slices `B_i` (blocks, or repetitions of a
            factor across the other axes).
        fan_out: `d_out^i`, the rows of each slice.
        fan_in: `d_in^i`, the columns of each slice.
        first: The component is applied first.
        last: The component is applied last.
        block_axes: The axes of the leaf that index its slices, each slice a whole
            `fan_out x fan_in` matrix multiplied on its own (the block axis of a
            block-diagonal factor). Splitting the leaf along one of them across
            devices splits the component's work with no communication inside it;
            see [`block_shardings`][structlin.block_shardings]. Empty where the
            leaf holds no such axis.
    """

    batch: int
    fan_out: int
    fan_in: int
    first: bool = True
    last: bool = True
    block_axes: tuple[int, ...] = ()

    @property
    def init_std(self) -> float:
        """`sqrt(min(fan_in, fan_out)) / fan_in`: the μP scale of one slice (spectral norm
        of order `sqrt(fan_out / fan_in)`)."""
        return math.sqrt(min(self.fan_in, self.fan_out)) / self.fan_in

    def transposed(self) -> Component:
        """The component as it acts in the transposed operator: fans and ends swapped."""
        return dataclasses.replace(
            self, fan_out=self.fan_in, fan_in=self.fan_out, first=self.last, last=self.first
        )

    def placed(self, first: bool, last: bool) -> Component:
        """This component inside a larger chain: it stays first (last) only where its
        operator is first (last) in the chain."""
        return dataclasses.replace(self, first=self.first and first, last=self.last and last)
