"""FGM and gradient penalty against independent dense reference computations."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from experiments import models, training
from experiments.methods import cross_entropy
from experiments.methods.fgm import FGM, fgm_delta
from experiments.methods.gp import GradientPenalty
from tests.tiny_bert import VOCAB, dense, repeated_token_batch, tiny_model



@pytest.fixture
def batch():
    return repeated_token_batch()


def loss_of(model, inputs, labels):
    return cross_entropy(labels, model(inputs, training=True))


def test_fgm_delta_equals_the_dense_formula(batch):
    model = tiny_model()
    emb = models.embedding_matrix(model)
    with tf.GradientTape() as tape:
        loss = loss_of(model, *batch)
    sparse = tape.gradient(loss, emb)
    assert isinstance(sparse, tf.IndexedSlices)
    g = tf.convert_to_tensor(sparse).numpy()  # dense vocab x hidden, duplicates summed
    expected = 0.5 * g / (np.sqrt((g ** 2).sum()) + 1e-8)
    got = tf.convert_to_tensor(fgm_delta(sparse, 0.5)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert np.linalg.norm(got) == pytest.approx(0.5, rel=1e-5)


def reference_fgm(model, batch, eps):
    """The blog's recipe with dense tensors: (clean loss, perturbed loss, perturbed gradients)."""
    emb = models.embedding_matrix(model)
    e0 = emb.numpy()
    with tf.GradientTape() as tape:
        clean = loss_of(model, *batch)
    g = tf.convert_to_tensor(tape.gradient(clean, emb)).numpy()
    emb.assign(e0 + eps * g / (np.sqrt((g ** 2).sum()) + 1e-8))
    with tf.GradientTape() as tape:
        adv = loss_of(model, *batch)
    grads = tape.gradient(adv, model.trainable_variables)
    emb.assign(e0)
    return float(clean), float(adv), grads


def test_fgm_gradients_equal_the_dense_recipe(batch):
    model = tiny_model()
    e0 = models.embedding_matrix(model).numpy()
    clean, adv, ref_grads = reference_fgm(model, batch, 0.5)

    loss, grads = tf.function(FGM(model, epsilon=0.5))(*batch)
    assert float(loss) == pytest.approx(adv, rel=1e-5)
    assert adv > clean  # the perturbation ascends the loss
    for a, b in zip(dense(grads), dense(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(models.embedding_matrix(model).numpy(), e0, rtol=0, atol=1e-7)


def test_fgm_train_step_equals_reference_update(batch):
    eps, lr = 0.5, 1e-2
    model, ref = tiny_model(), tiny_model()
    ref.set_weights(model.get_weights())
    start = [w.copy() for w in model.get_weights()]

    optimizer = keras.optimizers.Adam(lr)
    training.Trainer(model, FGM(model, optimizer, epsilon=eps), optimizer, batch_size=3).train_step(*batch)
    _, _, ref_grads = reference_fgm(ref, batch, eps)
    keras.optimizers.Adam(lr).apply_gradients(zip(ref_grads, ref.trainable_variables))

    for a, b, w0 in zip(model.get_weights(), ref.get_weights(), start):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert not np.array_equal(a, w0) or a.ndim == 1  # every matrix moved
    # Embedding rows of tokens absent from the batch are exactly as before (no leftover delta).
    emb_index = [v.name for v in model.weights].index(models.embedding_matrix(model).name)
    absent = np.setdiff1d(np.arange(VOCAB), np.unique(batch[0][0].numpy()))
    np.testing.assert_array_equal(model.get_weights()[emb_index][absent], start[emb_index][absent])


def per_position_reference(model, batch, eps):
    """GP from scratch: the looked-up vectors e_i become one watched tensor (B, L, H) that is
    fed to the network in place of the lookup, so dL/de_i is taken per position directly."""
    inputs, labels = batch
    layer = model.get_layer(models.EMBEDDING_LAYER)
    original_call = layer.call
    layer.call = lambda x, mode="embedding": looked_up if mode == "embedding" else original_call(x, mode)
    try:
        with tf.GradientTape() as outer:
            looked_up = tf.gather(layer.embeddings, inputs[0])  # recorded: E gets its gradient too
            with tf.GradientTape() as inner:
                inner.watch(looked_up)
                loss = loss_of(model, inputs, labels)
            per_position = inner.gradient(loss, looked_up)  # (B, L, H)
            total = loss + 0.5 * eps * tf.reduce_sum(per_position ** 2)
        grads = outer.gradient(total, model.trainable_variables)
    finally:
        layer.call = original_call
    return float(loss), float(total), per_position.numpy(), dict(zip([v.name for v in model.trainable_variables], grads))


def test_gp_loss_is_the_per_position_formula(batch):
    eps = 1.0
    model = tiny_model()
    clean, expected_total, per_position, ref_grads = per_position_reference(model, batch, eps)
    # Tokens repeat in this batch, so summing per vocabulary row would give another number.
    emb = models.embedding_matrix(model)
    with tf.GradientTape() as tape:
        loss = loss_of(model, *batch)
    per_row = tf.convert_to_tensor(tape.gradient(loss, emb)).numpy()
    assert abs((per_row ** 2).sum() - (per_position ** 2).sum()) > 1e-3 * (per_position ** 2).sum()

    total, grads = tf.function(GradientPenalty(model, epsilon=eps))(*batch)
    assert float(total) == pytest.approx(expected_total, rel=1e-5)
    assert float(total) > clean
    by_name = dict(zip([v.name for v in model.trainable_variables], dense(grads)))
    for name, ref in ref_grads.items():
        np.testing.assert_allclose(by_name[name], tf.convert_to_tensor(ref).numpy(), rtol=1e-4, atol=1e-7)
