"""From texts to batches: encode with a model's tokenizer, pad per batch, order (shuffled or
by length), prefetch. What computes a batch from a split lives here; reading the split is
``experiments.data.loaders.clue``'s, and the train loop is ``experiments.train``'s."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    """A tokenized split: what the train loop and evaluation iterate over."""

    token_ids: list[np.ndarray]
    labels: np.ndarray
    segment_ids: list[np.ndarray] | None = None  # None: all 0 (single texts); pairs: 0 then 1

    def __len__(self):
        return len(self.token_ids)


def encode(
    tokenizer, texts: list[str], max_length: int, progress: bool = False, texts_b: list[str] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Token ids of each text, ``[CLS] a [SEP]``, or of each pair, ``[CLS] a [SEP] b [SEP]``,
    truncated to ``max_length`` tokens, and (pairs only; None for single texts, all 0) the
    segment ids: 0 for [CLS] a [SEP], 1 for b [SEP]. bert4keras's Tokenizer.encode truncates
    a pair by dropping the last token of the longer text (of the first on a tie) until it fits
    (bert4keras/snippets.py, truncate_sequences)."""
    from tqdm.auto import tqdm

    pairs = zip(texts, texts_b) if texts_b is not None else ((text, None) for text in texts)
    token_ids, segment_ids = [], []
    for a, b in tqdm(pairs, total=len(texts), desc="tokenize", unit="text", disable=not progress, leave=False):
        tokens, segments = tokenizer.encode(a, b, maxlen=max_length)
        token_ids.append(np.asarray(tokens, dtype=np.int32))
        segment_ids.append(np.asarray(segments, dtype=np.int32))
    return token_ids, (segment_ids if texts_b is not None else None)


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


def batch_order(
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    bucket_by_length: bool = False,
    chunk_batches: int = 100,
) -> list[np.ndarray]:
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


def batches(
    token_ids: list[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    bucket_by_length: bool = False,
    pad_to_multiple_of: int = 1,
    stats: PaddingStats | None = None,
    segment_ids: list[np.ndarray] | None = None,
):
    """Yield ``((token_ids, segment_ids), labels)`` batches padded per batch, in
    ``batch_order``'s order; ``stats`` (if given) counts real and padded tokens.
    ``segment_ids`` None: all 0 (single texts).

    With ``rng`` the order is shuffled (a fresh permutation per call, so per epoch), as in
    the blog's data generator.
    """
    lengths = np.fromiter((len(s) for s in token_ids), dtype=np.int64, count=len(token_ids))
    for chosen in batch_order(lengths, batch_size, rng, bucket_by_length):
        ids = pad([token_ids[i] for i in chosen], pad_to_multiple_of)
        if stats is not None:
            stats.real += int(lengths[chosen].sum())
            stats.padded += ids.size
        segments = (
            np.zeros_like(ids) if segment_ids is None else pad([segment_ids[i] for i in chosen], pad_to_multiple_of)
        )
        yield (ids, segments), labels[chosen]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def prefetch(items):
    """Yield ``items`` in order while a background thread makes the next one: the next
    batch is padded while the device (or TensorFlow's own threads) runs the current step.
    The order is the iterator's own, so what a run computes does not change."""
    from concurrent.futures import ThreadPoolExecutor

    done = object()
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        upcoming = pool.submit(next, iterator, done)
        while (item := upcoming.result()) is not done:
            upcoming = pool.submit(next, iterator, done)
            yield item


class Waiting:
    """Iterate over ``items``, adding up in ``seconds`` the time spent waiting for each one."""

    def __init__(self, items):
        self.items, self.seconds = iter(items), 0.0

    def __iter__(self):
        import time

        end = object()
        while True:
            start = time.perf_counter()
            item = next(self.items, end)
            self.seconds += time.perf_counter() - start
            if item is end:
                return
            yield item
