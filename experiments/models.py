"""Classifiers: a BERT encoder from bert4keras with the blog's head ([CLS] vector -> Dense).

``bert_base`` loads Google's checkpoint (bert_config.json, bert_model.ckpt.*, vocab.txt).
``tiny`` is a small randomly initialised BERT on a character vocabulary built from the
training texts: it runs the whole pipeline on a CPU with nothing to download, for smoke
runs and CI only, never for reported results.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

import experiments  # noqa: F401  (sets TF_KERAS before TensorFlow is imported)
from experiments.errors import UserError

EMBEDDING_LAYER = "Embedding-Token"  # bert4keras's name for the token-embedding layer
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHECKPOINT_FILES = ["bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"]


def char_vocab(texts: list[str]) -> dict[str, int]:
    """A vocabulary of every character of ``texts``, most frequent first.

    Non-CJK characters also get a ``##`` continuation entry, so that bert4keras's
    word-piece step splits any Latin word or number into characters instead of [UNK].
    """
    counts = Counter(ch for text in texts for ch in text.lower() if not ch.isspace())
    tokens = list(SPECIAL_TOKENS)
    for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        tokens.append(ch)
        if ord(ch) < 0x2E80:  # below the CJK blocks: can be part of a multi-character word
            tokens.append("##" + ch)
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def check_checkpoint(folder: Path) -> None:
    if not folder.is_dir():
        raise UserError(f"{folder}: BERT checkpoint folder not found; run `make model` or set model.checkpoint_dir")
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: missing from the checkpoint folder; run `make model` to fetch it again")


def load_tokenizer(model_cfg, train_texts: list[str]):
    """The tokenizer and its vocabulary for ``model_cfg``: the checkpoint's vocab, or a char vocab."""
    from bert4keras.tokenizers import Tokenizer, load_vocab

    if model_cfg.checkpoint_dir is None:
        vocab = char_vocab(train_texts)
    else:
        folder = Path(model_cfg.checkpoint_dir)
        check_checkpoint(folder)
        vocab = load_vocab(str(folder / "vocab.txt"))
    return Tokenizer(vocab, do_lower_case=True), vocab


def bert_config(model_cfg, vocab_size: int) -> dict:
    """The BERT config: the checkpoint's file, or the tiny model's settings."""
    if model_cfg.checkpoint_dir is not None:
        path = Path(model_cfg.checkpoint_dir) / "bert_config.json"
        config = json.loads(path.read_text())
        if config["vocab_size"] != vocab_size:
            raise UserError(
                f"{path}: vocab_size is {config['vocab_size']} but vocab.txt has {vocab_size} tokens; "
                "the config and vocab come from different checkpoints"
            )
        return config
    keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "hidden_dropout_prob", "attention_probs_dropout_prob"]
    return {"vocab_size": vocab_size, "hidden_act": "gelu", "type_vocab_size": 2,
            **{k: model_cfg[k] for k in keys}}


def build_classifier(model_cfg, config: dict, num_labels: int, seed: int):
    """BERT + the blog's head; the head returns logits (softmax lives in the loss)."""
    import tf_keras as keras
    from bert4keras.models import build_transformer_model

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "bert_config.json"
        config_path.write_text(json.dumps(config))
        checkpoint = None if model_cfg.checkpoint_dir is None else str(Path(model_cfg.checkpoint_dir) / "bert_model.ckpt")
        bert = build_transformer_model(str(config_path), checkpoint, model="bert", return_keras_model=False)
    if checkpoint is None:
        _random_init(bert.model, seed)
    cls = keras.layers.Lambda(lambda x: x[:, 0], name="CLS-token")(bert.model.output)
    # float32 head: under mixed precision the logits and the loss stay in full precision.
    logits = keras.layers.Dense(
        num_labels, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=seed),
        dtype="float32", name="classifier",
    )(cls)
    return keras.Model(bert.model.inputs, logits)


def load_classifier(cfg, train_texts: list[str], num_labels: int):
    """The tokenizer and the classifier a run config asks for, after checking they fit."""
    tokenizer, vocab = load_tokenizer(cfg.model, train_texts)
    config = bert_config(cfg.model, len(vocab))
    if cfg.task.max_length > config["max_position_embeddings"]:
        raise UserError(f"task.max_length={cfg.task.max_length} is above the model's "
                        f"max_position_embeddings={config['max_position_embeddings']}; lower it")
    return tokenizer, build_classifier(cfg.model, config, num_labels, cfg.seed)


def _random_init(model, seed: int) -> None:
    """Seeded BERT initialisation (truncated normal, std 0.02) of every matrix.

    bert4keras reuses one unseeded initializer for all layers, which under tf_keras gives
    every same-shaped matrix the same values; a from-scratch model needs distinct ones.
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if len(weight.shape) >= 2:
            values = rng.standard_normal(weight.shape)
            while (bad := np.abs(values) > 2).any():
                values[bad] = rng.standard_normal(bad.sum())
            weight.assign((0.02 * values).astype(np.float32))


def embedding_matrix(model):
    return model.get_layer(EMBEDDING_LAYER).embeddings
