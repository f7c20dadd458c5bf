"""The learning rate per step: constant, or BERT's linear warm-up then linear decay to 0.

``trainer.schedule=linear`` follows Google's BERT (github.com/google-research/bert, optimization.py
``create_optimizer``, which CLUE's TF baselines copy): with T = epochs x batches per epoch and
W = int(warmup_ratio x T), rate = peak * step / W while step < W, then peak * (1 - min(step, T) / T)
(Google's decay over all T steps, not Hugging Face's; docs/reliability.md). ``step`` is the
optimizer's ``iterations``, which a resumed run restores, so it uses the rates an uninterrupted
one would have.
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
