"""Sphinx configuration for the resources_kit user guide."""

project = "resources_kit"
copyright = "resources_kit contributors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
intersphinx_mapping: dict[str, tuple[str, None]] = {}
html_theme = "alabaster"
exclude_patterns = ["_build"]
nitpicky = False
