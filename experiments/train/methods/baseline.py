"""Plain fine-tuning: the gradient of the mean batch loss."""

import tensorflow as tf

from experiments.train.methods.base import Method


class Baseline(Method):
    def __call__(self, inputs, labels):
        with tf.GradientTape() as tape:
            loss = self.loss(inputs, labels)
        return loss, self.gradient(tape, loss, self.model.trainable_variables)
