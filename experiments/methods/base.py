"""What every method shares: the loss, the embedding matrix, loss-scaled gradients."""

import tensorflow as tf
import tf_keras as keras

from experiments.models import embedding_matrix


def cross_entropy(labels, logits):
    """Mean cross-entropy in float32 via log_softmax, which (unlike the fused sparse
    softmax-cross-entropy op) has a second derivative, as gradient penalty needs."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    return -tf.reduce_mean(tf.gather(log_probs, tf.cast(labels, tf.int32), batch_dims=1))


class Method:
    name = "method"

    def __init__(self, model, optimizer=None):
        self.model = model
        self.embeddings = embedding_matrix(model)
        # Under mixed_float16 the optimizer is a LossScaleOptimizer: every gradient,
        # including a method's inner ones, is taken of the scaled loss and unscaled after.
        self.loss_scaler = optimizer if isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer) else None

    def loss(self, inputs, labels):
        return cross_entropy(labels, self.model(inputs, training=True))

    def gradient(self, tape, loss, sources):
        """``tape.gradient`` with loss scaling when the optimizer does it."""
        if self.loss_scaler is None:
            return tape.gradient(loss, sources)
        scale = tf.cast(self.loss_scaler.loss_scale, loss.dtype)
        grads = tape.gradient(loss, sources, output_gradients=scale)
        single = not isinstance(sources, (list, tuple))
        grads = self.loss_scaler.get_unscaled_gradients([grads] if single else list(grads))
        return grads[0] if single else grads

    def __call__(self, inputs, labels):
        """Return ``(loss, gradients of model.trainable_variables)`` for one batch."""
        raise NotImplementedError
