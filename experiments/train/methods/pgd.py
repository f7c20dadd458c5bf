"""PGD on the token-embedding matrix (Madry et al., 2018, "Towards Deep Learning Models
Resistant to Adversarial Attacks"), in the common NLP recipe: the widely copied PyTorch
``PGD`` class that attacks the embedding weights, with K=3, alpha=0.3, epsilon=1.

Per step, with E0 the embedding matrix and r the total perturbation (r = 0 at first):
  g = dL/dE at the clean point (and the clean gradients of every variable are kept);
  K times: r = Proj(r + alpha * g / ||g||_F), Proj scaling r back onto the Frobenius ball
           ||r||_F <= epsilon; E = E0 + r; g = dL/dE at that point;
  the update uses the clean gradients plus the gradients at the last point (after K ascent
  steps, K + 1 forward/backward passes in all), then E = E0 again.

Sparse as in fgm.py: every gradient's rows are the batch's unique tokens (the same set at
every point), so r is kept as those rows only and norms over them are Frobenius norms of
the dense matrices. E is set to E0 + r by overwriting those rows from a copy of their
original values, and restored from that copy, so the matrix comes back bit-exact (adding
and subtracting deltas would not) and the ball is measured around the true E0.
"""

import tensorflow as tf

from experiments.errors import UserError
from experiments.train.methods.base import Method, add_gradients, summed_rows


class PGD(Method):
    def __init__(self, model, optimizer=None, epsilon: float = 1.0, alpha: float = 0.3, steps: int = 3):
        super().__init__(model, optimizer)
        if steps < 1 or alpha <= 0:
            raise UserError(f"method.steps={steps}, method.alpha={alpha}: PGD needs steps >= 1 and alpha > 0")
        self.epsilon, self.alpha, self.steps = epsilon, alpha, steps

    def __call__(self, inputs, labels):
        with tf.GradientTape() as tape:
            clean_loss = self.loss(inputs, labels)
        clean_grads = self.gradient(tape, clean_loss, self.model.trainable_variables)
        rows, g = summed_rows(self.embedding_gradient(clean_grads))
        original = tf.gather(self.embeddings, rows)  # E0 on the batch's rows: the ball's centre
        r = tf.zeros_like(g)
        grad_norm = tf.norm(g)
        for step in range(self.steps):
            r = r + self.alpha * g / (tf.norm(g) + 1e-8)
            r = r * tf.minimum(1.0, self.epsilon / (tf.norm(r) + 1e-12))  # back onto the eps-ball
            self.embeddings.scatter_update(tf.IndexedSlices(original + r, rows))
            with tf.GradientTape() as tape:
                loss = self.loss(inputs, labels)
            if step < self.steps - 1:  # an inner point: only the next ascent direction is needed
                # Same token ids, so tf.unique gives the same rows in the same order as above.
                _, g = summed_rows(self.gradient(tape, loss, self.embeddings))
            else:
                grads = self.gradient(tape, loss, self.model.trainable_variables)
        self.embeddings.scatter_update(tf.IndexedSlices(original, rows))
        self.quantities = {"embedding_grad_norm": grad_norm, "perturbation_norm": tf.norm(r)}
        # The update minimises clean + adversarial loss; that sum is the loss reported.
        return clean_loss + loss, add_gradients(clean_grads, grads)
