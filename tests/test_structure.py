"""The structure registry: one record per structure, read by layers, surgery, adapters and docs."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import numpy as np
import pytest

import structlin as sl
from structlin import pytree
from structlin.structure import (
    Structure,
    get_structure,
    register_structure,
    registered_structures,
    unregister_structure,
)

ROOT = pathlib.Path(__file__).parents[1]
# The structures registered when the package is imported (a docs page may register one later).
BUILT_IN = registered_structures()


def _built_in(name: str) -> bool:
    return get_structure(name).operator.__module__.startswith("structlin.")


def test_every_built_in_is_registered_from_its_operator_module() -> None:
    assert set(BUILT_IN) >= {"dense", "lowrank", "kron", "blockdiag", "monarch", "tt", "btt"}
    assert tuple(sorted(BUILT_IN)) == BUILT_IN
    for name in BUILT_IN:
        record = get_structure(name)
        assert record.name == name
        assert issubclass(record.operator, sl.LinearOperator)


@pytest.mark.parametrize("name", BUILT_IN)
def test_template_and_projection_agree(name: str) -> None:
    """The projection of a dense `W` has the template's class, tree structure and leaf shapes."""
    record = get_structure(name)
    d_in, d_out = 16, 24
    template = record.build(d_in, d_out, dtype=np.float64)
    W = np.random.default_rng(0).standard_normal((d_out, d_in))
    projected = record.project(W)
    assert type(projected) is type(template) is record.operator
    assert template.shape == projected.shape == (d_out, d_in)
    leaves, treedef = pytree.tree_flatten(template)
    got, got_def = pytree.tree_flatten(projected)
    assert got_def == treedef
    assert [leaf.shape for leaf in got] == [leaf.shape for leaf in leaves]
    assert len(record.leaf_names(d_in, d_out)) == len(leaves)


def test_unknown_names_get_a_suggestion_and_the_list() -> None:
    with pytest.raises(
        ValueError, match=r"unknown structure 'monarh' \(did you mean 'monarch'\?\)"
    ):
        get_structure("monarh")
    with pytest.raises(ValueError, match="choose one of " + ", ".join(registered_structures())):
        get_structure("butterfly")
    with pytest.raises(ValueError, match="unknown structure 3"):
        get_structure(3)  # type: ignore[arg-type]


def test_records_are_checked() -> None:
    template = lambda zeros, d_in, d_out: sl.Dense(zeros(d_out, d_in))  # noqa: E731
    with pytest.raises(ValueError, match="already registered \\(for Dense\\)"):
        register_structure(Structure("dense", sl.Dense, template))
    with pytest.raises(TypeError, match=r"takes a structlin\.structure\.Structure"):
        register_structure("dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a Python identifier"):
        Structure("my structure", sl.Dense, template)
    with pytest.raises(TypeError, match="must be a LinearOperator subclass"):
        Structure("mine", np.ndarray, template)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="template must be callable"):
        Structure("mine", sl.Dense, "dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sizes names 'rank', which is not an option"):
        Structure("mine", sl.Dense, template, sizes=("rank",))
    with pytest.raises(ValueError, match="unknown structure 'nothing'"):
        unregister_structure("nothing")
    record = Structure("mine", sl.Dense, template, options={"scale": 2})
    with pytest.raises(TypeError):
        record.options["scale"] = 3  # type: ignore[index]  # read-only


# -- a structure registered after import works wherever a built-in does ----------------------
def _half_rank(zeros, d_in: int, d_out: int, *, rank: int) -> sl.LowRank:
    return sl.LowRank(zeros(d_out, rank), zeros(rank, d_in))


@pytest.fixture
def halfrank() -> Iterator[Structure]:
    """`"halfrank"`: LowRank of rank `min(d_in, d_out) // 2`, registered for one test."""
    record = register_structure(
        Structure(
            "halfrank",
            sl.LowRank,
            _half_rank,
            options={"rank": lambda d_in, d_out: max(1, min(d_in, d_out) // 2)},
            sizes=("rank",),
        )
    )
    try:
        yield record
    finally:
        unregister_structure("halfrank")


@pytest.fixture
def pairs() -> Iterator[Structure]:
    """`"pairs"`: BlockDiag whose only option is `nblocks` (default 2), for one test."""

    def template(zeros, d_in: int, d_out: int, *, nblocks: int) -> sl.BlockDiag:
        return sl.BlockDiag(zeros(nblocks, d_out // nblocks, d_in // nblocks))

    record = register_structure(
        Structure("pairs", sl.BlockDiag, template, options={"nblocks": 2}, sizes=("nblocks",))
    )
    try:
        yield record
    finally:
        unregister_structure("pairs")


def test_a_registered_structure_is_listed_and_removed(halfrank: Structure) -> None:
    from structlin.nn.structures import STRUCTURES, complete_spec, project_onto, template

    assert "halfrank" in registered_structures()
    assert "halfrank" in STRUCTURES  # a live view, not a tuple frozen at import
    assert complete_spec("halfrank", 12, 8, {}) == {"rank": 4}
    assert template("halfrank", 12, 8).U.shape == (8, 4)
    W = np.random.default_rng(1).standard_normal((8, 12))
    assert project_onto(W, "halfrank", rank=2).V.shape == (2, 12)
    with pytest.raises(TypeError, match="structure 'halfrank' takes no option rnak"):
        complete_spec("halfrank", 12, 8, {"rnak": 2})
    with pytest.raises(ValueError, match="halfrank: rank must be a positive integer"):
        complete_spec("halfrank", 12, 8, {"rank": 0})
    unregister_structure("halfrank")
    assert "halfrank" not in STRUCTURES
    register_structure(halfrank)  # for the fixture to remove


def test_a_registered_structure_works_in_the_pytorch_layer_and_surgery(halfrank: Structure) -> None:
    torch = pytest.importorskip("torch")
    import structlin.nn as snn

    layer = snn.Linear(12, 8, "halfrank", dtype=torch.float64)
    assert layer.spec == {"rank": 4}
    assert sorted(name for name, _ in layer.named_parameters()) == ["U", "V", "bias"]
    x = torch.randn(3, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ layer.operator.to_dense().T + layer.bias)

    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.GELU(), torch.nn.Linear(8, 8))
    report = snn.replace_linear(model, "halfrank", project=True)
    assert len(report) == 2
    assert isinstance(model[0], snn.Linear)
    assert model[0].structure == "halfrank"

    model = torch.nn.Sequential(torch.nn.Linear(12, 8))
    snn.add_adapters(model, "halfrank", rank=2)
    assert model[0].delta.spec == {"rank": 2}


def test_a_registered_structure_works_in_the_jax_layer(halfrank: Structure) -> None:
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from structlin.nn.jax import Linear

    layer = Linear.init(0, 12, 8, "halfrank")
    assert layer.structure == "halfrank"
    assert layer(jnp.ones((2, 12))).shape == (2, 8)


def test_the_mixer_takes_registered_structures_with_only_nblocks(
    halfrank: Structure, pairs: Structure
) -> None:
    torch = pytest.importorskip("torch")
    import structlin.nn as snn

    block = snn.MonarchMixer(16, 8, structure="pairs")
    assert block.up.structure == "pairs"
    assert block.up.spec == {"nblocks": 4}
    assert block(torch.randn(1, 4, 16)).shape == (1, 4, 16)
    with pytest.raises(ValueError, match=r"structure must be one of .*'pairs'"):
        snn.MonarchMixer(16, 8, structure="halfrank")  # rank cannot come from nblocks


def test_the_projection_error_lists_the_projectable_classes() -> None:
    with pytest.raises(TypeError, match="no projection onto Sum") as caught:
        sl.project(np.eye(4), sl.Sum)
    for name in ("Dense", "Diagonal", "BlockDiag", "LowRank", "Kron", "Monarch", "TT", "BTT"):
        assert name in str(caught.value)


# -- the documentation's tables list every built-in structure ---------------------------------
def _first_column(text: str) -> set[str]:
    return set(re.findall(r'^\s*\| `"(\w+)"` \|', text, flags=re.MULTILINE))


@pytest.mark.parametrize("name", BUILT_IN)
def test_the_docs_tables_list_the_structure(name: str) -> None:
    pytest.importorskip("torch")
    from structlin.nn import structures

    record = get_structure(name)
    assert _built_in(name)
    assert record.row() in structures.__doc__, f"{name}: nn/structures.py's table row differs"
    training = (ROOT / "docs" / "guides" / "training.md").read_text()
    assert name in _first_column(training), f"{name} is not in the training guide's table"
    # The projection tables (the guide's and sl.project's) name the operator class.
    link = f"[`{record.operator.__name__}`][structlin.{record.operator.__name__}]"
    projection = (ROOT / "docs" / "guides" / "projection.md").read_text()
    assert link in projection, f"{link} is not in the projection guide's table"
    assert link in sl.project.__doc__, f"{link} is not in structlin.project's table"


def test_the_docs_tables_list_only_registered_structures() -> None:
    pytest.importorskip("torch")
    from structlin.nn import structures

    training = (ROOT / "docs" / "guides" / "training.md").read_text()
    for listed in (_first_column(structures.__doc__), _first_column(training)):
        assert listed <= set(registered_structures())
