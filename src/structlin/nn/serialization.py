"""Saving and reloading structured models: a JSON description of their structure.

A state dict holds a structured model's numbers but not its shape: a fresh dense model
has no slot for a Monarch layer's `blocks_0`. [`structure_spec`][structlin.nn.structure_spec]
describes every structured layer and adapter as JSON-serialisable data,
[`apply_structure`][structlin.nn.apply_structure] rebuilds exactly those layers in a
fresh copy of the dense model (no projection: the values come from the state dict
loaded next), and [`from_pretrained`][structlin.nn.from_pretrained] does both for a
Hugging Face model saved with `save_pretrained`, whose `config.structlin` carries the
description.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

import structlin
from structlin import pytree
from structlin.backends import get_backend
from structlin.nn import dense_layers, selection
from structlin.nn._layer import CONST as _CONST
from structlin.nn._layer import PARAM as _PARAM
from structlin.nn.adapters import Adapter
from structlin.nn.linear import Linear
from structlin.nn.report import LayerChange, SurgeryReport, macs_per_token, parameter_count

__all__ = ["apply_structure", "from_pretrained", "record_structure", "structure_spec"]

FORMAT = "structlin.structure_spec"
VERSION = 1
CONFIG_KEY = "structlin"


# -- describing --------------------------------------------------------------------
def structure_spec(model: nn.Module) -> dict[str, Any]:
    """A JSON-serialisable description of every structured layer and adapter in `model`.

    For each [`Linear`][structlin.nn.Linear] and [`Adapter`][structlin.nn.Adapter] (by
    qualified name, with the other names of a shared one): its sizes, bias and
    weight normalisation, structure name and options, the class of the dense layer
    it replaced, and the layout of its operator (the operator classes, their static
    data, and each array's shape and dtype), which is what
    [`apply_structure`][structlin.nn.apply_structure] rebuilds, so any operator
    expression round-trips, not only the named structures. No weights: they are in
    the state dict.

    Examples:
        >>> import json, torch, structlin.nn as snn
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
        >>> _ = snn.replace_linear(model, "monarch", nblocks=4)
        >>> spec = snn.structure_spec(model)
        >>> entry = spec["layers"].get("0")  # a layer's description, by its name
        >>> entry["structure"], entry["spec"]
        ('monarch', {'nblocks': 4})
        >>> fresh = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
        >>> _ = snn.apply_structure(fresh, json.loads(json.dumps(spec)))
        >>> _ = fresh.load_state_dict(model.state_dict())  # strict: every key fits
    """
    layers: dict[str, Any] = {}
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    inside_adapter: set[int] = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, Adapter):
            inside_adapter.add(id(module.delta))
        if isinstance(module, (Linear, Adapter)) and name:
            names.setdefault(id(module), []).append(name)
            modules[id(module)] = module
    for key, module in modules.items():
        if key in inside_adapter:
            continue
        first, *aliases = names[key]
        layers[first] = {**_describe(first, module), "aliases": aliases}
    return {"format": FORMAT, "version": VERSION, "layers": layers}


def _describe(name: str, module: Linear | Adapter) -> dict[str, Any]:
    """The description of one structured layer or adapter (without its aliases)."""
    if isinstance(module, Adapter):
        return {
            "type": "structlin.nn.Adapter",
            "origin": dense_layers.qualified_name(type(module.base)),
            "in_features": module.in_features,
            "out_features": module.out_features,
            "delta": _describe_linear(name + ".delta", module.delta),
        }
    return _describe_linear(name, module)


def _describe_linear(name: str, layer: Linear) -> dict[str, Any]:
    leaves = []
    for kind, slot in layer._slots:
        if kind == _CONST:
            if not isinstance(slot, (bool, int, float)) and slot is not None:
                raise TypeError(
                    f"structure_spec: layer {name} holds a constant of type "
                    f"{type(slot).__name__} that JSON cannot store"
                )
            leaves.append({"kind": kind, "value": slot})
        else:
            tensor = getattr(layer, slot)
            leaves.append(
                {
                    "kind": kind,
                    "shape": list(tensor.shape),
                    "dtype": str(tensor.dtype).removeprefix("torch."),
                }
            )
    return {
        "type": "structlin.nn.Linear",
        "origin": layer.origin,
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "bias": layer.bias is not None,
        "weight_norm": layer.weight_norm,
        "structure": layer.structure,
        "spec": layer.spec,
        "operator": {"tree": _encode_tree(name, layer._treedef), "leaves": leaves},
    }


def _encode_tree(name: str, node: Any) -> Any:
    if node is None:
        return None
    if isinstance(node, pytree.TreeDef):
        cls = node.cls
        if getattr(structlin, cls.__name__, None) is not cls:
            raise TypeError(
                f"structure_spec: layer {name} holds a {cls.__module__}.{cls.__qualname__}, "
                "which is not a structlin operator class, so it cannot be rebuilt by name"
            )
        return {
            "class": cls.__name__,
            "static": [_encode_static(name, v) for v in node.static],
            "children": [_encode_tree(name, c) for c in node.children],
        }
    return [_encode_tree(name, c) for c in node]


def _encode_static(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return [_encode_static(name, v) for v in value]
    if isinstance(value, torch.dtype):
        return {"torch_dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if (isinstance(value, type) and issubclass(value, np.generic)) or isinstance(value, np.dtype):
        return {"numpy_dtype": np.dtype(value).name}
    backend_name = getattr(value, "name", None)
    if isinstance(backend_name, str) and type(value).__module__.startswith("structlin.backends"):
        return {"backend": backend_name}
    raise TypeError(
        f"structure_spec: layer {name} has static data of type {type(value).__name__} "
        "that JSON cannot store"
    )


def _decode_static(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode_static(v) for v in value)
    if isinstance(value, dict):
        if "torch_dtype" in value:
            return getattr(torch, value["torch_dtype"])
        if "device" in value:
            return torch.device(value["device"])
        if "numpy_dtype" in value:
            return np.dtype(value["numpy_dtype"]).type
        if "backend" in value:
            return get_backend(value["backend"])
    return value


def _decode_tree(node: Any) -> Any:
    if node is None:
        return None
    if isinstance(node, dict):
        cls = getattr(structlin, node["class"], None)
        if not isinstance(cls, type):
            raise ValueError(f"apply_structure: unknown operator class {node['class']!r}")
        return pytree.TreeDef(
            cls,
            tuple(_decode_static(v) for v in node["static"]),
            tuple(_decode_tree(c) for c in node["children"]),
        )
    return tuple(_decode_tree(c) for c in node)


# -- rebuilding --------------------------------------------------------------------
def _build_linear(name: str, entry: Mapping[str, Any], like: torch.Tensor) -> Linear:
    """A structured layer with the described layout, zero-filled, in `like`'s dtype and
    device; its values come from the state dict loaded next."""
    operator = entry["operator"]
    leaves = []
    for leaf in operator["leaves"]:
        if leaf["kind"] == _CONST:
            leaves.append(leaf["value"])
        else:
            dtype = getattr(torch, leaf["dtype"])
            if leaf["kind"] == _PARAM or dtype.is_floating_point:
                dtype = like.dtype
            leaves.append(torch.zeros(leaf["shape"], dtype=dtype, device=like.device))
    op = pytree.tree_unflatten(_decode_tree(operator["tree"]), leaves)
    layer = Linear.from_operator(
        op,
        bias=bool(entry["bias"]),
        weight_norm=bool(entry["weight_norm"]),
        dtype=like.dtype,
        device=like.device,
    )
    kinds = [kind for kind, _ in layer._slots]
    if kinds != [leaf["kind"] for leaf in operator["leaves"]] or (
        layer.in_features,
        layer.out_features,
    ) != (entry["in_features"], entry["out_features"]):
        raise ValueError(f"apply_structure: layer {name}'s description does not rebuild itself")
    layer.structure = entry["structure"]
    layer.spec = dict(entry["spec"])
    layer.origin = entry["origin"]
    return layer


def _already(model: nn.Module, name: str, entry: Mapping[str, Any]) -> bool:
    """Whether layer `name` is already the structured layer `entry` describes (a model
    built with structured layers, or a description applied twice)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return False
    if not isinstance(module, (Linear, Adapter)):
        return False
    if {k: v for k, v in entry.items() if k != "aliases"} != _describe(name, module):
        raise ValueError(
            f"apply_structure: {name} is already a structured layer, but not the one the "
            "description gives; apply it to a fresh dense copy of the model"
        )
    return True


def _check_dense(model: nn.Module, name: str, entry: Mapping[str, Any]) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"apply_structure: the model has no layer {name!r}; the description is of a "
            "different model (or of a submodule: apply it to the module it was made from)"
        ) from None
    kind = dense_layers.dense_kind(module)
    if kind is None:
        raise ValueError(
            f"apply_structure: {name} is a {type(module).__name__}, not a dense layer; "
            "apply the description to a fresh dense copy of the model"
        )
    d_in, d_out = dense_layers.features(module)
    if (d_in, d_out) != (entry["in_features"], entry["out_features"]):
        raise ValueError(
            f"apply_structure: {name} maps {d_in} -> {d_out} features, the description "
            f"{entry['in_features']} -> {entry['out_features']}"
        )
    origin_is_conv = entry.get("origin") == dense_layers.CONV1D
    if origin_is_conv != (kind == dense_layers.CONV1D):
        raise ValueError(
            f"apply_structure: {name} is a {type(module).__name__} but the structured layer "
            f"replaced a {entry.get('origin')}"
        )
    return module


def apply_structure(model: nn.Module, spec: Mapping[str, Any]) -> SurgeryReport:
    """Rebuild, in place, the structured layers and adapters that `spec` (from
    [`structure_spec`][structlin.nn.structure_spec]) describes, in a fresh dense copy of
    the model they came from, so that `model.load_state_dict(saved)` then restores the
    trained model exactly.

    Layers that already are the described structured layers (a model built with
    them, or a description applied twice) are left as they are.
    Nothing is projected: the new layers are zero-filled, in the dtype and on the
    device of the dense layers they replace, until the state dict is loaded.
    Adapters are rebuilt around the dense layer, which keeps its values (and is
    frozen, as [`add_adapters`][structlin.nn.add_adapters] leaves it).

    Raises:
        ValueError: `spec` is not such a description, or does not fit `model` (a
            missing layer, one of another shape or class); nothing has been changed then.

    Examples:
        >>> import json, torch, structlin.nn as snn
        >>> trained = torch.nn.Sequential(torch.nn.Linear(64, 64))
        >>> _ = snn.replace_linear(trained, "btt", rank=2)
        >>> spec = json.loads(json.dumps(snn.structure_spec(trained)))  # saved as JSON
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64))  # a fresh dense model
        >>> _ = snn.apply_structure(model, spec)
        >>> _ = model.load_state_dict(trained.state_dict())
        >>> x = torch.randn(2, 64)
        >>> torch.equal(model(x), trained(x))
        True
    """
    if not isinstance(spec, Mapping) or spec.get("format") != FORMAT:
        raise ValueError(
            "apply_structure needs the dict structlin.nn.structure_spec returns "
            f"(format {FORMAT!r}), got {type(spec).__name__}"
            + (f" with format {spec.get('format')!r}" if isinstance(spec, Mapping) else "")
        )
    if spec.get("version", VERSION) > VERSION:
        raise ValueError(
            f"apply_structure: the description is of version {spec['version']}, newer than "
            f"this structlin reads ({VERSION}); upgrade structlin"
        )
    built = []
    for name, entry in spec["layers"].items():
        if _already(model, name, entry):
            continue
        module = _check_dense(model, name, entry)
        weight = dense_layers.dense_weight(module)
        if entry["type"] == "structlin.nn.Adapter":
            delta = _build_linear(name + ".delta", entry["delta"], weight)
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            new: nn.Module = Adapter(module, delta)
        elif entry["type"] == "structlin.nn.Linear":
            new = _build_linear(name, entry, weight)
        else:
            raise ValueError(f"apply_structure: {name} has unknown type {entry['type']!r}")
        new.train(module.training)
        built.append((name, entry, module, new))
    report = SurgeryReport("apply_structure", model)
    for name, entry, module, new in built:
        selection.set_module(model, [name, *entry.get("aliases", [])], new)
        inner = new.delta if isinstance(new, Adapter) else new
        report.changes.append(
            LayerChange(
                name=name,
                aliases=tuple(entry.get("aliases", [])),
                before=type(module).__name__,
                after=type(new).__name__ + f"({inner.structure})",
                shape=(inner.out_features, inner.in_features),
                structure=inner.structure,
                spec=dict(inner.spec),
                params_before=parameter_count(module),
                params_after=parameter_count(new),
                macs_before=inner.in_features * inner.out_features,
                macs_after=macs_per_token(new, inner.in_features),
            )
        )
    record_structure(model)
    return report


# -- Hugging Face ------------------------------------------------------------------
def _hf_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None or not type(config).__module__.startswith("transformers"):
        return None
    return config


def record_structure(model: nn.Module) -> None:
    """Keep a Hugging Face model's `config.structlin` equal to its
    [`structure_spec`][structlin.nn.structure_spec] (removed when it has no structured
    layer), so `save_pretrained` writes it into `config.json`. Surgery calls this;
    models without a transformers config are left alone."""
    config = _hf_config(model)
    if config is None:
        return
    # Models built from one config object share it: the edited model gets its own copy,
    # so that recording its structure never describes a sibling that was not edited.
    own = copy.deepcopy(config)
    for module in model.modules():
        if getattr(module, "config", None) is config:
            module.config = own
    # An output head that was structured (tied="untie") is no longer the embedding's
    # transpose: transformers must not tie it again when the model is loaded.
    get_output = getattr(model, "get_output_embeddings", None)
    head = get_output() if callable(get_output) else None
    if isinstance(head, (Linear, Adapter)) and getattr(own, "tie_word_embeddings", False):
        own.tie_word_embeddings = False
    spec = structure_spec(model)
    if spec["layers"]:
        setattr(own, CONFIG_KEY, spec)
    elif hasattr(own, CONFIG_KEY):
        delattr(own, CONFIG_KEY)


def from_pretrained(model_class: Any, path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Load a structured Hugging Face model that `save_pretrained` saved.

    `transformers`' own `from_pretrained` builds the dense architecture of the
    config, so it cannot fill structured layers: it would start them from random
    dense weights and only report the mismatch. This runs the same
    `from_pretrained` (so checkpoint formats, renamed keys, `dtype`, `device_map`
    and tied weights are handled as `transformers` handles them) on the model
    class with its structured layers and adapters rebuilt from the saved
    `config.structlin` (written by [`replace_linear`][structlin.nn.replace_linear]
    and the other surgery calls) by [`apply_structure`][structlin.nn.apply_structure]
    as soon as the model is constructed. It then checks that every tensor of the
    checkpoint found its place and no parameter was left unloaded. The model is
    returned in eval mode, as `transformers` returns it, and of class `model_class`
    (the concrete class for an auto class).

    Args:
        model_class: The model class that was saved (`GPT2LMHeadModel`), or an auto
            class (`AutoModelForCausalLM`).
        path: The directory `save_pretrained` wrote (or anything `transformers`'
            `from_pretrained` takes; nothing is downloaded here).
        **kwargs: Passed to `model_class.from_pretrained` (`dtype=torch.bfloat16`,
            `device_map=...`, model constructor arguments such as
            `add_pooling_layer=False`).

    Raises:
        ValueError: the saved config has no `structlin` entry (load a dense model
            with `model_class.from_pretrained`), or the checkpoint does not fit the
            structured model (missing, unexpected or mis-shaped tensors).

    Examples:
        ```python
        report = snn.replace_linear(gpt2, "monarch", filter="*.mlp.*", project=True)
        gpt2.save_pretrained("gpt2-monarch")
        reloaded = snn.from_pretrained(GPT2LMHeadModel, "gpt2-monarch")
        ```
    """
    from transformers import AutoConfig

    where = os.fspath(path)
    if not os.path.isdir(where) and (os.path.isabs(where) or where.startswith(".")):
        raise FileNotFoundError(f"from_pretrained: no directory {where!r}")
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(os.fspath(path))
    spec = getattr(config, CONFIG_KEY, None)
    mapping = getattr(model_class, "_model_mapping", None)
    concrete = mapping[type(config)] if mapping is not None else model_class
    if spec is None:
        raise ValueError(
            f"from_pretrained: the config in {os.fspath(path)!r} has no {CONFIG_KEY!r} entry, "
            "so the model has no structured layers; load it with "
            f"{concrete.__name__}.from_pretrained. (Surgery records the structure in the "
            "config of the model it is given: edit the whole model, choosing layers with "
            "filter, rather than a submodule such as model.transformer.)"
        )

    class Structured(concrete):  # the saved class, structured as soon as it is built
        def __init__(self, *args: Any, **init_kwargs: Any):
            super().__init__(*args, **init_kwargs)
            apply_structure(self, spec)

    # transformers picks a checkpoint's key renamings (ViT's legacy names, say) by the
    # class's name and module, and treats classes defined elsewhere as custom code.
    Structured.__name__ = Structured.__qualname__ = concrete.__name__
    Structured.__module__ = concrete.__module__
    model, info = Structured.from_pretrained(
        path, config=config, output_loading_info=True, **kwargs
    )
    model.__class__ = concrete
    problems = {
        key: sorted(info.get(key) or ())
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(key)
    }
    if problems:
        details = "; ".join(
            f"{key.replace('_', ' ')}: {value[:5]}" for key, value in problems.items()
        )
        raise ValueError(
            f"from_pretrained: the checkpoint in {os.fspath(path)!r} does not fit "
            f"{concrete.__name__} with the structure its config describes ({details})"
        )
    return model
