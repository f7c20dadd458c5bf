"""The training loop: a custom ``train_step`` (a method's gradients, then Adam), dev
accuracy after every epoch, a tqdm bar per epoch and a one-line summary per epoch."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tqdm.auto import tqdm

from experiments import data

log = logging.getLogger(__name__)

BATCH_SIGNATURE = (
    (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32)),
    tf.TensorSpec([None], tf.int32),
)


def set_precision(precision: str) -> None:
    """Keras' global dtype policy: float32, mixed_float16 or mixed_bfloat16 (set before building)."""
    keras.mixed_precision.set_global_policy(precision)


def make_optimizer(learning_rate: float, precision: str):
    optimizer = keras.optimizers.Adam(learning_rate)
    if precision == "mixed_float16":  # float16 gradients underflow without dynamic loss scaling
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


@dataclass
class Dataset:
    token_ids: list[np.ndarray]
    labels: np.ndarray

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
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        def logits_step(inputs):
            return self.model(inputs, training=False)

        self.logits_step = tf.function(logits_step, input_signature=BATCH_SIGNATURE[:1], jit_compile=self.jit_compile)
        self.train_step = self.make_train_step()

    def make_train_step(self):
        """A freshly traced train step. Dropout draws from TF's stateful random ops, whose
        seeds are fixed when the step is traced and whose streams start when it is: so a
        step traced right after ``tf.random.set_seed(s)`` draws a stream that depends on s only."""

        def train_step(inputs, labels):
            loss, grads = self.method(inputs, labels)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss

        return tf.function(train_step, input_signature=BATCH_SIGNATURE, jit_compile=self.jit_compile)

    def train_epoch(self, train: Dataset, rng: np.random.Generator, desc: str) -> dict:
        start, seen, loss_sum = time.perf_counter(), 0, 0.0
        steps = data.num_batches(len(train), self.batch_size)
        disable = None if self.progress is None else not self.progress  # None: only on a terminal
        with tqdm(total=steps, desc=desc, unit="batch", disable=disable, leave=False) as bar:
            for inputs, labels in data.batches(train.token_ids, train.labels, self.batch_size, rng):
                loss = float(self.train_step(inputs, labels))
                seen += len(labels)
                loss_sum += loss * len(labels)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False)
        seconds = time.perf_counter() - start
        return {"train_loss": loss_sum / seen, "train_seconds": seconds, "samples_per_second": seen / seconds}

    def predict(self, token_ids: list[np.ndarray]) -> np.ndarray:
        """Class index of each sequence (argmax of the logits)."""
        dummy = np.zeros(len(token_ids), dtype=np.int32)
        out = [np.argmax(self.logits_step(inputs).numpy(), axis=-1)
               for inputs, _ in data.batches(token_ids, dummy, self.eval_batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def evaluate(self, dev: Dataset) -> float:
        return float(np.mean(self.predict(dev.token_ids) == dev.labels))

    def fit(self, train: Dataset, dev: Dataset, epochs: int, seed: int, on_epoch_end=None):
        """Train up to ``epochs`` epochs, continuing after ``self.history`` when resuming.

        Everything random in epoch e (shuffle order, dropout) depends only on (seed, e), so
        a run resumed from a saved epoch computes what an uninterrupted one would.
        """
        for epoch in range(len(self.history), epochs):
            epoch_seed = np.random.SeedSequence([seed, epoch])
            tf.random.set_seed(int(epoch_seed.generate_state(1)[0]))
            self.train_step = self.make_train_step()
            stats = self.train_epoch(train, np.random.default_rng(epoch_seed), desc=f"epoch {epoch + 1}/{epochs}")
            eval_start = time.perf_counter()
            dev_acc = self.evaluate(dev)
            entry = {"epoch": epoch + 1, "dev_acc": dev_acc, **stats,
                     "eval_seconds": time.perf_counter() - eval_start}
            entry["seconds"] = entry["train_seconds"] + entry["eval_seconds"]
            improved = all(dev_acc > h["dev_acc"] for h in self.history)
            self.history.append(entry)
            best = max(h["dev_acc"] for h in self.history)
            log.info("epoch %d/%d  loss %.4f  dev_acc %.4f  best %.4f  %.0f samples/s  %.1fs",
                     epoch + 1, epochs, stats["train_loss"], dev_acc, best, stats["samples_per_second"],
                     entry["seconds"])
            if on_epoch_end is not None:
                on_epoch_end(self.history, improved)
        return self.history
