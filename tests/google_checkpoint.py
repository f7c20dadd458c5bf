"""Write a tiny BERT checkpoint in the exact layout of Google's released ones: a TF1
name-based checkpoint (bert_model.ckpt.index/.data-*/.meta) with Google's variable names,
plus bert_config.json and vocab.txt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import experiments  # noqa: F401


def google_variables(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]

    def rand(*shape):
        return rng.normal(0, 0.02, shape).astype(np.float32)

    def norm(prefix):
        return {f"{prefix}/LayerNorm/gamma": 1 + rand(h), f"{prefix}/LayerNorm/beta": rand(h)}

    out = {
        "bert/embeddings/word_embeddings": rand(v, h),
        "bert/embeddings/token_type_embeddings": rand(config["type_vocab_size"], h),
        "bert/embeddings/position_embeddings": rand(config["max_position_embeddings"], h),
        **norm("bert/embeddings"),
        "bert/pooler/dense/kernel": rand(h, h), "bert/pooler/dense/bias": rand(h),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        for name in ("query", "key", "value"):
            out[f"{p}/attention/self/{name}/kernel"] = rand(h, h)
            out[f"{p}/attention/self/{name}/bias"] = rand(h)
        out.update({
            f"{p}/attention/output/dense/kernel": rand(h, h), f"{p}/attention/output/dense/bias": rand(h),
            **norm(f"{p}/attention/output"),
            f"{p}/intermediate/dense/kernel": rand(h, inter), f"{p}/intermediate/dense/bias": rand(inter),
            f"{p}/output/dense/kernel": rand(inter, h), f"{p}/output/dense/bias": rand(h),
            **norm(f"{p}/output"),
        })
    return out


def write_google_checkpoint(folder: Path, vocab: list[str], seed: int = 0, **config_overrides) -> dict[str, np.ndarray]:
    """Write the checkpoint folder; return the saved arrays by variable name."""
    import tensorflow as tf

    config = {"attention_probs_dropout_prob": 0.1, "directionality": "bidi", "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02,
              "intermediate_size": 64, "max_position_embeddings": 64, "num_attention_heads": 2,
              "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": len(vocab), **config_overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bert_config.json").write_text(json.dumps(config, indent=2))
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    arrays = google_variables(config, np.random.default_rng(seed))
    graph = tf.Graph()
    with graph.as_default():  # TF1 Saver: name-based checkpoints, as Google's BERT release
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(folder / "bert_model.ckpt"), write_meta_graph=True)
    return arrays


def fixture_vocab() -> list[str]:
    """[PAD] [UNK] [CLS] [SEP] [MASK] and the characters of tests/conftest.py's fixture sentences."""
    from tests.conftest import CLASS_WORDS, FILLER

    chars = sorted(set("".join(CLASS_WORDS) + FILLER))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
