"""The data layer: image files to 8-bit RGB, transforms, list files and
splits, the decoded-image cache, and the datasets and loaders of a run
(loaders.py). Builds on utils.base only."""
