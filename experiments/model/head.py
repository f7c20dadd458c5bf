"""The blog's classifier head: the encoder's [CLS] vector -> one Dense layer -> logits.

No pooler: the head reads the last layer's [CLS] vector as the blog (and bert4keras's examples)
do; softmax lives in the loss. ``load_classifier`` is what a run, predict and attack call: the
tokenizer, then the classifier, after checking that the task fits the model.
"""

from __future__ import annotations

from experiments.errors import UserError
from experiments.model import encoder, tokenizer

HEAD_LAYER = "classifier"  # the Dense layer's name: its kernel is (hidden, labels), its bias (labels,)


def build_classifier(model_cfg, config: dict, num_labels: int, seed: int, load_weights: bool = True):
    """The encoder + the blog's head; the head returns logits (softmax lives in the loss).

    Weights come from the checkpoint when ``model.checkpoint_dir`` is set and ``load_weights``;
    otherwise every matrix is drawn at random (seeded)."""
    import tf_keras as keras

    weights = encoder.checkpoint_weights(model_cfg) if load_weights else None
    built = encoder.build_encoder(model_cfg, config, seed, weights)
    cls = keras.layers.Lambda(lambda x: x[:, 0], name="CLS-token")(built.model.output)
    # float32 head: under mixed precision the logits and the loss stay in full precision.
    logits = keras.layers.Dense(
        num_labels,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=seed),
        dtype="float32",
        name=HEAD_LAYER,
    )(cls)
    return keras.Model(built.model.inputs, logits)


def load_classifier(model_cfg, train_texts: list[str], num_labels: int, max_length: int, seed: int):
    """The tokenizer and the classifier of ``model_cfg`` for a task of ``num_labels`` classes and
    ``max_length`` tokens, after checking that they fit; ``train_texts`` build the tiny model's vocab."""
    tok, vocab = tokenizer.load_tokenizer(model_cfg, train_texts)
    config = encoder.bert_config(model_cfg, len(vocab))
    if max_length > config["max_position_embeddings"]:
        raise UserError(
            f"task.max_length={max_length} is above the model's "
            f"max_position_embeddings={config['max_position_embeddings']}; lower it"
        )
    return tok, build_classifier(model_cfg, config, num_labels, seed)
