"""The optimizer and the numeric precision of a run, and what to do when the device runs out
of memory."""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tf_keras as keras

from experiments.errors import UserError


def set_precision(precision: str) -> None:
    """Keras' global dtype policy: float32, mixed_float16 or mixed_bfloat16 (set before building)."""
    keras.mixed_precision.set_global_policy(precision)


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
def out_of_memory_advice(settings, max_length: int, group: str = "trainer", length_key: str = "task.max_length"):
    """Within the block, running out of device memory (``tf.errors.ResourceExhaustedError``, from
    TensorFlow's allocator or from XLA) is a UserError: one line saying which settings to lower.
    ``settings``: the ``group`` config with the batch sizes (and precision), cfg.trainer for a run,
    cfg.pretrain for a pretraining; ``max_length`` is ``length_key``'s value."""
    try:
        yield
    except tf.errors.ResourceExhaustedError as err:
        lines = (err.message or "").strip().splitlines()
        what = lines[0][:160] if lines else "ResourceExhaustedError"
        precision = settings.get("precision", "float32")
        cheaper = (
            ""
            if precision != "float32" or group != "trainer"
            else ", or trainer.precision=mixed_bfloat16 (Ampere and newer) / mixed_float16 (older GPUs)"
        )
        now = f" (now trainer.precision={precision})" if group == "trainer" else ""
        raise UserError(
            f"out of memory ({what}): lower {group}.batch_size={settings.batch_size} (halve it), "
            f"{length_key}={max_length} or {group}.eval_batch_size={settings.eval_batch_size}"
            f"{cheaper}{now}; or free the GPU of other processes"
        ) from None


def make_adamw(learning_rate, model, weight_decay: float = 0.01, epsilon: float = 1e-6, clip_norm: float | None = 1.0):
    """BERT's pretraining optimizer (google-research/bert optimization.py: AdamWeightDecayOptimizer,
    beta 0.9 / 0.999, epsilon 1e-6, weight decay 0.01 except on LayerNorm weights and biases,
    gradients clipped to a global norm of 1) as tf_keras's AdamW.

    Two differences from Google's: tf_keras's Adam corrects the moments' bias (Google's does not),
    and it decays a weight by ``lr * wd * w`` before the Adam step rather than adding ``wd * w`` to
    the step. Not decayed: every weight of a LayerNorm and every bias (each Dense bias and the MLM
    head's output bias, ``MLM-Bias``), chosen by layer, not by name. ``jit_compile=False``: see
    ``make_optimizer`` (tf_keras would XLA-compile the update on a GPU otherwise)."""
    optimizer = keras.optimizers.AdamW(
        learning_rate,
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=epsilon,
        global_clipnorm=clip_norm,
        jit_compile=False,
    )
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer


def no_decay_variables(model) -> list:
    """The trainable variables BERT's weight decay skips: LayerNorm weights and biases."""
    from bert4keras.layers import LayerNormalization

    skip = []
    for layer in model.layers:
        for weight in layer.trainable_weights:
            last = weight.name.split("/")[-1].split(":")[0]
            if isinstance(layer, LayerNormalization) or last in ("bias", "beta"):
                skip.append(weight)
    return skip
