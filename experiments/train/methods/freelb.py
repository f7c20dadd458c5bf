"""FreeLB (Zhu et al., ICLR 2020) as in the official code (github.com/zhuchen03/FreeLB,
run_glue_freelb.py), l2 norm: a per-example delta on the looked-up token embeddings, K ascent
steps, the update the mean of the K steps' gradients.

Per step: delta_0 = 0, or with adv_init_mag > 0 uniform noise on real tokens scaled to
adv_init_mag / sqrt(real tokens * hidden) per example; for t = 1..K the loss and all gradients at
lookup + delta_{t-1} (g += grad_t / K), and for t < K delta_t = delta_{t-1} + adv_lr * d / ||d||
per example, projected back to adv_max_norm when > 0. The loss reported is the mean of the K
losses. The hook, norms, mask, ascent and projection are ``experiments.train.perturb``'s. The
defaults and what is not reproduced (shared dropout masks, linf): docs/methods.md, FreeLB.
"""

import tensorflow as tf

from experiments.errors import UserError
from experiments.model import dropout
from experiments.train.methods.base import Method, add_gradients, scale_gradients
from experiments.train.perturb import ascent_step, per_example_norm, project, token_embeddings_plus, token_mask


class FreeLB(Method):
    def __init__(
        self,
        model,
        optimizer=None,
        adv_steps: int = 3,
        adv_lr: float = 0.1,
        adv_init_mag: float = 0.1,
        adv_max_norm: float = 0.0,
    ):
        super().__init__(model, optimizer)
        if adv_steps < 1 or min(adv_lr, adv_init_mag, adv_max_norm) < 0:
            raise UserError(
                f"method.adv_steps={adv_steps} must be >= 1 and method.adv_lr={adv_lr}, "
                f"adv_init_mag={adv_init_mag}, adv_max_norm={adv_max_norm} >= 0"
            )
        self.adv_steps, self.adv_lr = adv_steps, adv_lr
        self.adv_init_mag, self.adv_max_norm = adv_init_mag, adv_max_norm

    def _noise(self, shape):
        return dropout.uniform(shape, -1.0, 1.0)  # keyed by (seed, epoch, step) as dropout is

    def initial_delta(self, real):
        """delta_0 for the mask ``real`` (batch x seq x 1, 1.0 on real tokens)."""
        shape = tf.concat([tf.shape(real)[:2], [self.embeddings.shape[-1]]], 0)
        if self.adv_init_mag <= 0:
            return tf.zeros(shape)
        size = tf.reduce_sum(real, axis=[1, 2], keepdims=True) * float(self.embeddings.shape[-1])
        return self._noise(shape) * real * (self.adv_init_mag / tf.sqrt(size))

    def __call__(self, inputs, labels):
        real = token_mask(inputs[0])  # id 0 is [PAD]
        delta = self.initial_delta(real)
        variables = self.model.trainable_variables
        grads, total_loss = None, 0.0
        for step in range(self.adv_steps):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                with token_embeddings_plus(self.model, delta):
                    loss = self.loss(inputs, labels)
            *step_grads, delta_grad = self.gradient(tape, loss, [*variables, delta])
            step_grads = scale_gradients(step_grads, 1.0 / self.adv_steps)
            grads = step_grads if grads is None else add_gradients(grads, step_grads)
            total_loss += loss / self.adv_steps
            if step == self.adv_steps - 1:
                break
            delta = delta + ascent_step(delta_grad, real, self.adv_lr)
            if self.adv_max_norm > 0:
                delta = project(delta, self.adv_max_norm)
        self.quantities = {"perturbation_norm": tf.reduce_mean(per_example_norm(delta))}  # the last pass's delta
        return total_loss, grads
