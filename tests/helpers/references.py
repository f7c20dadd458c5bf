"""Independent dense references for FGM and gradient penalty (the blog's recipes written out with
tf.GradientTape), shared by the method tests and the model-family tests."""

import numpy as np
import tensorflow as tf

from experiments.model import encoder
from experiments.train.methods import cross_entropy


def loss_of(model, inputs, labels):
    return cross_entropy(labels, model(inputs, training=True))


def reference_delta(model, batch, eps, training=True):
    """(clean loss, dense FGM perturbation) from a pass with dropout on iff ``training``."""
    inputs, labels = batch
    emb = encoder.embedding_matrix(model)
    with tf.GradientTape() as tape:
        clean = cross_entropy(labels, model(inputs, training=training))
    g = tf.convert_to_tensor(tape.gradient(clean, emb)).numpy()
    return float(clean), eps * g / (np.sqrt((g**2).sum()) + 1e-8)


def reference_fgm(model, batch, eps, attack_training=True):
    """The blog's recipe with dense tensors: (clean loss, perturbed loss, perturbed gradients).
    The attack gradient's pass has dropout on iff ``attack_training``; the update's always."""
    emb = encoder.embedding_matrix(model)
    e0 = emb.numpy()
    clean, delta = reference_delta(model, batch, eps, attack_training)
    emb.assign(e0 + delta)
    with tf.GradientTape() as tape:
        adv = loss_of(model, *batch)
    grads = tape.gradient(adv, model.trainable_variables)
    emb.assign(e0)
    return clean, float(adv), grads


def per_position_reference(model, batch, eps):
    """GP from scratch: the looked-up vectors e_i become one watched tensor (B, L, H) that is
    fed to the network in place of the lookup, so dL/de_i is taken per position directly."""
    inputs, labels = batch
    layer = model.get_layer(encoder.EMBEDDING_LAYER)
    original_call = layer.call
    layer.call = lambda x, mode="embedding": looked_up if mode == "embedding" else original_call(x, mode)
    try:
        with tf.GradientTape() as outer:
            looked_up = tf.gather(layer.embeddings, inputs[0])  # recorded: E gets its gradient too
            with tf.GradientTape() as inner:
                inner.watch(looked_up)
                loss = loss_of(model, inputs, labels)
            per_position = inner.gradient(loss, looked_up)  # (B, L, H)
            total = loss + 0.5 * eps * tf.reduce_sum(per_position**2)
        grads = outer.gradient(total, model.trainable_variables)
    finally:
        layer.call = original_call
    return (
        float(loss),
        float(total),
        per_position.numpy(),
        dict(zip([v.name for v in model.trainable_variables], grads)),
    )
