"""FGM and gradient penalty against independent dense reference computations."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from experiments.errors import UserError
from experiments.model import encoder
from experiments.train import loop
from experiments.train.methods.fgm import FGM, fgm_delta
from experiments.train.methods.gp import GradientPenalty
from tests.helpers.references import loss_of, per_position_reference, reference_delta, reference_fgm
from tests.helpers.tiny_bert import VOCAB, dense, repeated_token_batch, tiny_model


@pytest.fixture
def batch():
    return repeated_token_batch()


def test_fgm_delta_equals_the_dense_formula(batch):
    model = tiny_model()
    emb = encoder.embedding_matrix(model)
    with tf.GradientTape() as tape:
        loss = loss_of(model, *batch)
    sparse = tape.gradient(loss, emb)
    assert isinstance(sparse, tf.IndexedSlices)
    g = tf.convert_to_tensor(sparse).numpy()  # dense vocab x hidden, duplicates summed
    expected = 0.5 * g / (np.sqrt((g**2).sum()) + 1e-8)
    got = tf.convert_to_tensor(fgm_delta(sparse, 0.5)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert np.linalg.norm(got) == pytest.approx(0.5, rel=1e-5)


def test_fgm_gradients_equal_the_dense_recipe(batch):
    model = tiny_model()
    e0 = encoder.embedding_matrix(model).numpy()
    clean, adv, ref_grads = reference_fgm(model, batch, 0.5)

    loss, grads = tf.function(FGM(model, epsilon=0.5))(*batch)
    assert float(loss) == pytest.approx(adv, rel=1e-5)
    assert adv > clean  # the perturbation ascends the loss
    for a, b in zip(dense(grads), dense(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(encoder.embedding_matrix(model).numpy(), e0, rtol=0, atol=1e-7)


@pytest.mark.slow
def test_fgm_train_step_equals_reference_update(batch):
    eps, lr = 0.5, 1e-2
    model, ref = tiny_model(), tiny_model()
    ref.set_weights(model.get_weights())
    start = [w.copy() for w in model.get_weights()]

    optimizer = keras.optimizers.Adam(lr)
    loop.Trainer(model, FGM(model, optimizer, epsilon=eps), optimizer, batch_size=3).train_step(*batch)
    _, _, ref_grads = reference_fgm(ref, batch, eps)
    keras.optimizers.Adam(lr).apply_gradients(zip(ref_grads, ref.trainable_variables))

    for a, b, w0 in zip(model.get_weights(), ref.get_weights(), start):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        assert not np.array_equal(a, w0) or a.ndim == 1  # every matrix moved
    # Embedding rows of tokens absent from the batch are exactly as before (no leftover delta).
    emb_index = [v.name for v in model.weights].index(encoder.embedding_matrix(model).name)
    absent = np.setdiff1d(np.arange(VOCAB), np.unique(batch[0][0].numpy()))
    np.testing.assert_array_equal(model.get_weights()[emb_index][absent], start[emb_index][absent])


# --- FGM's attack pass: dropout off (the blog's Keras code) or on (attack_dropout=true) -------


@pytest.fixture
def fixed_dropout_masks(monkeypatch):
    """Dropout that draws the same mask at every call on a tensor of a given shape (a stateless
    draw from one seed), so that a training-mode pass inside the method and one in the
    reference drop the same units (TF's stateful dropout draws differently in each)."""

    def call(self, inputs, training=None):
        if not training:  # None only while the model is built; the modes must differ below
            return tf.identity(inputs)
        keep = tf.random.stateless_uniform(tf.shape(inputs), seed=[17, 4]) >= self.rate
        return tf.where(keep, inputs / (1 - self.rate), tf.zeros_like(inputs))

    monkeypatch.setattr(keras.layers.Dropout, "call", call)


def test_fgm_attack_gradient_is_taken_with_dropout_off_by_default(batch):
    # Real, random dropout: the default attack pass draws no mask, so it equals the
    # inference-mode reference exactly, and a training-mode gradient points elsewhere.
    eps = 0.5
    model = tiny_model(dropout=0.3)
    delta = tf.convert_to_tensor(tf.function(FGM(model, epsilon=eps).attack)(*batch)).numpy()
    _, inference = reference_delta(model, batch, eps, training=False)
    _, dropout_on = reference_delta(model, batch, eps, training=True)
    np.testing.assert_allclose(delta, inference, rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(dropout_on - inference) > 0.05 * eps


@pytest.mark.slow
@pytest.mark.parametrize("attack_dropout", [False, True])
def test_fgm_with_dropout_equals_the_reference_in_its_attack_mode(batch, fixed_dropout_masks, attack_dropout):
    eps = 0.5
    model = tiny_model(dropout=0.3)
    e0 = encoder.embedding_matrix(model).numpy()
    method = FGM(model, epsilon=eps, attack_dropout=attack_dropout)
    delta = tf.convert_to_tensor(tf.function(method.attack)(*batch)).numpy()
    _, same_mode = reference_delta(model, batch, eps, training=attack_dropout)
    _, other_mode = reference_delta(model, batch, eps, training=not attack_dropout)
    np.testing.assert_allclose(delta, same_mode, rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(other_mode - same_mode) > 0.05 * eps  # the modes are told apart
    # The whole step: the update's pass (perturbed loss and gradients) has dropout on either way.
    _, adv, ref_grads = reference_fgm(model, batch, eps, attack_training=attack_dropout)
    loss, grads = tf.function(method)(*batch)
    assert float(loss) == pytest.approx(adv, rel=1e-5)
    for a, b in zip(dense(grads), dense(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(encoder.embedding_matrix(model).numpy(), e0, rtol=0, atol=1e-7)


def test_fgm_refuses_an_inference_mode_attack_with_accumulate_clean():
    with pytest.raises(UserError, match="method.attack_dropout=false contradicts method.accumulate_clean=true"):
        FGM(None, accumulate_clean=True, attack_dropout=False)


def test_gp_loss_is_the_per_position_formula(batch):
    eps = 1.0
    model = tiny_model()
    clean, expected_total, per_position, ref_grads = per_position_reference(model, batch, eps)
    # Tokens repeat in this batch, so summing per vocabulary row would give another number.
    emb = encoder.embedding_matrix(model)
    with tf.GradientTape() as tape:
        loss = loss_of(model, *batch)
    per_row = tf.convert_to_tensor(tape.gradient(loss, emb)).numpy()
    assert abs((per_row**2).sum() - (per_position**2).sum()) > 1e-3 * (per_position**2).sum()

    total, grads = tf.function(GradientPenalty(model, epsilon=eps))(*batch)
    assert float(total) == pytest.approx(expected_total, rel=1e-5)
    assert float(total) > clean
    by_name = dict(zip([v.name for v in model.trainable_variables], dense(grads)))
    for name, ref in ref_grads.items():
        np.testing.assert_allclose(by_name[name], tf.convert_to_tensor(ref).numpy(), rtol=1e-4, atol=1e-7)
