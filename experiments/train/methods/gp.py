"""Gradient penalty, FGM's first-order twin (kexue.fm/archives/7234, "梯度惩罚").

Loss L + 0.5 * eps * sum_i ||dL/de_i||^2 over the looked-up embedding vectors e_i of
every position: the gradient w.r.t. the embedding matrix arrives as IndexedSlices with
one row per position, and their squares are summed unmerged, as the blog's
``K.gradients(loss, [embeddings])[0].values`` does. Minimising it needs second-order
gradients, hence the nested tapes.
"""

import tensorflow as tf

from experiments.train.methods.base import Method


class GradientPenalty(Method):
    def __init__(self, model, optimizer=None, epsilon: float = 1.0):
        super().__init__(model, optimizer)
        self.epsilon = epsilon

    def __call__(self, inputs, labels):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = self.loss(inputs, labels)
            per_position = self.gradient(inner, loss, self.embeddings).values
            penalty = tf.reduce_sum(tf.square(tf.cast(per_position, tf.float32)))
            weighted = 0.5 * self.epsilon * penalty
            total = loss + weighted
        self.quantities = {"gradient_penalty": weighted, "penalty_share": weighted / total}
        return total, self.gradient(outer, total, self.model.trainable_variables)
