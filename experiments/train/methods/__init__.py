"""Training methods. Each one knows only the model and a batch: given ``(inputs, labels)``
it returns the loss it minimises and the gradients of every trainable variable.

A new method is one module here (a ``Method`` subclass) plus one file in ``configs/method/``
whose ``_target_`` names the class; its options are the keyword arguments of the class's
``__init__``, and are classified as settings in experiments/records.py (KEYS, METHODS).
"""

import inspect

from hydra.utils import get_class

from experiments.train.methods.base import Method, cross_entropy

__all__ = ["Method", "build", "cross_entropy", "options"]


def options(cls) -> tuple[str, ...]:
    """The options of a method class: its ``__init__``'s keyword arguments after the model and optimizer."""
    return tuple(p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model", "optimizer"))


def build(method_cfg: dict, model, optimizer) -> Method:
    """The method a resolved ``configs/method/*.yaml`` names, with the keys its class takes as keyword
    arguments (a sweep may set e.g. method.epsilon for every method; the others ignore it)."""
    cls = get_class(method_cfg["_target_"])
    return cls(model, optimizer, **{k: v for k, v in method_cfg.items() if k in options(cls)})
