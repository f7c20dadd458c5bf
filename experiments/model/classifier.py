"""Classifiers: a pretrained encoder from bert4keras with the blog's head ([CLS] vector -> Dense).

A model config (``configs/model/*.yaml``) names the bert4keras family (bert, albert, nezha,
electra) and the files of its release in ``checkpoint_dir``: the JSON config, the TF1
checkpoint prefix and the vocabulary (``model.files``). bert4keras's
``build_transformer_model(config, checkpoint, model=family)`` maps each release's variable
names (``bert/...``, ALBERT's ``bert/encoder/transformer/group_0/inner_group_0/...``,
ELECTRA's ``electra/...``) onto one set of layer names: in every family the token-embedding
matrix is the layer ``Embedding-Token``, which the adversarial methods perturb. Where a family
factorises the embeddings (ALBERT, ELECTRA-small: ``embedding_size`` < ``hidden_size``),
``Embedding-Token`` is the small vocab x embedding_size matrix and a dense layer
(``Embedding-Mapping``) projects its output up; FGM and gradient penalty act on the token
embeddings themselves, as the blog defines them, not on the projection.

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
from omegaconf import OmegaConf

import experiments  # noqa: F401  (sets TF_KERAS before TensorFlow is imported)
from experiments.errors import UserError
from experiments.model.release import check_checkpoint, family, files

EMBEDDING_LAYER = "Embedding-Token"  # bert4keras's name for the token-embedding layer, in every family
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# The shape keys `make bench` needs (configs/model/*.yaml: shape), as in the releases' JSON configs
NEZHA_LAYER_NORM_EPSILON = 1e-12  # NEZHA-TensorFlow's (Google BERT's) LayerNorm epsilon: see fix_layer_norm_epsilon
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings")


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


def load_tokenizer(model_cfg, train_texts: list[str]):
    """The tokenizer and its vocabulary for ``model_cfg``: the checkpoint's vocab, or a char vocab."""
    from bert4keras.tokenizers import Tokenizer, load_vocab

    if model_cfg.checkpoint_dir is None:
        vocab = char_vocab(train_texts)
    else:
        check_checkpoint(model_cfg)
        vocab = load_vocab(str(Path(model_cfg.checkpoint_dir) / files(model_cfg)["vocab"]))
    return Tokenizer(vocab, do_lower_case=True), vocab


def bert_config(model_cfg, vocab_size: int) -> dict:
    """The encoder's config: the checkpoint's JSON file, or the tiny model's settings."""
    if model_cfg.checkpoint_dir is not None:
        names = files(model_cfg)
        path = Path(model_cfg.checkpoint_dir) / names["config"]
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise UserError(f"{path}: not valid JSON ({err}); fetch the checkpoint folder again") from None
        check_release_config(path, config, family(model_cfg))
        if config.get("vocab_size") != vocab_size:
            raise UserError(
                f"{path}: vocab_size is {config.get('vocab_size')} but {names['vocab']} has {vocab_size} tokens; "
                "the config and vocab come from different checkpoints"
            )
        return config
    keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "hidden_dropout_prob", "attention_probs_dropout_prob"]
    return {"vocab_size": vocab_size, "hidden_act": "gelu", "type_vocab_size": 2,
            **{k: model_cfg[k] for k in keys}}


def check_release_config(path: Path, config: dict, name: str) -> None:
    """Refuse a release config that bert4keras would load wrong without a word.

    ALBERT: bert4keras's ``ALBERT.variable_mapping`` (models.py) reads only
    ``bert/encoder/transformer/group_0/inner_group_0/``: one shared layer. A config with
    ``num_hidden_groups`` > 1 (brightmart's albert_config_tiny_google_fast.json has 12) or
    ``inner_group_num`` > 1 stores more layers, which would be left at random or skipped."""
    if name != "albert":
        return
    for key in ("num_hidden_groups", "inner_group_num"):
        if int(config.get(key, 1)) > 1:
            raise UserError(f"{path}: {key} is {config[key]}, but bert4keras reads only ALBERT's group_0/inner_group_0 "
                            f"(one shared layer), so this release would load wrong; use an ALBERT release with "
                            f"{key} 1 (albert_tiny_zh, albert_base_zh)")


def shape_config(model_cfg, layers: int | None = None) -> dict:
    """The encoder config of ``model_cfg``'s shape without its files (``make bench``): the
    release's numbers from ``model.shape`` (the tiny model: its own keys, vocab 21128),
    optionally cut to ``layers`` transformer layers."""
    if model_cfg.get("shape"):
        config = {"hidden_act": "gelu", "type_vocab_size": 2, "hidden_dropout_prob": 0.1,
                  "attention_probs_dropout_prob": 0.1, **OmegaConf.to_container(model_cfg.shape)}
    else:
        config = bert_config(OmegaConf.merge(model_cfg, {"checkpoint_dir": None}), 21128)
    if layers:
        config["num_hidden_layers"] = layers
    return config


def build_encoder(model_cfg, config: dict, seed: int, checkpoint: str | None = None):
    """The bert4keras encoder of ``model_cfg``'s family (its ``Transformer`` object; ``.model``
    is the Keras model), with the weights of ``checkpoint`` (a TF1 checkpoint prefix) or, without
    one, every matrix drawn at random (seeded); the family fixes (``fix_layer_norm_epsilon``) applied."""
    from bert4keras.models import build_transformer_model

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config))
        encoder = build_transformer_model(str(config_path), checkpoint, model=family(model_cfg),
                                          return_keras_model=False)
    fix_layer_norm_epsilon(encoder.model, family(model_cfg), config)
    if checkpoint is None:
        _random_init(encoder.model, seed)
    return encoder


def fix_layer_norm_epsilon(model, name: str, config: dict) -> None:
    """Give a NEZHA encoder's LayerNorms its release's epsilon.

    bert4keras 0.11.5 builds NEZHA's LayerNormalization layers without ``epsilon``
    (models.py, ``NEZHA.apply_embeddings`` / ``apply_main_layers``), so they take Keras's
    ``K.epsilon()`` = 1e-7 (layers.py, ``LayerNormalization.__init__``), while NEZHA's
    TensorFlow code (NEZHA-TensorFlow/modeling.py, Google BERT's ``layer_norm``:
    ``tf.contrib.layers.layer_norm``, epsilon 1e-12) and Hugging Face's NezhaConfig
    (``layer_norm_eps=1e-12``) use 1e-12. On the embeddings' LayerNorm, whose input has a
    variance near 1e-3, that moved the outputs by up to 7e-5. The layers read ``epsilon`` at
    every call (bert4keras's and model.rewrites' LayerNorm alike), so setting it after building
    is enough. A config's ``layer_norm_eps`` (as Hugging Face writes it) wins.
    """
    if name != "nezha":
        return
    from bert4keras.layers import LayerNormalization

    epsilon = float(config.get("layer_norm_eps", NEZHA_LAYER_NORM_EPSILON))
    for layer in model.layers:
        if isinstance(layer, LayerNormalization):
            layer.epsilon = epsilon


def build_classifier(model_cfg, config: dict, num_labels: int, seed: int, load_weights: bool = True):
    """The encoder + the blog's head; the head returns logits (softmax lives in the loss).

    Weights come from the checkpoint when ``model.checkpoint_dir`` is set and ``load_weights``;
    otherwise every matrix is drawn at random (seeded)."""
    import tf_keras as keras

    checkpoint = None
    if model_cfg.checkpoint_dir is not None and load_weights:
        checkpoint = str(Path(model_cfg.checkpoint_dir) / files(model_cfg)["checkpoint"])
    encoder = build_encoder(model_cfg, config, seed, checkpoint)
    cls = keras.layers.Lambda(lambda x: x[:, 0], name="CLS-token")(encoder.model.output)
    # float32 head: under mixed precision the logits and the loss stay in full precision.
    logits = keras.layers.Dense(
        num_labels, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=seed),
        dtype="float32", name="classifier",
    )(cls)
    return keras.Model(encoder.model.inputs, logits)


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
        if len(weight.shape) >= 2 and weight.trainable:  # NEZHA's sinusoidal relative positions stay
            values = rng.standard_normal(weight.shape)
            while (bad := np.abs(values) > 2).any():
                values[bad] = rng.standard_normal(bad.sum())
            weight.assign((0.02 * values).astype(np.float32))


def embedding_matrix(model):
    return model.get_layer(EMBEDDING_LAYER).embeddings


def check_token_ids(model, token_ids: list[np.ndarray], source: Path, vocab: str) -> None:
    """Stop with one line if a token id has no row in the model's embedding matrix.

    On a GPU ``tf.gather`` (the embedding lookup) returns zeros for an out-of-range id where
    the CPU raises ("Caution: ... On GPU, if an out of bound index is found, a 0 is stored in
    the corresponding output value", tf.gather's docstring in tensorflow/python/ops/array_ops.py),
    so such a run would train on a zero vector silently. ``source`` is the tokenized file.
    """
    rows = int(embedding_matrix(model).shape[0])
    if not token_ids or max(int(ids.max(initial=0)) for ids in token_ids) < rows:
        return
    example, ids = next((i, ids) for i, ids in enumerate(token_ids) if ids.max(initial=0) >= rows)
    raise UserError(
        f"{source}: example {example + 1} has token id {int(ids.max())}, but the model's embedding has "
        f"{rows} rows; {vocab} does not belong to this model: use the vocab file of the checkpoint "
        "whose config's vocab_size it matches (model.checkpoint_dir, model.files)")
