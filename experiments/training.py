"""The training loop: a custom ``train_step`` (a method's gradients, then Adam), dev
accuracy after every epoch, a tqdm bar per epoch and a one-line summary per epoch."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tqdm.auto import tqdm

from experiments import data, dropout, monitor
from experiments.errors import UserError

log = logging.getLogger(__name__)

BATCH_SIGNATURE = (
    (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32)),
    tf.TensorSpec([None], tf.int32),
)


def set_precision(precision: str) -> None:
    """Keras' global dtype policy: float32, mixed_float16 or mixed_bfloat16 (set before building)."""
    keras.mixed_precision.set_global_policy(precision)


SQRT_2 = float(np.sqrt(2.0))
INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))


@tf.custom_gradient
def gelu(x):
    """bert4keras's erf GELU x Phi(x), bit for bit, with its first and second derivatives
    in closed form (Phi + x phi, and phi (2 - x^2)): autodiff through erf builds several
    times the elementwise ops, and gradient penalty differentiates the backward pass again."""
    cdf = 0.5 * (1.0 + tf.math.erf(x / SQRT_2))
    return x * cdf, lambda dy: _gelu_backward(dy, x, cdf)


@tf.custom_gradient
def _gelu_backward(dy, x, cdf):
    pdf = INV_SQRT_2PI * tf.exp(-0.5 * tf.square(x))
    slope = cdf + x * pdf

    def grad(ddx):  # cdf gets None: its dependence on x is in the second-derivative term
        return ddx * slope, ddx * dy * pdf * (2.0 - tf.square(x)), None

    return dy * slope, grad


def layer_norm_call(layer):
    """bert4keras's LayerNormalization.call with ``x * rsqrt(var + eps)`` for its
    ``divide_no_nan(x, sqrt(var + eps))``: the same function (eps > 0, so no division by
    zero), but the gradient w.r.t. the scale is one product instead of three divisions."""
    from bert4keras.layers import ScaleOffset

    def call(inputs):
        x = inputs - tf.reduce_mean(inputs, axis=-1, keepdims=True)
        x = x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + layer.epsilon)
        return ScaleOffset.call(layer, x)  # gamma, beta

    return call


def attention_call(layer):
    """bert4keras's MultiHeadAttention.pay_attention_to for plain BERT attention (no
    biases, softmax), computing the same function more cheaply to differentiate twice:
    batched matmuls in (batch, head, position, dim) layout instead of einsums that
    transpose their operands on every call; the 1/sqrt(d) scale applied to the queries
    (half the elements of the scores; a power of two for BERT's d = 64, so exact); and
    padded keys masked by adding -inf instead of ``where(mask, a, -inf)``, whose gradient
    (and GP's gradient of that) is a select and a broadcast per call rather than nothing."""
    import bert4keras.layers

    original = type(layer).pay_attention_to

    def pay_attention_to(inputs, mask=None, **kwargs):
        if kwargs.get("a_bias") or kwargs.get("p_bias") or layer.normalization != "softmax":
            # bert4keras's own attention, with the Dropout it builds inside drawing from dropout.dropout
            with mock.patch.object(bert4keras.layers, "Dropout", lambda rate: lambda x: dropout.dropout(x, rate)):
                return original(layer, inputs, mask, **kwargs)
        q, k, v = (tf.transpose(t, [0, 2, 1, 3]) for t in inputs[:3])  # b, h, j, d
        if layer.attention_scale:
            q = q * tf.cast(layer.key_size**-0.5, q.dtype)
        a = tf.matmul(q, k, transpose_b=True)
        keys = mask[1] if mask else None  # (b, k): the keys' padding
        if keys is not None:  # a constant of the batch: no gradient flows into it
            a = a + tf.cast(tf.where(tf.cast(keys, tf.bool), 0.0, -np.inf), a.dtype)[:, None, None, :]
        probs = tf.nn.softmax(a, axis=-1)
        if layer.attention_dropout:  # keyed by (seed, epoch, step), see experiments/dropout.py
            probs = dropout.dropout(probs, layer.attention_dropout, kwargs.get("training"))
        return tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), a

    return pay_attention_to


def prepare_model(model, precision: str = "float32") -> None:
    """Adjust a built bert4keras classifier in place, before training (run.py, bench.py):

    - its GELUs, LayerNorms and attentions become the equivalent, cheaper-to-differentiate
      ``gelu``, ``layer_norm_call`` and ``attention_call`` above: gradient penalty's double
      backward spends its time beyond 2x a baseline step in exactly such ops (README, Speed);
    - under a mixed policy its LayerNorms compute in float32, as Keras's own does: in
      float16 bert4keras's epsilon 1e-12 rounds to 0 and x**2 overflows above |x| = 256;
    - its Dropout layers (and the attentions' dropout) draw from stateless random ops keyed by
      (seed, epoch, step), the same with and without XLA (experiments/dropout.py).
    """
    from bert4keras.layers import FeedForward, LayerNormalization, MultiHeadAttention

    for layer in model.layers:
        if isinstance(layer, MultiHeadAttention):
            layer.pay_attention_to = attention_call(layer)
        elif isinstance(layer, LayerNormalization) and layer.zero_mean and layer.unit_variance and not layer.conditional:
            layer.call = layer_norm_call(layer)
            if precision != "float32":
                layer._set_dtype_policy(keras.mixed_precision.Policy("float32"))  # read at every call
        elif isinstance(layer, FeedForward) and layer.i0_dense.activation.__name__ == "gelu_erf":
            layer.i0_dense.activation = gelu
        elif isinstance(layer, keras.layers.Dropout):
            layer.call = dropout.dropout_call(layer)


def make_optimizer(learning_rate: float, precision: str, jit_compile: bool = False):
    """Adam, XLA-compiled only when the train step is (``trainer.jit_compile``).

    tf_keras's optimizers default to ``jit_compile=True`` and keep it whenever a GPU is visible
    (``Optimizer.__init__`` in tf_keras/src/optimizers/optimizer.py: ``jit_compile and
    tf_utils.can_jit_compile() and tf.config.list_physical_devices("GPU")``); every update then
    goes through ``_update_step_xla``, a ``tf.function(jit_compile=True)``. On a GPU that needs
    ptxas/libdevice even with ``trainer.jit_compile=false``, and compiles again for every new
    number of unique embedding rows in a batch (the sparse gradient's shape). So the setting
    follows ours; a LossScaleOptimizer delegates its updates to this inner optimizer.
    """
    optimizer = keras.optimizers.Adam(learning_rate, jit_compile=jit_compile)
    if precision == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


@contextlib.contextmanager
def out_of_memory_advice(cfg):
    """Within the block, running out of device memory (``tf.errors.ResourceExhaustedError``, from
    TensorFlow's allocator or from XLA) is a UserError: one line saying which settings to lower."""
    try:
        yield
    except tf.errors.ResourceExhaustedError as err:
        lines = (err.message or "").strip().splitlines()
        what = lines[0][:160] if lines else "ResourceExhaustedError"
        precision = cfg.trainer.precision
        cheaper = ("" if precision != "float32" else
                   ", or trainer.precision=mixed_bfloat16 (Ampere and newer) / mixed_float16 (older GPUs)")
        raise UserError(
            f"out of memory ({what}): lower trainer.batch_size={cfg.trainer.batch_size} (halve it), "
            f"task.max_length={cfg.task.max_length} or trainer.eval_batch_size={cfg.trainer.eval_batch_size}"
            f"{cheaper} (now trainer.precision={precision}); or free the GPU of other processes") from None


@dataclass
class Dataset:
    token_ids: list[np.ndarray]
    labels: np.ndarray
    segment_ids: list[np.ndarray] | None = None  # None: all 0 (single texts); pairs: 0 then 1

    def __len__(self):
        return len(self.token_ids)


@dataclass
class Trainer:
    model: keras.Model
    method: object
    optimizer: object
    batch_size: int
    eval_batch_size: int = 128
    jit_compile: bool = False
    progress: bool | None = None  # None: a bar only when writing to a terminal
    bucket_by_length: bool = False  # batches of similar lengths (see data.batch_order)
    pad_to_multiple_of: int = 1  # pad lengths up to a multiple of this: few shapes for XLA
    patience: int | None = None  # early stopping: epochs without a better dev accuracy; None: off
    board: monitor.TensorBoard | None = None  # per-step and per-epoch scalars (monitor.py)
    history: list[dict] = field(default_factory=list)
    # How fit ended, for the record: {"stopped_early": bool, "stopped_at_epoch": e} or, when a
    # loss was not finite, {"diverged_at": {...}, "partial_epoch": {...}} (monitor.Diverged).
    ending: dict = field(default_factory=dict)

    def __post_init__(self):
        def logits_step(inputs):
            return self.model(inputs, training=False)

        self.logits_step = tf.function(logits_step, input_signature=BATCH_SIGNATURE[:1], jit_compile=self.jit_compile)
        self.train_step = self.make_train_step()

    def make_train_step(self):
        """The train step, traced once: its random draws (dropout, FreeLB's noise) are keyed by
        the (seed, epoch) that ``fit`` sets before each epoch and the step's number in the epoch.

        It returns scalar tensors: the loss, the learning rate the update used, and the
        method's own quantities (``Method.quantities``), left on the device (monitor.StepLog)."""

        def train_step(inputs, labels):
            with dropout.KEYS.step():
                loss, grads = self.method(inputs, labels)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            # After the update: with a schedule this is the rate it used (tf_keras's
            # Optimizer.apply_gradients sets _current_learning_rate from the iterations first).
            rate = getattr(self.optimizer, "inner_optimizer", self.optimizer).learning_rate
            return {"loss": loss, "learning_rate": tf.identity(rate), **self.method.quantities}

        return tf.function(train_step, input_signature=BATCH_SIGNATURE, jit_compile=self.jit_compile)

    def train_epoch(self, train: Dataset, rng: np.random.Generator, desc: str, step_log: monitor.StepLog) -> dict:
        """One epoch; raises ``monitor.Diverged`` at the first read that finds a non-finite loss."""
        start = time.perf_counter()
        disable = None if self.progress is None else not self.progress  # None: only on a terminal
        padding = data.PaddingStats()
        batches = data.Waiting(data.prefetch(data.batches(train.token_ids, train.labels, self.batch_size, rng,
                                                          self.bucket_by_length, self.pad_to_multiple_of, padding,
                                                          train.segment_ids)))
        total = data.num_batches(len(train), self.batch_size)
        with tqdm(total=total, desc=desc, unit="batch", disable=disable, leave=False) as bar:
            for inputs, labels in batches:
                step_log.add(len(labels), self.train_step(inputs, labels))
                if step_log.due():
                    step_log.read(all_steps=False)
                    bar.update(step_log.steps - bar.n)
                    bar.set_postfix(loss=f"{step_log.mean_loss:.4f}", refresh=False)
            step_log.read()
            bar.update(step_log.steps - bar.n)
        seconds = time.perf_counter() - start
        means = {k: v for k, v in step_log.summary().items() if k != "steps"}
        return {**means, "train_seconds": seconds, "samples_per_second": step_log.samples / seconds,
                "padding_efficiency": padding.efficiency, "input_wait_seconds": batches.seconds}

    def predict(self, token_ids: list[np.ndarray], segment_ids: list[np.ndarray] | None = None) -> np.ndarray:
        """Class index of each sequence (argmax of the logits).

        Batches go in length order (the same sequences are scored, with less padding), the
        next one padded while the current one runs, and the answers are read from the device
        once at the end; they come back in input order."""
        positions = np.arange(len(token_ids))  # ride along as the "labels": batches are out of order
        chosen, classes = [], []
        for inputs, rows in data.prefetch(data.batches(token_ids, positions, self.eval_batch_size,
                                                       bucket_by_length=True,
                                                       pad_to_multiple_of=self.pad_to_multiple_of,
                                                       segment_ids=segment_ids)):
            chosen.append(rows)
            classes.append(tf.argmax(self.logits_step(inputs), axis=-1))  # stays on the device
        out = np.zeros(len(token_ids), dtype=np.int64)
        if classes:
            out[np.concatenate(chosen)] = tf.concat(classes, 0).numpy()
        return out

    def evaluate(self, dev: Dataset) -> float:
        return float(np.mean(self.predict(dev.token_ids, dev.segment_ids) == dev.labels))

    def fit(self, train: Dataset, dev: Dataset, epochs: int, seed: int, on_epoch_end=None):
        """Train up to ``epochs`` epochs, continuing after ``self.history`` when resuming;
        stop early after ``patience`` epochs without a better dev accuracy, and at once
        (``self.ending["diverged_at"]``) at a non-finite loss.

        Everything random in epoch e (shuffle order, dropout) depends only on (seed, e), so
        a run resumed from a saved epoch computes what an uninterrupted one would.
        """
        steps_per_epoch = data.num_batches(len(train), self.batch_size)
        self.ending = {"stopped_early": False}
        for epoch in range(len(self.history), epochs):
            if self.patience is not None and monitor.epochs_without_improvement(self.history) >= self.patience:
                break  # (a resumed run that had already met its patience)
            epoch_seed = np.random.SeedSequence([seed, epoch])
            dropout.KEYS.start_epoch(seed, epoch)  # no retrace: the key is a variable of the step
            step_log = monitor.StepLog(epoch + 1, epoch * steps_per_epoch + 1, self.board)
            try:
                stats = self.train_epoch(train, np.random.default_rng(epoch_seed), f"epoch {epoch + 1}/{epochs}",
                                         step_log)
            except monitor.Diverged as diverged:
                log.warning("epoch %d/%d: the loss is not finite at step %d (%s); the run stops here, "
                                   "recorded as diverged", epoch + 1, epochs, diverged.at["step"], diverged.at["loss"])
                self.ending = {"diverged_at": diverged.at, "partial_epoch": {"epoch": epoch + 1, **diverged.partial}}
                break
            finally:
                if self.board is not None:
                    self.board.flush()
            eval_start = time.perf_counter()
            dev_acc = self.evaluate(dev)
            entry = {"epoch": epoch + 1, "dev_acc": dev_acc, **stats,
                     "eval_seconds": time.perf_counter() - eval_start}
            entry["seconds"] = entry["train_seconds"] + entry["eval_seconds"]
            improved = all(dev_acc > h["dev_acc"] for h in self.history)
            self.history.append(entry)
            if self.board is not None:
                self.board.scalars("dev", (epoch + 1) * steps_per_epoch, {"accuracy": dev_acc})
                self.board.flush()
            best = max(h["dev_acc"] for h in self.history)
            log.info("epoch %d/%d  loss %.4f  dev_acc %.4f  best %.4f  %.0f samples/s  padding eff. %.2f  "
                            "%.1fs", epoch + 1, epochs, stats["train_loss"], dev_acc, best,
                            stats["samples_per_second"], stats["padding_efficiency"], entry["seconds"])
            if on_epoch_end is not None:
                on_epoch_end(self.history, improved)
        if self.patience is not None and len(self.history) < epochs and "diverged_at" not in self.ending:
            self.ending = {"stopped_early": True, "stopped_at_epoch": len(self.history)}
            log.info("stopped early after epoch %d: no better dev accuracy for %d epochs",
                            len(self.history), self.patience)
        return self.history
