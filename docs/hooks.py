"""mkdocs hooks: files the site publishes from outside `docs/`.

- The committed benchmark results (tables and plots). They live in `benchmarks/results/`,
  beside the script that writes them, not under `docs/`; copying them there would leave two
  versions to keep in step. They are added to the site's files as `benchmarks/results/...`,
  so the Performance guide can show the plots and link the tables of the run that is committed.
- MathJax, served from the site itself (`assets/mathjax/`) so that formulas render offline and
  behind firewalls. It comes from the installed package `django-static-mathjax` (MathJax 3,
  Apache-2.0; it needs no Django), part of the `docs` extra: its `es5` build, without the
  combined components and output formats this site does not load.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MATHJAX_URI = "assets/mathjax"
# The one combined component the site loads (see mkdocs.yml's extra_javascript); the others
# (tex-svg.js, mml-chtml.js, ...) and the SVG output are left out.
MATHJAX_ENTRY = "tex-mml-chtml.js"


def mathjax_es5() -> Path:
    """The `es5` folder of the installed MathJax 3, or a clear error naming the package."""
    spec = importlib.util.find_spec("mathjax")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            es5 = Path(location) / "static" / "mathjax" / "es5"
            if (es5 / MATHJAX_ENTRY).is_file():
                return es5
    raise PluginError(
        "MathJax is served from the site and comes from the package django-static-mathjax: "
        'pip install -e ".[docs]" (or pip install django-static-mathjax)'
    )


def on_files(files: Files, config: Any) -> Files:
    root = Path(config["docs_dir"]).resolve().parent
    for path in sorted((root / "benchmarks" / "results").glob("*")):
        if path.is_file() and path.suffix in (".md", ".png"):
            uri = path.relative_to(root).as_posix()
            files.append(File(uri, str(root), config["site_dir"], config["use_directory_urls"]))
    es5 = mathjax_es5()
    for path in sorted(es5.rglob("*")):
        relative = path.relative_to(es5)
        top = relative.parts[0]
        if not path.is_file() or (len(relative.parts) == 1 and top != MATHJAX_ENTRY):
            continue
        if relative.parts[:2] == ("output", "svg") or relative.as_posix() == "output/svg.js":
            continue
        uri = f"{MATHJAX_URI}/{relative.as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
