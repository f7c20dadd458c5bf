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


def pad(sequences: list[np.ndarray], multiple: int = 1) -> np.ndarray:
    """Right-pad with 0 ([PAD]) to the longest sequence of the batch, rounded up to a
    multiple of ``multiple`` (few distinct shapes, so XLA compiles a few programs, not one per length)."""
    length = -(-max(len(s) for s in sequences) // multiple) * multiple
    out = np.zeros((len(sequences), length), dtype=np.int32)
    for row, seq in zip(out, sequences):
        row[: len(seq)] = seq
    return out


@dataclass
class PaddingStats:
    """Real and padded token counts of the batches ``batches`` yielded."""

    real: int = 0
    padded: int = 0

    @property
    def efficiency(self) -> float:
        """Real tokens / padded tokens (1.0: no padding)."""
        return self.real / self.padded if self.padded else 1.0


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                bucket_by_length: bool = False, chunk_batches: int = 100) -> list[np.ndarray]:
    """The example indices of each batch.

    Plain: a permutation (``rng``) or file order, cut into batches; the last may be smaller.
    ``bucket_by_length`` (with ``rng``): the permutation is cut into chunks of
    ``chunk_batches`` batches, each chunk is sorted by length and cut into batches, and the
    batches are shuffled, so a batch holds similar lengths but is still a random draw. All of
    it comes from ``rng`` alone: the order depends only on (seed, epoch), as resume needs.
    Without ``rng`` bucketing sorts everything by length (for prediction; the caller reorders).
    """
    if rng is None:
        order = np.argsort(lengths, kind="stable") if bucket_by_length else np.arange(len(lengths))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    if not bucket_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * chunk_batches
    out = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def batches(token_ids: list[np.ndarray], labels: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
            bucket_by_length: bool = False, pad_to_multiple_of: int = 1, stats: PaddingStats | None = None):
    """Yield ``((token_ids, segment_ids), labels)`` batches padded per batch, in
    ``batch_order``'s order; ``stats`` (if given) counts real and padded tokens.

    With ``rng`` the order is shuffled (a fresh permutation per call, so per epoch), as in
    the blog's data generator.
    """
    lengths = np.fromiter((len(s) for s in token_ids), dtype=np.int64, count=len(token_ids))
    for chosen in batch_order(lengths, batch_size, rng, bucket_by_length):
        ids = pad([token_ids[i] for i in chosen], pad_to_multiple_of)
        if stats is not None:
            stats.real += int(lengths[chosen].sum())
            stats.padded += ids.size
        yield (ids, np.zeros_like(ids)), labels[chosen]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
