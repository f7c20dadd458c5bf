"""Tokenized splits cached on disk, so a rerun on the same data skips tokenizing.

An entry is one ``.npz`` file (all token ids end to end, and each text's length) named by
a hash of everything the ids depend on: the data file's sha256, the vocabulary, the
maximum length, how many of the file's texts were used (``task.max_*_samples``) and the
tokenizer's settings. Any change gives a new name, so an entry is never stale; entries
are written atomically (temporary file + rename), so concurrent runs of a sweep can share
the folder and a killed run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from experiments import data

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the encoding itself changes (e.g. data.encode or bert4keras behaviour)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def vocab_sha256(tokenizer) -> str:
    """The hash of bert4keras's token -> id table (``_token_dict``: it has no public accessor)."""
    table = sorted(tokenizer._token_dict.items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode()).hexdigest()


def cache_key(source: Path, tokenizer, max_length: int, count: int) -> str:
    parts = {"format": FORMAT, "file": file_sha256(source), "vocab": vocab_sha256(tokenizer),
             "max_length": max_length, "count": count,
             "lower_case": bool(getattr(tokenizer, "_do_lower_case", True))}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def encode(tokenizer, texts: list[str], max_length: int, source: Path, cache_dir: str | Path | None,
           progress: bool = False) -> tuple[list[np.ndarray], bool]:
    """``data.encode(...)`` of ``texts`` (the first ``len(texts)`` texts of ``source``) and
    whether it came from the cache; ``cache_dir=None`` turns the cache off."""
    if cache_dir is None:
        return data.encode(tokenizer, texts, max_length, progress), False
    path = Path(cache_dir) / f"{Path(source).stem}-{cache_key(Path(source), tokenizer, max_length, len(texts))}.npz"
    try:
        with np.load(path) as entry:
            flat, lengths = entry["token_ids"], entry["lengths"]
        if len(lengths) == len(texts):
            log.info("%s: %d token sequences from the cache %s (not tokenized)", source, len(texts), path)
            return np.split(flat, np.cumsum(lengths)[:-1]) if len(texts) else [], True
    except (OSError, ValueError, KeyError):  # missing or unreadable: tokenize again, overwrite
        pass
    token_ids = data.encode(tokenizer, texts, max_length, progress)
    lengths = np.asarray([len(t) for t in token_ids], dtype=np.int64)
    flat = np.concatenate(token_ids) if token_ids else np.zeros(0, np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, token_ids=flat, lengths=lengths)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("%s: tokenized %d texts, cached in %s", source, len(texts), path)
    return token_ids, False
