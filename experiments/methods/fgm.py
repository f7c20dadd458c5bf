"""FGM on the token-embedding matrix, the blog's variant (kexue.fm/archives/7234).

Per step: g = dL/dE for the whole embedding matrix E; E += eps * g / ||g||_F; take the
loss and gradients again; E -= that delta; the update uses the perturbed gradients only.

The gradient of an embedding lookup is sparse (IndexedSlices, one row per position), so
the perturbation is built on the batch's unique token rows only: no vocab x hidden
tensor is formed. Summing duplicate rows first makes its norm the Frobenius norm of the
dense gradient, so delta equals the blog's dense formula.

``accumulate_clean=True`` is the widespread PyTorch recipe instead (loss.backward() before
the attack, then the adversarial backward adds to the same .grad): the update uses the
clean plus the perturbed gradients, and the loss returned is the sum it minimises.
"""

import tensorflow as tf

from experiments.methods.base import Method, add_gradients, summed_rows


def fgm_delta(grad: tf.IndexedSlices, epsilon: float) -> tf.IndexedSlices:
    """eps * g / (||g||_F + 1e-8) as rows of the embedding matrix."""
    rows, summed = summed_rows(grad)
    delta = epsilon * summed / (tf.norm(summed) + 1e-8)
    return tf.IndexedSlices(delta, rows, grad.dense_shape)


class FGM(Method):
    name = "fgm"

    def __init__(self, model, optimizer=None, epsilon: float = 0.5, accumulate_clean: bool = False):
        super().__init__(model, optimizer)
        self.epsilon = epsilon
        self.accumulate_clean = accumulate_clean

    def __call__(self, inputs, labels):
        with tf.GradientTape() as tape:
            clean_loss = self.loss(inputs, labels)
        if self.accumulate_clean:  # one backward gives the clean update and the attack direction
            clean_grads = self.gradient(tape, clean_loss, self.model.trainable_variables)
            delta = fgm_delta(self.embedding_gradient(clean_grads), self.epsilon)
        else:
            delta = fgm_delta(self.gradient(tape, clean_loss, self.embeddings), self.epsilon)
        self.embeddings.scatter_add(delta)
        with tf.GradientTape() as tape:
            loss = self.loss(inputs, labels)
        grads = self.gradient(tape, loss, self.model.trainable_variables)
        self.embeddings.scatter_sub(delta)
        if self.accumulate_clean:
            return clean_loss + loss, add_gradients(clean_grads, grads)
        return loss, grads
