"""The masked-LM pretraining loop: batches of the corpus masked afresh every epoch, AdamW with
BERT's warm-up and linear decay, a held-out evaluation every ``eval_every`` steps that is also a
save point, a tqdm bar with the loss and tokens/s, TensorBoard and the divergence check of the
fine-tuning loop (``monitor.StepLog``).

What step s computes depends on (seed, s) alone: s lies in epoch e = s // steps_per_epoch; the
epoch's batch order comes from (seed, e) as in ``Trainer.fit``, each batch's masks from
(seed, e, batch), dropout from (seed, e, step in the epoch) (``dropout.KEYS``), the learning rate
from the optimizer's step count. So a pretraining resumed from a save point (``RunState.save_step``)
computes what an uninterrupted one would, also from the middle of an epoch. The held-out texts are
masked once, from a fixed seed: every evaluation scores the same positions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from experiments.data import batching, masking
from experiments.data.corpus import MlmData
from experiments.model import dropout, mlm
from experiments.train import monitor

log = logging.getLogger(__name__)

MASK_STREAM = 1  # SeedSequence([seed, epoch, batch, MASK_STREAM]): the masks, apart from the batch order
HELD_OUT_MASK_SEED = 20200102  # the held-out masks: fixed, as the held-out texts are

SIGNATURE = (
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.float32),
)


def as_inputs(batch: masking.MaskedBatch) -> tuple:
    return batch.token_ids, batch.segment_ids, batch.positions, batch.labels, batch.weights


def masked_batches(
    data: MlmData,
    batch_size: int,
    spec: masking.MaskSpec,
    seed: int,
    epoch: int,
    start: int = 0,
    bucket_by_length: bool = True,
):
    """Epoch ``epoch``'s batches from batch ``start`` on, masked: (index in the epoch, MaskedBatch)."""
    lengths = np.fromiter((len(t) for t in data.token_ids), dtype=np.int64, count=len(data))
    order = batching.batch_order(
        lengths, batch_size, np.random.default_rng(np.random.SeedSequence([seed, epoch])), bucket_by_length
    )
    for index in range(start, len(order)):
        chosen = order[index]
        rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, index, MASK_STREAM]))
        ids = batching.pad([data.token_ids[i] for i in chosen])
        segments = batching.pad([data.segment_ids[i] for i in chosen])
        yield index, masking.mask_batch(ids, segments, [data.groups[i] for i in chosen], spec, rng)


def held_out_batches(data: MlmData, batch_size: int, spec: masking.MaskSpec) -> list[masking.MaskedBatch]:
    """The held-out texts in length order, masked once from a fixed seed."""
    rng = np.random.default_rng(HELD_OUT_MASK_SEED)
    lengths = np.array([len(t) for t in data.token_ids])
    out = []
    for chosen in batching.batch_order(lengths, batch_size, bucket_by_length=True):
        ids, segments = (
            batching.pad([data.token_ids[i] for i in chosen]),
            batching.pad([data.segment_ids[i] for i in chosen]),
        )
        out.append(masking.mask_batch(ids, segments, [data.groups[i] for i in chosen], spec, rng))
    return out


@dataclass
class Pretrainer:
    model: object  # mlm.MaskedLM.model: (token ids, segment ids, positions) -> logits at the positions
    optimizer: object
    spec: masking.MaskSpec
    batch_size: int
    bucket_by_length: bool = True
    progress: bool | None = None
    board: monitor.TensorBoard | None = None
    history: list[dict] = field(default_factory=list)  # one entry per held-out evaluation
    ending: dict = field(default_factory=dict)  # {"diverged_at": {...}} when a loss was not finite

    def __post_init__(self):
        model, optimizer = self.model, self.optimizer

        def train_step(ids, segments, positions, labels, weights):
            with dropout.KEYS.step():
                with tf.GradientTape() as tape:
                    logits = model([ids, segments, positions], training=True)
                    loss, correct, count = mlm.masked_lm_loss(logits, labels, weights)
                grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            # After the update: the rate it used (as Trainer.make_train_step reads it)
            return {
                "loss": loss,
                "accuracy": correct / tf.maximum(count, 1.0),
                "learning_rate": tf.identity(optimizer.learning_rate),
            }

        def eval_step(ids, segments, positions, labels, weights):
            logits = model([ids, segments, positions], training=False)
            loss, correct, count = mlm.masked_lm_loss(logits, labels, weights)
            return loss * count, correct, count

        # Adam's slots made now, not at the first step: otherwise tf.function traces the step twice
        # (once to lift the variables it creates), the larger part of a short pretraining's time.
        optimizer.build(model.trainable_variables)
        self.train_step = tf.function(train_step, input_signature=SIGNATURE)
        self.eval_step = tf.function(eval_step, input_signature=SIGNATURE)

    @property
    def step(self) -> int:
        return self.history[-1]["step"] if self.history else 0

    def evaluate(self, batches: list[masking.MaskedBatch]) -> dict:
        """Masked-LM loss (mean cross-entropy per masked token) and accuracy over ``batches``."""
        sums = [self.eval_step(*as_inputs(b)) for b in batches]  # left on the device until the end
        loss, correct, count = (float(v) for v in tf.reduce_sum(tf.stack([tf.stack(s) for s in sums]), 0).numpy())
        return {"loss": loss / count, "accuracy": correct / count, "masked_tokens": int(count)}

    def fit(
        self,
        train: MlmData,
        held_out: list[masking.MaskedBatch],
        total_steps: int,
        seed: int,
        eval_every: int,
        on_save=None,
    ) -> list[dict]:
        """Train to ``total_steps``, from ``self.step`` (a resumed pretraining's history); evaluate
        on ``held_out`` before the first step, every ``eval_every`` steps and at the end, calling
        ``on_save(history)`` after each evaluation but the first."""
        steps_per_epoch = batching.num_batches(len(train), self.batch_size)
        if not self.history:
            self.history.append(self._entry(0, steps_per_epoch, self._evaluate(held_out), None, 0.0, 0))
            self._board_held_out(self.history[-1])
        disable = None if self.progress is None else not self.progress
        with tqdm(total=total_steps, initial=self.step, desc="pretrain", unit="step", disable=disable) as bar:
            while self.step < total_steps and "diverged_at" not in self.ending:
                stop = min(total_steps, (self.step // eval_every + 1) * eval_every)
                self._segment(train, held_out, stop, steps_per_epoch, seed, bar)
                if "diverged_at" not in self.ending and on_save is not None:
                    on_save(self.history)
        return self.history

    def _segment(self, train, held_out, stop: int, steps_per_epoch: int, seed: int, bar) -> None:
        """Steps ``self.step + 1`` .. ``stop``, then the held-out evaluation at ``stop``."""
        step = self.step
        step_log = monitor.StepLog(step // steps_per_epoch + 1, step + 1, self.board)
        tokens, start = 0, time.perf_counter()
        try:
            while step < stop:
                epoch, first = divmod(step, steps_per_epoch)
                dropout.KEYS.start_epoch(seed, epoch, first)
                take = min(stop - step, steps_per_epoch - first)
                batches = batching.prefetch(
                    masked_batches(train, self.batch_size, self.spec, seed, epoch, first, self.bucket_by_length)
                )
                for _, (_, batch) in zip(range(take), batches):
                    step_log.add(int(batch.weights.sum()), self.train_step(*as_inputs(batch)))
                    tokens += batch.real_tokens
                    step += 1
                    if step_log.due():
                        self._show(step_log, bar, tokens, start)
                batches.close()
            step_log.read()
        except monitor.Diverged as diverged:
            at = diverged.at
            log.warning(
                "the loss is not finite at step %d (%s); the pretraining stops here, recorded as diverged",
                at["global_step"],
                at["loss"],
            )
            self.ending = {"diverged_at": at}
            return
        finally:
            if self.board is not None:
                self.board.flush()
        seconds = time.perf_counter() - start
        self._show(step_log, bar, tokens, start)
        entry = self._entry(stop, steps_per_epoch, self._evaluate(held_out), step_log, seconds, tokens)
        self.history.append(entry)
        self._board_held_out(entry)
        log.info(
            "step %d  held-out loss %.4f  accuracy %.4f  train loss %.4f  %.0f tokens/s",
            stop,
            entry["loss"],
            entry["accuracy"],
            entry["train_loss"],
            entry["tokens_per_second"],
        )

    def _evaluate(self, held_out) -> dict:
        start = time.perf_counter()
        return {**self.evaluate(held_out), "eval_seconds": time.perf_counter() - start}

    def _board_held_out(self, entry: dict) -> None:
        if self.board is not None:
            self.board.scalars("held_out", entry["step"], {"loss": entry["loss"], "accuracy": entry["accuracy"]})
            self.board.flush()

    @staticmethod
    def _show(step_log, bar, tokens: int, start: float) -> None:
        step_log.read(all_steps=False)
        bar.update(step_log.first_step + step_log.steps - 1 - bar.n)
        bar.set_postfix(
            loss=f"{step_log.mean_loss:.4f}", tokens_s=f"{tokens / (time.perf_counter() - start):.0f}", refresh=False
        )

    @staticmethod
    def _entry(step: int, steps_per_epoch: int, held_out: dict, step_log, seconds: float, tokens: int) -> dict:
        """A history entry: the held-out loss and accuracy at ``step``, and the training since the
        previous entry (mean loss per masked token, mean accuracy and rate per step, tokens/s)."""
        entry = {"step": step, "epoch": step / steps_per_epoch, **held_out}
        if step_log is not None:
            means = step_log.summary()
            entry.update(
                {
                    "train_loss": means["train_loss"],
                    "train_accuracy": means.get("accuracy"),
                    "learning_rate": means.get("learning_rate"),
                    "train_seconds": seconds,
                    "train_tokens": tokens,
                    "tokens_per_second": tokens / seconds if seconds else None,
                }
            )
        return entry
