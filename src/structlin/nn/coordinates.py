"""The coordinate check for PyTorch models: does the μP setup of a model keep every layer's
activations and updates the same size as the model gets wider?"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from structlin.nn import _coord
from structlin.nn._coord import CoordCheck, CoordRecord
from structlin.nn.optim import param_groups

__all__ = ["coord_check"]

OUTPUT = "<output>"
Batch = tuple[Any, Any]


def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    data: Sequence[Batch] | Batch,
    *,
    steps: int = 4,
    lr: float = 1e-2,
    optimizer: str = "adam",
    parametrization: str = "mup",
    base_fan_in: int | None = None,
    loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
    modules: Callable[[str, nn.Module], bool] | None = None,
    seeds: int | Sequence[int] = 1,
) -> CoordCheck:
    """Train `make_model(width)` for a few steps at each width and record how large every
    layer's output is and how far training moves it.

    Under μP the sizes stay the same as the width grows ("Tensor Programs V", Figure 5);
    under the standard parametrisation Adam's updates grow in proportion to the width.
    This checks a whole model's setup (the structured layers' multipliers, the readout,
    the embeddings, the norms) with the numbers rather than with a table.

    For each width and seed: the model is built under `torch.manual_seed(seed)`, then
    trained for `steps` steps on the batches of `data` (cycled if there are fewer). Before
    training and after each step, every recorded layer's output `h_t` on the first batch is
    taken in eval mode (no dropout) without gradients, and `mean |h_t|` and
    `mean |h_t - h_0|` are recorded.

    Args:
        make_model: Builds the model at a width; the same architecture for every width.
        widths: At least two widths.
        data: A sequence of `(inputs, targets)` batches, or one batch. The inputs go to
            the model as they are; they and the targets move to its parameters' device.
        steps: Optimizer steps per width.
        lr: The learning rate: under μP the one tuned at width `base_fan_in`, given to
            [`param_groups`][structlin.nn.param_groups]; under `"sp"` the rate of every
            parameter.
        optimizer: `"adam"` (`torch.optim.Adam`) or `"sgd"` (`torch.optim.SGD`); the μP
            multipliers follow it.
        parametrization: `"mup"` or `"sp"` (one learning rate for every parameter, the
            baseline; the initialisation is the model's as built).
        base_fan_in: The width `lr` is tuned at under μP (default: the smallest).
        loss_fn: `loss_fn(outputs, targets)` with the model's outputs as it returns
            them; default cross-entropy for integer targets (over the last axis of the
            output tensor: the first tensor of a tuple or of a Hugging Face output), mean
            squared error otherwise.
        modules: `modules(name, module)` says which layers to record; default every
            module that holds parameters of its own, plus the model's output.
        seeds: How many seeds (`0..seeds-1`) or which ones; values are averaged.

    Returns:
        A [`CoordCheck`][structlin.nn.CoordCheck]: `print` it, `plot` it, or ask it
        which layers are `unstable`.

    Raises:
        ValueError: fewer than two widths, `steps < 1`, a non-positive `lr`, an unknown
            `optimizer` or `parametrization`, empty `data`, or no layer to record.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> def mlp(d):
        ...     head = torch.nn.Linear(d, 4)
        ...     torch.nn.init.zeros_(head.weight)  # μP's readout starts at zero
        ...     torch.nn.init.zeros_(head.bias)
        ...     return torch.nn.Sequential(torch.nn.Linear(8, d), torch.nn.ReLU(),
        ...                                snn.Linear(d, d, "monarch", nblocks=4), torch.nn.ReLU(), head)
        >>> g = torch.Generator().manual_seed(0)
        >>> data = [(torch.randn(32, 8, generator=g), torch.randint(0, 4, (32,), generator=g)) for _ in range(4)]
        >>> check = snn.coord_check(mlp, [64, 256], data, steps=3, lr=1e-2)
        >>> check.unstable(factor=2)  # every layer's size within 2x across widths
        []
    """
    widths = _coord.check_arguments(widths, steps, lr, optimizer, parametrization)
    batches = _batches(data)
    base_fan_in = widths[0] if base_fan_in is None else base_fan_in
    records: list[CoordRecord] = []
    for seed in _coord.seeds_of(seeds):
        for width in widths:
            torch.manual_seed(seed)
            model = make_model(width)
            if not isinstance(model, nn.Module):
                raise TypeError(
                    f"make_model must return a torch.nn.Module, got {type(model).__name__}"
                )
            mup_base = base_fan_in if parametrization == "mup" else None
            records += _run(
                model, width, seed, batches, steps, lr, optimizer, mup_base, loss_fn, modules
            )
    return CoordCheck(tuple(records), parametrization, optimizer, float(lr))


def _batches(data: Any) -> list[Batch]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return [data]
    batches = list(data)
    if not batches:
        raise ValueError("data must hold at least one (inputs, targets) batch")
    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(
                f"data must be a sequence of (inputs, targets) pairs, got an element of type "
                f"{type(batch).__name__}"
            )
    return batches


def _default_loss(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    outputs = _first_tensor(outputs)
    if outputs is None:
        raise TypeError("the model's output holds no tensor for the default loss; pass loss_fn")
    if not targets.is_floating_point():
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))
    return F.mse_loss(outputs, targets)


def _first_tensor(out: Any) -> torch.Tensor | None:
    """A module's output tensor: itself, or the first tensor of a tuple (attention) or of a
    mapping (Hugging Face's `ModelOutput`, whose first field is the logits)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = tuple(out.values())
    if isinstance(out, (tuple, list)):
        return next((o for o in out if isinstance(o, torch.Tensor)), None)
    return None


def _run(
    model: nn.Module,
    width: int,
    seed: int,
    batches: list[Batch],
    steps: int,
    lr: float,
    optimizer: str,
    base_fan_in: int | None,
    loss_fn: Callable | None,
    modules: Callable[[str, nn.Module], bool] | None,
) -> list[CoordRecord]:
    select = modules or (lambda _, m: any(True for _ in m.parameters(recurse=False)))
    watched = [(name, m) for name, m in model.named_modules() if name and select(name, m)]
    if not watched and modules is not None:
        raise ValueError("modules selected no layer of the model to record")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    moved = [tuple(_to(v, device) for v in batch) for batch in batches]
    if base_fan_in is None:
        groups: Any = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    else:
        groups = param_groups(model, lr, base_fan_in=base_fan_in, optimizer=optimizer)
    opt = torch.optim.Adam(groups) if optimizer == "adam" else torch.optim.SGD(groups, lr=lr)
    loss_fn = loss_fn or _default_loss

    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable:
        def hook(_module: nn.Module, _args: Any, out: Any) -> None:
            tensor = _first_tensor(out)
            if tensor is not None:
                outputs[name] = tensor.detach().float()

        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in watched]
    probe_x = moved[0][0]
    first: dict[str, torch.Tensor] = {}
    records = []
    try:
        for step in range(steps + 1):
            if step:
                x, y = moved[(step - 1) % len(moved)]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
            was_training = model.training
            model.eval()
            outputs.clear()
            with torch.no_grad():
                out = _first_tensor(model(probe_x))
            if out is not None:
                outputs[OUTPUT] = out.detach().float()
            model.train(was_training)
            if step == 0:
                first = dict(outputs)
            for name in [n for n, _ in watched if n in outputs] + [OUTPUT] * (OUTPUT in outputs):
                h = outputs[name]
                records.append(
                    CoordRecord(
                        width=width,
                        seed=seed,
                        step=step,
                        module=name,
                        size=h.abs().mean().item(),
                        update=(h - first[name]).abs().mean().item()
                        if first[name].shape == h.shape
                        else float("nan"),
                    )
                )
    finally:
        for handle in handles:
            handle.remove()
    return records


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value
