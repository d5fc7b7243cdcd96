"""Report rendering: tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from saved results only.

* :mod:`fsseg.report.spec` — the report spec (which runs, which comparisons);
* :mod:`fsseg.report.results` — run selection, unit scores, cells and Holm families;
* :mod:`fsseg.report.captions` — caption text stating the protocol;
* :mod:`fsseg.report.tables` — table model and renderers;
* :mod:`fsseg.report.plots` — figures;
* :mod:`fsseg.report.build` — ``fsseg report``: all of the above into one folder.
"""

from __future__ import annotations

from typing import Any


def build_report(*args: Any, **kwargs: Any) -> Any:
    """See :func:`fsseg.report.build.build_report` (imported lazily: matplotlib is slow to import)."""
    from fsseg.report.build import build_report as build

    return build(*args, **kwargs)
