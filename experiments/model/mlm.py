"""The masked-LM model: a family's bert4keras encoder and BERT's MLM head, scoring only the
masked positions.

Google's ``run_pretraining.py`` (github.com/google-research/bert, ``get_masked_lm_output``)
first gathers the encoder's output at ``masked_lm_positions`` (``gather_indexes``), then applies
the head: a dense layer with the encoder's activation (``cls/predictions/transform/dense``, to
``embedding_size`` in ALBERT), a LayerNorm (``cls/predictions/transform/LayerNorm``), the
transposed token-embedding matrix and a bias (``cls/predictions/output_bias``). bert4keras's own
``with_mlm`` head (models.py, ``BERT.apply_final_layers``) computes the same layers at every
position; with 15 % of the positions masked, gathering first saves about 85 % of the vocabulary
projection, the largest matrix product of a small model. The head's layers carry bert4keras's
names (``MLM-Dense``, ``MLM-Norm``, ``Embedding-Token`` in dense mode, ``MLM-Bias``) and are
registered with the encoder's ``Transformer`` object, so that its ``variable_mapping()`` (the
``cls/predictions/*`` names) loads and saves them.

The loss is the mean cross-entropy over the masked positions (weights 1; padded slots 0), as
Google's ``sum(weights * nll) / sum(weights)``; the accuracy is the share of masked positions
whose argmax is the original token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.errors import UserError
from experiments.model import encoder as encoders
from experiments.model.release import family

MLM_FAMILIES = ("bert", "albert", "nezha")  # bert4keras families with BERT's MLM head
HEAD_LAYERS = ("MLM-Dense", "MLM-Norm", "MLM-Bias")


def check_family(model_cfg) -> None:
    name = family(model_cfg)
    if name == "electra":
        raise UserError(
            f"model={model_cfg.name} is ELECTRA's discriminator, which has no masked-LM head (only its "
            "generator has one, and the releases used here ship none); pretrain a bert, albert or nezha "
            "model (e.g. model=bert_mini, model=bert_base)"
        )
    if name not in MLM_FAMILIES:
        raise UserError(f"model.family={name}: masked-LM pretraining supports {', '.join(MLM_FAMILIES)}")


@dataclass
class MaskedLM:
    """``model``: Keras model (token ids, segment ids, positions) -> float32 logits (batch, P,
    vocab); ``encoder``: bert4keras's Transformer (its ``layers`` and ``variable_mapping()``
    include the head); ``head_source``: "checkpoint" or "fresh"."""

    model: object
    encoder: object
    head_source: str


def build_mlm(model_cfg, config: dict, seed: int, checkpoint: str | dict | None = None) -> MaskedLM:
    """The masked-LM model of ``model_cfg``'s family: from ``checkpoint`` (TAPT; the head too
    where the release ships ``cls/predictions/*``) or at random (from scratch), seeded."""
    import tensorflow as tf
    import tf_keras as keras
    from bert4keras.layers import Dense, Embedding, LayerNormalization, ScaleOffset

    check_family(model_cfg)
    encoder = encoders.build_encoder(model_cfg, config, seed, checkpoint)
    positions = keras.layers.Input(shape=(None,), dtype="int32", name="Input-Masked-Positions")
    x = keras.layers.Lambda(lambda xs: tf.gather(xs[0], xs[1], batch_dims=1), name="MLM-Gather")(
        [encoder.model.output, positions]
    )
    x = encoder.apply(
        inputs=x,
        layer=Dense,
        units=encoder.embedding_size,
        activation=encoder.hidden_act,
        kernel_initializer=encoder.initializer,
        name="MLM-Dense",
    )
    x = encoder.apply(inputs=x, layer=LayerNormalization, epsilon=1e-12, name="MLM-Norm")
    x = encoder.apply(inputs=x, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
    x = encoder.apply(inputs=x, layer=ScaleOffset, scale=False, name="MLM-Bias")
    logits = keras.layers.Activation("linear", dtype="float32", name="MLM-Logits")(x)
    model = keras.Model([*encoder.model.inputs, positions], logits)
    head_source = "fresh"
    if checkpoint is not None and head_in_checkpoint(encoder, checkpoint):
        encoder.load_weights_from_checkpoint(checkpoint, mapping=head_mapping(encoder))
        head_source = "checkpoint"
    else:
        init_head(encoder, seed)
    return MaskedLM(model, encoder, head_source)


def head_mapping(encoder) -> dict[str, list[str]]:
    mapping = encoder.variable_mapping()
    return {k: mapping[k] for k in HEAD_LAYERS}


def head_in_checkpoint(encoder, checkpoint: str) -> bool:
    """Whether the checkpoint has every variable of the MLM head (Google's releases do)."""
    import tensorflow as tf

    if isinstance(checkpoint, dict):  # an HF folder's weights under TF1 names (model.hf_format)
        names = set(checkpoint)
    else:
        names = {name for name, _ in tf.train.list_variables(checkpoint)}
    return all(v in names for variables in head_mapping(encoder).values() for v in variables)


def init_head(encoder, seed: int) -> None:
    """A fresh head as BERT initialises one: the dense kernel truncated normal (std 0.02,
    seeded), the biases 0, the LayerNorm's scale 1 and offset 0."""
    rng = np.random.default_rng([seed, 1])
    for name in HEAD_LAYERS:
        for weight in encoder.layers[name].trainable_weights:
            if len(weight.shape) >= 2:
                values = rng.standard_normal(weight.shape)
                while (bad := np.abs(values) > 2).any():
                    values[bad] = rng.standard_normal(bad.sum())
                weight.assign((0.02 * values).astype(np.float32))
            else:
                weight.assign(
                    np.ones(weight.shape, np.float32) if "gamma" in weight.name else np.zeros(weight.shape, np.float32)
                )


def masked_lm_loss(logits, labels, weights):
    """(mean cross-entropy, correct predictions, masked positions) over the weighted positions."""
    import tensorflow as tf

    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    count = tf.reduce_sum(weights)
    loss = tf.reduce_sum(nll * weights) / tf.maximum(count, 1.0)
    correct = tf.reduce_sum(
        tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32) * weights
    )
    return loss, correct, count
