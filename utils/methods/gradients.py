"""Losses whose released backward is not the derivative of their forward.

Several official loss layers (the authors' Caffe code of DHN and DSH, the
HashNet authors' continuous similarity) report one value and train with a
hand-written gradient that differs from its derivative by a factor or a
branch. To reproduce both, the loss is written twice: the value as the
layer reports it, and a *surrogate* whose derivative is the layer's
gradient; ``with_gradient_of`` joins them.
"""


def with_gradient_of(value, surrogate):
    """A tensor equal to ``value`` (to the bit: the surrogate's two terms
    cancel exactly) whose gradient is ``surrogate``'s."""
    return value.detach() + (surrogate - surrogate.detach())
