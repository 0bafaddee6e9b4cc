"""A memory bank of the training set, for the methods whose loss compares a
batch with every training image (HashNet's reference loss, DPSH).

Every training image has a row: U [num_train, bit] holds the output it had
when last seen, Y [num_train, C] its labels. Rows never written yet are
zeros (zero labels, zero output). The rows are buffers, so a checkpoint
saves and restores them (the engine's "bank").
"""
import paddle
import paddle.nn as nn


class MemoryBank(nn.Layer):
    """U, Y and ``keep`` [N] (1 kept, 0 excluded) as buffers; ``write`` puts
    a batch in, ``exclude`` takes images that could not be read
    (``--skip-bad-images``) out of every pair from that step on."""

    def __init__(self, num_train, bit, num_class):
        super().__init__()
        self.register_buffer("U", paddle.zeros([num_train, bit]))
        self.register_buffer("Y", paddle.zeros([num_train, num_class]))
        self.register_buffer("keep", paddle.ones([num_train]))
        self.excluding = False  # any keep == 0 (the loss's plain path stays untouched without)

    def exclude(self, ind):
        """Take the bank rows of dataset indices ``ind`` out of every pair."""
        if len(ind):
            self.keep[paddle.to_tensor(ind, dtype="int64")] = 0.0
            self.excluding = True

    def set_state_dict(self, state_dict, *args, **kwargs):
        result = super().set_state_dict(state_dict, *args, **kwargs)
        self.excluding = bool((self.keep == 0).any())
        return result

    def kept(self):
        """``keep`` while some rows are excluded, else None (every row is a pair)."""
        return self.keep if self.excluding else None

    def write(self, u, y, ind):
        """Write the batch (u [B, bit], labels y [B, C] at dataset indices
        ind [B]) into the bank; returns the bank (U [N, bit], Y [N, C]) whose
        batch rows are ``u`` itself, so a gradient flows through them when
        ``u`` carries one; the other rows are constants from earlier steps."""
        U = paddle.scatter(self.U, ind, u, overwrite=True)          # [N, bit]
        Y = paddle.scatter(self.Y, ind, y, overwrite=True)          # [N, C]
        self.U.set_value(U.detach())
        self.Y.set_value(Y)
        return U, Y
