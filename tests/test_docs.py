"""The documentation runs: README and guide snippets, docstring examples, and the strict site build.

Each Markdown page's Python blocks are executed in order in one namespace, as a
reader would run them; blocks fenced as ```` ```python {.no-run} ```` hold code that
cannot run here (a GPU device) and are skipped, and blocks fenced as
```` ```python {.needs-cola} ```` run only where that module (here `cola`) is installed,
as in CI's second environment.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys

import pytest

import structlin

ROOT = pathlib.Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A Python block and its attributes: ```python {.no-run} or ```python {.needs-cola}.
SNIPPET = re.compile(r"```python(?: \{([^}\n]*)\})?\n(.*?)```", flags=re.DOTALL)


def runnable(attributes: str) -> bool:
    """Whether a block with these attributes runs here."""
    if ".no-run" in attributes.split():
        return False
    needs = re.findall(r"\.needs-([\w]+)", attributes)
    return all(importlib.util.find_spec(module) is not None for module in needs)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_snippets_run(page: pathlib.Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for index, (attributes, snippet) in enumerate(SNIPPET.findall(page.read_text())):
        if runnable(attributes):
            exec(compile(snippet, f"{page.name} snippet {index}", "exec"), namespace)


def test_block_attributes_choose_what_runs() -> None:
    blocks = "```python\na\n```\n```python {.no-run}\nb\n```\n```python {.needs-os}\nc\n```\n"
    blocks += "```python {.needs-no_such_module_here}\nd\n```\n"
    found = [(runnable(attributes), code.strip()) for attributes, code in SNIPPET.findall(blocks)]
    assert found == [(True, "a"), (False, "b"), (True, "c"), (False, "d")]


def modules() -> list[str]:
    names = ["structlin"]
    for info in pkgutil.walk_packages(structlin.__path__, "structlin."):
        names.append(info.name)
    return names


# Modules that need an optional dependency beyond PyTorch and JAX, and which.
OPTIONAL = {"structlin.nn.nnx": "flax"}


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name: str) -> None:
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples failed in {name}"


def test_every_public_name_has_an_api_page() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    api = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").rglob("*.md"))
    documented = set(re.findall(r"^::: (structlin[\w.]*)", api, flags=re.MULTILINE))
    public = set()
    for module_name in ("structlin", "structlin.nn", "structlin.nn.jax", "structlin.nn.nnx"):
        if module_name in OPTIONAL and importlib.util.find_spec(OPTIONAL[module_name]) is None:
            continue
        module = importlib.import_module(module_name)
        public |= {f"{module_name}.{name}" for name in module.__all__}
    public = {
        name if not isinstance(obj, type(structlin)) else obj.__name__  # a module: its own page
        for name in public
        for obj in [_resolve(name)]
    }
    assert public <= documented, f"no API page for {sorted(public - documented)}"


def _resolve(qualified: str) -> object:
    module_name, _, attr = qualified.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def test_site_builds_strictly(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    mkdocs = shutil.which("mkdocs", path=str(pathlib.Path(sys.executable).parent))
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    out = subprocess.run(
        [*command, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-5000:]
