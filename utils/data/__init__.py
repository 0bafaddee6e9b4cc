"""The data layer: image files to 8-bit RGB and the decoded-image cache.

Builds on utils.base only; utils/datasets.py (the reference's name) builds on it."""
