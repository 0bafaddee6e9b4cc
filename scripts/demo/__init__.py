"""The demo only: its generated data set (``data``), the backbone that stands
in for ImageNet weights (``backbone``) and its final report (``report``).
The library in ``utils/`` never imports from here."""
