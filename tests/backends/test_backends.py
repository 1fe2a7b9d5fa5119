"""Backend selection, lazy imports, conversion between backends and devices."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import structlin as sl
from structlin.backends import backend_of, get_backend

BLOCK_IMPORTS = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'jax', 'jaxlib'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_import_needs_only_numpy() -> None:
    code = BLOCK_IMPORTS + (
        "import numpy as np, structlin as sl\n"
        "K = sl.Kron(np.eye(2), 2 * np.eye(3))\n"
        "assert (K.inv() @ np.ones(6) == 0.5).all()\n"
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_backend_is_read_from_the_arrays() -> None:
    assert backend_of(np.ones(2)).name == "numpy"
    assert sl.Dense(np.ones((2, 2))).backend is get_backend("numpy")
    torch = pytest.importorskip("torch")
    assert sl.Dense(torch.ones(2, 2)).backend.name == "torch"
    jnp = pytest.importorskip("jax.numpy")
    assert sl.Dense(jnp.ones((2, 2))).backend.name == "jax"


def test_unknown_backend_name() -> None:
    with pytest.raises(ValueError, match="unknown backend 'cupy'"):
        get_backend("cupy")


@pytest.mark.parametrize("target", ["torch", "jax"])
def test_to_converts_between_backends(target: str) -> None:
    pytest.importorskip(target)
    rng = np.random.default_rng(0)
    op = sl.Kron(rng.standard_normal((2, 2)), sl.Diagonal(rng.uniform(1, 2, 3))) @ sl.Permutation(
        rng.permutation(6)
    )
    converted = op.to(backend=target)
    assert converted.backend.name == target
    assert converted.ops[1].perm.dtype != converted.dtype  # indices stay integer
    np.testing.assert_allclose(np.asarray(converted.to_dense()), op.to_dense(), rtol=1e-12)


def test_to_casts_floating_arrays_only() -> None:
    op = sl.Permutation(np.array([1, 0])) @ sl.Dense(np.eye(2))
    low = op.to(np.float32)
    assert low.dtype == np.float32
    assert low.ops[0].perm.dtype == np.int64


@pytest.mark.cuda
def test_torch_cuda_operators_stay_on_the_gpu() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    factors = [
        torch.as_tensor(np.eye(8) + 0.1 * rng.standard_normal((8, 8)), device="cuda")
        for _ in range(2)
    ]
    K = sl.Kron(*factors) + sl.Identity(64)
    assert K.device.type == "cuda"
    x = torch.randn(64, 3, dtype=torch.float64, device="cuda")
    y = K.inv() @ x
    assert y.device.type == "cuda"
    torch.testing.assert_close(K @ y, x)
    blocks = torch.randn(4, 3, 3, dtype=torch.float64, device="cuda") + 3 * torch.eye(
        3, device="cuda"
    )
    B = sl.BlockDiag(blocks)
    torch.testing.assert_close(B.inv().to_dense(), torch.linalg.inv(B.to_dense()))
    cpu = K.to(device="cpu")
    assert cpu.device.type == "cpu"


@pytest.mark.parametrize("structure", ["dense", "diagonal", "monarch"])
def test_torch_compile_traces_factorisations_whole(structure: str) -> None:
    # The checks that read values (non-finite matrices, zero diagonal entries) stand
    # aside under torch.compile, as under jax.jit: a value read would break the graph.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    A = {
        "dense": lambda: sl.Dense(torch.as_tensor(np.eye(8) + 0.1 * rng.standard_normal((8, 8)))),
        "diagonal": lambda: sl.Diagonal(torch.as_tensor(rng.uniform(1, 2, 8))),
        "monarch": lambda: sl.Monarch.random(8, 8, nblocks=2, rng=0, backend="torch").to(
            dtype=torch.float64
        ),
    }[structure]()
    x = torch.ones(8, dtype=torch.float64)

    def f(v):
        return sl.solve(A, v), sl.slogdet(A)[1], sl.matmat(A.inv(), v)

    eager = f(x)
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)(x)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want)


def test_torch_compile_results_do_not_alias() -> None:
    # The aliasing policy holds inside a graph too, where storages cannot be read.
    torch = pytest.importorskip("torch")
    W = torch.randn(4, 4, requires_grad=True)

    def f():
        return sl.to_dense(sl.Dense(W)), sl.to_dense(sl.Dense(W).T), sl.diag(sl.Diagonal(W[0]))

    eager = f()
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)()
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want)
        assert got.untyped_storage().data_ptr() != W.untyped_storage().data_ptr()
