"""Sphinx configuration: the Markdown pages under docs/ (MyST), the API
reference from docstrings (autodoc) and Mermaid state diagrams (rendered in
the browser). Build with ``nox -s docs``; the HTML lands in docs/_build/html."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "fenix-core"
author = "fenix-core developers"
copyright = "fenix-core developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxcontrib.mermaid",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", ".venv"]

# ```mermaid fences in the Markdown pages become Mermaid diagrams.
myst_fence_as_directive = ["mermaid"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Type hints name private or third-party types whose targets Sphinx cannot
# always resolve; the docs build is not nitpicky about them.
autodoc_typehints_format = "short"


# Payload samples elide with "..." and so are not valid JSON; Pygments then
# highlights them leniently, which is fine, not an error.
suppress_warnings = ["misc.highlighting_failure"]

html_theme = "furo"
html_title = "fenix-core"
html_static_path = ["_static"]


class _GuidesNotWrittenYet(logging.Filter):
    """Drop "toctree glob pattern ... didn't match" for index.md's guide
    patterns: those pages are added as they are written. (Sphinx gives this
    warning no type, so ``suppress_warnings`` cannot name it.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        return "didn't match any documents" not in record.getMessage()


def setup(app: object) -> dict[str, bool]:
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_GuidesNotWrittenYet())
    return {"parallel_read_safe": True}


# Nitpicky (-n) about fenix-core's own references; the standard library and
# third-party types have no inventory here (no network for intersphinx in CI).
nitpick_ignore_regex = [
    ("py:.*", r"(collections|collections\.abc|datetime|enum|os|pathlib|threading|typing)\..*"),
    ("py:.*", r"(datetime|transitions|sqlalchemy|pluggy|blinker|attrs|click|rich)(\..*)?"),
]
