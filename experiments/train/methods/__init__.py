"""Training methods. Each one knows only the model and a batch: given ``(inputs, labels)``
it returns the loss it minimises and the gradients of every trainable variable.

A new method is one module here (a ``Method`` subclass) plus one file in ``configs/method/``
whose ``_target_`` names the class; its other keys are the class's keyword arguments.
"""

from hydra.utils import get_class

from experiments.train.methods.base import Method, cross_entropy
from experiments.records import method_options

__all__ = ["Method", "cross_entropy", "build"]


def build(method_cfg: dict, model, optimizer) -> Method:
    """The method a resolved ``configs/method/*.yaml`` names, with its options as keyword arguments."""
    return get_class(method_cfg["_target_"])(model, optimizer, **method_options(method_cfg))
