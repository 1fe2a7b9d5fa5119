"""Reading and writing checkpoints of the original Monarch code's `MonarchLinear`.

The conversions behind [`Linear.from_monarch_state_dict`][structlin.nn.Linear.from_monarch_state_dict]
and [`Linear.to_monarch_state_dict`][structlin.nn.Linear.to_monarch_state_dict]; their
docstrings state the layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from structlin.operator import LinearOperator
from structlin.operators.monarch import DEFAULT, Monarch, default_perms

__all__ = ["read", "write"]


def read(
    state_dict: Mapping[str, Any], in_features: int, out_features: int, prefix: str
) -> tuple[Monarch, torch.Tensor | None]:
    """The `Monarch` a `MonarchLinear` checkpoint computes, and its bias (`None` if absent)."""
    keys = [prefix + name for name in ("blkdiag1", "blkdiag2")]
    missing = [key for key in keys if key not in state_dict]
    if missing:
        present = sorted(k for k in state_dict if k.startswith(prefix))[:8]
        raise KeyError(
            f"Linear.from_monarch_state_dict: no {', '.join(map(repr, missing))} in the "
            f"state dict (keys under prefix {prefix!r}: {present}); give the prefix of the "
            "MonarchLinear layer, e.g. prefix='mlp.fc1.'"
        )
    w1, w2 = (torch.as_tensor(state_dict[key]).detach() for key in keys)
    if w1.dim() != 3 or w2.dim() != 3:
        raise ValueError(
            "Linear.from_monarch_state_dict: blkdiag1 and blkdiag2 must be 3-D, (k, q, p) "
            f"and (l, s, r), got shapes {tuple(w1.shape)} and {tuple(w2.shape)}"
        )
    (nb1, _, p), (nb2, s, _) = w1.shape, w2.shape
    d_in, d_out = nb1 * p, nb2 * s  # the padded sizes
    if not (0 < in_features <= d_in and 0 < out_features <= d_out):
        raise ValueError(
            f"Linear.from_monarch_state_dict: blkdiag1 {tuple(w1.shape)} and blkdiag2 "
            f"{tuple(w2.shape)} take {d_in} inputs and give {d_out} outputs, so "
            f"in_features={in_features} and out_features={out_features} must be "
            f"positive and at most {d_in} and {d_out}"
        )
    bias = state_dict.get(prefix + "bias")
    op = Monarch(w1, w2, shape=(out_features, in_features))  # checks l r == k q
    return op, None if bias is None else torch.as_tensor(bias).detach()


@torch.no_grad()
def write(op: LinearOperator, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """`{"blkdiag1", "blkdiag2", "bias"}` of a `MonarchLinear` computing `x op^T + bias`; copies."""
    if not isinstance(op, Monarch):
        raise TypeError(
            f"to_monarch_state_dict needs a Monarch layer, but this layer holds {type(op).__name__}"
        )
    if op.perm_layout != DEFAULT:
        raise TypeError(
            "to_monarch_state_dict needs the original layout, perms "
            f"{default_perms(tuple(op.blkdiag2.shape))}, but this Monarch has perms {op.perms}"
        )
    out = {"blkdiag1": op.blkdiag1.clone(), "blkdiag2": op.blkdiag2.clone()}
    if bias is not None:
        out["bias"] = bias.detach().clone()
    return out
