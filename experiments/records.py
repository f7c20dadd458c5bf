"""The records layer: run records and pretrain records, their settings and ids, atomic writes.

Run records: one JSON file per run, the only contract between training and the tables.

A record is written atomically (temporary file + rename) when its run finishes, with
``"status": "complete"``, or ``"diverged"`` when a non-finite loss stopped it (then it
holds the history so far and ``diverged_at``); nothing else in ``<results_dir>/runs/``
counts. Sweeps skip both; the tables average complete ones only. Its file name
is fixed by the run's settings and seed, so a rerun of the same settings replaces its
own record and runs of different settings never touch each other's files.

Pretrain records: ``pretrain_record.json`` in a pretrained model's folder. A pretraining's **id**
is ``<tasks>_<model>_<hash>``: the hash of its settings (corpus, model, masking, optimisation,
seed) and of the weights it started from (``init``). A run whose ``model.checkpoint_dir`` holds
one gets ``model.pretrained: <id>`` in its settings and ``pretrained_from`` in its record.

Every package that writes a file writes it through ``write_json_atomic``/``write_text_atomic``.
This module is the bottom layer above the core and never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from experiments.errors import UserError

COMPLETE = "complete"
DIVERGED = "diverged"  # a non-finite loss stopped the run: the record holds the history so far and diverged_at
DONE = (COMPLETE, DIVERGED)  # a run with either record is not run again (trainer.skip_completed)
_UMASK = os.umask(0)
os.umask(_UMASK)

# Config keys that change where things are read or written, or how a run is displayed,
# but not what it computes: they are left out of a run's settings.
NOT_SETTINGS = {
    ("paths",), ("hydra",), ("download",), ("launcher",),
    ("study",),  # a study's name and per-method table (configs/experiment/): the values it sets are settings themselves
    ("eval",),  # measurements after training (accuracy under attack): the record holds their own parameters
    ("model", "checkpoint_dir"), ("model", "cpu_friendly"), ("trainer", "device"),
    ("model", "files"), ("model", "url"), ("model", "source"),
    ("model", "shape"),  # the release's shape, for `make bench`; a run reads the checkpoint's own config
    ("trainer", "resume"), ("trainer", "progress"), ("trainer", "skip_completed"),
    ("trainer", "eval_batch_size"), ("trainer", "save_best"), ("trainer", "tensorboard"), ("task", "predict_files"),
}


def method_options(method: dict) -> dict:
    """A method config's keyword arguments: all keys but ``_target_``, ``name`` and the ones it
    lists under ``unused`` (accepted only so that one sweep can set e.g. method.epsilon for all)."""
    skip = {"_target_", "name", "unused", *(method.get("unused") or [])}
    return {k: v for k, v in method.items() if k not in skip}


def settings(config: dict) -> dict:
    """The part of a resolved config that determines a run's results, seed included."""

    def keep(node, prefix=()):
        if not isinstance(node, dict):
            return node
        return {k: keep(v, prefix + (k,)) for k, v in node.items() if prefix + (k,) not in NOT_SETTINGS}

    kept = keep(config)
    if isinstance(kept.get("method"), dict):  # an unused option must not split a method's runs
        kept["method"] = {"name": kept["method"].get("name"), **method_options(kept["method"])}
    trainer = kept.get("trainer")
    if isinstance(trainer, dict) and trainer.get("schedule", "constant") != "linear":
        trainer.pop("warmup_ratio", None)  # read only by the linear schedule (experiments/train/schedule.py)
    return kept


def settings_id(config: dict) -> str:
    """A short hash of the settings without the seed: runs that may be averaged share it."""
    without_seed = {k: v for k, v in settings(config).items() if k != "seed"}
    blob = json.dumps(without_seed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def with_pretraining(config: dict) -> dict:
    """``config`` with ``model.pretrained: <pretrain record id>`` when ``model.checkpoint_dir``
    is a folder that ``make pretrain`` wrote: its runs then have settings (and a settings id) of
    their own, apart from random-init runs and from runs on a released checkpoint (unchanged)."""
    origin = pretrained_from((config.get("model") or {}).get("checkpoint_dir"))
    if origin is None:
        return config
    return {**config, "model": {**config["model"], "pretrained": origin["id"]}}


def record_path(results_dir: str | Path, config: dict) -> Path:
    name = f"{config['task']['name']}_{config['model']['name']}_{config['method']['name']}" \
           f"_seed{config['seed']}_{settings_id(config)}.json"
    return Path(results_dir) / "runs" / name


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON so that readers see the old file or the whole new one, never a part."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, default=str))


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a shared results folder needs the usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path, statuses=(COMPLETE,)) -> dict | None:
    """The record at ``path`` if its status is one of ``statuses`` (a complete one by default), else None."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("status") in statuses else None


def load_records(results_dir: str | Path, statuses=(COMPLETE,)) -> list[dict]:
    """Every record under ``<results_dir>/runs/`` whose status is one of ``statuses``, in file-name order."""
    folder = Path(results_dir) / "runs"
    records = (read_record(p, statuses) for p in sorted(folder.glob("*.json")))
    return [r for r in records if r is not None]


def run_record(config: dict, history: list[dict], ending: dict, facts: dict, timings: dict,
               best_weights: str | None, environment: dict, hydra_dir: str | None, robustness: dict | None = None) -> dict:
    """The record of a finished run (experiments/commands/run.py): complete, or diverged (a non-finite loss
    stopped it: the history so far, ``diverged_at``, ``partial_epoch``); early stopping adds
    ``stopped_at_epoch``. Either way the run is done. ``config`` is the resolved config; ``facts``
    the data's sizes; ``timings`` the total and tokenizing times and the token cache's use; ``robustness``
    (``eval.attack.epsilons`` set) ``robust_dev_acc`` and ``attack`` (experiments/train/embedding_attack.py)."""
    best = max(history, key=lambda h: h["dev_acc"], default={"dev_acc": None, "epoch": None})
    origin = pretrained_from(config["model"].get("checkpoint_dir"))
    return {
        "status": DIVERGED if "diverged_at" in ending else COMPLETE,
        "task": config["task"]["name"], "model": config["model"]["name"], "method": config["method"]["name"],
        "seed": config["seed"],
        "settings_id": settings_id(config),
        "best_dev_acc": best["dev_acc"], "best_epoch": best["epoch"],
        "final_dev_acc": history[-1]["dev_acc"] if history else None,
        **(robustness or {}),
        **ending,
        "history": history,
        **facts,
        "timings": {
            "total_seconds": timings["total_seconds"],
            **mean_over_epochs(history, "train_samples_per_second", "samples_per_second"),
            # real / padded tokens of the training batches (1.0: no padding); see trainer.bucket_by_length
            **mean_over_epochs(history, "padding_efficiency"),
            **{k: v for k, v in timings.items() if k != "total_seconds"},
        },
        "best_weights": best_weights,
        **({"pretrained_from": origin} if origin else {}),  # the make pretrain folder it started from
        "settings": settings(config),
        "config": config,
        "environment": environment,
        "hydra_dir": hydra_dir,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def mean_over_epochs(history: list[dict], name: str, key: str | None = None) -> dict:
    """{name: the mean of each epoch's ``key``} (None without a finished epoch)."""
    values = [h.get(key or name, float("nan")) for h in history]
    return {name: sum(values) / len(values) if values else None}


def outcome(record: dict) -> str:
    """A run's result in a few words, for the log's last line."""
    if not record["history"]:
        return "diverged in epoch 1"
    return (f"{'diverged; ' * (record['status'] == DIVERGED)}best dev acc {record['best_dev_acc']:.4f} "
            f"(epoch {record['best_epoch']}), final {record['final_dev_acc']:.4f}")


# Pretrain records (make pretrain's model folders)
PRETRAIN_RECORD_FILE = "pretrain_record.json"
# Keys of a pretraining's config that say where or how it is shown, not what it computes.
PRETRAIN_NOT_SETTINGS = {("paths",), ("hydra",), ("download",), ("model", "checkpoint_dir"), ("model", "cpu_friendly"),
                ("model", "files"), ("model", "url"), ("model", "source"), ("model", "shape"),
                ("model", "learning_rate"),  # the fine-tuning rate; pretraining has pretrain.learning_rate
                ("pretrain", "resume"), ("pretrain", "progress"), ("pretrain", "tensorboard"),
                ("pretrain", "device"), ("pretrain", "name"), ("pretrain", "eval_batch_size"),
                ("pretrain", "vocab"),  # a given vocab.txt counts by its sha256, in ``init``
                ("pretrain", "eval_every")}  # where the evaluations and save points fall, not the weights
# What of a task config the corpus depends on (its texts, not its labels or training defaults).
TASK_KEYS = ("name", "dir", "input", "text_fields", "train_file", "dev_file", "predict_files")


def pretrain_settings(config: dict, tasks: list[dict], init: str) -> dict:
    """What determines a pretraining's weights: the corpus tasks' text files and fields, the model,
    the pretrain settings, the seed and the start (``init``)."""

    def keep(node, prefix=()):
        if not isinstance(node, dict):
            return node
        return {k: keep(v, prefix + (k,)) for k, v in node.items() if prefix + (k,) not in PRETRAIN_NOT_SETTINGS}

    kept = keep({k: v for k, v in config.items() if k in ("model", "pretrain", "seed")})
    return {"tasks": [{k: t.get(k) for k in TASK_KEYS} for t in tasks], **kept, "init": init}


def pretrain_id(config: dict, tasks: list[dict], init: str) -> str:
    blob = json.dumps(pretrain_settings(config, tasks, init), sort_keys=True, default=str).encode()
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
        "settings": pretrain_settings(config, tasks, init),
        "config": config,
        "environment": environment,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_pretrain_record(folder) -> dict | None:
    """The pretrain record in ``folder``, None if it has none (a released checkpoint)."""
    path = Path(folder) / PRETRAIN_RECORD_FILE
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
    if folder is None or (record := read_pretrain_record(folder)) is None:
        return None
    if record.get("status") != COMPLETE:
        at = record.get("diverged_at") or {}
        raise UserError(f"{Path(folder) / PRETRAIN_RECORD_FILE}: this pretraining {record.get('status')} (a non-finite loss "
                        f"at step {at.get('global_step')}) and saved no model; pretrain again with other settings")
    return {"id": record["id"], "folder": str(folder), "tasks": record["tasks"], "model": record["model"],
            "steps": record["steps"], "init": record["start"]["init"],
            "final": {k: (record["history"] or [{}])[-1].get(k) for k in ("step", "loss", "accuracy")},
            "finished_at": record.get("finished_at")}
