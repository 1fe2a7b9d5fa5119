"""`ComputedWeight`: the dense matrix of a structured layer, for code that reads `.weight`."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ComputedWeight"]


class ComputedWeight(torch.Tensor):
    """The dense matrix a structured layer computes, handed to code that reads `.weight`:
    a tensor like any other, except that writing into it in place raises, because the
    write could never reach the layer's parameters. Results of operations on it are
    plain tensors."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        in_place = (name.endswith("_") and not name.endswith("__")) or name in (
            "__setitem__",
            "__set__",
            "__iadd__",
            "__isub__",
            "__imul__",
            "__itruediv__",
        )
        writes_self = in_place and args and isinstance(args[0], ComputedWeight)
        writes_out = any(isinstance(t, ComputedWeight) for t in _as_tuple(kwargs.get("out")))
        if writes_self or writes_out:
            raise RuntimeError(
                f"{name}: a structured layer's .weight is computed from its parameters on "
                "access, so writing into it would change nothing; load weights with "
                "load_state_dict, write the parameters (layer.named_parameters()), or "
                "structlin.nn.densify the layer to train a dense weight"
            )
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
