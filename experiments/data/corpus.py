"""A masked-LM corpus from CLUE tasks: the texts of chosen tasks and splits, read by the loaders
the runs use (pairs as two segments, CLUEWSC's marked spans), labels never read.

``splits``: ``train`` (``task.train_file``), ``dev`` (``task.dev_file``) and ``test`` (the files
of ``task.predict_files``; a test file other than the first may be absent). A held-out share of
the texts, drawn with a fixed seed (the same texts for every pretraining seed, so that curves of
several seeds are comparable), is kept for the masked-LM evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from experiments import records
from experiments.data import batching, loaders, masking
from experiments.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
HELD_OUT_SEED = 20200101  # fixed: the held-out texts do not depend on the pretraining's seed


@dataclass
class Texts:
    """Texts of the corpus (both segments of a pair) and where they came from."""

    texts: list[str] = field(default_factory=list)
    texts_b: list[str | None] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)  # task, split, path, sha256, texts

    def __len__(self):
        return len(self.texts)


def split_files(task_cfg, split: str) -> list[tuple[str, bool]]:
    """(file name, required) of a task's split."""
    if split == "train":
        return [(task_cfg.get("train_file", "train.json"), True)]
    if split == "dev":
        return [(task_cfg.get("dev_file", "dev.json"), True)]
    if split == "test":
        names = list((task_cfg.get("predict_files") or {"test.json": None}).keys())
        return [(name, k == 0) for k, name in enumerate(names)]
    raise UserError(f"pretrain.corpus.splits: {split!r} is not one of {', '.join(SPLITS)}")


def read_texts(clue_dir, task_cfgs: list, splits: list[str], max_texts: int | None = None) -> Texts:
    """Every text of ``splits`` of each task (the first ``max_texts`` of each file), unlabelled."""
    out = Texts()
    for task_cfg in task_cfgs:
        folder = loaders.task_dir(clue_dir, task_cfg)
        fmt = loaders.task_format(task_cfg)
        for split in splits:
            for name, required in split_files(task_cfg, split):
                path = folder / name
                if not required and not path.is_file():
                    continue
                part = loaders.read_split(path, [], labelled=False, limit=max_texts, fmt=fmt)
                out.texts += part.texts
                out.texts_b += part.texts_b if part.texts_b is not None else [None] * len(part.texts)
                out.files.append(
                    {
                        "task": task_cfg.name,
                        "split": split,
                        "path": str(path),
                        "sha256": records.file_sha256(path),
                        "texts": len(part.texts),
                    }
                )
    if not out.texts:
        raise UserError(
            f"the corpus (tasks {', '.join(t.name for t in task_cfgs)}, splits {', '.join(splits)}) has no texts"
        )
    return out


def held_out_indices(n: int, share: float, maximum: int | None) -> np.ndarray:
    """The held-out texts (sorted indices): ``share`` of ``n`` (at least 1, at most ``maximum``)."""
    count = min(max(1, int(round(share * n))), maximum or n, n - 1)
    return np.sort(np.random.default_rng(HELD_OUT_SEED).permutation(n)[:count])


@dataclass
class MlmData:
    """Tokenised texts for masked-LM: token and segment ids, and each token's masking group."""

    token_ids: list[np.ndarray]
    segment_ids: list[np.ndarray]
    groups: list[np.ndarray]

    def __len__(self):
        return len(self.token_ids)

    @property
    def tokens(self) -> int:
        return int(sum(len(t) for t in self.token_ids))


def tokenize(
    tokenizer,
    texts: list[str],
    texts_b: list[str | None],
    max_length: int,
    special_ids: set[int],
    whole_words: bool,
    progress: bool = False,
) -> MlmData:
    """Encode as a run does (``[CLS] a [SEP] (b [SEP])``, truncated to ``max_length``); with
    ``whole_words`` each token's group is its jieba word (masking.word_numbers)."""
    pairs = [i for i, b in enumerate(texts_b) if b is not None]
    singles = [i for i, b in enumerate(texts_b) if b is None]
    token_ids: list = [None] * len(texts)
    segment_ids: list = [None] * len(texts)
    for chosen, paired in ((singles, False), (pairs, True)):
        if not chosen:
            continue
        ids, segs = batching.encode(
            tokenizer,
            [texts[i] for i in chosen],
            max_length,
            progress,
            [texts_b[i] for i in chosen] if paired else None,
        )
        for k, i in enumerate(chosen):
            token_ids[i] = ids[k]
            segment_ids[i] = segs[k] if segs is not None else np.zeros_like(ids[k])
    segment = masking.jieba_segmenter() if whole_words else None
    groups = []
    for i, (ids, segs) in enumerate(zip(token_ids, segment_ids)):
        words = None
        if segment is not None:
            words_b = masking.word_numbers(tokenizer, texts_b[i], segment) if texts_b[i] is not None else None
            words = masking.sequence_words(ids, segs, masking.word_numbers(tokenizer, texts[i], segment), words_b)
        groups.append(masking.token_groups(ids, special_ids, words))
    return MlmData(token_ids, segment_ids, groups)


def subset(data: MlmData, indices) -> MlmData:
    return MlmData(
        [data.token_ids[i] for i in indices], [data.segment_ids[i] for i in indices], [data.groups[i] for i in indices]
    )


def describe(texts: Texts, train: MlmData, held_out: MlmData) -> dict:
    """The corpus part of the pretrain record."""
    return {
        "files": texts.files,
        "texts": len(texts),
        "tokens": train.tokens + held_out.tokens,
        "train_texts": len(train),
        "train_tokens": train.tokens,
        "held_out_texts": len(held_out),
        "held_out_tokens": held_out.tokens,
    }
