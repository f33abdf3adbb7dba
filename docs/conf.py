"""Sphinx configuration: the Markdown pages under docs/ (MyST), the API
reference from docstrings (autodoc) and Mermaid state diagrams (rendered in
the browser by the Mermaid script served from _static/mermaid, which ``nox -s
docs`` puts there: no CDN). Build with ``nox -s docs``; the HTML lands in
docs/_build/html."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Import the REST service (and so FastAPI and its pydantic models) before
# autodoc imports anything: imported later, from inside autodoc, FastAPI's
# own models fail to build ("__pydantic_extra__ must be dict[str, ...]").
import fenix_core.rest  # noqa: E402, F401

project = "fenix-core"
author = "fenix-core developers"
copyright = "fenix-core developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib.mermaid",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", ".venv"]

# ```mermaid fences in the Markdown pages become Mermaid diagrams.
myst_fence_as_directive = ["mermaid"]
# The Mermaid script comes from _static (see noxfile.py, _vendor_mermaid), never
# from a CDN: the built pages render their diagrams offline.
MERMAID_SCRIPT = Path(__file__).parent / "_static" / "mermaid" / "mermaid.esm.min.mjs"
if not MERMAID_SCRIPT.is_file():
    raise RuntimeError(
        f"{MERMAID_SCRIPT} is missing: build the docs with `nox -s docs`, which fetches it"
    )
mermaid_use_local = "mermaid/mermaid.esm.min.mjs"
mermaid_d3_zoom = False  # d3 would come from a CDN
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


#: Guides other pages may link to before they are written; see index.md.
GUIDES = (
    "constraints",
    "openstack",
    "kubernetes",
    "rest",
    "operations",
    "lifecycle",
    "controls",
    "performance",
)


class _GuidesNotWrittenYet(logging.Filter):
    """Drop the warnings about guides that are not written yet: a toctree glob
    of index.md that matches nothing (Sphinx gives that warning no type, so
    ``suppress_warnings`` cannot name it), and links to such a guide. Links to
    any other missing page still fail the build."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "didn't match any documents" in message:
            return False
        missing = [g for g in GUIDES if not (Path(__file__).parent / f"{g}.md").exists()]
        return not any(
            f"target not found: '{g}.md'" in message or f"target not found: '{g}.md#" in message
            for g in missing
        )


def setup(app: object) -> dict[str, bool]:
    for name in ("sphinx.sphinx.directives.other", "sphinx.myst_parser.sphinx_ext.myst_refs"):
        logging.getLogger(name).addFilter(_GuidesNotWrittenYet())
    return {"parallel_read_safe": True}


# Nitpicky (-n) about fenix-core's own references; the standard library and
# third-party types have no inventory here (no network for intersphinx in CI).
nitpick_ignore_regex = [
    (
        "py:.*",
        r"(abc|collections|collections\.abc|datetime|enum|os|pathlib|threading|typing|zoneinfo)\..*",
    ),
    ("py:.*", r"(datetime|transitions|sqlalchemy|pluggy|blinker|attrs|click|rich)(\..*)?"),
    ("py:.*", r"(pydantic|prometheus_client)(\..*)?"),
    # TypeVars: the schema's of models, the timeline's of step series.
    ("py:class", r"fenix_core\.(schema\.M|sim\.timeline\.T)"),
    # The plug-ins' and the REST service's third-party types (short or full names).
    (
        "py:.*",
        r"(httpx|fastapi|kubernetes|openstack|random|timedelta|Connection|ApiClient)(\..*)?",
    ),
    # Internal modules of the plug-ins and the REST service, not in the
    # reference, that the documented classes' signatures and docstrings name.
    (
        "py:.*",
        r"(moves|Delivery|DriverOptions|UnmanagedPods|fenix_core\.rest\.webhooks\.Delivery"
        r"|fenix_core_k8s\.config\.connect|fenix_core\.constraints\.CloudConstraints\.placement"
        # PlacedCloud's base, documented as fenix_core.testing.SimulatedCloud
        r"|fenix_core\.testing\.cloud\.SimulatedCloud)",
    ),
    # The contract's classes as their submodules name them in signatures;
    # the reference documents them where workflows import them, fenix_core.contract.
    ("py:class", r"fenix_core\.contract\.(context|errors|events|ops|state|views|workflow)\.\w+"),
]
