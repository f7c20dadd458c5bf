"""What a run keeps on disk while it trains, so that an interruption loses at most one epoch.

    <results_dir>/checkpoints/<record name>/
        best.weights.h5      weights of the best dev epoch so far (for `make predict`)
        state/latest.json    history so far + which epoch folder is complete
        state/epoch-N/       tf.train.Checkpoint of weights and optimizer after epoch N

A pretraining (``make pretrain``) keeps the same under ``checkpoints/pretrain_<id>/``, with
``state/step-N/`` after each held-out evaluation (``save_step``) instead of epochs.

Every file appears atomically: a checkpoint is written into its own folder and only then
named by ``latest.json`` (itself replaced atomically); best weights go through a temporary
file and a rename. A run killed at any moment leaves the previous complete state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from experiments.records import atomic_path, write_json_atomic


class RunState:
    def __init__(self, folder: str | Path, model, optimizer):
        import tensorflow as tf

        self.folder = Path(folder)
        self.state_dir = self.folder / "state"
        self.best_weights = self.folder / "best.weights.h5"
        self.model = model
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)

    def save_epoch(self, history: list[dict]) -> None:
        epoch = history[-1]["epoch"]
        self._save(f"epoch-{epoch}", {"epoch": epoch}, history)

    def _save(self, name: str, point: dict, history: list[dict]) -> None:
        target = self.state_dir / name
        shutil.rmtree(target, ignore_errors=True)
        self.checkpoint.write(str(target / "ckpt"))
        previous = self._latest()
        write_json_atomic(self.state_dir / "latest.json", {**point, "checkpoint": target.name, "history": history})
        if previous and previous["checkpoint"] != target.name:
            shutil.rmtree(self.state_dir / previous["checkpoint"], ignore_errors=True)

    def save_step(self, history: list[dict]) -> None:
        """A pretraining's save point, after its held-out evaluation at ``history[-1]["step"]``."""
        self._save(f"step-{history[-1]['step']}", {"step": history[-1]["step"]}, history)

    def restore(self) -> list[dict]:
        """Load the last complete epoch's weights and optimizer; return its history ([] if none)."""
        latest = self._latest()
        if latest is None:
            return []
        # Adam's slots are created on the first update: create them now so they can be filled.
        getattr(self.optimizer, "inner_optimizer", self.optimizer).build(self.model.trainable_variables)
        self.checkpoint.read(str(self.state_dir / latest["checkpoint"] / "ckpt")).assert_consumed()
        return latest["history"]

    def save_best(self) -> None:
        with atomic_path(self.best_weights, suffix=".weights.h5") as tmp:  # Keras wants the ending
            self.model.save_weights(str(tmp))

    def discard_state(self) -> None:
        """Once the record is written the per-epoch state is no longer needed (it is large)."""
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _latest(self) -> dict | None:
        try:
            return json.loads((self.state_dir / "latest.json").read_text())
        except (OSError, ValueError):
            return None
