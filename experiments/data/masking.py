"""Masked-LM inputs: BERT's masking (``masked_share`` of the tokens other than [CLS], [SEP] and
padding; of those 80 % [MASK], 10 % a random non-special token, 10 % unchanged), optionally of
whole ``jieba`` words with their ``##`` pieces, as HFL's wwm models mask LTP words.

The count is rounded at random and a group that does not fit whole is taken with the probability
of the share of it that would, so the masked share is exact in expectation (where and why this
differs from Google's create_pretraining_data.py: docs/pretraining.md, Masking). A batch's
predictions are gathered at ``positions`` (Google's ``masked_lm_positions``), padded with weight 0.
Every draw comes from the caller's ``rng``, derived from (seed, epoch, batch), so a resumed
pretraining masks as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class MaskSpec:
    """What masking needs of a vocabulary, and the shares."""

    mask_id: int
    replacement_ids: np.ndarray  # token ids a random replacement is drawn from (no special tokens)
    masked_share: float = 0.15
    mask_share: float = 0.8  # of the chosen positions: -> [MASK]
    random_share: float = 0.1  # -> a random token; the rest stay as they are

    @classmethod
    def from_vocab(cls, vocab: dict[str, int], **shares) -> MaskSpec:
        if "[MASK]" not in vocab:
            raise UserError("the vocabulary has no [MASK] token: masked-LM pretraining needs one")
        special = {vocab[t] for t in SPECIAL_TOKENS if t in vocab}
        ids = np.array(sorted(set(vocab.values()) - special), dtype=np.int32)
        return cls(vocab["[MASK]"], ids, **shares)


@dataclass
class MaskedBatch:
    """One batch's masked-LM arrays (numpy, int32 but ``weights``)."""

    token_ids: np.ndarray  # (batch, length): the inputs, with the chosen positions replaced
    segment_ids: np.ndarray
    positions: np.ndarray  # (batch, P): the chosen positions, padded with 0
    labels: np.ndarray  # (batch, P): the original token at each chosen position (0 where padded)
    weights: np.ndarray  # (batch, P) float32: 1 at a chosen position, 0 where padded

    @property
    def real_tokens(self) -> int:
        return int((self.token_ids != 0).sum())


def token_groups(token_ids: np.ndarray, special_ids: set[int], words: np.ndarray | None = None) -> np.ndarray:
    """Per token of an encoded sequence: -1 where it may never be masked ([CLS], [SEP], [PAD]),
    else its group: its position, or (whole-word masking) the number of its word, ``words``."""
    groups = np.arange(len(token_ids), dtype=np.int32) if words is None else words.astype(np.int32).copy()
    groups[np.isin(token_ids, list(special_ids))] = -1
    return groups


def choose(groups: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The positions to predict in one sequence (sorted): whole groups in a random order while
    they fit in the sequence's count (``share`` of its candidates, rounded at random)."""
    candidates = np.flatnonzero(groups >= 0)
    if len(candidates) == 0:
        return candidates
    expected = share * len(candidates)
    count = int(expected) + int(rng.random() < expected - int(expected))
    if count == 0:
        return candidates[:0]
    by_group = candidates[np.argsort(groups[candidates], kind="stable")]
    _, sizes = np.unique(groups[by_group], return_counts=True)
    members = np.split(by_group, np.cumsum(sizes)[:-1])
    chosen, total = [], 0
    for g in rng.permutation(len(members)):
        if total == count:
            break
        if total + len(members[g]) > count:  # a word that does not fit: taken with the share of it that does
            if rng.random() < (count - total) / len(members[g]):
                chosen.append(members[g])
            break
        chosen.append(members[g])
        total += len(members[g])
    return np.sort(np.concatenate(chosen)) if chosen else candidates[:0]


def mask_batch(
    token_ids: np.ndarray, segment_ids: np.ndarray, groups: list[np.ndarray], spec: MaskSpec, rng: np.random.Generator
) -> MaskedBatch:
    """Mask a padded batch (``token_ids``: batch x length, 0 = padding); ``groups[i]`` is
    ``token_groups`` of row i's unpadded tokens."""
    inputs = token_ids.copy()
    picked = [choose(g, spec.masked_share, rng) for g in groups]
    width = max(1, max(len(p) for p in picked))
    positions = np.zeros((len(picked), width), np.int32)
    labels = np.zeros((len(picked), width), np.int32)
    weights = np.zeros((len(picked), width), np.float32)
    for row, chosen in enumerate(picked):
        n = len(chosen)
        positions[row, :n], labels[row, :n], weights[row, :n] = chosen, token_ids[row, chosen], 1.0
        how = rng.random(n)
        to_mask = chosen[how < spec.mask_share]
        to_random = chosen[(how >= spec.mask_share) & (how < spec.mask_share + spec.random_share)]
        inputs[row, to_mask] = spec.mask_id
        inputs[row, to_random] = spec.replacement_ids[rng.integers(0, len(spec.replacement_ids), len(to_random))]
    return MaskedBatch(inputs, segment_ids, positions, labels, weights)


# --- whole words ------------------------------------------------------------------------------------


def jieba_segmenter():
    """``jieba.lcut``, imported on first use; one line if it is not installed."""
    try:
        import jieba
    except ImportError:
        raise UserError(
            "pretrain.whole_word_masking=true segments words with jieba, which is not installed in "
            "this environment (a dependency in pyproject.toml): run `make env`, or set "
            "pretrain.whole_word_masking=false"
        ) from None
    jieba.setLogLevel(60)  # no "Building prefix dict" lines on stderr
    return jieba.lcut


def word_numbers(tokenizer, text: str, segment) -> np.ndarray:
    """The word number of each token of ``tokenizer.tokenize(text)`` without [CLS]/[SEP]:
    tokens whose characters lie in one word of ``segment(text)`` share a number, and a ``##``
    piece joins the token before it. A token the tokenizer cannot map back to the text
    ([UNK], say) is a word of its own."""
    tokens = tokenizer.tokenize(text)[1:-1]
    char_word = np.zeros(len(text) + 1, np.int64)
    start = 0
    for number, word in enumerate(segment(text)):
        char_word[start : start + len(word)] = number
        start += len(word)
    spans = tokenizer.rematch(text, tokens)
    out, fresh = np.zeros(len(tokens), np.int64), start + 1  # numbers above any word's for lone tokens
    for i, (token, span) in enumerate(zip(tokens, spans)):
        if token.startswith("##") and i > 0:
            out[i] = out[i - 1]
        elif span:
            out[i] = char_word[min(span[0], len(text) - 1)]
        else:
            out[i], fresh = fresh, fresh + 1
    return out


def sequence_words(
    token_ids: np.ndarray, segment_ids: np.ndarray, words_a: np.ndarray, words_b: np.ndarray | None
) -> np.ndarray:
    """Word numbers of an encoded ``[CLS] a [SEP] (b [SEP])`` sequence, from the word numbers of
    each text's full token list (truncation keeps a prefix of each); special positions get -1."""
    n_a = int((segment_ids == 0).sum()) - 2  # [CLS] and the first [SEP] are segment 0
    out = np.full(len(token_ids), -1, np.int64)
    out[1 : 1 + n_a] = words_a[:n_a]
    if words_b is not None:
        n_b = len(token_ids) - n_a - 3
        offset = (int(words_a.max()) + 1) if len(words_a) else 0
        out[2 + n_a : 2 + n_a + n_b] = words_b[:n_b] + offset
    return out
