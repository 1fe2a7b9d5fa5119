"""Structure-aware μP learning rates for PyTorch optimizers."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from structlin.mup import MupInfo
from structlin.nn import _width, dense_layers
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


def _known_weights(module: nn.Module) -> dict[str, tuple[str, int, int]]:
    """`(kind, d_out, d_in)` of every weight of a known layer, by qualified name: the
    components of structured layers (with their whole layer's shape), the weights of dense
    layers (`nn.Linear`, Hugging Face's `Conv1D`), and embedding tables (`d_out` their
    `embedding_dim`)."""
    found: dict[str, tuple[str, int, int]] = {}
    for prefix, child in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(child, Linear):
            for name in child.mup:
                found[dot + name] = ("weight", child.out_features, child.in_features)
        elif dense_layers.dense_kind(child) is not None:
            d_in, d_out = dense_layers.features(child)
            found[dot + "weight"] = ("weight", d_out, d_in)
        elif isinstance(child, (nn.Embedding, nn.EmbeddingBag)):
            found[dot + "weight"] = ("embedding", child.embedding_dim, child.num_embeddings)
    return found


def _width_multiplier(
    p: nn.Parameter, known: tuple[str, int, int] | None, base_fan_in: int, optimizer: Optimizer
) -> float:
    if known is not None:
        kind, d_out, d_in = known
        if kind == "embedding":
            return _width.embedding(d_out, base_fan_in, optimizer)
        return _width.weight(d_out, d_in, base_fan_in, optimizer)
    return _width.vector(p.numel(), base_fan_in, optimizer) if p.ndim <= 1 else 1.0


def _multipliers(
    module: nn.Module, optimizer: Optimizer, base_fan_in: int | None
) -> dict[str, float]:
    """Every parameter's learning-rate multiplier: `κ_i`, times the width factor."""
    _check_optimizer(optimizer)
    if base_fan_in is not None:
        _width.check_base_fan_in(base_fan_in)
    infos = _infos(module)
    known = _known_weights(module) if base_fan_in is not None else {}
    found = {}
    for name, p in module.named_parameters():
        m = _multiplier(infos.get(name), optimizer)
        if base_fan_in is not None:
            m *= _width_multiplier(p, known.get(name), base_fan_in, optimizer)
        found[name] = m
    return found


def mup_lr_multipliers(
    module: nn.Module, optimizer: Optimizer = "adam", *, base_fan_in: int | None = None
) -> dict[str, float]:
    """The μP learning-rate multiplier of every parameter of `module`.

    A component `G_i` of a structured [`Linear`][structlin.nn.Linear] gets
    `κ_i = (d_in / d_in^i) / k` ("Compute Better Spent", Section 3.2) for Adam and
    AdamW, or `((d_out^i / d_in^i) / (d_out / d_in)) / k` for SGD (Appendix H):
    the factor by which its learning rate must exceed that of a dense layer of the
    same shape. Every other parameter (dense `nn.Linear` weights, biases,
    weight-norm gains, embeddings, norms) gets 1.

    With `base_fan_in`, every parameter also gets μP's width factor for what it is
    (the table in [`param_groups`][structlin.nn.param_groups]).

    Examples:
        >>> import structlin.nn as snn
        >>> snn.mup_lr_multipliers(snn.Linear(1024, 1024, "monarch", nblocks=16))
        {'blocks_0': 8.0, 'blocks_1': 8.0, 'bias': 1.0}
    """
    return _multipliers(module, optimizer, base_fan_in)


def param_groups(
    module: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    *,
    base_fan_in: int | None = None,
    optimizer: Optimizer = "adam",
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with the μP learning rates of a whole model.

    Parameter `p` gets learning rate `lr * κ_p` with `κ_p` from
    [`mup_lr_multipliers`][structlin.nn.mup_lr_multipliers], so `lr` is the
    learning rate that works for the dense version of the model. Weight decay
    applies to matrices and batches of matrices (`ndim >= 2`) only, never to
    vectors or scalars (biases, norms, gains). Parameters with
    `requires_grad=False` are left out. Each group also holds its `mup_multiplier`
    and the `names` of its parameters (optimizers keep extra keys).

    **Width transfer**: with `base_fan_in = d_0`, `lr` is the rate tuned at width `d_0`
    and transfers to every width. Each parameter's rate is scaled by the spectral
    condition for feature learning (Yang, Simon and Bernstein, 2023), μP (Tensor Programs
    V, Table 3) with one constant for all layers (structured components keep their
    `κ_i` on top):

    | parameter | Adam | SGD |
    | --- | --- | --- |
    | weight of a `d_out x d_in` layer: structured, `nn.Linear`, `Conv1D` (input, hidden or readout) | `d_0 / d_in` | `d_out / d_in` |
    | `nn.Embedding` table with `dim` columns | 1 | `dim / d_0` |
    | vector of length `n` (bias, norm gain) | 1 | `n / d_0` |
    | any other parameter | 1 | 1 |

    The Adam rule is "Compute Better Spent"'s `η_0 d_0 / d_in` (Section 3.3). μP also
    fixes initialisations, which are the model's: see "μP for a whole model" in the
    training guide (a zero readout, the residual branches' last layers, attention).

    Args:
        module: Any model; its structured layers are found by type.
        lr: The learning rate of the dense model (at width `base_fan_in` if given).
        weight_decay: Decoupled weight decay (AdamW) for matrix-shaped parameters.
        base_fan_in: `d_0` for width transfer, or `None` for none.
        optimizer: `"adam"` (also for AdamW) or `"sgd"`.

    Returns:
        A list of dicts for `torch.optim.AdamW(groups)` (or `SGD`).

    Raises:
        ValueError: an unknown `optimizer`, or a `base_fan_in` below 1.
        TypeError: a `base_fan_in` that is not an int.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> model = torch.nn.Sequential(snn.Linear(256, 256, "lowrank", rank=16), torch.nn.Linear(256, 10))
        >>> groups = snn.param_groups(model, lr=1e-3, weight_decay=0.1)
        >>> sorted((g["lr"], g["weight_decay"], len(g["params"])) for g in groups)
        [(0.0005, 0.1, 1), (0.001, 0.0, 2), (0.001, 0.1, 1), (0.008, 0.1, 1)]
        >>> opt = torch.optim.AdamW(groups)

        Width transfer from width 64: an embedding, a hidden Monarch layer, a readout.

        >>> mlp = torch.nn.Sequential(
        ...     torch.nn.Embedding(100, 256), snn.Linear(256, 256, "monarch", nblocks=4), torch.nn.Linear(256, 10)
        ... )
        >>> snn.mup_lr_multipliers(mlp, base_fan_in=64)
        {'0.weight': 1.0, '1.blocks_0': 0.5, '1.blocks_1': 0.5, '1.bias': 1.0, '2.weight': 0.25, '2.bias': 1.0}
    """
    multipliers = _multipliers(module, optimizer, base_fan_in)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        multiplier = multipliers[name]
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
