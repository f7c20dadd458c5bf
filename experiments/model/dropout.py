"""Dropout (and FreeLB's initial noise) from stateless random ops keyed by (seed, epoch, step).

Why: TensorFlow's stateful random ops (what tf_keras's ``Dropout`` uses) draw from a stream
that starts when a ``tf.function`` is traced, and under XLA from XLA's own generator, whose
seeds ``tf.random.set_seed`` does not reset. So the train step used to be traced afresh every
epoch right after ``tf.random.set_seed(seed, epoch)``, and with ``trainer.jit_compile=true``
reruns and resumed runs still did not repeat their dropout masks.

Here every draw is a pure function of its seed: random bits from ``tf.random.stateless_uniform``
with the Philox algorithm (named, so that the CPU, the GPU and XLA run the same generator
rather than each picking one; see ``uniform``), seeded by

    fold_in(fold_in(epoch key, step), draw)

where the epoch key comes from (run seed, epoch) (``StepKeys.start_epoch``, called by
``Trainer.fit`` before each epoch), ``step`` counts the train steps of the epoch (a variable
that the train step reads and then increments itself) and ``draw`` numbers the draws within one
step in the order the step makes them (a Python counter, fixed when the step is traced: FGM's
second forward pass gets masks of its own, as before). The key lives in two variables, so
setting it neither retraces nor recompiles the step; resuming at epoch e starts from exactly
the key an uninterrupted run had there; eager and traced steps draw the same masks.

bert4keras adds dropout in two places, and ``model.rewrites.prepare_model`` replaces both: the
``Dropout`` layers of its functional model (their ``call``, see ``dropout_call``) and the
``Dropout(...)`` layer that ``MultiHeadAttention.pay_attention_to`` builds inside ``call`` for
the attention probabilities (``model.rewrites.attention_call`` calls ``dropout`` instead,
or ``keyed_attention_dropout``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
import tf_keras as keras

# Named, not "auto_select" (the default), which picks "an algorithm based the device type", so that its
# outputs "may change when it is running on a different device" (stateless_uniform's docstring,
# tensorflow/python/ops/stateless_random_ops.py; random_ops_util.py, Algorithm.AUTO_SELECT).
ALG = "philox"


class StepKeys:
    """The (seed, epoch, step) key every stateless draw of a train step is derived from."""

    def __init__(self):
        self._epoch_key = None  # int32 [2]; XLA takes only int32 seeds (tf.random.fold_in's docstring)
        self._step = None  # int32 scalar: train steps taken in this epoch
        self._step_seed = None  # the current step's seed, while a step is being run or traced
        self._draws = 0  # draws made so far in the current step

    def _variables(self):
        if self._epoch_key is None:
            with tf.init_scope():  # created eagerly even if first needed while a step is traced
                self._epoch_key = tf.Variable([0, 0], dtype=tf.int32, trainable=False, name="dropout_epoch_key")
                self._step = tf.Variable(0, dtype=tf.int32, trainable=False, name="dropout_step")
        return self._epoch_key, self._step

    def start_epoch(self, seed: int, epoch: int, step: int = 0) -> None:
        """Key the coming epoch's draws by (seed, epoch), from its first step on (or from ``step``
        of the epoch: a pretraining resumed mid-epoch continues the key it had there)."""
        epoch_key, step_variable = self._variables()
        # A child of the (seed, epoch) sequence that shuffles the epoch's batches: independent of it.
        epoch_key.assign(np.random.SeedSequence([seed, epoch]).spawn(1)[0].generate_state(2).view(np.int32))
        step_variable.assign(step)

    @contextlib.contextmanager
    def step(self):
        """Around the forward and backward passes of one train step: their draws are numbered
        from 0, and the step count goes up by one afterwards."""
        epoch_key, step = self._variables()
        outer = self._step_seed, self._draws
        self._step_seed, self._draws = tf.random.experimental.stateless_fold_in(epoch_key, step.value(), ALG), 0
        try:
            yield
        finally:
            self._step_seed, self._draws = outer
        step.assign_add(1)

    def next_seed(self):
        """The seed of the next draw: within a step, a function of (seed, epoch, step, draw)."""
        if self._step_seed is None:  # outside a train step (a method called directly): the current key
            epoch_key, step = self._variables()
            step_seed = tf.random.experimental.stateless_fold_in(epoch_key, step.value(), ALG)
        else:
            step_seed = self._step_seed
        draw, self._draws = self._draws, self._draws + 1
        return tf.random.experimental.stateless_fold_in(step_seed, draw, ALG)


KEYS = StepKeys()  # one per process: the train steps of all trainers share it (one runs at a time)


def uniform(shape, minval: float = 0.0, maxval: float = 1.0):
    """float32 U[minval, maxval) of ``shape``: the next draw of the current step.

    Made from 24 random bits per number, exactly (bits * 2**-24), rather than by
    ``tf.random.stateless_uniform``: XLA's float conversion differs from the TF kernel's (the
    same seed gave other floats with ``jit_compile=True`` here), while Philox's raw bits agree, so
    a run draws the same dropout masks with and without XLA (checked on CPU).
    """
    bits = tf.random.stateless_uniform(shape, KEYS.next_seed(), minval=None, maxval=None, dtype=tf.uint32, alg=ALG)
    unit = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * 2.0**-24
    return unit if (minval, maxval) == (0.0, 1.0) else minval + (maxval - minval) * unit


def dropout(x, rate: float, training=None, noise_shape=None):
    """``x`` with elements dropped with probability ``rate`` and the rest scaled by 1 / (1 - rate)
    in training (``training`` None: Keras's call context decides, as for its Dropout layer)."""
    if not rate:
        return x

    def dropped():
        keep = uniform(tf.shape(x) if noise_shape is None else noise_shape) >= rate
        return tf.where(keep, x * tf.cast(1.0 / (1.0 - rate), x.dtype), tf.zeros([], x.dtype))

    return keras.backend.in_train_phase(dropped, lambda: tf.identity(x), training=training)


def dropout_call(layer):
    """A ``call`` for a Keras ``Dropout`` layer that draws from ``dropout``, not from the layer's generator."""

    def call(inputs, training=None):
        return dropout(inputs, layer.rate, training, layer._get_noise_shape(inputs))

    return call


class KeyedDropout:
    """What ``bert4keras.layers.Dropout(rate)`` builds inside ``keyed_attention_dropout``: a
    callable that drops through ``dropout`` (keyed by seed, epoch and step), not a Keras layer."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, x, training=None):
        return dropout(x, self.rate, training)


@contextlib.contextmanager
def keyed_attention_dropout():
    """Within the block, bert4keras's ``MultiHeadAttention.pay_attention_to`` drops its attention
    probabilities through ``dropout``: it builds that Dropout inline, by the module-level name
    ``Dropout`` of bert4keras/layers.py (``A = Dropout(self.attention_dropout)(A)``), so the name
    is bound to ``KeyedDropout`` for the block and restored after it, also on an error.
    ``model.rewrites.attention_call`` uses it for the attentions it leaves to bert4keras (NEZHA's
    relative positions, biases, other normalizations); tests/test_keyed_dropout.py checks it."""
    import bert4keras.layers

    original = bert4keras.layers.Dropout
    bert4keras.layers.Dropout = KeyedDropout
    try:
        yield
    finally:
        bert4keras.layers.Dropout = original
