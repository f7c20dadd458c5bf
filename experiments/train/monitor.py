"""What a run reports while it trains: per-step values read from the device in batches,
the divergence check, and TensorBoard event files.

Each train step returns a dict of scalar tensors (``loss``, ``learning_rate`` and the
method's own quantities, e.g. FGM's ``embedding_grad_norm``). They stay on the device:
``StepLog.read`` copies the ones collected so far to the host in one go when the progress
bar refreshes (about twice a second) and at the end of the epoch, instead of every step
waiting for its loss. A non-finite loss is found at that read: the run stops there and is
recorded as diverged at the exact step whose loss was first non-finite; the steps queued
after it (at most half a second's worth) have run but nothing of them is saved.

TensorBoard: TensorFlow's own ``tf.summary`` event files, one folder per run
(``<results>/tensorboard/<record file stem>/``). Step n is the n-th update of the run
(1-based, across epochs): ``train/<name>`` per step, ``dev/accuracy`` at the last step of
each epoch.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from experiments import records

REFRESH_SECONDS = 0.5  # how often step values are read from the device (tqdm's bar refreshes ~10x a second)


class Diverged(Exception):
    """A step's loss was not finite. ``at`` is the record's ``diverged_at``; ``partial`` the
    epoch's means over the steps before it (``StepLog.summary``)."""

    def __init__(self, at: dict, partial: dict):
        super().__init__(f"non-finite loss at epoch {at['epoch']}, step {at['step']}")
        self.at, self.partial = at, partial


class StepLog:
    """The per-step values of one epoch: kept as device tensors until ``read``, then summed
    for the epoch's means and written to TensorBoard (if ``board``)."""

    def __init__(self, epoch: int, first_step: int, board: TensorBoard | None = None):
        self.epoch, self.first_step, self.board = epoch, first_step, board  # first_step: global, 1-based
        self.pending: list[tuple[int, dict]] = []  # (batch size, step outputs)
        self.steps = 0  # steps read so far
        self.samples = 0
        self.loss_sum = 0.0  # sum of loss x batch size, in step order (as the loop summed it before)
        self.sums: dict[str, float] = {}  # learning rate and quantities: plain sums over steps
        self.last_read = time.monotonic()

    def add(self, batch_size: int, outputs: dict) -> None:
        self.pending.append((batch_size, outputs))

    def due(self) -> bool:
        return time.monotonic() - self.last_read >= REFRESH_SECONDS

    def read(self, all_steps: bool = True) -> None:
        """Copy the pending values to the host (one transfer), check them, log them.
        ``all_steps=False`` leaves the newest step on the device: it is most likely still
        running, and the read need not wait for it (a GPU keeps working meanwhile)."""
        take = self.pending if all_steps else self.pending[:-1]
        self.last_read = time.monotonic()
        if not take:
            return
        self.pending = self.pending[len(take) :]
        names = list(take[0][1])
        values = tf.stack([tf.stack([tf.cast(out[k], tf.float32) for k in names]) for _, out in take]).numpy()
        for (size, _), row in zip(take, values):
            step = dict(zip(names, (float(v) for v in row)))
            if not math.isfinite(step["loss"]):
                global_step = self.first_step + self.steps
                raise Diverged(
                    {
                        "epoch": self.epoch,
                        "step": self.steps + 1,
                        "global_step": global_step,
                        "loss": str(step["loss"]),
                    },
                    self.summary(),
                )
            self.steps += 1
            self.samples += size
            self.loss_sum += step["loss"] * size
            for k, v in step.items():
                if k != "loss":
                    self.sums[k] = self.sums.get(k, 0.0) + v
            if self.board is not None:
                self.board.scalars("train", self.first_step + self.steps - 1, step)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")

    def summary(self) -> dict:
        """The epoch so far: ``train_loss`` (mean per sample, as always), the mean learning
        rate and method quantities per step, and how many steps those cover. A non-finite
        mean (say an overflowing perturbation norm) is kept as text ("inf"): records stay JSON."""
        means = {k: v / self.steps for k, v in self.sums.items()}
        means = {k: v if math.isfinite(v) else str(v) for k, v in means.items()}
        return {"train_loss": self.mean_loss if self.samples else None, "steps": self.steps, **means}


class TensorBoard:
    """A run's event files. A fresh run starts an empty folder; a resumed one first drops
    the events its interrupted attempt wrote after the last saved epoch (``resume_step``),
    so that the curves show one history, as the record does."""

    def __init__(self, folder: str | Path, resume_step: int = 0):
        self.folder = Path(folder)
        if resume_step == 0:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            trim_events(self.folder, resume_step)
        self.writer = tf.summary.create_file_writer(str(self.folder))

    def scalars(self, prefix: str, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"{prefix}/{name}", value)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def trim_events(folder: Path, last_step: int) -> None:
    """Rewrite each event file of ``folder`` without the events after ``last_step``
    (event files are TFRecord files of ``Event`` protos; each is replaced atomically)."""
    from tensorboard.compat.proto import event_pb2

    for path in sorted(folder.glob("events.out.tfevents.*")):
        kept = []
        for raw in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(raw.numpy())
            if event.step <= last_step:
                kept.append(raw.numpy())
        with records.atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as out:
            for raw in kept:
                out.write(raw)


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's event files as {tag: [(step, value), ...]}, read back with
    TensorBoard's own event reader (for tests and the README's figures)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return {
        tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


def epochs_without_improvement(history: list[dict]) -> int:
    """Epochs since the best dev accuracy so far (the first of equal bests counts)."""
    accs = np.array([h["dev_acc"] for h in history])
    return len(accs) - 1 - int(np.argmax(accs)) if len(accs) else 0
