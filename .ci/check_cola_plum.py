"""Fail unless the active `plum` module is CoLA's fork (cola-plum-dispatch) and CoLA imports.

Each installed file of a distribution is listed with its SHA-256 in the distribution's
RECORD; the active `plum/__init__.py` must be the one cola-plum-dispatch installed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import pathlib
import sys


def main() -> None:
    plum = importlib.import_module("plum")
    active = pathlib.Path(plum.__file__)
    digest = base64.urlsafe_b64encode(hashlib.sha256(active.read_bytes()).digest()).rstrip(b"=")
    record = {
        str(f): f.hash.value
        for f in importlib.metadata.distribution("cola-plum-dispatch").files or []
        if f.hash is not None
    }
    if record.get("plum/__init__.py") != digest.decode():
        sys.exit(f"the active plum ({active}) is not cola-plum-dispatch's: plum-dispatch won")
    cola = importlib.import_module("cola")  # imports only with the fork
    structlin = importlib.import_module("structlin")
    print(
        f"plum is cola-plum-dispatch {importlib.metadata.version('cola-plum-dispatch')}; "
        f"cola-ml {cola.__version__}, structlin {structlin.__version__}"
    )


if __name__ == "__main__":
    main()
