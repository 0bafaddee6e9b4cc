"""The retrieval layer: the code rule (codes.py), packed codes and exact
Hamming search (hamming.py, its compiled kernels numba_kernels.py), the
metrics (metrics.py), the database code cache and the search indexes (index/)."""
