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
