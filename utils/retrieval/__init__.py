"""The retrieval layer: packed codes, exact Hamming search, its compiled kernels
and the database code cache. utils/tools.py (the reference's name) computes the
metrics on top of it."""
