"""FGM on the token-embedding matrix, the blog's variant (kexue.fm/archives/7234).

Per step: g = dL/dE for the whole embedding matrix E; E += eps * g / ||g||_F; the loss and
gradients again; E put back; the update uses the perturbed gradients only (``accumulate_clean=True``:
the clean plus the perturbed ones, the PyTorch recipe). Only the batch's unique token rows are
touched, duplicates summed first, so delta equals the blog's dense formula without a vocab x hidden
tensor. ``attack_dropout=False`` takes g in inference mode, as the blog's Keras code did (the
Keras 2.3.1 / TF 1.x sources that decide it: docs/methods.md, "FGM's attack pass in the blog's code").
"""

import tensorflow as tf

from experiments.errors import UserError
from experiments.train.methods.base import Method, add_gradients, summed_rows


def fgm_delta(grad: tf.IndexedSlices, epsilon: float) -> tf.IndexedSlices:
    """eps * g / (||g||_F + 1e-8) as rows of the embedding matrix."""
    rows, summed = summed_rows(grad)
    delta = epsilon * summed / (tf.norm(summed) + 1e-8)
    return tf.IndexedSlices(delta, rows, grad.dense_shape)


class FGM(Method):
    def __init__(
        self,
        model,
        optimizer=None,
        epsilon: float = 0.5,
        accumulate_clean: bool = False,
        attack_dropout: bool | None = None,
    ):
        if attack_dropout is None:  # as in configs/method/fgm.yaml: follow accumulate_clean
            attack_dropout = accumulate_clean
        if accumulate_clean and not attack_dropout:
            raise UserError(
                "method.attack_dropout=false contradicts method.accumulate_clean=true (its attack "
                "gradient comes from the clean pass, which runs with dropout on): drop "
                "method.attack_dropout or set it true"
            )
        super().__init__(model, optimizer)
        self.epsilon = epsilon
        self.accumulate_clean = accumulate_clean
        self.attack_dropout = attack_dropout

    def attack(self, inputs, labels) -> tf.IndexedSlices:
        """The perturbation from a clean pass of its own, dropout on iff ``attack_dropout``."""
        with tf.GradientTape() as tape:
            clean_loss = self.loss(inputs, labels, training=self.attack_dropout)
        return self.delta(self.gradient(tape, clean_loss, self.embeddings))

    def delta(self, grad: tf.IndexedSlices) -> tf.IndexedSlices:
        """``fgm_delta``, noting the norms of the embedding gradient and of the perturbation
        (the repeated tf.unique is one op after Grappler's or XLA's common-subexpression pass)."""
        delta = fgm_delta(grad, self.epsilon)
        self.quantities = {
            "embedding_grad_norm": tf.norm(summed_rows(grad)[1]),
            "perturbation_norm": tf.norm(delta.values),
        }
        return delta

    def __call__(self, inputs, labels):
        if self.accumulate_clean:  # one backward gives the clean update and the attack direction
            with tf.GradientTape() as tape:
                clean_loss = self.loss(inputs, labels)
            clean_grads = self.gradient(tape, clean_loss, self.model.trainable_variables)
            delta = self.delta(self.embedding_gradient(clean_grads))
        else:
            delta = self.attack(inputs, labels)
        # Restored from a copy of the touched rows, not by subtracting delta: (e + d) - d is not
        # always e in floating point, and the matrix must come back bit for bit (make doctor checks).
        original = tf.gather(self.embeddings, delta.indices)
        self.embeddings.scatter_add(delta)
        with tf.GradientTape() as tape:
            loss = self.loss(inputs, labels)
        grads = self.gradient(tape, loss, self.model.trainable_variables)
        self.embeddings.scatter_update(tf.IndexedSlices(original, delta.indices))
        if self.accumulate_clean:
            return clean_loss + loss, add_gradients(clean_grads, grads)
        return loss, grads
