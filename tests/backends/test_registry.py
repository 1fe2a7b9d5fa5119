"""The backend registry, the facts each backend states, and conversion between backends."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import structlin as sl
from structlin import backends
from structlin.backends import available_backends, backend_of, get_backend, register_backend

BLOCK_IMPORTS = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'jax', 'jaxlib'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)

HAS = set(available_backends())


def test_available_backends_in_registration_order() -> None:
    names = available_backends()
    assert names[0] == "numpy"
    assert list(names) == [n for n in ("numpy", "torch", "jax") if n in names]
    for name in ("torch", "jax"):
        try:
            __import__(name)
        except ImportError:
            assert name not in names
        else:
            assert name in names


def test_numpy_only_registry_imports_nothing() -> None:
    code = BLOCK_IMPORTS + (
        "import numpy as np\n"
        "from structlin.backends import available_backends, is_array, backend_of\n"
        "assert available_backends() == ('numpy',), available_backends()\n"
        "assert not is_array([1.0]) and backend_of(np.ones(2)).name == 'numpy'\n"
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_new_backend_is_one_registration() -> None:
    # A library `toylib` whose arrays are ToyArray (an ndarray subclass registered before
    # NumPy would be met first, so its own class here), with a backend made by a callable.
    code = (
        "import sys, types, numpy as np\n"
        "from structlin.backends import (available_backends, backend_of, get_backend,\n"
        "    is_array, register_backend)\n"
        "from structlin.backends.numpy import NumpyBackend\n"
        "class ToyBackend(NumpyBackend):\n"
        "    name = 'toy'\n"
        "class ToyArray:\n"
        "    shape = (2,)\n"
        "register_backend('toy', ToyBackend, library='toylib', array_types=('toylib.ToyArray',),\n"
        "    label='Toy', asarray='toylib.asarray')\n"
        "x = ToyArray()\n"
        "assert not is_array(x)  # its library is not imported: its types are not looked up\n"
        "assert 'toy' not in available_backends()\n"
        "try:\n"
        "    backend_of(x)\n"
        "except TypeError as e:\n"
        "    assert 'a NumPy, PyTorch, JAX or Toy array' in str(e), e\n"
        "    assert 'toylib.asarray' in str(e), e\n"
        "lib = types.ModuleType('toylib'); lib.ToyArray = ToyArray; sys.modules['toylib'] = lib\n"
        "assert backend_of(x) is get_backend('toy') and is_array(x)\n"
        "assert available_backends()[-1] == 'toy'\n"
        "try:\n"
        "    get_backend('nope')\n"
        "except ValueError as e:\n"
        "    assert \"'numpy', 'torch', 'jax' or 'toy'\" in str(e), e\n"
        "try:\n"
        "    register_backend('toy', ToyBackend, library='toylib', array_types=())\n"
        "except ValueError as e:\n"
        "    assert 'already registered' in str(e)\n"
        "else:\n"
        "    raise AssertionError('registered twice')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_backend_must_be_what_its_registration_names() -> None:
    code = (
        "from structlin.backends import get_backend, register_backend\n"
        "from structlin.backends.numpy import NumpyBackend\n"
        "register_backend('other', NumpyBackend, library='numpy', array_types=())\n"
        "try:\n"
        "    get_backend('other')\n"
        "except TypeError as e:\n"
        "    assert \"whose name is 'other'\" in str(e), e\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_messages_list_the_registered_backends() -> None:
    with pytest.raises(TypeError, match=r"a NumPy, PyTorch or JAX array.*numpy.asarray \(or"):
        backend_of([1.0])
    with pytest.raises(ValueError, match=r"choose 'numpy', 'torch' or 'jax'"):
        get_backend("cupy")
    with pytest.raises(TypeError, match=r"'numpy', 'torch', 'jax' or a Backend"):
        sl.Identity(2, backend=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        register_backend(
            "numpy",
            "structlin.backends.numpy:NumpyBackend",
            library="numpy",
            array_types=("numpy.ndarray",),
        )


def test_backend_facts() -> None:
    numpy = get_backend("numpy")
    assert numpy.mutable
    assert numpy.cola_functions == "np_fns"
    assert numpy.foreign_device("cpu") is None
    assert numpy.pickle_device("cpu") is None
    if "torch" in HAS:
        import torch

        t = get_backend("torch")
        assert t.mutable
        assert t.cola_functions == "torch_fns"
        assert t.foreign_device(torch.device("cpu")) == torch.device("cpu")
    if "jax" in HAS:
        import jax

        j = get_backend("jax")
        assert not j.mutable
        assert j.cola_functions == "jax_fns"
        device = jax.devices()[0]
        assert j.foreign_device(device) is None
        assert j.pickle_device(device).device() == device
        assert j.pickle_device("cpu") is None


def test_numpy_subclasses_are_not_remembered_and_masks_are_refused() -> None:
    m = np.matrix(np.eye(2))
    assert backend_of(m) is get_backend("numpy")
    assert type(m) not in backends._BY_TYPE
    with pytest.raises(TypeError, match="masked arrays"):
        backend_of(np.ma.masked_array(np.ones(2)))


@pytest.mark.skipif("torch" not in HAS, reason="needs PyTorch")
def test_torch_hook_lives_in_the_backend() -> None:
    import torch

    A = sl.Dense(torch.eye(3, dtype=torch.float64) * 2)
    X = torch.ones(2, 3, dtype=torch.float64)
    assert torch.equal(X @ A, 2 * X)
    assert get_backend("torch").torch_function(torch.add, (X, A), None, None) is NotImplemented
    with pytest.raises(TypeError):
        torch.add(X, A)  # every PyTorch function but `@` refuses operators


FLOATS = ["float16", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("target", ["torch", "jax"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_numpy_to_other_backends_keeps_dtype_and_values(target: str, dtype: str) -> None:
    if target not in HAS:
        pytest.skip(f"needs {target}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3))
    if dtype.startswith("complex"):
        a = a + 1j * rng.standard_normal((3, 3))
    op = sl.Kron(sl.Dense(a.astype(dtype)), sl.Diagonal(np.arange(1.0, 3.0).astype(dtype)))
    out = op.to(backend=target)
    assert out.backend is get_backend(target)
    assert str(out.dtype).removeprefix("torch.") == dtype
    back = out.to(backend="numpy")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.to_dense(), op.to_dense())


@pytest.mark.skipif(not {"torch", "jax"} <= HAS, reason="needs PyTorch and JAX")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_half_precision_to_jax_and_back(dtype: str) -> None:
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(1)
    w = torch.as_tensor(rng.standard_normal((4, 4)), dtype=getattr(torch, dtype))
    d = torch.as_tensor(rng.uniform(1, 2, 4), dtype=getattr(torch, dtype))
    op = sl.Dense(w) @ sl.Diagonal(d)
    j = sl.to(op, backend="jax")
    assert j.backend is get_backend("jax")
    assert j.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(j.ops[0].array.astype(jnp.float32)), w.float().numpy())
    np.testing.assert_array_equal(np.asarray(j.ops[1].diag.astype(jnp.float32)), d.float().numpy())
    back = sl.to(j, backend="torch")
    assert back.dtype == getattr(torch, dtype)
    assert torch.equal(back.ops[0].array, w)
    assert torch.equal(back.ops[1].diag, d)
    # A cast on the way: the values are rounded once, from the source's.
    wide = sl.to(op, dtype="float32", backend="jax")
    assert wide.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(wide.ops[0].array), w.float().numpy())


@pytest.mark.skipif("torch" not in HAS, reason="needs PyTorch")
def test_bfloat16_to_numpy_needs_a_numpy_dtype() -> None:
    import torch

    op = sl.Dense(torch.eye(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"NumPy has no bfloat16 dtype.*dtype=numpy.float32"):
        op.to(backend="numpy")
    out = op.to(dtype=np.float32, backend="numpy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.to_dense(), np.eye(2, dtype=np.float32))


def test_no_backend_name_checks_outside_backends() -> None:
    """Backends own their facts: generic code asks a Backend method, never its name."""
    src = pathlib.Path(sl.__file__).parent
    found = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        if rel.startswith("backends/"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"backend(\(\w*\))?\.name\s*[!=]=", line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
