"""The input pipeline: the on-disk token cache, batching by length, padding to a multiple,
and what a run record says about them."""

import logging

import numpy as np
import pytest
import tensorflow as tf
from bert4keras.tokenizers import Tokenizer

import experiments  # noqa: F401  (TF_KERAS before bert4keras)
from experiments.commands.run import run
from experiments.config import compose
from experiments.data import batching, cache
from experiments.model import tokenizer
from experiments.train import loop, run_state
from tests.helpers.clue import CLASS_WORDS, tiny_overrides, write_jsonl

TEXTS = ["今天天气很好", "股票大涨", "我们一起看电影吧", "手机", "足球比赛非常精彩今天晚上"]


def tokenizer_for(texts):
    return Tokenizer(tokenizer.char_vocab(texts), do_lower_case=True)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "train.json"
    write_jsonl(path, [{"sentence": t, "label": "0"} for t in TEXTS])
    return path


def test_second_encode_reads_the_cache(source, tmp_path, caplog):
    tok = tokenizer_for(TEXTS)
    (first, segments), hit = cache.encode(tok, TEXTS, 16, source, tmp_path / "cache")
    assert segments is None
    assert not hit and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary file left behind
    with caplog.at_level(logging.INFO, logger="experiments.data.cache"):
        (second, _), hit = cache.encode(tok, TEXTS, 16, source, tmp_path / "cache")
    assert hit and "from the cache" in caplog.text
    expected, _ = batching.encode(tok, TEXTS, 16)
    for a, b, c in zip(first, second, expected):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
        assert b.dtype == np.int32


def test_cache_key_covers_file_vocab_max_length_and_count(source, tmp_path):
    folder = tmp_path / "cache"
    tok = tokenizer_for(TEXTS)
    cache.encode(tok, TEXTS, 16, source, folder)
    assert not cache.encode(tok, TEXTS, 8, source, folder)[1]  # another max length
    assert not cache.encode(tok, TEXTS[:3], 16, source, folder)[1]  # task.max_train_samples
    assert not cache.encode(tokenizer_for(TEXTS + ["新"]), TEXTS, 16, source, folder)[1]  # another vocab
    write_jsonl(source, [{"sentence": t, "label": "1"} for t in TEXTS])  # the file changed
    assert not cache.encode(tok, TEXTS, 16, source, folder)[1]
    assert cache.encode(tok, TEXTS, 16, source, folder)[1]
    assert len(list(folder.glob("*.npz"))) == 5


def test_unreadable_entry_is_tokenized_again_and_null_turns_the_cache_off(source, tmp_path):
    tok = tokenizer_for(TEXTS)
    cache.encode(tok, TEXTS, 16, source, tmp_path / "cache")
    [entry] = (tmp_path / "cache").glob("*.npz")
    entry.write_bytes(b"truncated")
    (ids, _), hit = cache.encode(tok, TEXTS, 16, source, tmp_path / "cache")
    assert not hit and [len(x) for x in ids] == [len(x) for x in batching.encode(tok, TEXTS, 16)[0]]
    assert cache.encode(tok, TEXTS, 16, source, tmp_path / "cache")[1]  # repaired
    assert not cache.encode(tok, TEXTS, 16, source, None)[1]
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.slow
def test_second_run_skips_tokenizing_and_records_padding(clue_dir, tmp_path, caplog):
    extra = {"trainer.epochs": 1, "paths.cache_dir": str(tmp_path / "cache")}
    first = run(compose(tiny_overrides(clue_dir, tmp_path / "a", extra=extra)))
    with caplog.at_level(logging.INFO, logger="experiments.data.cache"):
        second = run(compose(tiny_overrides(clue_dir, tmp_path / "b", extra=extra)))
    assert first["timings"]["token_cache"] == "miss" and second["timings"]["token_cache"] == "hit"
    assert caplog.text.count("(not tokenized)") == 2  # train and dev
    assert first["history"][0]["dev_acc"] == second["history"][0]["dev_acc"]
    for record in (first, second):
        timings = record["timings"]
        assert 0 < timings["padding_efficiency"] <= 1 and timings["train_samples_per_second"] > 0
        assert record["history"][0]["padding_efficiency"] == timings["padding_efficiency"]


def lengths_like_tnews(n=2000, seed=0):
    return np.clip(np.random.default_rng(seed).geometric(1 / 20, n) + 2, 3, 128)


def test_bucketed_batches_are_a_shuffled_partition_with_less_padding():
    lengths = lengths_like_tnews()

    def rng():  # (seed, epoch) as fit() draws it
        return np.random.default_rng(np.random.SeedSequence([3, 1]))

    plain = batching.batch_order(lengths, 32, rng())
    bucketed = batching.batch_order(lengths, 32, rng(), bucket_by_length=True)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(len(lengths)))  # each example once
    assert [len(b) for b in bucketed].count(32) >= len(bucketed) - 1
    # The order depends on the rng alone (so on (seed, epoch): resume stays exact) ...
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, batching.batch_order(lengths, 32, rng(), True)))
    other = batching.batch_order(lengths, 32, np.random.default_rng(np.random.SeedSequence([3, 2])), True)
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other))
    # ... batches are not in length order (shuffled after sorting within chunks) ...
    maxima = [lengths[b].max() for b in bucketed]
    assert maxima != sorted(maxima)

    def efficiency(order):
        return sum(lengths[b].sum() for b in order) / sum(len(b) * lengths[b].max() for b in order)

    # ... and they waste far less padding.
    assert efficiency(bucketed) > 0.9 > 0.5 > efficiency(plain)
    # Unbucketed, the order is what it always was: one permutation cut into batches.
    np.testing.assert_array_equal(np.concatenate(plain), rng().permutation(len(lengths)))


def test_padding_to_a_multiple_and_the_padding_count():
    seqs = [np.arange(1, n + 1, dtype=np.int32) for n in (3, 9, 17, 5)]
    stats = batching.PaddingStats()
    shapes = [
        ids.shape for (ids, _), _ in batching.batches(seqs, np.zeros(4, np.int32), 2, pad_to_multiple_of=8, stats=stats)
    ]
    assert shapes == [(2, 16), (2, 24)]
    assert (stats.real, stats.padded) == (3 + 9 + 17 + 5, 2 * 16 + 2 * 24)
    assert batching.pad(seqs[:1], 8)[0].tolist() == [1, 2, 3, 0, 0, 0, 0, 0]


def test_bucketed_prediction_keeps_the_input_order():
    """Bucketed, prediction batches go in length order; the answers come back in input order.
    The stand-in network's class is the sequence's true length mod 3 (padding excluded)."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(5, 30, n).astype(np.int32) for n in rng.integers(3, 40, 50)]
    expected = [len(s) % 3 for s in seqs]
    for bucket in (False, True):
        trainer = loop.Trainer(None, None, None, 8, eval_batch_size=8, bucket_by_length=bucket, pad_to_multiple_of=8)
        trainer.logits_step = lambda inputs: tf.one_hot(tf.math.count_nonzero(inputs[0], axis=1) % 3, 3)
        assert trainer.predict(seqs).tolist() == expected


@pytest.mark.slow
def test_bucketed_run_resumes_exactly(clue_dir, tmp_path, monkeypatch):
    """Killed right after epoch 2 is saved, then resumed: the record equals an uninterrupted run's."""
    extra = {
        "trainer.epochs": 3,
        "trainer.bucket_by_length": True,
        "trainer.pad_to_multiple_of": 8,
        "trainer.resume": True,
        "paths.cache_dir": str(tmp_path / "cache"),
    }
    save_epoch = run_state.RunState.save_epoch

    def save_then_die(self, history):
        save_epoch(self, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(run_state.RunState, "save_epoch", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run(compose(tiny_overrides(clue_dir, tmp_path / "killed", extra=extra)))
    resumed = run(compose(tiny_overrides(clue_dir, tmp_path / "killed", extra=extra)))
    whole = run(compose(tiny_overrides(clue_dir, tmp_path / "whole", extra=extra)))

    def numbers(history):
        return [(h["epoch"], h["train_loss"], h["dev_acc"], h["padding_efficiency"]) for h in history]

    assert numbers(resumed["history"]) == numbers(whole["history"])
    assert whole["timings"]["padding_efficiency"] > 0.8  # fixture sentences: 12-40 characters
    assert whole["best_dev_acc"] > 1 / len(CLASS_WORDS) + 0.3
