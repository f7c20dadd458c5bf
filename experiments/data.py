"""CLUE classification data: read the official JSON-lines files, encode them, batch them.

Nothing here touches the network: a task needs its folder under ``paths.clue_dir``
(``tnews_public/`` or ``iflytek_public/`` as the official zips unpack) and a vocab file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.errors import UserError


@dataclass
class Split:
    """One file of a task: the texts, their class indices (-1 where unlabelled) and ids."""

    texts: list[str]
    labels: np.ndarray
    ids: list


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """The objects of a JSON-lines file with their line numbers; blank lines are skipped."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; run `make data` or point paths.clue_dir at a copy of CLUE")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text ({err.reason}); re-download or re-encode the file") from None
    rows = []
    # split("\n"), not splitlines(): IFLYTEK sentences contain U+2028, which splitlines() breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not a JSON object ({err.msg}); fix or remove the line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    if not rows:
        raise UserError(f"{path}: the file is empty; re-download it with `make data`")
    return rows


def read_label_ids(path: Path) -> list[str]:
    """The task's label ids in file order: a label's class index is its position here."""
    return [_field(path, number, obj, "label") for number, obj in read_jsonl(path)]


def read_split(path: Path, label_ids: list[str], labelled: bool = True, limit: int | None = None) -> Split:
    """Read a split; ``limit`` keeps the first N examples (HF run_glue's max_*_samples)."""
    index = {label: i for i, label in enumerate(label_ids)}
    rows = read_jsonl(path)
    if limit is not None:
        rows = rows[:limit]
    texts, labels, ids = [], [], []
    for number, obj in rows:
        texts.append(_field(path, number, obj, "sentence"))
        if labelled:
            label = _field(path, number, obj, "label")
            if label not in index:
                raise UserError(
                    f"{path}:{number}: label {label!r} is not in labels.json; valid ids: {', '.join(label_ids)}"
                )
            labels.append(index[label])
        else:
            labels.append(-1)
        ids.append(obj.get("id", len(ids)))
    return Split(texts, np.asarray(labels, dtype=np.int32), ids)


def _field(path: Path, number: int, obj: dict, key: str) -> str:
    if key not in obj:
        raise UserError(f"{path}:{number}: the line has no {key!r} field; fields found: {', '.join(obj) or 'none'}")
    return str(obj[key])


def task_dir(clue_dir: str | Path, task_cfg) -> Path:
    folder = Path(clue_dir) / task_cfg.dir
    if not folder.is_dir():
        raise UserError(
            f"{folder}: CLUE {task_cfg.name} data folder not found; run `make data TASKS={task_cfg.name}` "
            f"or set paths.clue_dir to a folder holding {task_cfg.dir}/"
        )
    return folder


def load_task(clue_dir: str | Path, task_cfg) -> tuple[list[str], Split, Split]:
    """Label ids, train and dev splits of a task, truncated as the task config says."""
    folder = task_dir(clue_dir, task_cfg)
    label_ids = read_label_ids(folder / "labels.json")
    if len(label_ids) != task_cfg.num_labels:
        raise UserError(
            f"{folder / 'labels.json'}: {len(label_ids)} labels, but task.num_labels is {task_cfg.num_labels}"
        )
    train = read_split(folder / "train.json", label_ids, limit=task_cfg.max_train_samples)
    dev = read_split(folder / "dev.json", label_ids, limit=task_cfg.max_dev_samples)
    return label_ids, train, dev


def encode(tokenizer, texts: list[str], max_length: int, progress: bool = False) -> list[np.ndarray]:
    """Token ids of each text, [CLS] ... [SEP], truncated to ``max_length`` tokens."""
    from tqdm.auto import tqdm

    return [
        np.asarray(tokenizer.encode(text, maxlen=max_length)[0], dtype=np.int32)
        for text in tqdm(texts, desc="tokenize", unit="text", disable=not progress, leave=False)
    ]


def pad(sequences: list[np.ndarray]) -> np.ndarray:
    """Right-pad with 0 ([PAD]) to the longest sequence of the batch."""
    out = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int32)
    for row, seq in zip(out, sequences):
        row[: len(seq)] = seq
    return out


def batches(token_ids: list[np.ndarray], labels: np.ndarray, batch_size: int, rng: np.random.Generator | None = None):
    """Yield ``((token_ids, segment_ids), labels)`` batches padded per batch.

    With ``rng`` the order is shuffled (a fresh permutation per call, so per epoch); the
    last batch may be smaller, as in the blog's data generator.
    """
    order = np.arange(len(token_ids)) if rng is None else rng.permutation(len(token_ids))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        ids = pad([token_ids[i] for i in chosen])
        yield (ids, np.zeros_like(ids)), labels[chosen]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
