"""The training loop: a custom ``train_step`` (a method's gradients, then Adam), dev
accuracy after every epoch, a tqdm bar per epoch and a one-line summary per epoch."""

from __future__ import annotations

import logging
import time
from dataclasses import KW_ONLY, dataclass, field

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tqdm.auto import tqdm

from experiments.data import batching
from experiments.data.batching import Dataset
from experiments.model import dropout
from experiments.train import monitor

log = logging.getLogger(__name__)

BATCH_SIGNATURE = (
    (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32)),
    tf.TensorSpec([None], tf.int32),
)


@dataclass
class Trainer:
    """Fits ``model`` with ``method``'s gradients and ``optimizer``; the options after ``batch_size``
    are keyword-only (trainer.* keys of the same names)."""

    model: keras.Model
    method: object  # a train.methods.Method; None for a Trainer that only predicts
    optimizer: object  # a tf_keras optimizer (optim.make_optimizer); None for predicting
    batch_size: int
    _: KW_ONLY
    eval_batch_size: int = 128
    jit_compile: bool = False
    progress: bool | None = None  # None: a bar only when writing to a terminal
    bucket_by_length: bool = False  # batches of similar lengths (see batching.batch_order)
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
        padding = batching.PaddingStats()
        batches = batching.Waiting(
            batching.prefetch(
                batching.batches(
                    train.token_ids,
                    train.labels,
                    self.batch_size,
                    rng,
                    self.bucket_by_length,
                    self.pad_to_multiple_of,
                    padding,
                    train.segment_ids,
                )
            )
        )
        total = batching.num_batches(len(train), self.batch_size)
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
        return {
            **means,
            "train_seconds": seconds,
            "samples_per_second": step_log.samples / seconds,
            "padding_efficiency": padding.efficiency,
            "input_wait_seconds": batches.seconds,
        }

    def predict(self, token_ids: list[np.ndarray], segment_ids: list[np.ndarray] | None = None) -> np.ndarray:
        """Class index of each sequence (argmax of the logits).

        Batches go in length order (the same sequences are scored, with less padding), the
        next one padded while the current one runs, and the answers are read from the device
        once at the end; they come back in input order."""
        positions = np.arange(len(token_ids))  # ride along as the "labels": batches are out of order
        chosen, classes = [], []
        for inputs, rows in batching.prefetch(
            batching.batches(
                token_ids,
                positions,
                self.eval_batch_size,
                bucket_by_length=True,
                pad_to_multiple_of=self.pad_to_multiple_of,
                segment_ids=segment_ids,
            )
        ):
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
        steps_per_epoch = batching.num_batches(len(train), self.batch_size)
        self.ending = {"stopped_early": False}
        for epoch in range(len(self.history), epochs):
            if self.patience is not None and monitor.epochs_without_improvement(self.history) >= self.patience:
                break  # (a resumed run that had already met its patience)
            epoch_seed = np.random.SeedSequence([seed, epoch])
            dropout.KEYS.start_epoch(seed, epoch)  # no retrace: the key is a variable of the step
            step_log = monitor.StepLog(epoch + 1, epoch * steps_per_epoch + 1, self.board)
            try:
                stats = self.train_epoch(
                    train, np.random.default_rng(epoch_seed), f"epoch {epoch + 1}/{epochs}", step_log
                )
            except monitor.Diverged as diverged:
                log.warning(
                    "epoch %d/%d: the loss is not finite at step %d (%s); the run stops here, recorded as diverged",
                    epoch + 1,
                    epochs,
                    diverged.at["step"],
                    diverged.at["loss"],
                )
                self.ending = {"diverged_at": diverged.at, "partial_epoch": {"epoch": epoch + 1, **diverged.partial}}
                break
            finally:
                if self.board is not None:
                    self.board.flush()
            eval_start = time.perf_counter()
            dev_acc = self.evaluate(dev)
            entry = {"epoch": epoch + 1, "dev_acc": dev_acc, **stats, "eval_seconds": time.perf_counter() - eval_start}
            entry["seconds"] = entry["train_seconds"] + entry["eval_seconds"]
            improved = all(dev_acc > h["dev_acc"] for h in self.history)
            self.history.append(entry)
            if self.board is not None:
                self.board.scalars("dev", (epoch + 1) * steps_per_epoch, {"accuracy": dev_acc})
                self.board.flush()
            best = max(h["dev_acc"] for h in self.history)
            log.info(
                "epoch %d/%d  loss %.4f  dev_acc %.4f  best %.4f  %.0f samples/s  padding eff. %.2f  %.1fs",
                epoch + 1,
                epochs,
                stats["train_loss"],
                dev_acc,
                best,
                stats["samples_per_second"],
                stats["padding_efficiency"],
                entry["seconds"],
            )
            if on_epoch_end is not None:
                on_epoch_end(self.history, improved)
        if self.patience is not None and len(self.history) < epochs and "diverged_at" not in self.ending:
            self.ending = {"stopped_early": True, "stopped_at_epoch": len(self.history)}
            log.info(
                "stopped early after epoch %d: no better dev accuracy for %d epochs", len(self.history), self.patience
            )
        return self.history
