"""The single plum dispatcher every structlin rule is registered with.

Only the API common to `plum-dispatch` and CoLA's fork `cola-plum-dispatch` is
used (`Dispatcher`, type-annotated methods, `Function.invoke`), so structlin
keeps working when `cola-ml` replaces the `plum` module.
"""

from __future__ import annotations

from plum import Dispatcher

dispatch = Dispatcher()
