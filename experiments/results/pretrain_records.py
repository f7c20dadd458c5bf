"""Pretrain records: ``pretrain_record.json`` in a pretrained model's folder, and how a fine-tune's
run record names the pretraining it started from.

A pretraining's **id** is ``<tasks>_<model>_<hash>``: the hash of its settings (corpus, model,
masking, optimisation, seed) and of the weights it started from (``init``: "random", with the
sha256 of a given ``pretrain.vocab``, or the sha256 of the source checkpoint's ``.index`` file,
which holds a CRC32C of every tensor). The
same settings from the same start give the same id, as a run's settings give one record file.

A run whose ``model.checkpoint_dir`` holds a ``pretrain_record.json`` gets ``model.pretrained:
<id>`` in its settings (so its settings id differs from a random-init run's and from a run on the
released checkpoint, whose settings are unchanged) and ``pretrained_from`` in its record.

No TensorFlow here (``make table`` reads run records with ``records``, which imports this).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from experiments.errors import UserError

RECORD_FILE = "pretrain_record.json"
COMPLETE, DIVERGED = "complete", "diverged"
# Keys of a pretraining's config that say where or how it is shown, not what it computes.
NOT_SETTINGS = {("paths",), ("hydra",), ("download",), ("model", "checkpoint_dir"), ("model", "cpu_friendly"),
                ("model", "files"), ("model", "url"), ("model", "source"), ("model", "shape"),
                ("model", "learning_rate"),  # the fine-tuning rate; pretraining has pretrain.learning_rate
                ("pretrain", "resume"), ("pretrain", "progress"), ("pretrain", "tensorboard"),
                ("pretrain", "device"), ("pretrain", "name"), ("pretrain", "eval_batch_size"),
                ("pretrain", "vocab"),  # a given vocab.txt counts by its sha256, in ``init``
                ("pretrain", "eval_every")}  # where the evaluations and save points fall, not the weights
# What of a task config the corpus depends on (its texts, not its labels or training defaults).
TASK_KEYS = ("name", "dir", "input", "text_fields", "train_file", "dev_file", "predict_files")


def settings(config: dict, tasks: list[dict], init: str) -> dict:
    """What determines a pretraining's weights: the corpus tasks' text files and fields, the model,
    the pretrain settings, the seed and the start (``init``)."""

    def keep(node, prefix=()):
        if not isinstance(node, dict):
            return node
        return {k: keep(v, prefix + (k,)) for k, v in node.items() if prefix + (k,) not in NOT_SETTINGS}

    kept = keep({k: v for k, v in config.items() if k in ("model", "pretrain", "seed")})
    return {"tasks": [{k: t.get(k) for k in TASK_KEYS} for t in tasks], **kept, "init": init}


def pretrain_id(config: dict, tasks: list[dict], init: str) -> str:
    blob = json.dumps(settings(config, tasks, init), sort_keys=True, default=str).encode()
    names = "+".join(t["name"] for t in tasks)
    return f"{names}_{config['model']['name']}_{hashlib.sha256(blob).hexdigest()[:10]}"


def pretrain_record(config: dict, tasks: list[dict], init: str, status: str, history: list[dict], ending: dict,
                    corpus: dict, model: dict, timings: dict, environment: dict) -> dict:
    """The record of a finished (or diverged) pretraining; ``history`` holds one entry per
    held-out evaluation (step, loss, accuracy, and the training means since the one before)."""
    return {
        "id": pretrain_id(config, tasks, init),
        "status": status,
        "tasks": [t["name"] for t in tasks], "model": config["model"]["name"], "seed": config["seed"],
        "steps": history[-1]["step"] if history else 0,
        "start": {"init": init, **model},
        **ending,
        "history": history,
        "corpus": corpus,
        "timings": timings,
        "settings": settings(config, tasks, init),
        "config": config,
        "environment": environment,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read(folder) -> dict | None:
    """The pretrain record in ``folder``, None if it has none (a released checkpoint)."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err}); pretrain the model again") from None
    if not isinstance(record, dict) or "id" not in record:
        raise UserError(f"{path}: not a pretrain record (no id); pretrain the model again")
    return record


def pretrained_from(folder) -> dict | None:
    """What a fine-tune's run record says of the pretraining that made ``folder`` (None: no
    pretraining record there). A diverged pretraining is refused in one line."""
    if folder is None or (record := read(folder)) is None:
        return None
    if record.get("status") != COMPLETE:
        at = record.get("diverged_at") or {}
        raise UserError(f"{Path(folder) / RECORD_FILE}: this pretraining {record.get('status')} (a non-finite loss "
                        f"at step {at.get('global_step')}) and saved no model; pretrain again with other settings")
    return {"id": record["id"], "folder": str(folder), "tasks": record["tasks"], "model": record["model"],
            "steps": record["steps"], "init": record["start"]["init"],
            "final": {k: (record["history"] or [{}])[-1].get(k) for k in ("step", "loss", "accuracy")},
            "finished_at": record.get("finished_at")}
