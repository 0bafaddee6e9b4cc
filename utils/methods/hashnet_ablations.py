"""HashNet's ablations (the paper's §5.3): HashNet with one part taken out,
or the authors' continuous similarity put in, each a switch of the authors'
code and trained like ``--method hashnet`` otherwise.

* ``hashnet_no_weighting`` (HashNet-W): every pair weighs 1, the authors'
  ``class_num = 1`` (caffe/models/train/*/train_val.prototxt; the reference
  loss's n/n1, n/n0 weights off);
* ``hashnet_no_continuation`` (HashNet-sgn): β fixed at 1 for the whole run,
  so training never sharpens tanh(z); codes are sign(z) at evaluation as
  always;
* ``hashnet_continuous`` (HashNet+C): the authors' ``continous_similarity``
  (their pairwise_loss_layer.cu): each similar pair's gradient × 4·cos²(y_i,
  y_j). Their released prototxts all set it true, their README snippet
  false; ``--method hashnet`` follows the reference repo (off) and
  ``--method hashnet_caffe`` the prototxts (on).
"""
from utils.methods.hashnet import HashNet, PairSettings
from utils.methods.registry import register


@register("hashnet_no_weighting")
class HashNetNoWeighting(HashNet):
    label = "HashNet-W"
    weighted = False


@register("hashnet_no_continuation")
class HashNetNoContinuation(HashNet):
    label = "HashNet-sgn"
    continuation = False
    Settings = PairSettings   # no --step_continuation: β never moves


@register("hashnet_continuous")
class HashNetContinuous(HashNet):
    label = "HashNet+C"
    continuous_similarity = True
