"""A dropout-free tiny BERT and a batch with repeated tokens and padding, for comparing
methods with reference computations (every forward pass is deterministic)."""

import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from experiments.model import encoder, head

TINY = OmegaConf.create(
    {
        "name": "tiny",
        "checkpoint_dir": None,
        "shape": {
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 32,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
    }
)
VOCAB, LABELS = 40, 4


def tiny_model(vocab=VOCAB, seed=0, dropout=0.0):
    """The tiny BERT; ``dropout`` > 0 gives it Dropout layers (hidden and attention), to tell
    training-mode passes from inference-mode ones."""
    cfg = OmegaConf.merge(TINY, {"shape": {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}})
    return head.build_classifier(cfg, encoder.bert_config(cfg, vocab), LABELS, seed=seed)


def repeated_token_batch():
    rng = np.random.default_rng(7)
    ids = rng.integers(5, 12, size=(3, 9)).astype(np.int32)  # few distinct tokens: many repeats
    ids[:, 0], ids[:, -1] = 2, 3
    ids[2, 6:] = 0  # padding in one row
    return (tf.constant(ids), tf.zeros_like(ids)), tf.constant([0, 3, 1], tf.int32)


def dense(grads):
    return [tf.convert_to_tensor(g).numpy() for g in grads]
