"""Sphinx configuration of hpcbench's documentation site (MyST Markdown pages, the furo theme).

    pip install -e '.[docs]' && sphinx-build -W --keep-going -n docs docs/_build/html
"""

import sys
from pathlib import Path

import hpcbench

sys.path.insert(0, str(Path(__file__).parent / "_ext"))  # config_reference: the configuration page

project = "hpcbench"
release = version = hpcbench.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "config_reference"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "hpcbench"
# the plugin API pages show signatures without annotations: the annotations name types of other
# projects (pandas, rich, torch) that the nitpicky build (-n) would require cross-references for
autodoc_typehints = "none"
autodoc_member_order = "bysource"
