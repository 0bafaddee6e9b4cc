"""Training, data and evaluation utilities for the HashNet reproduction."""
import warnings

# Paddle 3.x warns about a missing ccache on every import; it only matters for
# compiling custom C++ ops, which this project never does.
warnings.filterwarnings("ignore", message="No ccache found")
