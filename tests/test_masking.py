"""Masked-LM masking (experiments/data/masking.py) on fixed seeds: the masked share is 15 %, split
80/10/10; [CLS], [SEP] and padding are never chosen; whole-word masking takes every token of a
word or none; the same (seed, epoch, batch) masks the same positions."""

import numpy as np
import pytest
from bert4keras.tokenizers import Tokenizer

from experiments.data import masking
from experiments.model import tokenizer as tokenizers

PAD, UNK, CLS, SEP, MASK = range(5)
VOCAB = {**{t: i for i, t in enumerate(masking.SPECIAL_TOKENS)}, **{f"t{i}": i for i in range(5, 100)}}
SPECIAL = {PAD, CLS, SEP}


def synthetic(n=3000, seed=0):
    """``n`` sequences [CLS] x1..xk [SEP] of lengths 3..62, padded into one batch."""
    rng = np.random.default_rng(seed)
    seqs = [np.array([CLS, *rng.integers(5, 100, rng.integers(1, 61)), SEP], np.int32) for _ in range(n)]
    ids = np.zeros((n, max(len(s) for s in seqs)), np.int32)
    for row, s in zip(ids, seqs):
        row[: len(s)] = s
    return ids, [masking.token_groups(s, SPECIAL) for s in seqs]


def test_masked_share_is_15_percent_split_80_10_10_and_never_special_or_padding():
    ids, groups = synthetic()
    spec = masking.MaskSpec.from_vocab(VOCAB)
    out = masking.mask_batch(ids, np.zeros_like(ids), groups, spec, np.random.default_rng(1))
    candidates = int(np.isin(ids, list(SPECIAL), invert=True).sum())
    chosen = out.weights > 0
    rows = np.repeat(np.arange(len(ids))[:, None], out.positions.shape[1], 1)[chosen]
    cols = out.positions[chosen]
    assert abs(chosen.sum() / candidates - 0.15) < 0.01, chosen.sum() / candidates
    assert not np.isin(ids[rows, cols], list(SPECIAL)).any()  # never [CLS], [SEP] or padding
    assert len(set(zip(rows.tolist(), cols.tolist()))) == chosen.sum()  # each position once
    np.testing.assert_array_equal(out.labels[chosen], ids[rows, cols])  # the label is the original token
    assert (out.labels[~chosen] == 0).all() and (out.positions[~chosen] == 0).all()
    new = out.token_ids[rows, cols]
    masked, kept = np.mean(new == MASK), np.mean(new == ids[rows, cols])
    replaced = np.mean((new != MASK) & (new != ids[rows, cols]))
    # a random replacement equals the original with chance 1/95: it then counts as kept
    assert abs(masked - 0.8) < 0.015 and abs(replaced - 0.1 * 94 / 95) < 0.01 and abs(kept - (0.1 + 0.1 / 95)) < 0.01
    assert not np.isin(new[new != ids[rows, cols]], [PAD, UNK, CLS, SEP]).any()  # replacements are not special
    untouched = np.ones(ids.shape, bool)
    untouched[rows, cols] = False
    np.testing.assert_array_equal(out.token_ids[untouched], ids[untouched])  # nothing else changes


def test_the_same_rng_masks_the_same_positions():
    ids, groups = synthetic(200)
    spec = masking.MaskSpec.from_vocab(VOCAB)
    a, b, c = (masking.mask_batch(ids, np.zeros_like(ids), groups, spec, np.random.default_rng(s)) for s in (3, 3, 4))
    for key in ("token_ids", "positions", "labels", "weights"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.positions, c.positions)


def two_character_words(text):
    """A stand-in segmenter: words of two characters (the last may be one)."""
    return [text[i : i + 2] for i in range(0, len(text), 2)]


SENTENCES = ["今天我们一起看看这个新闻的内容非常有意思", "iphone手机的价格是多少大家都在讨论", "足球比赛在周末举行"]


def whole_word_case(segment, n=3000):
    tokenizer = Tokenizer(tokenizers.char_vocab(SENTENCES), do_lower_case=True)
    vocab = tokenizer._token_dict
    special = {vocab["[PAD]"], vocab["[CLS]"], vocab["[SEP]"]}
    texts = [SENTENCES[i % 3] for i in range(n)]
    encoded = [tokenizer.encode(t)[0] for t in texts]
    words = [
        masking.sequence_words(
            np.array(ids), np.zeros(len(ids), int), masking.word_numbers(tokenizer, t, segment), None
        )
        for ids, t in zip(encoded, texts)
    ]
    ids = np.zeros((n, max(map(len, encoded))), np.int32)
    for row, e in zip(ids, encoded):
        row[: len(e)] = e
    groups = [masking.token_groups(np.array(e), special, w) for e, w in zip(encoded, words)]
    out = masking.mask_batch(
        ids, np.zeros_like(ids), groups, masking.MaskSpec.from_vocab(vocab), np.random.default_rng(0)
    )
    return tokenizer, texts, groups, out


def test_whole_word_masking_masks_every_token_of_a_word_or_none():
    tokenizer, texts, groups, out = whole_word_case(two_character_words)
    # "iphone" is one word piece sequence i ##p ##h ##o ##n ##e: with "手" it spans the 2-char words
    # "ip", "ho", "ne": the ## pieces join their word, so the whole of "iphone" is one group
    tokens = tokenizer.tokenize(SENTENCES[1])
    assert tokens[1:7] == ["i", "##p", "##h", "##o", "##n", "##e"]
    assert len(set(groups[1][1:7].tolist())) == 1
    total = candidates = 0
    for row, g in enumerate(groups):
        chosen = set(out.positions[row, out.weights[row] > 0].tolist())
        for word in set(g[g >= 0].tolist()):
            members = set(np.flatnonzero(g == word).tolist())
            assert members <= chosen or not members & chosen, (texts[row], word)
        total += len(chosen)
        candidates += int((g >= 0).sum())
    assert abs(total / candidates - 0.15) < 0.01, total / candidates  # words that do not fit are taken at random


def test_pair_sequences_keep_each_texts_word_numbers_after_truncation():
    words_a, words_b = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1])
    ids = np.array([CLS, 5, 6, 7, SEP, 8, 9, SEP])  # a truncated to 3 tokens, b to 2
    segments = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(masking.sequence_words(ids, segments, words_a, words_b), [-1, 0, 0, 1, -1, 3, 4, -1])


def test_jieba_words_are_masked_whole():
    pytest.importorskip("jieba", reason="jieba is not installed in this environment")
    _, texts, groups, out = whole_word_case(masking.jieba_segmenter())
    assert any(np.bincount(g[g >= 0]).max() > 1 for g in groups)  # jieba found words of several characters
    for row, g in enumerate(groups):
        chosen = set(out.positions[row, out.weights[row] > 0].tolist())
        for word in set(g[g >= 0].tolist()):
            members = set(np.flatnonzero(g == word).tolist())
            assert members <= chosen or not members & chosen
