"""The learning rate per step: constant, or BERT's linear warm-up then linear decay to 0.

``trainer.schedule=linear`` with ``trainer.warmup_ratio=w`` follows Google's BERT
(github.com/google-research/bert, optimization.py ``create_optimizer``; CLUE's TF baselines
copy that file), with T = epochs x batches per epoch and W = int(w x T) as its
run_classifier.py counts them::

    rate(step) = peak * step / W            if step < W
                 peak * (1 - min(step, T) / T)  otherwise   (the decay runs over all T steps)

``step`` is the number of updates made before this one (0 for the first, whose rate is 0
when W > 0), read from the optimizer's ``iterations``: the rate is a function of the global
step alone, and ``iterations`` is part of the checkpoint a resumed run restores
(run_state.py), so a resumed run uses the rates an uninterrupted one would have.
Note the decay is Google's, not Hugging Face's: at step W the rate drops from about
``peak`` to ``peak * (1 - W / T)`` instead of starting its decay from ``peak``.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from experiments.config import SCHEDULES
from experiments.errors import UserError


class LinearWarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decay = self.peak * (1.0 - tf.minimum(step, float(self.total_steps)) / float(self.total_steps))
        if self.warmup_steps <= 0:
            return decay
        warmup = self.peak * step / float(self.warmup_steps)
        return tf.where(step < float(self.warmup_steps), warmup, decay)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


def learning_rate(trainer_cfg, steps_per_epoch: int):
    """What ``make_optimizer`` gets: the float ``trainer.learning_rate`` for a constant
    schedule (as before schedules existed), else the schedule peaking at it."""
    name, peak = trainer_cfg.schedule, trainer_cfg.learning_rate
    if name == "constant":
        return peak
    if name != "linear":
        raise UserError(f"trainer.schedule={name} is invalid: it must be {' or '.join(SCHEDULES)}")
    ratio = trainer_cfg.warmup_ratio
    if not 0 <= ratio < 1:
        raise UserError(f"trainer.warmup_ratio={ratio} is invalid: it must be in [0, 1) (a share of all steps)")
    total = trainer_cfg.epochs * steps_per_epoch
    return LinearWarmupDecay(peak, total, int(total * ratio))
