"""Trainable structured layers with structure-aware μP.

PyTorch layers live here; the JAX versions are in [`structlin.nn.jax`][structlin.nn.jax]
(pytrees) and [`structlin.nn.nnx`][structlin.nn.nnx] (`flax.nnx` modules).
[`MonarchMixer`][structlin.nn.MonarchMixer] is a whole M2 block built from them: a
sub-quadratic replacement for a Transformer block.
The structure names and their options are in
[`structlin.nn.structures`][structlin.nn.structures].

```python
import torch
import structlin.nn as snn

layer = snn.Linear(1024, 1024, structure="monarch", nblocks=4)
y = layer(torch.randn(8, 16, 1024))  # acts on the last axis
opt = torch.optim.AdamW(snn.param_groups(layer, lr=1e-3, weight_decay=0.1))
```

PyTorch is imported only when one of these names is first used, so
`structlin.nn.jax` and `structlin.nn.structures` work without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlin.nn._coord import CoordCheck, CoordRecord
    from structlin.nn.adapters import (
        Adapter,
        adapter_state_dict,
        add_adapters,
        load_adapter_state_dict,
        merge_adapters,
    )
    from structlin.nn.coordinates import coord_check
    from structlin.nn.linear import Linear
    from structlin.nn.mixer import MonarchMixer
    from structlin.nn.optim import mup_lr_multipliers, param_groups
    from structlin.nn.report import SurgeryReport
    from structlin.nn.serialization import apply_structure, from_pretrained, structure_spec
    from structlin.nn.surgery import densify, replace_linear

__all__ = [
    "Linear",
    "MonarchMixer",
    "mup_lr_multipliers",
    "param_groups",
    # checking μP
    "coord_check",
    "CoordCheck",
    "CoordRecord",
    # model surgery
    "replace_linear",
    "densify",
    "SurgeryReport",
    "structure_spec",
    "apply_structure",
    "from_pretrained",
    # structured adapters
    "Adapter",
    "add_adapters",
    "merge_adapters",
    "adapter_state_dict",
    "load_adapter_state_dict",
]

_LAZY = {
    "Linear": "structlin.nn.linear",
    "MonarchMixer": "structlin.nn.mixer",
    "mup_lr_multipliers": "structlin.nn.optim",
    "param_groups": "structlin.nn.optim",
    "coord_check": "structlin.nn.coordinates",
    "CoordCheck": "structlin.nn._coord",
    "CoordRecord": "structlin.nn._coord",
    "replace_linear": "structlin.nn.surgery",
    "densify": "structlin.nn.surgery",
    "SurgeryReport": "structlin.nn.report",
    "structure_spec": "structlin.nn.serialization",
    "apply_structure": "structlin.nn.serialization",
    "from_pretrained": "structlin.nn.serialization",
    "Adapter": "structlin.nn.adapters",
    "add_adapters": "structlin.nn.adapters",
    "merge_adapters": "structlin.nn.adapters",
    "adapter_state_dict": "structlin.nn.adapters",
    "load_adapter_state_dict": "structlin.nn.adapters",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'structlin.nn' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        raise ImportError(
            f"structlin.nn.{name} needs PyTorch: pip install 'structlin[torch]' "
            "(the JAX layers are in structlin.nn.jax)"
        ) from error
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
