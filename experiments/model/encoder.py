"""Encoders: a family's bert4keras encoder with its checkpoint's weights, or at random.

A model config (``configs/model/*.yaml``) names the bert4keras family (bert, albert, nezha,
electra) and its checkpoint folder (``model.checkpoint_dir``). bert4keras's
``build_transformer_model(config, checkpoint, model=family)`` maps each release's variable names
(``bert/...``, ALBERT's ``bert/encoder/transformer/group_0/inner_group_0/...``, ELECTRA's
``electra/...``) onto one set of layer names: in every family the token-embedding matrix is the
layer ``Embedding-Token``, which the adversarial methods perturb. Where a family factorises the
embeddings (ALBERT, ELECTRA-small: ``embedding_size`` < ``hidden_size``), ``Embedding-Token`` is
the small vocab x embedding_size matrix and ``Embedding-Mapping`` projects its output up.

Without a checkpoint (``tiny``, ``bert_mini``) every matrix is drawn at random, seeded: smoke
runs, CI and pretraining from scratch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

import experiments  # noqa: F401  (sets TF_KERAS before TensorFlow is imported)
from experiments import records
from experiments.errors import UserError
from experiments.model import hf_format
from experiments.model.release import config_path, family, files, is_hf, vocab_path

log = logging.getLogger(__name__)

EMBEDDING_LAYER = "Embedding-Token"  # bert4keras's name for the token-embedding layer, in every family
NEZHA_LAYER_NORM_EPSILON = 1e-12  # NEZHA-TensorFlow's (Google BERT's) LayerNorm epsilon: see fix_layer_norm_epsilon
# The shape keys `make bench` needs (configs/model/*.yaml: shape), as in the releases' JSON configs
SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def bert_config(model_cfg, vocab_size: int) -> dict:
    """The encoder's config: the checkpoint's JSON file, or, from scratch, ``model.shape`` (``shape_config``)."""
    if model_cfg.checkpoint_dir is not None:
        path = config_path(model_cfg)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise UserError(f"{path}: not valid JSON ({err}); fetch the checkpoint folder again") from None
        if is_hf(model_cfg):
            config = hf_format.encoder_config(path.parent, config, family(model_cfg))
        check_release_config(path, config, family(model_cfg))
        if config.get("vocab_size") != vocab_size:
            raise UserError(
                f"{path}: vocab_size is {config.get('vocab_size')} but {vocab_path(model_cfg).name} has "
                f"{vocab_size} tokens; "
                "the config and vocab come from different checkpoints"
            )
        return config
    return {**shape_config(model_cfg), "vocab_size": vocab_size}


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
            raise UserError(
                f"{path}: {key} is {config[key]}, but bert4keras reads only ALBERT's group_0/inner_group_0 "
                f"(one shared layer), so this release would load wrong; use an ALBERT release with "
                f"{key} 1 (albert_tiny_zh, albert_base_zh)"
            )


def shape_config(model_cfg, layers: int | None = None) -> dict:
    """The encoder config of ``model_cfg.shape`` without its files (``make bench``; a model built from
    scratch), BERT's defaults where the shape does not say (vocab 21128, dropout 0.1), optionally cut
    to ``layers`` transformer layers."""
    config = {
        "vocab_size": 21128,
        "hidden_act": "gelu",
        "type_vocab_size": 2,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        **OmegaConf.to_container(model_cfg.shape, resolve=True),
    }
    if layers:
        config["num_hidden_layers"] = layers
    return config


def checkpoint_weights(model_cfg) -> str | hf_format.Checkpoint | None:
    """What ``build_encoder`` loads for ``model_cfg``: its TF1 checkpoint prefix, an HF folder's
    weights under TF1 names, None without a checkpoint folder."""
    if model_cfg.checkpoint_dir is None:
        return None
    folder = Path(model_cfg.checkpoint_dir)
    if is_hf(model_cfg):
        config = json.loads(config_path(model_cfg).read_text(encoding="utf-8"))
        return hf_format.Checkpoint(hf_format.load(folder, family(model_cfg), config))
    return str(folder / files(model_cfg)["checkpoint"])


# What the last build_encoder read from each HF weight file: checkpoint_facts puts it in the run record.
_LOADED: dict[str, dict] = {}


def checkpoint_facts(model_cfg) -> dict | None:
    """For the run record: where the weights came from. An HF folder: its weight file, sha256 and
    the tensors the encoder did not use; a TF1 release: its checkpoint prefix."""
    if model_cfg.checkpoint_dir is None:
        return None
    if not is_hf(model_cfg):
        return {"layout": "tf1", "checkpoint": str(Path(model_cfg.checkpoint_dir) / files(model_cfg)["checkpoint"])}
    path = str(hf_format.weight_file(Path(model_cfg.checkpoint_dir)))
    return _LOADED.get(path) or {"layout": "hf", "weight_file": path, "sha256": records.file_sha256(Path(path))}


def load_checkpoint(encoder, model_cfg, checkpoint: str | hf_format.Checkpoint) -> None:
    """Load ``checkpoint`` into a built encoder. An HF checkpoint must hold every variable the encoder
    reads (one line naming the first missing tensor); what it holds beyond them is named in the log."""
    if isinstance(checkpoint, hf_format.Checkpoint):
        name = family(model_cfg)
        mapping = {k: v for k, v in encoder.variable_mapping().items() if k in encoder.layers}
        needed = [v for variables in mapping.values() for v in variables]
        weights = checkpoint.weights
        for variable in needed:
            if variable not in checkpoint:
                expected = hf_format.pt_name(variable, name)
                raise UserError(
                    f"{weights.weight_file}: no tensor {expected[0] if expected else variable} "
                    f"(as {variable}), which the {name} encoder needs; the file is not a complete "
                    f"{name} model"
                )
        extra = sorted(weights.hf_names[v] for v in checkpoint if v not in set(needed))
        unused = sorted(weights.unused + extra)
        if unused:
            log.info("%s: not used by the encoder: %s", weights.weight_file, ", ".join(unused))
        _LOADED[weights.weight_file] = {**weights.record(), "unused": unused}
    encoder.load_weights_from_checkpoint(checkpoint)


def build_encoder(model_cfg, config: dict, seed: int, checkpoint: str | dict | None = None):
    """The bert4keras encoder of ``model_cfg``'s family (its ``Transformer`` object; ``.model``
    is the Keras model), with the weights of ``checkpoint`` (a TF1 checkpoint prefix, or a
    ``{TF1 variable name: array}`` dict, which bert4keras's ``load_variable`` reads alike) or,
    without one, every matrix drawn at random (seeded); the family fixes applied."""
    from bert4keras.models import build_transformer_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        encoder = build_transformer_model(str(path), None, model=family(model_cfg), return_keras_model=False)
    if checkpoint is not None:
        load_checkpoint(encoder, model_cfg, checkpoint)
    fix_layer_norm_epsilon(encoder.model, family(model_cfg), config)
    if checkpoint is None:
        random_init(encoder.model, seed)
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


def random_init(model, seed: int) -> None:
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
        "whose config's vocab_size it matches (model.checkpoint_dir, model.files)"
    )
