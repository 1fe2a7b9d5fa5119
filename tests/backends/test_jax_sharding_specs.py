"""The JAX backend's sharding bookkeeping under Explicit mesh axes, as pure functions of
shapes and specs (the 4-device runs are in `tests/test_sharding.py`)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("jax")

from structlin.backends.jax import _matched_batch_specs, _reshape_spec

MESH = {"x": 4, "y": 2}


@pytest.mark.parametrize(
    ("shape_in", "spec", "shape", "expected"),
    [
        # splitting a sharded axis keeps the sharding on its major part
        ((64, 8), ("x", None), (4, 16, 8), ("x", None, None)),
        # merging keeps it, whether the sharded axis was the major or a minor one
        ((4, 16, 8), ("x", None, None), (64, 8), ("x", None)),
        ((4, 16, 8), (None, "x", None), (64, 8), ("x", None)),
        # size-1 axes neither take nor lose a sharding (BTT's cores)
        (
            (8, 1, 16, 8),
            ("x", None, None, None),
            (1, 8, 1, 2, 8, 8),
            (None, "x", None, None, None, None),
        ),
        ((1, 64), (None, "x"), (64,), ("x",)),
        # a part too short to split over the mesh axis is left whole
        ((8, 6), ("x", None), (2, 4, 6), (None, None, None)),
        # two groups: 8 -> (2, 4) cannot put x (4) on its 2, 4 -> (2, 2) puts y (2) on its first
        ((8, 4), ("x", "y"), (2, 4, 2, 2), (None, None, "y", None)),
        # nothing to place
        ((0, 4), ("x", None), (4, 0), (None, None)),
    ],
)
def test_reshape_spec_examples(shape_in, spec, shape, expected) -> None:
    assert _reshape_spec(shape_in, spec, shape, MESH) == expected


@st.composite
def reshapes(draw):
    """A shape, a valid sharding of one of its axes over `x`, and any other shape with
    the same number of entries (its prime factors regrouped in order)."""
    factors = draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=1, max_size=8))
    shape_in = _grouped(draw, factors)
    shape = _grouped(draw, factors)
    spec: list = [None] * len(shape_in)
    divisible = [a for a, n in enumerate(shape_in) if n % MESH["x"] == 0]
    if divisible:
        spec[draw(st.sampled_from(divisible))] = "x"
    return shape_in, tuple(spec), shape


def _grouped(draw, factors: list[int]) -> tuple[int, ...]:
    cuts = draw(st.sets(st.integers(1, len(factors) - 1))) if len(factors) > 1 else set()
    bounds = [0, *sorted(cuts), len(factors)]
    return tuple(math.prod(factors[a:b]) for a, b in itertools.pairwise(bounds))


@given(reshapes())
def test_reshape_spec_is_a_valid_sharding_of_the_output(case) -> None:
    shape_in, spec, shape = case
    out = _reshape_spec(shape_in, spec, shape, MESH)
    assert len(out) == len(shape)
    placed = [(axis, name) for axis, name in enumerate(out) if name is not None]
    assert len(placed) <= 1  # a mesh axis shards at most one axis, and only one came in
    for axis, name in placed:
        assert shape[axis] % MESH[name] == 0
        assert name in spec
    if shape == shape_in:
        assert out == spec  # no reshape, no move


def test_matched_batch_specs() -> None:
    # activations take the blocks' sharding along the shared batch axis
    assert _matched_batch_specs((4, 16, 16), ("x", None, None), (4, 16, 8), None) == (
        ("x", None, None),
        ("x", None, None),
    )
    # ... and give up the mesh axis on the axis that held it (BTT's transposed cores)
    assert _matched_batch_specs(
        (8, 1, 16, 8), ("x", None, None, None), (8, 1, 8, 16), (None, None, "x", None)
    ) == (("x", None, None, None), ("x", None, None, None))
    # a broadcast axis (length 1 against 8) is left alone
    assert _matched_batch_specs((1, 8, 4, 4), (None, "x", None, None), (8, 1, 4, 2), None) == (
        (None, "x", None, None),
        (None, None, None, None),
    )
    # two different shardings of one batch axis are left for JAX to refuse
    assert _matched_batch_specs((4, 2, 2), ("x", None, None), (4, 2, 2), ("y", None, None)) == (
        ("x", None, None),
        ("y", None, None),
    )
