"""The README's Python snippets run as written, in order, in one namespace (as a reader would)."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_snippets_run() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    assert len(SNIPPETS) >= 3
    namespace: dict = {}
    for index, snippet in enumerate(SNIPPETS):
        exec(compile(snippet, f"README.md snippet {index}", "exec"), namespace)
