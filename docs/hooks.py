"""mkdocs hook: publish the committed benchmark results (tables and plots) with the site.

They live in `benchmarks/results/`, beside the script that writes them, not under
`docs/`; copying them there would leave two versions to keep in step. This hook
adds them to the site's files as `benchmarks/results/...`, so the Performance
guide can show the plots and link the tables of the run that is committed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any) -> Files:
    root = Path(config["docs_dir"]).resolve().parent
    for path in sorted((root / "benchmarks" / "results").glob("*")):
        if path.is_file() and path.suffix in (".md", ".png"):
            uri = path.relative_to(root).as_posix()
            files.append(File(uri, str(root), config["site_dir"], config["use_directory_urls"]))
    return files
