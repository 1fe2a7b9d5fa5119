"""`Linear`: a PyTorch layer `y = W x + b` whose `W` is any structlin operator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from structlin import rules
from structlin.mup import MupInfo
from structlin.nn import _layer, monarch_checkpoint, structures
from structlin.nn._layer import BUFFER, CONST
from structlin.nn.computed_weight import ComputedWeight
from structlin.operator import LinearOperator

__all__ = ["Linear"]


class Linear(nn.Module):
    """`y = W x + b` applied to the last axis of `x`, with `W` a structured `d_out x d_in` operator.

    Every learnable array of `W` is an `nn.Parameter` that knows its μP role
    ([`MupInfo`][structlin.mup.MupInfo] in `layer.mup[name]`, also attached as
    `parameter.mup`): the fan-in and fan-out of the dense component it holds, the
    number `k` of components in the layer, its initialisation scale
    `sqrt(min(d_in^i, d_out^i)) / d_in^i` and its Adam learning-rate multiplier
    `κ_i = (d_in / d_in^i) / k` ("Compute Better Spent", Section 3.2). These are
    derived from the operator's structure by [`structlin.mup`][structlin.mup], so any
    expression gets them. [`param_groups`][structlin.nn.param_groups] turns them into
    optimizer groups.

    Build a layer from a structure name (parameters drawn at the μP scale),

    - `Linear(d_in, d_out, "monarch", nblocks=4)`, or any registered structure with its
      options (the table in [`structlin.nn.structures`][structlin.nn.structures]);

    from any operator expression, `Linear.from_operator(op)`, whose arrays become
    the parameters; or from a trained `nn.Linear` by projection,
    `Linear.from_linear(linear, "monarch", nblocks=4)`.

    The forward pass is `x @ W^T` through W's structured transpose and the
    row-layout rules of [`structlin.rules`][structlin.rules], resolved once when the
    layer is built, so `torch.compile` traces it without graph breaks. It costs
    what `W`'s matmat costs (for Monarch with `b` blocks about `2 d^2 / b` flops
    per row against `d^2` for dense).

    Weight normalisation (Section 5.1), `weight_norm=True`, uses each component as
    `γ_i min(1, σ_i / RMS(G_i)) G_i` with a learnable scalar `γ_i` (initially 1,
    parameter `<name>_gain` of shape `(1,)`, since FSDP2's `fully_shard` takes no
    0-d parameters) and `σ_i` the component's μP scale (buffer `<name>_sigma`),
    so no component's RMS entry can grow past that scale unless `γ_i` lets it. As in the paper, a freshly drawn component whose sample RMS
    happens to exceed `σ_i` is used scaled down to it (by a few percent for large
    components).

    Args:
        in_features: `d_in`.
        out_features: `d_out`.
        structure: A registered structure's name (`"monarch"`, `"btt"`, ...; see
            [`structlin.nn.structures`][structlin.nn.structures]).
        bias: Whether to add a learnable bias (initialised to zero).
        weight_norm: Reparameterise each component as above.
        zero_init_last: Zero the components that write the layer's output (for the
            last layer of a residual branch, Section 3.2); the layer starts at `W = 0`
            and gradients still reach them.
        dtype: Parameter dtype (`torch.get_default_dtype()` if `None`).
        device: Parameter device.
        **spec: The structure's options (`nblocks`, `rank`, `factors`, `ncores`).

    Raises:
        ValueError: sizes the structure cannot take, or an unknown structure.
        TypeError: an option the structure does not take.

    Examples:
        >>> import torch, structlin.nn as snn
        >>> layer = snn.Linear(64, 32, "monarch", nblocks=4)
        >>> layer(torch.randn(5, 64)).shape
        torch.Size([5, 32])
        >>> sorted(name for name, _ in layer.named_parameters())
        ['bias', 'blocks_0', 'blocks_1']
        >>> layer.mup["blocks_0"].lr_multiplier
        2.0
    """

    in_features: int
    out_features: int
    mup: dict[str, MupInfo]
    structure: str
    """The structure name (`"monarch"`, ...), or the operator's class name for a layer
    built with [`from_operator`][structlin.nn.Linear.from_operator]."""
    spec: dict[str, Any]
    """The structure's options with their defaults filled in (`{"nblocks": 4}`); empty
    for a layer built from an operator."""
    origin: str | None
    """The qualified class name of the dense layer this one replaced
    (`"torch.nn.Linear"`, `"transformers.pytorch_utils.Conv1D"`), which
    [`densify`][structlin.nn.densify] restores; `None` for a layer built directly."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        structure: str = "dense",
        *,
        bias: bool = True,
        weight_norm: bool = False,
        zero_init_last: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **spec: Any,
    ):
        super().__init__()
        op = structures.template(structure, in_features, out_features, **spec)
        self.structure = structure
        self.spec = structures.complete_spec(structure, in_features, out_features, spec)
        self.origin = None
        self._build(op, bias=bias, weight_norm=weight_norm, dtype=dtype, device=device, copy=False)
        self.reset_parameters(zero_init_last=zero_init_last)
        self._resolve_rules()

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_operator(
        cls,
        op: LinearOperator,
        bias: bool | Any = False,
        *,
        weight_norm: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Linear:
        """A layer computing `op @ x + b`, with copies of `op`'s arrays as parameters.

        `op` may be any operator expression of any backend (NumPy and JAX arrays
        are copied into PyTorch). Its floating-point arrays that are learnable
        dense components become parameters; integer arrays (permutation
        indices) and array scalars become buffers; Python scalars stay constants.
        With `weight_norm`, each `σ_i` is the larger of the component's μP scale
        and its current RMS, so the layer computes exactly `op` when built.

        Args:
            op: The `d_out x d_in` operator.
            bias: `False`, `True` (a zero bias) or an array of shape `(d_out,)`.
            weight_norm: As in [`Linear`][structlin.nn.Linear].
            dtype: Parameter dtype; by default `op`'s dtype for a PyTorch `op`, else
                `torch.get_default_dtype()`.
            device: Parameter device; by default `op`'s device for a PyTorch `op`.

        Raises:
            TypeError: `op` is not an operator, has complex values, or has no
                `components` rule; `bias` is not a bool or an array.
            ValueError: `bias` has the wrong shape.
        """
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.structure = type(op).__name__
        layer.spec = {}
        layer.origin = None
        layer._build(op, bias=bias, weight_norm=weight_norm, dtype=dtype, device=device, copy=True)
        layer._resolve_rules()
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Module,
        structure: str,
        *,
        weight_norm: bool = False,
        **spec: Any,
    ) -> Linear:
        """The structured layer nearest to a dense layer (dense-to-structured fine-tuning).

        `linear` is an `nn.Linear` (or subclass) or a Hugging Face
        `transformers.pytorch_utils.Conv1D` (GPT-2's projections, whose weight is
        stored transposed; the layer computes the same `x -> y` map). Its weight is
        projected onto `structure` in the Frobenius norm with
        [`structures.project_onto`][structlin.nn.structures.project_onto] (optimal
        for every structure but TT and BTT with more than two cores), on the
        layer's device and in its dtype; the bias is copied. The new layer's
        [`origin`][structlin.nn.Linear.origin] names `linear`'s class.

        Raises:
            TypeError: `linear` is not such a layer.
            ValueError: its weight is on the `meta` device (there is nothing to
                project), or the structure cannot take its shape.
        """
        from structlin.nn import dense_layers

        kind = dense_layers.dense_kind(linear)
        if kind is None:
            raise TypeError(
                "Linear.from_linear needs an nn.Linear or a transformers Conv1D, got "
                f"{type(linear).__name__}"
            )
        W = dense_layers.dense_weight(linear).detach()
        if W.is_meta:
            raise ValueError(
                "Linear.from_linear: the layer's weight is on the meta device, so there is "
                "nothing to project; load its weights first, or build a fresh "
                "structlin.nn.Linear(..., device='meta')"
            )
        if not bool(torch.isfinite(W).all()):
            raise ValueError(
                f"Linear.from_linear: the {type(linear).__name__}'s weight has non-finite "
                "entries (nan or inf), which no projection can fit; repair the weights first"
            )
        d_out, d_in = W.shape
        with torch.no_grad():
            # LAPACK's SVD takes no half precision: project in float32, store in W's dtype.
            wide = W.float() if W.dtype in (torch.float16, torch.bfloat16) else W
            op = structures.project_onto(wide, structure, **spec)
            bias = linear.bias.detach() if linear.bias is not None else False
            layer = cls.from_operator(op, bias, weight_norm=weight_norm, dtype=W.dtype)
        layer.structure = structure
        layer.spec = structures.complete_spec(structure, d_in, d_out, spec)
        layer.origin = dense_layers.qualified_name(type(linear))
        return layer

    @classmethod
    def from_monarch_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        in_features: int,
        out_features: int,
        *,
        prefix: str = "",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Linear:
        """The layer a `MonarchLinear` checkpoint of the original Monarch code computes.

        The original layer (HazyResearch's `MonarchLinear(in_features, out_features,
        nblocks)`) stores `blkdiag1` of shape `(k, q, p)`, `blkdiag2` of shape
        `(l, s, r)` with `l r == k q`, and `bias` of shape `(out_features,)` unless
        built with `bias=False`. Its forward pass zero-pads `x` from `in_features`
        to `k p`, applies `blkdiag1`, transposes the intermediate vector viewed as
        `(r, l)`, applies `blkdiag2`, transposes the output viewed as `(l, s)`,
        keeps its first `out_features` entries and adds the bias. That is
        `x M^T + b` for the [`Monarch`][structlin.Monarch]
        `M = Monarch(blkdiag1, blkdiag2, shape=(out_features, in_features))`, which
        this layer holds: the outputs, and the gradients with respect to `x` and to
        the three tensors, are those of the original layer. Its parameters are
        `blocks_0` (`blkdiag1`), `blocks_1` (`blkdiag2`) and `bias`, with the μP
        roles of a `"monarch"` layer; the tensors are copied.

        `in_features` and `out_features` are needed because padding hides them:
        a checkpoint only gives `k p >= in_features` and `l s >= out_features`.

        Args:
            state_dict: The layer's `state_dict()`, or a whole model's with `prefix`.
            in_features: The original layer's `in_features`.
            out_features: The original layer's `out_features`.
            prefix: Prepended to the three keys, e.g. `"encoder.mlp.fc1."` to read one
                layer of a model's state dict.
            dtype: Parameter dtype; by default the checkpoint's.
            device: Parameter device; by default the checkpoint's.

        Raises:
            KeyError: `blkdiag1` or `blkdiag2` is missing under `prefix`.
            ValueError: the tensors are not 3-D, `l r != k q`, the sizes exceed
                the padded sizes `k p` and `l s`, or the bias has the wrong shape.

        Examples:
            >>> import torch, structlin.nn as snn
            >>> checkpoint = {  # MonarchLinear(10, 13, nblocks=4).state_dict()
            ...     "blkdiag1": torch.randn(4, 3, 3),
            ...     "blkdiag2": torch.randn(4, 4, 3),
            ...     "bias": torch.zeros(13),
            ... }
            >>> layer = snn.Linear.from_monarch_state_dict(checkpoint, 10, 13)
            >>> layer(torch.randn(5, 10)).shape
            torch.Size([5, 13])
        """
        op, bias = monarch_checkpoint.read(state_dict, in_features, out_features, prefix)
        layer = cls.from_operator(op, False if bias is None else bias, dtype=dtype, device=device)
        layer.structure = "monarch"
        return layer

    @torch.no_grad()
    def to_monarch_state_dict(self) -> dict[str, torch.Tensor]:
        """`{"blkdiag1", "blkdiag2", "bias"}` for the original Monarch code's `MonarchLinear`.

        The inverse of [`from_monarch_state_dict`][structlin.nn.Linear.from_monarch_state_dict]:
        a `MonarchLinear(in_features, out_features, nblocks)` that loads this
        dictionary computes this layer (weight-normalised blocks are stored as
        used). No `bias` key for a layer without bias. Copies.

        Raises:
            TypeError: the layer's operator is not a [`Monarch`][structlin.Monarch]
                in the original layout (`perms` `(None, (r, l), (l, s))`).
        """
        return monarch_checkpoint.write(self.operator, self.bias)

    def _build(
        self,
        op: LinearOperator,
        *,
        bias: bool | Any,
        weight_norm: bool,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
        copy: bool,
    ) -> None:
        layout, leaves = _layer.layout(op, weight_norm)
        like = next((v for v in leaves if isinstance(v, torch.Tensor)), None) if copy else None
        if dtype is None:
            dtype = op.dtype if like is not None else torch.get_default_dtype()
        elif not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(
                f"Linear dtype must be a real floating-point torch.dtype, got {dtype!r}; "
                "use e.g. torch.float32 (layers hold real parameters)"
            )
        if device is None and like is not None:
            device = op.device
        self._layout = layout
        self.in_features, self.out_features = layout.in_features, layout.out_features
        self.weight_norm = layout.weight_norm
        self.mup = layout.mup
        for name, role, leaf, info in zip(
            layout.names, layout.roles, leaves, layout.infos, strict=True
        ):
            if role == CONST:
                continue
            value = _tensor(leaf, dtype, device)
            value = value if copy else torch.zeros_like(value)
            if role == BUFFER:
                self.register_buffer(name, value)
                continue
            parameter = nn.Parameter(value)
            parameter.mup = info
            self.register_parameter(name, parameter)
            if weight_norm:
                # Shape (1,), not (): FSDP2 shards parameters along dim 0 and refuses scalars.
                gain = torch.ones(1, dtype=dtype, device=device)
                self.register_parameter(name + "_gain", nn.Parameter(gain))
                # A buffer, so that state_dict carries the bound a from_operator layer chose.
                sigma = _layer.sigma(info, value if copy else None)
                self.register_buffer(
                    name + "_sigma", torch.tensor(sigma, dtype=dtype, device=device)
                )
        bias = _layer.check_bias(bias, self.out_features)
        if bias is not None:
            zero = torch.zeros(self.out_features, dtype=dtype, device=device)
            bias = nn.Parameter(zero if bias is True else _tensor(bias, dtype, device))
        self.register_parameter("bias", bias)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Checkpoints written before the gains became 1-D hold them as 0-d tensors.
        for name in self.mup if self.weight_norm else ():
            key = f"{prefix}{name}_gain"
            gain = state_dict.get(key)
            if isinstance(gain, torch.Tensor) and gain.dim() == 0:
                state_dict[key] = gain.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _resolve_rules(self) -> None:
        # One forward pass on a single row resolves (and caches) every dispatched
        # rule the forward pass uses, so later calls, and torch.compile's tracing,
        # never reach plum.
        with torch.no_grad():
            probe = self._probe()
            kwargs = {} if probe is None else {"device": probe.device, "dtype": probe.dtype}
            self.forward(torch.zeros(1, self.in_features, **kwargs))

    def _probe(self) -> torch.Tensor | None:
        # A floating-point tensor of the layer, whose dtype and device inputs must match.
        if self.bias is not None:
            return self.bias
        if self.mup:
            return getattr(self, next(iter(self.mup)))
        arrays = (*self.parameters(), *self.buffers())
        return next((t for t in arrays if t.is_floating_point()), None)

    @property
    def _treedef(self) -> Any:
        return self._layout.treedef

    @property
    def _slots(self) -> tuple[tuple[str, Any], ...]:
        # (role, name), or (CONST, value) for a constant: one per leaf of the operator.
        layout = self._layout
        return tuple(
            (role, const if role == CONST else name)
            for name, role, const in zip(layout.names, layout.roles, layout.consts, strict=True)
        )

    # -- the operator --------------------------------------------------------------
    @property
    def operator(self) -> LinearOperator:
        """`W` as a structlin operator of the current parameters (weight-normalised if
        enabled), differentiable with respect to them."""
        layout = self._layout
        values = [None if r == CONST else getattr(self, n) for r, n in self._slots]
        norm = [n for n in layout.mup] if layout.weight_norm else []
        gains = [getattr(self, n + "_gain") for n in norm]
        sigmas = [getattr(self, n + "_sigma") for n in norm]
        return layout.operator(values, _Torch, gains, sigmas)

    @property
    def weight(self) -> torch.Tensor:
        """`W` as a dense `(out_features, in_features)` tensor, for code that reads
        `layer.weight` as it would an `nn.Linear`'s.

        Some owners do: torch's `TransformerEncoderLayer` and
        `TransformerDecoderLayer` take a fused inference path from `linear1.weight`
        and `linear2.weight` (under `torch.no_grad()` in eval mode), and dtype or
        device probes in third-party code read `.weight.dtype`. They get the exact
        matrix this layer applies (weight-normalised if enabled).

        It is computed from the parameters on every access, differentiably: it
        costs `O(out_features * in_features)` memory and time, which the
        structured forward pass never spends. It is not a parameter, so writing
        into it could change nothing: in-place operations on it (`copy_`,
        `normal_`, `w[i] = ...`, `out=w`) raise a `RuntimeError` instead (load
        weights with `load_state_dict`; to train a dense matrix,
        [`densify`][structlin.nn.densify] the layer). `weight.data` is a plain
        tensor, outside that check.
        """
        return rules.to_dense(self.operator).as_subclass(ComputedWeight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W^T + b` for `x` of shape `(..., in_features)`.

        Raises:
            TypeError: `x` is not a tensor, or its dtype is not the layer's (outside
                autocast, which casts floating-point inputs itself).
            ValueError: `x` is 0-d, its last axis is not `in_features` long, or it is
                on another device than the layer.
        """
        name = f"Linear({self.in_features} -> {self.out_features})"
        _check_input(x, name, self._probe(), features=self.in_features)
        return _layer.forward(self._layout, self.operator, self.bias, x, _Torch)

    # -- initialisation and conversion ---------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, zero_init_last: bool = False) -> None:
        """Draw every component from `N(0, σ_i²)` at its μP scale (zero the output-side
        components if `zero_init_last`), set weight-norm gains to 1 and the bias to 0."""
        for name, info in self.mup.items():
            getattr(self, name).normal_(0.0, _layer.init_std(info, zero_init_last))
            if self.weight_norm:
                getattr(self, name + "_gain").fill_(1.0)
        if self.bias is not None:
            self.bias.zero_()

    @torch.no_grad()
    def to_dense_linear(self) -> nn.Linear:
        """An `nn.Linear` computing the same function, with `W` densified ("reverse
        sparsification": train structured, then densify and continue).

        `O(d_out d_in)` memory; same dtype and device as this layer.
        """
        W = rules.to_dense(self.operator)
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            dtype=W.dtype,
            device=W.device,
        )
        linear.weight.copy_(W)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return structures.layer_summary(
            self.in_features,
            self.out_features,
            self.structure,
            self.bias is not None,
            self.weight_norm,
        )


def _check_input(
    x: Any, layer: str, like: torch.Tensor | None, *, features: int | None = None
) -> None:
    """Check a layer's input `x` against a tensor `like` of the layer: a tensor of at
    least one dimension, whose last axis is `features` long, on `like`'s device and of
    its dtype. Under autocast for `x`'s device, any floating-point dtype autocast casts
    (all but float64) is accepted, as `nn.Linear` accepts it.

    Only static properties are read (no synchronisation, no dispatch), so the check
    traces under `torch.compile` without a graph break. Shared by the structured layers
    and [`MonarchMixer`][structlin.nn.MonarchMixer].
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{layer} takes a torch.Tensor, got {type(x).__name__}; convert it with "
            "torch.as_tensor(x)"
        )
    _layer.check_shape(layer, x.shape, features)
    if like is None:
        return
    if x.device != like.device:
        raise ValueError(
            f"{layer} is on device {like.device} but got an input on device {x.device}; "
            f"move one of them (x.to('{like.device}') or layer.to('{x.device}'))"
        )
    if x.dtype != like.dtype:
        _layer.check_kind(
            layer,
            x.dtype,
            like.dtype,
            complex_=x.is_complex(),
            floating=x.is_floating_point(),
            cast=f"x.to({like.dtype})",
        )
        autocast = torch.is_autocast_enabled(x.device.type)
        if x.dtype == torch.float64 or not autocast:
            hint = (
                " (autocast does not cast float64)" if autocast else ", or run under torch.autocast"
            )
            raise TypeError(
                f"{layer} has {like.dtype} parameters but got a {x.dtype} input; convert one "
                f"of them (x.to({like.dtype}) or layer.to({x.dtype})){hint}"
            )


class _Torch:
    """The array functions of the shared layer core, in PyTorch."""

    maximum = staticmethod(torch.maximum)
    rsqrt = staticmethod(torch.rsqrt)

    @staticmethod
    def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x.to(dtype)

    @staticmethod
    def mean_square(G: torch.Tensor) -> torch.Tensor:
        return G.pow(2).mean(dtype=torch.promote_types(G.dtype, torch.float32))


def _tensor(x: Any, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    """A copy of array `x` of any backend as a tensor on `device` (if given), floating-point
    ones in `dtype`; bfloat16 stays bfloat16."""
    value = x.detach().clone() if isinstance(x, torch.Tensor) else _layer.convert(x, "torch")
    value = value.to(dtype) if value.is_floating_point() else value
    return value.to(device) if device is not None else value
