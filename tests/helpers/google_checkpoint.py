"""Write tiny checkpoints in the exact layouts of the released Chinese models: a TF1
name-based checkpoint (<prefix>.index/.data-*/.meta, as tf.compat.v1.train.Saver writes
them) with the release's variable names, plus its JSON config and vocabulary, under the
release's own file names.

Variable names, per family (bert4keras 0.11.5's models.py ``variable_mapping`` reads them):
  bert     Google's BERT: bert/embeddings/..., bert/encoder/layer_<i>/..., bert/pooler/...
  nezha    the same without bert/embeddings/position_embeddings (relative positions are
           computed, not stored: NEZHA-TensorFlow/modeling.py, use_position_embeddings=False)
  albert   Google's ALBERT code (google-research/albert, brightmart's modeling_google.py):
           embeddings embedding_size wide, bert/encoder/embedding_hidden_mapping_in projects
           them to hidden_size, one shared layer bert/encoder/transformer/group_0/inner_group_0/
           {attention_1/..., LayerNorm, ffn_1/intermediate/..., LayerNorm_1}
  electra  Google's ELECTRA code (ymcui/Chinese-ELECTRA model/modeling.py): the discriminator
           under electra/..., electra/embeddings_project when embedding_size != hidden_size,
           the pretraining heads discriminator_predictions/dense{,_1}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import experiments  # noqa: F401

GOOGLE = {"config": "bert_config.json", "checkpoint": "bert_model.ckpt", "vocab": "vocab.txt"}
# model config name -> (bert4keras family, file names in the release's folder), from the sources
# the configs cite: Google's and HFL's zips (bert_config.json, bert_model.ckpt.*, vocab.txt); MacBERT
# as users load it (chinese_macbert_base/chinese_macbert_base.ckpt, macbert_base_config.json);
# brightmart's albert_tiny_zh_google (albert_config_tiny_g.json, albert_model.ckpt.*); Google's
# albert_base_zh.tar.gz (albert_base/albert_config.json, model.ckpt-best.*, vocab_chinese.txt);
# NEZHA-Base/ (bert_config.json, model.ckpt-900000.*); Chinese-ELECTRA's zip (electra_base.*,
# vocab.txt) with the repository's config/base_discriminator_config.json.
RELEASES = {
    "bert_base": ("bert", GOOGLE),
    "roberta_wwm_ext": ("bert", GOOGLE),
    "roberta_wwm_ext_large": ("bert", GOOGLE),
    "macbert_base": (
        "bert",
        {"config": "macbert_base_config.json", "checkpoint": "chinese_macbert_base.ckpt", "vocab": "vocab.txt"},
    ),
    "albert_tiny_zh": (
        "albert",
        {"config": "albert_config_tiny_g.json", "checkpoint": "albert_model.ckpt", "vocab": "vocab.txt"},
    ),
    "albert_base_zh": (
        "albert",
        {"config": "albert_config.json", "checkpoint": "model.ckpt-best", "vocab": "vocab_chinese.txt"},
    ),
    "nezha_base": ("nezha", {"config": "bert_config.json", "checkpoint": "model.ckpt-900000", "vocab": "vocab.txt"}),
    "electra_base": (
        "electra",
        {"config": "base_discriminator_config.json", "checkpoint": "electra_base", "vocab": "vocab.txt"},
    ),
}

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
}
# The keys of each family's released JSON config (values shrunk): Google's bert_config.json;
# brightmart's albert_config_tiny_google.json; NEZHA-TensorFlow/nezha/bert_config.json;
# Chinese-ELECTRA's config/base_discriminator_config.json.
CONFIGS = {
    "bert": {
        "attention_probs_dropout_prob": 0.1,
        "directionality": "bidi",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "type_vocab_size": 2,
        **TINY,
    },
    "albert": {
        "attention_probs_dropout_prob": 0.0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "embedding_size": 16,
        "initializer_range": 0.02,
        "num_hidden_groups": 1,
        "net_structure_type": 0,
        "gap_size": 0,
        "num_memory_blocks": 0,
        "inner_group_num": 1,
        "down_scale_factor": 1,
        "type_vocab_size": 2,
        **TINY,
    },
    "nezha": {
        "attention_probs_dropout_prob": 0.1,
        "directionality": "bidi",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "type_vocab_size": 2,
        "use_relative_position": True,
        **TINY,
    },
    # embedding_size < hidden_size as in ELECTRA-small (base: equal, no electra/embeddings_project)
    "electra": {
        "attention_probs_dropout_prob": 0.1,
        "directionality": "bidi",
        "embedding_size": 16,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "model_type": "electra",
        "pad_token_id": 0,
        "summary_activation": "gelu",
        "summary_last_dropout": 0.1,
        "summary_type": "first",
        "summary_use_proj": True,
        "type_vocab_size": 2,
        **TINY,
    },
}


def release_variables(
    family: str, config: dict, rng: np.random.Generator, mlm_head: bool = False
) -> dict[str, np.ndarray]:
    """Random arrays under the variable names a release of ``family`` stores; ``mlm_head`` adds
    the masked-LM head Google's BERT and ALBERT releases ship (run_pretraining.py's
    cls/predictions/transform/{dense,LayerNorm} and cls/predictions/output_bias)."""
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    e = config.get("embedding_size", h)
    top = "electra" if family == "electra" else "bert"

    def rand(*shape):
        return rng.normal(0, 0.02, shape).astype(np.float32)

    def norm(prefix, width=h):
        return {f"{prefix}/gamma": 1 + rand(width), f"{prefix}/beta": rand(width)}

    out = {
        f"{top}/embeddings/word_embeddings": rand(v, e),
        f"{top}/embeddings/token_type_embeddings": rand(config["type_vocab_size"], e),
        **(
            {}
            if family == "nezha"
            else {f"{top}/embeddings/position_embeddings": rand(config["max_position_embeddings"], e)}
        ),
        **norm(f"{top}/embeddings/LayerNorm", e),
    }
    if family == "albert":
        out.update(
            {
                "bert/encoder/embedding_hidden_mapping_in/kernel": rand(e, h),
                "bert/encoder/embedding_hidden_mapping_in/bias": rand(h),
            }
        )
        layers = ["bert/encoder/transformer/group_0/inner_group_0/"]  # one layer, shared by all
        names = {
            "attention": "attention_1/",
            "ffn_in": "ffn_1/intermediate/dense",
            "ffn_out": "ffn_1/intermediate/output/dense",
            "attention_norm": "LayerNorm",
            "output_norm": "LayerNorm_1",
        }
    else:
        layers = [f"{top}/encoder/layer_{i}/" for i in range(config["num_hidden_layers"])]
        names = {
            "attention": "attention/",
            "ffn_in": "intermediate/dense",
            "ffn_out": "output/dense",
            "attention_norm": "attention/output/LayerNorm",
            "output_norm": "output/LayerNorm",
        }
    for p in layers:
        for name in ("query", "key", "value"):
            out[f"{p}{names['attention']}self/{name}/kernel"] = rand(h, h)
            out[f"{p}{names['attention']}self/{name}/bias"] = rand(h)
        out.update(
            {
                f"{p}{names['attention']}output/dense/kernel": rand(h, h),
                f"{p}{names['attention']}output/dense/bias": rand(h),
                **norm(p + names["attention_norm"]),
                f"{p}{names['ffn_in']}/kernel": rand(h, inter),
                f"{p}{names['ffn_in']}/bias": rand(inter),
                f"{p}{names['ffn_out']}/kernel": rand(inter, h),
                f"{p}{names['ffn_out']}/bias": rand(h),
                **norm(p + names["output_norm"]),
            }
        )
    if family == "electra":
        if e != h:
            out.update({"electra/embeddings_project/kernel": rand(e, h), "electra/embeddings_project/bias": rand(h)})
        out.update(
            {
                "discriminator_predictions/dense/kernel": rand(h, h),
                "discriminator_predictions/dense/bias": rand(h),
                "discriminator_predictions/dense_1/kernel": rand(h, 1),
                "discriminator_predictions/dense_1/bias": rand(1),
            }
        )
    else:
        out.update({"bert/pooler/dense/kernel": rand(h, h), "bert/pooler/dense/bias": rand(h)})
    if mlm_head:
        out.update(
            {
                "cls/predictions/transform/dense/kernel": rand(h, e),
                "cls/predictions/transform/dense/bias": rand(e),
                **norm("cls/predictions/transform/LayerNorm", e),
                "cls/predictions/output_bias": rand(v),
            }
        )
    return out


# Saved but not part of the classifier: the pooler and ELECTRA's pretraining head.
UNUSED_PREFIXES = ("bert/pooler/", "discriminator_predictions/")


def write_release(
    folder: Path, release: str, vocab: list[str], seed: int = 0, mlm_head: bool = False, **config_overrides
) -> dict[str, np.ndarray]:
    """Write ``release``'s checkpoint folder; return the saved arrays by variable name."""
    import tensorflow as tf

    family, files = RELEASES[release]
    config = {**CONFIGS[family], "vocab_size": len(vocab), **config_overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / files["config"]).write_text(json.dumps(config, indent=2))
    (folder / files["vocab"]).write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    arrays = release_variables(family, config, np.random.default_rng(seed), mlm_head)
    graph = tf.Graph()
    with graph.as_default():  # TF1 Saver: name-based checkpoints, as the releases were written
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / files["checkpoint"]), write_meta_graph=True)
    return arrays


def write_google_checkpoint(folder: Path, vocab: list[str], seed: int = 0, **config_overrides) -> dict[str, np.ndarray]:
    """Google's Chinese BERT-base layout (bert_config.json, bert_model.ckpt.*, vocab.txt)."""
    return write_release(folder, "bert_base", vocab, seed, **config_overrides)


def fixture_vocab() -> list[str]:
    """[PAD] [UNK] [CLS] [SEP] [MASK] and the characters of tests/helpers/clue.py's fixture sentences."""
    from tests.helpers.clue import CLASS_WORDS, FILLER

    chars = sorted(set("".join(CLASS_WORDS) + FILLER))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
