"""Training methods. Each one knows only the model and a batch: given ``(inputs, labels)``
it returns the loss it minimises and the gradients of every trainable variable.

A new method is one module here (a ``Method`` subclass) plus one file in ``configs/method/``
whose ``_target_`` names the class; its other keys are the class's keyword arguments.
"""

from experiments.methods.base import Method, cross_entropy

__all__ = ["Method", "cross_entropy"]
