"""μP width transfer for a whole model: the learning-rate factor of each kind of parameter.

With a base fan-in `d_0`, a learning rate `η` tuned at width `d_0` transfers to any width
when every parameter's rate follows the spectral condition for feature learning (Yang,
Simon and Bernstein, 2023), which gives μP (Tensor Programs V, Table 3) with one
constant for every layer, whatever its shape:

| parameter | Adam | SGD |
| --- | --- | --- |
| weight of a `d_out x d_in` layer (input, hidden or readout) | `d_0 / d_in` | `d_out / d_in` |
| embedding table (a one-hot input), `dim` columns | 1 | `dim / d_0` |
| vector of length `n` (bias, norm gain) | 1 | `n / d_0` |
| any other parameter | 1 | 1 |

The Adam rule is "Compute Better Spent"'s `η_0 d_0 / d_in` (Section 3.3): a layer's rate is
set by its own fan-in, so a `4d -> d` layer learns 4 times slower than a `d -> 4d` one and
an input layer reading 3072 pixels slower than a hidden one, which Appendix E had to add
by hand. Structured components multiply this by their structure-aware `κ_i`. Needs
neither PyTorch nor JAX.
"""

from __future__ import annotations


def check_base_fan_in(base_fan_in: object) -> None:
    """Raises `TypeError` or `ValueError` for a `base_fan_in` that is not a positive integer."""
    if isinstance(base_fan_in, bool) or not isinstance(base_fan_in, int):
        raise TypeError(
            f"base_fan_in must be an int (the width the learning rate was tuned at), got "
            f"{type(base_fan_in).__name__}"
        )
    if base_fan_in < 1:
        raise ValueError(f"base_fan_in must be positive, got {base_fan_in}")


def weight(fan_out: int, fan_in: int, base_fan_in: int, optimizer: str) -> float:
    """The factor of a weight of a `fan_out x fan_in` layer."""
    return fan_out / fan_in if optimizer == "sgd" else base_fan_in / fan_in


def embedding(dim: int, base_fan_in: int, optimizer: str) -> float:
    """The factor of an embedding table with `dim` columns."""
    return dim / base_fan_in if optimizer == "sgd" else 1.0


def vector(n: int, base_fan_in: int, optimizer: str) -> float:
    """The factor of a vector of length `n`: a bias or a norm's gain."""
    return n / base_fan_in if optimizer == "sgd" else 1.0
