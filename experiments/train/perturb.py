"""The geometry FreeLB's delta and the accuracy-under-attack PGD share: a perturbation of the
looked-up token embeddings (batch x seq x hidden), its per-example l2 norm, the mask of the
positions it may touch, a normalised ascent step and the projection back onto a per-example ball.

``token_embeddings_plus`` is the hook: a functional Keras model calls each layer's ``call``
afresh on every forward pass, eagerly or while a tf.function traces. It shadows ``call`` on the
one 'Embedding-Token' layer instance with "original lookup + delta" for the duration of a
forward pass, so delta enters the graph as an ordinary input of one add: the padding mask
(computed from the ids), the weights and the rest of the bert4keras model are untouched.
"""

import contextlib

import tensorflow as tf

from experiments.model.encoder import EMBEDDING_LAYER


@contextlib.contextmanager
def token_embeddings_plus(model, delta):
    """Within the block, the model's token-embedding layer returns ``lookup + delta``."""
    layer = model.get_layer(EMBEDDING_LAYER)
    original = layer.call

    def call(inputs, mode="embedding"):  # bert4keras's signature; 'dense' is its MLM-head use
        out = original(inputs, mode)
        return out + tf.cast(delta, out.dtype) if mode == "embedding" else out

    layer.call = call
    try:
        yield
    finally:
        del layer.call  # the class's method is visible again


def per_example_norm(x):
    """The l2 norm of each example's slice of ``x`` (batch x seq x hidden), shaped batch x 1 x 1."""
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=[1, 2], keepdims=True))


def token_mask(token_ids, exclude=()):
    """batch x seq x 1, 1.0 where a perturbation may act: real tokens (id 0 is [PAD]), less the ids
    in ``exclude`` (e.g. [CLS] and [SEP])."""
    keep = tf.not_equal(token_ids, 0)
    for token_id in exclude:
        keep &= tf.not_equal(token_ids, token_id)
    return tf.cast(keep, tf.float32)[..., None]


def ascent_step(grad, mask, step_size):
    """``step_size * d / ||d||`` per example, d the gradient on the masked positions."""
    ascent = tf.cast(grad, tf.float32) * mask
    return step_size * ascent / tf.maximum(per_example_norm(ascent), 1e-8)


def project(delta, radius):
    """``delta`` scaled back onto the l2 ball of ``radius`` (a scalar, or batch x 1 x 1) where it is longer."""
    return delta * tf.minimum(1.0, radius / tf.maximum(per_example_norm(delta), 1e-12))
