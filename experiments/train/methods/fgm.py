"""FGM on the token-embedding matrix, the blog's variant (kexue.fm/archives/7234).

Per step: g = dL/dE for the whole embedding matrix E; E += eps * g / ||g||_F; take the
loss and gradients again; E is put back as it was; the update uses the perturbed gradients only.

The gradient of an embedding lookup is sparse (IndexedSlices, one row per position), so
the perturbation is built on the batch's unique token rows only: no vocab x hidden
tensor is formed. Summing duplicate rows first makes its norm the Frobenius norm of the
dense gradient, so delta equals the blog's dense formula.

``accumulate_clean=True`` is the widespread PyTorch recipe instead (loss.backward() before
the attack, then the adversarial backward adds to the same .grad): the update uses the
clean plus the perturbed gradients, and the loss returned is the sum it minimises.

Dropout in the attack pass (``attack_dropout``)
-----------------------------------------------
The blog's code takes g with dropout OFF and the update with dropout on. Read from the
sources it ran on (Keras 2.3.1, tag 2.3.1 = commit f295e8ee of keras-team/keras, on
TensorFlow 1.x; read, not run: no TF 1.x here):

* The blog's ``adversarial_training`` builds ``embedding_gradients = K.function(inputs=
  model._feed_inputs + model._feed_targets + model._feed_sample_weights, outputs=[grads])``:
  the learning phase is not among its inputs.
* ``keras/engine/training.py``, ``Model._make_train_function``: the train function's inputs
  are the same three lists ``+ [K.learning_phase()]`` when ``_uses_dynamic_learning_phase()``
  (the model has Dropout: ``keras/layers/core.py`` ``Dropout.call`` ->
  ``K.in_train_phase`` marks its output ``_uses_learning_phase``, which
  ``keras/engine/network.py`` ``Network.uses_learning_phase`` reads off the outputs).
  The blog's script (bert4keras ``examples/task_iflytek_adversarial_training.py``) trains
  with ``model.fit_generator``, which calls ``Model.train_on_batch``; that feeds ``ins = x + y +
  sample_weights + [1]``; ``keras/engine/training_arrays.py`` ``fit_loop`` likewise appends
  the flag ``1`` to ``fit_inputs`` and keeps it unsliced at the end of every ``ins_batch``.
  The blog's ``train_function(inputs)`` passes that same list to ``embedding_gradients``.
* ``keras/backend/tensorflow_backend.py``: ``function`` and ``learning_phase`` delegate to
  ``tensorflow.python.keras.backend`` (``tf_keras_backend.function``, ``.learning_phase()``).
  There (TF 1.x ``tensorflow/python/keras/backend.py``), ``learning_phase()`` ->
  ``symbolic_learning_phase()`` creates ``array_ops.placeholder_with_default(False,
  shape=(), name='keras_learning_phase')``, and ``GraphExecutionFunction.__call__`` feeds
  ``for tensor, value in zip(self.inputs, inputs)``: ``zip`` stops at the shorter list, so the
  trailing ``1`` is dropped, the placeholder is not fed and takes its default, False (test).
  Keras 2.2.4's own ``Function._call`` / ``learning_phase`` do the same (same ``zip``,
  ``tf.placeholder_with_default(False, ...)``); today's tf_keras keeps both
  (``tf_keras/src/backend.py``: ``_default_learning_phase``, ``GraphExecutionFunction.__call__``).
* The gradient graph ``K.gradients(model.total_loss, [embeddings])`` goes through every
  ``Dropout`` layer's ``K.switch`` on that placeholder, so the attack direction is the
  inference-mode gradient; the old train function, fed the ``1``, then computes the update
  on the perturbed embeddings with dropout on.

``attack_dropout=False`` (the default) does the same here: g from ``model(..., training=
False)``, the update's pass with ``training=True``. ``attack_dropout=True`` is the PyTorch
recipe (``model.train()`` throughout: g with dropout on), which this class did before.
With ``accumulate_clean=True`` the attack gradient comes from the clean pass, which is also
the update's and so runs with dropout on: ``attack_dropout`` must then be true (configs/
method/fgm.yaml makes it follow ``accumulate_clean`` unless set). Either way a step costs
two forward/backward passes.
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
