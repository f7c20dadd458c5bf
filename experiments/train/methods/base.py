"""What every method shares: the loss, the embedding matrix, loss-scaled gradients."""

import tensorflow as tf
import tf_keras as keras

from experiments.model.encoder import embedding_matrix


def cross_entropy(labels, logits):
    """Mean cross-entropy in float32 via log_softmax, which (unlike the fused sparse
    softmax-cross-entropy op) has a second derivative, as gradient penalty needs."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return -tf.reduce_mean(tf.gather(log_probs, tf.cast(labels, tf.int32), batch_dims=1))


class Method:
    def __init__(self, model, optimizer=None):
        self.model = model
        self.embeddings = embedding_matrix(model)
        # Under mixed_float16 the optimizer is a LossScaleOptimizer: every gradient,
        # including a method's inner ones, is taken of the scaled loss and unscaled after.
        self.loss_scaler = optimizer if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) else None
        # The method's own scalar tensors of its last call (e.g. FGM's perturbation norm):
        # the train step returns them for the progress log and TensorBoard (monitor.py).
        self.quantities: dict[str, tf.Tensor] = {}

    def loss(self, inputs, labels, training: bool = True):
        """Mean cross-entropy of a forward pass, with dropout on unless ``training=False``."""
        return cross_entropy(labels, self.model(inputs, training=training))

    def gradient(self, tape, loss, sources):
        """``tape.gradient`` with loss scaling when the optimizer does it."""
        if self.loss_scaler is None:
            return tape.gradient(loss, sources)
        scale = tf.cast(self.loss_scaler.loss_scale, loss.dtype)
        grads = tape.gradient(loss, sources, output_gradients=scale)
        single = not isinstance(sources, (list, tuple))
        grads = self.loss_scaler.get_unscaled_gradients([grads] if single else list(grads))
        return grads[0] if single else grads

    def embedding_gradient(self, grads):
        """The entry of ``grads`` (aligned with ``model.trainable_variables``) for the embedding matrix."""
        refs = [v.ref() for v in self.model.trainable_variables]
        return grads[refs.index(self.embeddings.ref())]

    def __call__(self, inputs, labels):
        """Return ``(loss, gradients of model.trainable_variables)`` for one batch."""
        raise NotImplementedError


def summed_rows(grad: tf.IndexedSlices):
    """(unique rows, float32 gradient per row) of an embedding gradient, duplicate rows
    summed: the nonzero rows of the dense gradient, without forming it."""
    rows, position_row = tf.unique(grad.indices)
    return rows, tf.math.unsorted_segment_sum(tf.cast(grad.values, tf.float32), position_row, tf.shape(rows)[0])


def add_gradients(a, b):
    """Sum two gradient lists (as from ``Method.gradient``) entry by entry.

    Two IndexedSlices are concatenated rather than densified: the optimizer sums duplicate
    rows anyway, and no vocab x hidden tensor is formed."""

    def add(x, y):
        if x is None or y is None:
            return y if x is None else x
        if isinstance(x, tf.IndexedSlices) and isinstance(y, tf.IndexedSlices):
            return tf.IndexedSlices(
                tf.concat([x.values, y.values], 0), tf.concat([x.indices, y.indices], 0), x.dense_shape
            )
        return tf.convert_to_tensor(x) + tf.convert_to_tensor(y)

    return [add(x, y) for x, y in zip(a, b)]


def scale_gradients(grads, factor):
    """``factor * g`` for every entry, keeping IndexedSlices sparse."""

    def scale(g):
        if isinstance(g, tf.IndexedSlices):
            return tf.IndexedSlices(g.values * tf.cast(factor, g.values.dtype), g.indices, g.dense_shape)
        return None if g is None else g * tf.cast(factor, g.dtype)

    return [scale(g) for g in grads]
