"""Sphinx configuration of the course website (``make site``).

The source directory is the repository root, so the notebooks, README.md and
docs/ keep the relative links they have on GitHub and in JupyterLab:

    python -m sphinx -b html -W --keep-going -c docs . build/site

Everything is offline: notebooks are shown as committed (executed, never
re-run), widgets as their saved static picture, the theme is Sphinx's builtin
alabaster, and no page loads a script, style or font from the network (the
site carries its own CJK font subset for the Chinese terms, docs/_static/fonts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # course_utils for autodoc, without installing it
os.environ.setdefault("MPLBACKEND", "Agg")

project = "Efficient Detection Course"
author = "the course authors"
copyright = "the course authors, MIT licence"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]

root_doc = "docs/index"
# Only these become pages; the rest of the repository is not even walked.
include_patterns = ["README.md", "docs/**", "notebooks/[0-9][0-9]_*.ipynb"]
exclude_patterns = [".venv", ".git", "build", "benchmarks", "course_utils", "data", "scripts", "solutions", "tests",
                    "docs/_templates", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]  # relative to this directory

# --- notebooks (myst-nb) ---------------------------------------------------------------
nb_execution_mode = "off"  # show the committed outputs; the site never runs a notebook
# Widgets have no kernel on a static page: show the picture each widget output saved beside
# its view (image/png) instead of the view, and load no widget JavaScript (its default is a CDN).
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3  # README and glossary headings get ids, as on GitHub

# --- API pages (autodoc) ---------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- HTML ------------------------------------------------------------------------------
html_theme = "alabaster"  # builtin: no download
html_theme_options = {"font_family": 'sans-serif, "Course CJK"', "head_font_family": 'sans-serif, "Course CJK"',
                      "code_font_family": "monospace", "page_width": "1100px"}
html_static_path = ["_static"]  # course.css and the CJK font it declares (scripts/make_cjk_font.py)
html_css_files = ["course.css"]
html_title = project
html_show_sourcelink = False
html_copy_source = False
html_additional_pages = {"index": "redirect.html"}  # build/site/index.html -> docs/index.html
# Formulas: MathJax 2 from the jupyter-server-mathjax package (a dev dependency), copied into the site,
# instead of Sphinx's default MathJax 3 from a CDN.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"  # relative to _static/
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                               # myst-nb marks notebook pages tex2jax_ignore and their formulas class "math"
                               "processClass": "tex2jax_process|mathjax_process|math|output_area"},
                   "showMathMenu": False, "messageStyle": "none",
                   # jupyter-server-mathjax ships only the STIX web font: without this MathJax asks for its TeX
                   # fonts (absent), then falls back to the system's serif with misplaced accents
                   "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
                   # the hidden MathML kept for screen readers would pull MathJax's absent TeX fonts for ℝ, 𝒩...:
                   # it is never seen, so it keeps the page's font
                   "AssistiveMML": {"styles": {".MJX_Assistive_MathML [mathvariant]": {"font-family": "inherit !important"}}}}


def _copy_mathjax(app, exception):
    """After a successful build, put MathJax's files where mathjax_path points."""
    import shutil

    import jupyter_server_mathjax

    if exception is None and app.builder.format == "html":
        source = Path(jupyter_server_mathjax.__file__).parent / "static"
        shutil.copytree(source, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app):
    app.connect("build-finished", _copy_mathjax)
