"""The rule that turns a network's real-valued outputs into binary codes.

Every registered method encodes with sign(z) (HashNet §3: the codes are
sign(z), tanh(β·z) only trains towards them); a method with another rule
names it in ``CODE_RULES`` and as its ``code_rule`` (utils/methods/).
"""
import numpy as np
import paddle


def sign_codes(z):
    """The binary codes sign(z): int8 in {-1, +1} [N, bit] from z [N, bit]
    (a paddle Tensor or an array); z == 0 counts as +1 so every bit is set."""
    z = z.numpy() if isinstance(z, paddle.Tensor) else np.asarray(z)
    return np.where(z >= 0, 1, -1).astype(np.int8)


CODE_RULES = {"sign": sign_codes}   # a method's code_rule -> z [N, bit] -> int8 ±1 [N, bit]
