"""Sphinx configuration of the flask_sente documentation site (``make docs``).

The Markdown files in ``docs/`` (protocol, benchmarks, scale-out, soak) are pages as they
are, through MyST; the API reference is generated from the docstrings, so it cannot drift
from the code. The build runs with ``-W --keep-going -n``: a warning or an unresolved
cross-reference fails ``make docs`` and so ``make test``.
"""
from __future__ import annotations

import logging
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # flask_sente from this checkout, installed or not

project = "flask_sente"
author = "the flask_sente authors"
copyright = "the flask_sente authors"  # noqa: A001 - the name Sphinx reads
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Headings become link targets (``page.md#some-heading``), as they are on GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# Pages that may not exist yet (recipes, proxy guides) are listed by toctree globs, and the
# build must pass with or without them. Sphinx's "glob matched nothing" warning has no type
# that suppress_warnings could name, so a filter on the logger of that directive drops it
# for these globs only; every other warning stays an error.
OPTIONAL_GLOBS = ("'recipes/*'", "'deployment/*'")


class _OptionalGlobs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("didn't match any documents" in text
                    and any(glob in text for glob in OPTIONAL_GLOBS))


logging.getLogger("sphinx.sphinx.directives.other").addFilter(_OptionalGlobs())

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

# No network at build time, so no intersphinx: names from other libraries in signatures
# stay plain text instead of failing the nitpicky build.
nitpick_ignore_regex = [
    ("py:.*", r"(flask|werkzeug|markupsafe|blinker|gevent|geventwebsocket|gunicorn|redis|"
              r"http|ssl|socket|threading|queue|collections|logging|typing|t|_typeshed)(\..*)?"),
    ("py:class", r"(Flask|Response|Markup|Request|F|Handler|CookieJar|SSLContext)"),
    # Internals the reference does not document (the public API's docstrings mention them
    # for whoever reads the code): the sans-I/O protocol package, the client's modules,
    # type variables.
    ("py:(mod|func|class)", r"flask_sente\.protocol(\.\w+)*"),
    ("py:mod", r"(flask_sente\.client\.)?(core|state|links|ajax|endpoint|calls|websocket|"
               r"connection|status|topics|topicbook|dispatch|positions|pending)"),
    ("py:class", r"flask_sente\.(messages\.Replier|"
                 r"worker\.SenteGunicorn(Server|Handler)|ext\.F)"),
]

# furo: its content column takes the page's width beside the navigation, and a table or a
# code block wider than the column scrolls inside its own box instead of being clipped or
# pushing the page sideways (alabaster did both: tests/test_docs_site.py checks it in
# Chromium). Its fonts are the system's and its assets ship in the package, so the build
# and the pages need no network.
html_theme = "furo"
html_title = "flask_sente"
html_static_path = ["_static"]
html_css_files = ["wide.css"]
