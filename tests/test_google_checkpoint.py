"""Model building: Google's checkpoint layout loads exactly; the tiny model's vocabulary."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from experiments.errors import UserError
from experiments.model import encoder, head
from experiments.model import tokenizer as tokenizers
from tests.helpers.google_checkpoint import fixture_vocab, write_google_checkpoint
from tests.helpers.tiny_bert import TINY


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "chinese_L-2_H-32"
    return folder, write_google_checkpoint(folder, fixture_vocab())


def test_checkpoint_has_google_layout(checkpoint):
    import tensorflow as tf

    folder, arrays = checkpoint
    assert sorted(p.name for p in folder.iterdir()) == [
        "bert_config.json",
        "bert_model.ckpt.data-00000-of-00001",
        "bert_model.ckpt.index",
        "bert_model.ckpt.meta",
        "checkpoint",
        "vocab.txt",
    ]
    names = dict(tf.train.list_variables(str(folder / "bert_model.ckpt")))
    assert names["bert/encoder/layer_0/attention/self/query/kernel"] == [32, 32]
    assert names["bert/embeddings/word_embeddings"] == [len(fixture_vocab()), 32]


def test_bert_base_loads_the_saved_weights_exactly(checkpoint):
    folder, arrays = checkpoint
    cfg = OmegaConf.create({"name": "bert_base", "checkpoint_dir": str(folder)})
    tokenizer, vocab = tokenizers.load_tokenizer(cfg, [])
    model = head.build_classifier(cfg, encoder.bert_config(cfg, len(vocab)), num_labels=3, seed=0)

    np.testing.assert_array_equal(encoder.embedding_matrix(model).numpy(), arrays["bert/embeddings/word_embeddings"])
    q = model.get_layer("Transformer-1-MultiHeadSelfAttention").weights[0].numpy()
    np.testing.assert_array_equal(q, arrays["bert/encoder/layer_1/attention/self/query/kernel"])
    # Every saved encoder/embedding array is some model weight, bit for bit (the pooler is unused).
    weights = [w.numpy() for w in model.weights]
    for name, value in arrays.items():
        if not name.startswith("bert/pooler"):
            assert any(w.shape == value.shape and np.array_equal(w, value) for w in weights), name
    assert tokenizer.encode("足球")[0] == [2, vocab["足"], vocab["球"], 3]


def test_missing_checkpoint_file_is_named(checkpoint, tmp_path):
    folder, _ = checkpoint
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in folder.iterdir():
        if f.name != "bert_model.ckpt.index":
            (broken / f.name).write_bytes(f.read_bytes())
    cfg = OmegaConf.create({"name": "bert_base", "checkpoint_dir": str(broken)})
    with pytest.raises(UserError, match=r"bert_model\.ckpt\.index: missing"):
        tokenizers.load_tokenizer(cfg, [])


def test_vocab_size_mismatch_is_an_error(checkpoint):
    folder, _ = checkpoint
    cfg = OmegaConf.create({"name": "bert_base", "checkpoint_dir": str(folder)})
    with pytest.raises(UserError, match="vocab_size is .* but vocab.txt has 7 tokens"):
        encoder.bert_config(cfg, 7)


def test_char_vocab_covers_training_text():
    vocab = tokenizers.char_vocab(["足球比赛", "NBA球星", "足球"])
    assert list(vocab)[:5] == tokenizers.SPECIAL_TOKENS
    assert list(vocab)[5:7] == ["球", "足"]  # most frequent first, ties by character
    from bert4keras.tokenizers import Tokenizer

    tokens = Tokenizer(vocab, do_lower_case=True).tokenize("nba足球")
    assert tokens == ["[CLS]", "n", "##b", "##a", "足", "球", "[SEP]"]


def test_tiny_model_matrices_are_distinct_and_seeded():
    cfg = TINY  # the dropout-free tiny BERT of the method tests
    a = head.build_classifier(cfg, encoder.bert_config(cfg, 50), 3, seed=1)
    b = head.build_classifier(cfg, encoder.bert_config(cfg, 50), 3, seed=1)
    q0 = a.get_layer("Transformer-0-MultiHeadSelfAttention").weights[0].numpy()
    q1 = a.get_layer("Transformer-1-MultiHeadSelfAttention").weights[0].numpy()
    assert not np.array_equal(q0, q1)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    assert 0.015 < q0.std() < 0.025
