"""The threshold walk of the top-k scans, in its own module because both the
numpy path (utils/retrieval/hamming.py) and the compiled one
(utils/retrieval/numba_kernels.py, which hamming loads only when numba is
there) build on it."""


def threshold_walk(count_le):
    """``threshold(dist, depth, guess, max_d)``: the smallest t in 0..max_d with
    count_le(dist, t) >= depth, walking from ``guess`` (usually a step or
    two). Written once for both kernels: numpy passes a vectorised count,
    utils/retrieval/numba_kernels.py compiles it with a loop count."""
    def threshold(dist, depth, guess, max_d):
        t = min(max(guess, 0), max_d)
        if count_le(dist, t) >= depth:
            while t > 0 and count_le(dist, t - 1) >= depth:
                t -= 1
        else:
            t += 1
            while count_le(dist, t) < depth:   # count_le(max_d) = n >= depth: terminates
                t += 1
        return t
    return threshold
