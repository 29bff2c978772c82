"""Sphinx configuration of hpcbench's documentation site (MyST Markdown pages, the furo theme).

    pip install -e '.[docs]' && sphinx-build -W --keep-going -n docs docs/_build/html
"""

import hpcbench

project = "hpcbench"
release = version = hpcbench.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = "hpcbench"
# the plugin API pages show signatures without annotations: the annotations name types of other
# projects (pandas, rich, torch) that the nitpicky build (-n) would require cross-references for
autodoc_typehints = "none"
autodoc_member_order = "bysource"
