"""The records layer: run records and pretrain records, their settings and ids, atomic writes.

Run records: one JSON file per run, the only contract between training and the tables.

A record is written atomically (temporary file + rename) when its run finishes, with
``"status": "complete"``, or ``"diverged"`` when a non-finite loss stopped it (then it
holds the history so far and ``diverged_at``); nothing else in ``<results_dir>/runs/``
counts. Sweeps skip both; the tables average complete ones only, and of those not the ones
``collapsed`` to the majority class (``collapsed()``). Its file name is fixed by the run's settings
and seed, so a rerun of the same settings replaces its own record and runs of different settings
never touch each other's files.

Settings: every config key is a setting or runtime, in one table (``KEYS``); the settings id is
the first 10 hex digits of the sha256 of the sorted JSON of the settings without the seed.

Pretrain records: ``pretrain_record.json`` in a pretrained model's folder. A pretraining's **id**
is ``<tasks>_<model>_<hash>``: the hash of its settings (corpus, model, masking, optimisation,
seed) and of the weights it started from (``init``). A run whose ``model.checkpoint_dir`` holds
one gets ``model.pretrained: <id>`` in its settings and ``pretrained_from`` in its record.

Every package that writes a file writes it through ``write_json_atomic``, ``write_text_atomic``,
``write_bytes_atomic`` or ``atomic_path`` (one implementation). This module is the bottom layer above
the core and never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from experiments.errors import UserError

COMPLETE = "complete"
DIVERGED = "diverged"  # a non-finite loss stopped the run: the record holds the history so far and diverged_at
DONE = (COMPLETE, DIVERGED)  # a run with either record is not run again (trainer.skip_completed)
_UMASK = os.umask(0)
os.umask(_UMASK)

# Every config key, classified (docs/records-and-tables.md, "Settings and the settings id"). A row names a
# dotted key, or a node and so every key under it (a longer row wins). Two columns: the key in a run
# (configs/train.yaml) and in a pretraining (configs/pretraining.yaml); None: that entry point has no such key.
#   SETTING           it can change a result: it is in the settings, and so in the settings id;
#   Setting(neutral=) a setting left out while it has this value: a new key whose default reproduces the old
#                     behaviour changes no id (e.g. "trainer.new_flag": (Setting(neutral=False), None));
#   Setting(when=)    a setting only while another key has a value (read only then); runtime otherwise;
#   Setting(methods=) a method option: a setting of the methods whose class takes it (their __init__'s keyword
#                     arguments, which methods.build passes; tests/test_settings.py checks both agree), runtime
#                     for the others, so that one sweep may set method.epsilon for every method;
#   RUNTIME           it cannot change a result by itself: where files are, progress, device, resume,
#                     measurements after training, and tables whose values other keys take (the key that
#                     takes the value is the setting).
# A key in none of the rows is an error (settings() raises; tests/test_settings.py composes every config).


_NONE = object()  # no neutral value


@dataclass(frozen=True)
class Setting:
    neutral: object = _NONE  # left out of the settings while the key has this value
    when: tuple = ()  # (key, value): a setting only while that key has that value
    methods: tuple = ()  # a method option: a setting of these methods only


SETTING = Setting()
RUNTIME = "runtime"
S, R = SETTING, RUNTIME
METHODS = ("baseline", "fgm", "freelb", "gp", "pgd")  # the methods whose options the rows below classify


def option(*methods: str) -> Setting:
    return Setting(methods=methods)


# fmt: off
KEYS: dict[str, tuple] = {
    #                                run   pretraining
    "seed":                          (S, S),
    "paths":                         (R, R),
    "hydra":                         (R, R),
    "download":                      (R, R),
    "launcher":                      (R, R),  # records of the first weeks
    "study":                         (R, None),  # a study's name and per-method table: method.epsilon takes from it
    "eval":                          (R, None),  # measurements after training: the record holds their parameters
    # A pretraining's settings hold, per corpus task, what its texts depend on (not its labels).
    "task.name":                     (S, S),
    "task.dir":                      (S, S),
    "task.input":                    (S, S),
    "task.text_fields":              (S, S),
    "task.train_file":               (S, S),
    "task.dev_file":                 (S, S),
    "task.predict_files":            (R, S),  # make predict's files; the corpus may read the test texts
    "task.labels_file":              (S, R),
    "task.labels":                   (S, R),
    "task.skip_labels":              (S, R),
    "task.num_labels":               (S, R),
    "task.max_length":               (S, R),  # a pretraining's own: pretrain.max_length
    "task.epochs":                   (S, R),
    "task.max_train_samples":        (S, R),
    "task.max_dev_samples":          (S, R),
    "model.name":                    (S, S),
    "model.family":                  (S, S),
    "model.pretrained":              (S, S),  # the pretrain record's id of model.checkpoint_dir (with_pretraining)
    "model.learning_rate":           (S, R),  # the fine-tuning rate; a pretraining has pretrain.learning_rate
    "model.checkpoint_dir":          (R, R),  # a make pretrain folder counts by model.pretrained, a release by name
    "model.cpu_friendly":            (R, R),
    "model.files":                   (R, R),
    "model.url":                     (R, R),
    "model.source":                  (R, R),
    "model.hub_id":                  (R, R),  # where the weights come from (data/hub.py), like model.url;
    "model.hub_revision":            (R, R),  # the record's checkpoint names the weight file's sha256
    "model.hub_weights":             (R, R),
    "model.method_epsilon":          (R, R),  # the model's method.epsilon per method (configs/method/*.yaml)
    # model.shape's keys count as if they stood beside model.name (the layout of tiny's first records).
    "model.vocab_size":              (Setting(neutral=None), Setting(neutral=None)),  # null: from the data (tiny)
    "model.embedding_size":          (Setting(neutral=None), Setting(neutral=None)),  # null: hidden_size
    "model.hidden_size":             (S, S),
    "model.num_hidden_layers":       (S, S),
    "model.num_attention_heads":     (S, S),
    "model.intermediate_size":       (S, S),
    "model.max_position_embeddings": (S, S),
    "model.hidden_dropout_prob":     (S, S),
    "model.attention_probs_dropout_prob": (S, S),
    "method.name":                   (S, None),
    "method._target_":               (R, None),  # the class of method.name
    "method.unused":                 (R, None),  # records before 2026-12: the options a method ignored
    "method.epsilon":                (option("fgm", "gp", "pgd"), None),
    "method.accumulate_clean":       (option("fgm"), None),
    "method.attack_dropout":         (option("fgm"), None),
    "method.alpha":                  (option("pgd"), None),
    "method.steps":                  (option("pgd"), None),
    "method.adv_steps":              (option("freelb"), None),
    "method.adv_lr":                 (option("freelb"), None),
    "method.adv_init_mag":           (option("freelb"), None),
    "method.adv_max_norm":           (option("freelb"), None),
    "trainer.epochs":                (S, None),
    "trainer.batch_size":            (S, None),
    "trainer.learning_rate":         (S, None),
    "trainer.precision":             (S, None),
    "trainer.jit_compile":           (S, None),
    "trainer.bucket_by_length":      (S, None),
    "trainer.pad_to_multiple_of":    (S, None),
    "trainer.tf32":                  (S, None),
    "trainer.deterministic":         (S, None),
    "trainer.schedule":              (S, None),
    "trainer.warmup_ratio":          (Setting(when=("trainer.schedule", "linear")), None),  # train/schedule.py
    "trainer.patience":              (S, None),
    "trainer.eval_batch_size":       (R, None),
    "trainer.device":                (R, None),
    "trainer.skip_completed":        (R, None),
    "trainer.resume":                (R, None),
    "trainer.save_best":             (R, None),
    "trainer.progress":              (R, None),
    "trainer.tensorboard":           (R, None),
    "pretrain.corpus":               (None, S),
    "pretrain.whole_word_masking":   (None, S),
    "pretrain.masked_share":         (None, S),
    "pretrain.held_out_share":       (None, S),
    "pretrain.held_out_max":         (None, S),
    "pretrain.max_steps":            (None, S),
    "pretrain.epochs":               (None, S),
    "pretrain.batch_size":           (None, S),
    "pretrain.max_length":           (None, S),
    "pretrain.bucket_by_length":     (None, S),
    "pretrain.learning_rate":        (None, S),
    "pretrain.weight_decay":         (None, S),
    "pretrain.adam_epsilon":         (None, S),
    "pretrain.clip_norm":            (None, S),
    "pretrain.warmup_ratio":         (None, S),
    "pretrain.deterministic":        (None, S),
    "pretrain.vocab":                (None, R),  # a given vocab.txt counts by its sha256, in the pretraining's init
    "pretrain.eval_every":           (None, R),  # where evaluations and save points fall, not the weights
    "pretrain.eval_batch_size":      (None, R),
    "pretrain.device":               (None, R),
    "pretrain.resume":               (None, R),
    "pretrain.progress":             (None, R),
    "pretrain.tensorboard":          (None, R),
    "pretrain.name":                 (None, R),
}
# fmt: on
RUN, PRETRAIN = 0, 1  # the columns


def classify(key: str, column: int = RUN):
    """The class of a dotted config key (its row's, or its nearest node's), None if unclassified."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        row = KEYS.get(".".join(parts[:n]))
        if row is not None:
            return row[column]
    return None


def _with_flat_shape(config: dict) -> dict:
    """``model.shape``'s keys beside the model's name: every model config has one shape schema, and
    a model whose shape stood at its top level (tiny's first records) keeps its settings id."""
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("shape"), dict):
        return config
    return {**config, "model": {**{k: v for k, v in model.items() if k != "shape"}, **model["shape"]}}


def _lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _kept(config: dict, column: int, node=None, prefix: str = "", missing: list | None = None):
    """The settings part of ``node`` (the whole config by default); unclassified keys go to ``missing``."""
    out = {}
    for k, v in (config if node is None else node).items():
        key = f"{prefix}{k}"
        kind = classify(key, column)
        if kind is None and isinstance(v, dict) and v:
            sub = _kept(config, column, v, key + ".", missing)
            if sub:
                out[k] = sub
        elif kind is None:
            if missing is not None:
                missing.append(key)
        elif kind != RUNTIME and _counts(config, kind, v):
            out[k] = v
    return out


def _counts(config: dict, kind: Setting, value) -> bool:
    if kind.neutral is not _NONE and value == kind.neutral:
        return False
    if kind.when and _lookup(config, kind.when[0]) != kind.when[1]:
        return False
    return not kind.methods or _lookup(config, "method.name") in kind.methods


def unclassified(config: dict, column: int = RUN) -> list[str]:
    """The keys of ``config`` (resolved, as a dict) that no row of KEYS classifies, and a method's name
    whose options KEYS does not classify."""
    missing: list[str] = []
    config = _with_flat_shape(config)
    _kept(config, column, missing=missing)
    name = _lookup(config, "method.name")
    if column == RUN and isinstance(config.get("method"), dict) and name not in METHODS:
        missing.append(f"method.name={name} (its options: records.METHODS and Setting(methods=...))")
    return missing


def _settings_of(config: dict, column: int) -> dict:
    config = _with_flat_shape(config)
    if missing := unclassified(config, column):
        raise UserError(
            f"config keys {', '.join(missing)}: not classified as a setting or runtime; add them to "
            "experiments/records.py KEYS (a new setting with the neutral default that keeps old ids)"
        )
    return _kept(config, column)


def settings(config: dict) -> dict:
    """The part of a resolved config that determines a run's results, seed included (KEYS' run column)."""
    return _settings_of(config, RUN)


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
    name = (
        f"{config['task']['name']}_{config['model']['name']}_{config['method']['name']}"
        f"_seed{config['seed']}_{settings_id(config)}.json"
    )
    return Path(results_dir) / "runs" / name


def write_json_atomic(path: Path, data) -> None:
    """Write ``data`` as JSON so that readers see the old file or the whole new one, never a part."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2, default=str))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks (hashlib.file_digest)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` (bytes, or a function that writes into the open binary file, e.g. ``np.savez``)
    so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path, suffix: str = "", folder: bool = False) -> Iterator[Path]:
    """A new temporary file (or ``folder``) beside ``path`` for the block to write, e.g. by a library that
    takes a file name (``suffix``: the ending it wants); renamed over ``path`` when the block ends, removed
    if it raises. A folder replaces the one at ``path`` (moved aside, then deleted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
        os.close(fd)
        tmp = Path(name)
    try:
        os.chmod(tmp, (0o777 if folder else 0o666) & ~_UMASK)  # mkstemp makes 0600; shared folders need the usual
        yield tmp
        if folder and path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
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


def run_record(
    config: dict,
    history: list[dict],
    ending: dict,
    facts: dict,
    timings: dict,
    best_weights: str | None,
    environment: dict,
    hydra_dir: str | None,
    robustness: dict | None = None,
) -> dict:
    """The record of a finished run (experiments/commands/run.py): complete, or diverged (a non-finite loss
    stopped it: the history so far, ``diverged_at``, ``partial_epoch``); early stopping adds
    ``stopped_at_epoch``. Either way the run is done. ``config`` is the resolved config; ``facts``
    the data's sizes and ``dev_majority_share`` (``majority_share`` of the dev labels); ``timings`` the total
    and tokenizing times and the token cache's use; ``robustness``
    (``eval.attack.epsilons`` set) ``robust_dev_acc`` and ``attack`` (experiments/train/embedding_attack.py)."""
    best = max(history, key=lambda h: h["dev_acc"], default={"dev_acc": None, "epoch": None})
    origin = pretrained_from(config["model"].get("checkpoint_dir"))
    status = DIVERGED if "diverged_at" in ending else COMPLETE
    share = facts.get("dev_majority_share")
    return {
        "status": status,
        # a complete run no better than always answering the dev set's most frequent class (collapsed())
        "collapsed": status == COMPLETE and collapsed(best["dev_acc"], share, facts.get("dev_samples")),
        "task": config["task"]["name"],
        "model": config["model"]["name"],
        "method": config["method"]["name"],
        "seed": config["seed"],
        "settings_id": settings_id(config),
        "best_dev_acc": best["dev_acc"],
        "best_epoch": best["epoch"],
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
    text = (
        f"{'diverged; ' * (record['status'] == DIVERGED)}best dev acc {record['best_dev_acc']:.4f} "
        f"(epoch {record['best_epoch']}), final {record['final_dev_acc']:.4f}"
    )
    if record.get("collapsed"):
        text += (
            f"; COLLAPSED: no better than always answering the most frequent dev class "
            f"({record['dev_majority_share']:.4f} of the dev set): {COLLAPSE_HINT}"
        )
    return text


# A collapsed run: its best dev accuracy is within noise of the dev set's majority-class share p (the accuracy of
# always answering that class), i.e. at most p + COLLAPSE_SE binomial standard errors sqrt(p (1 - p) / n) over n
# dev examples. An adversarial step too large for the model's embeddings does this (docs/records-and-tables.md).
COLLAPSE_SE = 2
COLLAPSE_HINT = "lower method.epsilon"


def majority_share(labels) -> float | None:
    """The share of the most frequent class among ``labels`` (class indices; -1, unlabelled, ignored)."""
    counts = Counter(int(label) for label in labels if int(label) >= 0)
    return max(counts.values()) / sum(counts.values()) if counts else None


def collapse_threshold(share: float, n: int) -> float:
    return share + COLLAPSE_SE * math.sqrt(share * (1 - share) / n)


def collapsed(best_dev_acc: float | None, share: float | None, n: int | None) -> bool:
    """Whether a run's best dev accuracy is at the majority class's share, within noise (COLLAPSE_SE)."""
    if best_dev_acc is None or share is None or not n:
        return False
    return best_dev_acc <= collapse_threshold(share, n)


# Pretrain records (make pretrain's model folders)
PRETRAIN_RECORD_FILE = "pretrain_record.json"
# What of a task config the corpus depends on (its texts, not its labels or training defaults): KEYS' pretraining
# column.
TASK_KEYS = tuple(key[5:] for key, row in KEYS.items() if key.startswith("task.") and row[PRETRAIN] != RUNTIME)


def pretrain_settings(config: dict, tasks: list[dict], init: str) -> dict:
    """What determines a pretraining's weights: the corpus tasks' text files and fields, the model,
    the pretrain settings, the seed and the start (``init``): KEYS' pretraining column."""
    for task in tasks:
        if missing := unclassified({"task": task}, PRETRAIN):
            raise UserError(
                f"config keys {', '.join(missing)}: not classified as a setting or runtime; add them to "
                "experiments/records.py KEYS"
            )
    kept = {k: v for k, v in _settings_of(config, PRETRAIN).items() if k in ("model", "pretrain", "seed")}
    return {"tasks": [{k: t.get(k) for k in TASK_KEYS} for t in tasks], **kept, "init": init}


def pretrain_id(config: dict, tasks: list[dict], init: str) -> str:
    blob = json.dumps(pretrain_settings(config, tasks, init), sort_keys=True, default=str).encode()
    names = "+".join(t["name"] for t in tasks)
    return f"{names}_{config['model']['name']}_{hashlib.sha256(blob).hexdigest()[:10]}"


def pretrain_record(
    config: dict,
    tasks: list[dict],
    init: str,
    status: str,
    history: list[dict],
    ending: dict,
    corpus: dict,
    model: dict,
    timings: dict,
    environment: dict,
) -> dict:
    """The record of a finished (or diverged) pretraining; ``history`` holds one entry per
    held-out evaluation (step, loss, accuracy, and the training means since the one before)."""
    return {
        "id": pretrain_id(config, tasks, init),
        "status": status,
        "tasks": [t["name"] for t in tasks],
        "model": config["model"]["name"],
        "seed": config["seed"],
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
        raise UserError(
            f"{Path(folder) / PRETRAIN_RECORD_FILE}: this pretraining {record.get('status')} (a non-finite loss "
            f"at step {at.get('global_step')}) and saved no model; pretrain again with other settings"
        )
    return {
        "id": record["id"],
        "folder": str(folder),
        "tasks": record["tasks"],
        "model": record["model"],
        "steps": record["steps"],
        "init": record["start"]["init"],
        "final": {k: (record["history"] or [{}])[-1].get(k) for k in ("step", "loss", "accuracy")},
        "finished_at": record.get("finished_at"),
    }
