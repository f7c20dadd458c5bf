"""Tokenized splits cached on disk, so a rerun on the same data skips tokenizing.

An entry is one ``.npz`` file (all token ids end to end, each example's length and, for pairs,
the segment ids end to end) named by a hash of everything the ids depend on: the data file's
sha256, the texts as the task's loader made them (so a change of task.text_fields, of the WSC
marking or of skipped lines is a new entry), the vocabulary, the maximum length, how many of the
file's examples were used (``task.max_*_samples``) and the tokenizer's settings. So an entry is
never stale; entries are written atomically, so a sweep's runs can share the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from experiments import records
from experiments.data import batching, loaders

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the encoding itself changes (e.g. batching.encode or bert4keras behaviour)


def vocab_sha256(tokenizer) -> str:
    """The hash of bert4keras's token -> id table (``_token_dict``: it has no public accessor)."""
    table = sorted(tokenizer._token_dict.items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode()).hexdigest()


def texts_sha256(texts: list[str], texts_b: list[str] | None) -> str:
    return hashlib.sha256(json.dumps([texts, texts_b], ensure_ascii=False).encode()).hexdigest()


def cache_key(source: Path, tokenizer, max_length: int, texts: list[str], texts_b: list[str] | None = None) -> str:
    parts = {
        "format": FORMAT,
        "file": records.file_sha256(source),
        "texts": texts_sha256(texts, texts_b),
        "vocab": vocab_sha256(tokenizer),
        "max_length": max_length,
        "count": len(texts),
        "lower_case": bool(getattr(tokenizer, "_do_lower_case", True)),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def encode(
    tokenizer,
    texts: list[str],
    max_length: int,
    source: Path,
    cache_dir: str | Path | None,
    progress: bool = False,
    texts_b: list[str] | None = None,
):
    """``(batching.encode(...), hit)``: the token ids and segment ids of ``texts`` (with
    ``texts_b``: pairs), read from ``source``, and whether they came from the cache;
    ``cache_dir=None`` turns the cache off."""
    if cache_dir is None:
        return batching.encode(tokenizer, texts, max_length, progress, texts_b), False
    key = cache_key(Path(source), tokenizer, max_length, texts, texts_b)
    path = Path(cache_dir) / f"{Path(source).stem}-{key}.npz"
    try:
        with np.load(path) as entry:
            flat, lengths = entry["token_ids"], entry["lengths"]
            segments = entry["segment_ids"] if texts_b is not None else None
        if len(lengths) == len(texts):
            log.info("%s: %d token sequences from the cache %s (not tokenized)", source, len(texts), path)
            return (_split(flat, lengths), None if segments is None else _split(segments, lengths)), True
    except (OSError, ValueError, KeyError):  # missing or unreadable: tokenize again, overwrite
        pass
    token_ids, segment_ids = batching.encode(tokenizer, texts, max_length, progress, texts_b)
    lengths = np.asarray([len(t) for t in token_ids], dtype=np.int64)
    arrays = {"token_ids": _flat(token_ids), "lengths": lengths}
    if segment_ids is not None:
        arrays["segment_ids"] = _flat(segment_ids)
    records.write_bytes_atomic(path, lambda f: np.savez(f, **arrays))
    log.info("%s: tokenized %d texts, cached in %s", source, len(texts), path)
    return (token_ids, segment_ids), False


def dataset(tokenizer, split: loaders.Split, file_name: str, task_cfg, paths_cfg, progress: bool | None = None):
    """``split`` (read from the task's ``file_name``) as a ``batching.Dataset`` (token ids, labels,
    segment ids) cut at ``task.max_length``, through the cache in ``paths.cache_dir``, and whether
    the cache had it."""
    from experiments.data import batching

    source = loaders.task_dir(paths_cfg.clue_dir, task_cfg) / file_name
    (token_ids, segment_ids), hit = encode(
        tokenizer, split.texts, task_cfg.max_length, source, paths_cfg.get("cache_dir"), progress, split.texts_b
    )
    return batching.Dataset(token_ids, split.labels, segment_ids), hit


def _flat(sequences: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(sequences) if sequences else np.zeros(0, np.int32)


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
