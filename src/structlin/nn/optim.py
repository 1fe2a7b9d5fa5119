"""Structure-aware μP learning rates for PyTorch optimizers."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from structlin.mup import MupInfo
from structlin.nn import dense_layers
from structlin.nn.linear import Linear

__all__ = ["mup_lr_multipliers", "param_groups"]

Optimizer = Literal["adam", "sgd"]


def _infos(module: nn.Module) -> dict[str, MupInfo]:
    """`MupInfo` of every structured component in `module`, by qualified parameter name."""
    found: dict[str, MupInfo] = {}
    for prefix, child in module.named_modules():
        if isinstance(child, Linear):
            for name, info in child.mup.items():
                found[f"{prefix}.{name}" if prefix else name] = info
    return found


def _multiplier(info: MupInfo | None, optimizer: Optimizer) -> float:
    if info is None:
        return 1.0
    return info.lr_multiplier if optimizer == "adam" else info.sgd_lr_multiplier


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' (also for AdamW) or 'sgd', got {optimizer!r}")


def mup_lr_multipliers(module: nn.Module, optimizer: Optimizer = "adam") -> dict[str, float]:
    """The structure-aware learning-rate multiplier of every parameter of `module`.

    A component `G_i` of a structured [`Linear`][structlin.nn.Linear] gets
    `κ_i = (d_in / d_in^i) / k` ("Compute Better Spent", Section 3.2) for Adam and
    AdamW, or `((d_out^i / d_in^i) / (d_out / d_in)) / k` for SGD (Appendix H):
    the factor by which its learning rate must exceed that of a dense layer of the
    same shape. Every other parameter (dense `nn.Linear` weights, biases,
    weight-norm gains, embeddings, norms) gets 1.

    Examples:
        >>> import structlin.nn as snn
        >>> snn.mup_lr_multipliers(snn.Linear(1024, 1024, "monarch", nblocks=16))
        {'blocks_0': 8.0, 'blocks_1': 8.0, 'bias': 1.0}
    """
    _check_optimizer(optimizer)
    infos = _infos(module)
    return {name: _multiplier(infos.get(name), optimizer) for name, _ in module.named_parameters()}


def param_groups(
    module: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    *,
    base_fan_in: int | None = None,
    optimizer: Optimizer = "adam",
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with the structure-aware μP learning rates.

    Parameter `p` gets learning rate `lr * κ_p` with `κ_p` from
    [`mup_lr_multipliers`][structlin.nn.mup_lr_multipliers], so `lr` is the
    learning rate that works for the dense version of the model. Weight decay
    applies to matrices and batches of matrices (`ndim >= 2`) only, never to
    vectors or scalars (biases, norms, gains). Parameters with
    `requires_grad=False` are left out. Each group also holds its `mup_multiplier`
    and the `names` of its parameters (optimizers keep extra keys).

    With `base_fan_in = d_0`, weights of structured and dense layers (`nn.Linear`,
    Hugging Face's `Conv1D`) are
    further scaled by `d_0 / d_in` (the μP width transfer `η = η_0 d_0 / d_in` of
    Section 3.3), so `lr` is the rate tuned at width `d_0`. Adam only.

    Args:
        module: Any model; its structured layers are found by type.
        lr: The learning rate of the dense model.
        weight_decay: Decoupled weight decay (AdamW) for matrix-shaped parameters.
        base_fan_in: `d_0` for width transfer, or `None` for none.
        optimizer: `"adam"` (also for AdamW) or `"sgd"`.

    Returns:
        A list of dicts for `torch.optim.AdamW(groups)` (or `SGD`).

    Raises:
        ValueError: an unknown `optimizer`, or `base_fan_in` with SGD.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> model = torch.nn.Sequential(snn.Linear(256, 256, "lowrank", rank=16), torch.nn.Linear(256, 10))
        >>> groups = snn.param_groups(model, lr=1e-3, weight_decay=0.1)
        >>> sorted((g["lr"], g["weight_decay"], len(g["params"])) for g in groups)
        [(0.0005, 0.1, 1), (0.001, 0.0, 2), (0.001, 0.1, 1), (0.008, 0.1, 1)]
        >>> opt = torch.optim.AdamW(groups)
    """
    _check_optimizer(optimizer)
    if base_fan_in is not None and optimizer != "adam":
        raise ValueError("base_fan_in (μP width transfer) is defined for Adam only here")
    infos = _infos(module)
    fan_in = _dense_fan_ins(module)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        info = infos.get(name)
        multiplier = _multiplier(info, optimizer)
        if base_fan_in is not None:
            d_in = info.layer_fan_in if info is not None else fan_in.get(name)
            if d_in is not None:
                multiplier *= base_fan_in / d_in
        decay = weight_decay if p.ndim >= 2 else 0.0
        group = groups.setdefault(
            (multiplier, decay),
            {
                "params": [],
                "names": [],
                "lr": lr * multiplier,
                "weight_decay": decay,
                "mup_multiplier": multiplier,
            },
        )
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def _dense_fan_ins(module: nn.Module) -> dict[str, int]:
    """`in_features` of every dense layer's weight (`nn.Linear` and Hugging Face's
    `Conv1D`, whose weight is stored transposed), by qualified name."""
    return {
        f"{prefix}.weight" if prefix else "weight": dense_layers.features(child)[0]
        for prefix, child in module.named_modules()
        if dense_layers.dense_kind(child) is not None
    }
