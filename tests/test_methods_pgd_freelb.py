"""FGM + clean gradients, PGD and FreeLB against independent dense reference computations
on a tiny dropout-free BERT (so every forward pass is deterministic)."""

import numpy as np
import pytest
import tensorflow as tf

from experiments.model import encoder
from experiments.train import loop
from experiments.train.methods import cross_entropy
from experiments.train.methods.fgm import FGM
from experiments.train.methods.freelb import FreeLB
from experiments.train.methods.pgd import PGD
from tests.helpers.tiny_bert import TINY, VOCAB, dense, repeated_token_batch, tiny_model


@pytest.fixture
def batch():
    return repeated_token_batch()


def traced(method):
    """The method as the trainer runs it: inside a tf.function with unknown batch/length."""
    return tf.function(method, input_signature=loop.BATCH_SIGNATURE)


def loss_and_grads(model, batch, sources):
    with tf.GradientTape() as tape:
        loss = cross_entropy(batch[1], model(batch[0], training=True))
    return float(loss), dense(tape.gradient(loss, sources))


def assert_grads_close(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(dense(got), expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def frobenius(x):
    return float(np.sqrt((np.asarray(x, np.float64) ** 2).sum()))


# --- FGM with accumulate_clean --------------------------------------------------------------


@pytest.mark.slow
def test_fgm_accumulate_clean_adds_the_clean_gradients(batch):
    eps = 0.5
    model = tiny_model()
    emb, variables = encoder.embedding_matrix(model), model.trainable_variables
    e0 = emb.numpy()
    index = [v.ref() for v in variables].index(emb.ref())
    clean, clean_grads = loss_and_grads(model, batch, variables)
    g = clean_grads[index]  # dense vocab x hidden, duplicate rows summed
    emb.assign(e0 + eps * g / (frobenius(g) + 1e-8))
    adv, adv_grads = loss_and_grads(model, batch, variables)
    emb.assign(e0)

    loss, grads = traced(FGM(model, epsilon=eps, accumulate_clean=True))(*batch)
    assert float(loss) == pytest.approx(clean + adv, rel=1e-5)
    assert_grads_close(grads, [c + a for c, a in zip(clean_grads, adv_grads)])
    # The clean part is no rounding error: the two variants' updates differ visibly.
    assert frobenius(clean_grads[-2]) > 0.1 * frobenius(adv_grads[-2])
    # The default is still the blog's variant: perturbed loss and gradients only.
    loss, grads = traced(FGM(model, epsilon=eps))(*batch)
    assert float(loss) == pytest.approx(adv, rel=1e-5)
    assert_grads_close(grads, adv_grads)
    np.testing.assert_allclose(emb.numpy(), e0, rtol=0, atol=1e-7)


# --- PGD --------------------------------------------------------------------------------------


def reference_pgd(model, batch, eps, alpha, steps):
    """The PyTorch PGD recipe with dense vocab x hidden tensors: returns the clean and last
    adversarial losses and gradients, and the total perturbation after every ascent step."""
    emb, variables = encoder.embedding_matrix(model), model.trainable_variables
    e0 = emb.numpy()
    index = [v.ref() for v in variables].index(emb.ref())
    clean, clean_grads = loss_and_grads(model, batch, variables)
    g, r, history = clean_grads[index], np.zeros_like(e0), []
    for step in range(steps):
        r = r + alpha * g / (frobenius(g) + 1e-8)
        if frobenius(r) > eps:
            r = eps * r / frobenius(r)
        history.append(r)
        emb.assign(e0 + r)
        if step < steps - 1:
            _, (g,) = loss_and_grads(model, batch, [emb])
        else:
            adv, adv_grads = loss_and_grads(model, batch, variables)
    emb.assign(e0)
    return clean, adv, clean_grads, adv_grads, history


@pytest.mark.slow
@pytest.mark.parametrize("eps, alpha, steps", [(1.0, 0.3, 3), (0.5, 0.3, 3)])  # the defaults; a binding ball
def test_pgd_equals_the_dense_recipe(batch, eps, alpha, steps):
    model = tiny_model()
    e0 = encoder.embedding_matrix(model).numpy()
    clean, adv, clean_grads, adv_grads, history = reference_pgd(model, batch, eps, alpha, steps)
    assert adv > clean  # the ascent ascends
    if eps < alpha * steps:  # the projection really acted in this case
        assert frobenius(history[-1]) == pytest.approx(eps, rel=1e-6)

    loss, grads = traced(PGD(model, epsilon=eps, alpha=alpha, steps=steps))(*batch)
    assert float(loss) == pytest.approx(clean + adv, rel=1e-5)
    assert_grads_close(grads, [c + a for c, a in zip(clean_grads, adv_grads)])
    np.testing.assert_array_equal(encoder.embedding_matrix(model).numpy(), e0)  # restored bit-exact


def test_pgd_perturbation_never_leaves_the_ball(batch):
    """Watch the embedding matrix at every forward pass of one step: ||E - E0||_F <= eps
    always, the ball is reached (alpha * steps > eps), rows outside the batch never move."""
    eps, alpha, steps = 0.5, 0.4, 5
    model = tiny_model()
    emb = encoder.embedding_matrix(model)
    e0 = emb.numpy()
    absent = np.setdiff1d(np.arange(VOCAB), np.unique(batch[0][0].numpy()))
    method = PGD(model, epsilon=eps, alpha=alpha, steps=steps)
    norms, loss = [], method.loss

    def watched_loss(inputs, labels):
        r = emb.numpy() - e0
        norms.append(frobenius(r))
        assert not r[absent].any()
        return loss(inputs, labels)

    method.loss = watched_loss  # eager call, so this runs at every forward pass
    method(*batch)
    assert len(norms) == steps + 1 and norms[0] == 0.0
    assert max(norms) <= eps * (1 + 1e-5)
    assert norms[1] == pytest.approx(alpha, rel=1e-5)
    assert norms[-1] == pytest.approx(eps, rel=1e-5)
    np.testing.assert_array_equal(emb.numpy(), e0)


# --- FreeLB -------------------------------------------------------------------------------------


def reference_freelb(model, batch, delta0, adv_steps, adv_lr, adv_max_norm):
    """FreeLB without any hook: a copy of the model whose vocabulary has one extra row per
    position, position (b, i) reading row VOCAB + b*L + i = E[ids[b, i]] + delta[b, i], so
    dense gradients w.r.t. those rows are the gradients w.r.t. delta, and E's gradient is
    its own rows' plus the extra rows' added back to their tokens. Returns the mean loss,
    the mean gradients, each step's gradients and how often the projection acted."""
    (ids, segments), labels = batch
    ids = ids.numpy()
    b, length = ids.shape
    hidden = TINY.shape.hidden_size
    ext = tiny_model(vocab=VOCAB + b * length)
    for layer in model.layers:
        if layer.name != encoder.EMBEDDING_LAYER:
            ext.get_layer(layer.name).set_weights(layer.get_weights())
    ext_ids = np.where(ids != 0, VOCAB + np.arange(b * length).reshape(b, length), 0).astype(np.int32)
    ext_emb, emb = encoder.embedding_matrix(ext), encoder.embedding_matrix(model)
    index = [v.ref() for v in model.trainable_variables].index(emb.ref())
    real = (ids != 0)[..., None].astype(np.float32)
    e, delta, losses, step_grads, projected = emb.numpy(), delta0, [], [], 0
    for step in range(adv_steps):
        ext_emb.assign(np.concatenate([e, (e[ids] + delta).reshape(b * length, hidden)]))
        loss, grads = loss_and_grads(ext, ((tf.constant(ext_ids), segments), labels), ext.trainable_variables)
        extra = grads[index][VOCAB:]
        g_emb = grads[index][:VOCAB].copy()
        np.add.at(g_emb, ids.reshape(-1), extra * real.reshape(-1, 1))
        grads[index] = g_emb
        losses.append(loss)
        step_grads.append(grads)
        if step == adv_steps - 1:  # the last gradients are used, no further ascent
            break
        d = extra.reshape(b, length, hidden) * real
        norm = np.sqrt((d.astype(np.float64) ** 2).sum(axis=(1, 2), keepdims=True))
        delta = delta + adv_lr * d / np.maximum(norm, 1e-8)
        if adv_max_norm > 0:
            norm = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=(1, 2), keepdims=True))
            projected += int((norm > adv_max_norm).sum())
            delta = np.where(norm > adv_max_norm, delta * adv_max_norm / norm, delta).astype(np.float32)
    mean = [np.mean(gs, axis=0) for gs in zip(*step_grads)]
    return float(np.mean(losses)), mean, step_grads, projected


@pytest.mark.slow
@pytest.mark.parametrize(
    "adv_steps, adv_lr, adv_init_mag, adv_max_norm",
    [
        (3, 0.1, 0.1, 0.0),  # the defaults: no projection
        (4, 0.3, 0.5, 0.35),
    ],
)  # a projection that acts
def test_freelb_equals_the_reference_and_averages_the_steps(batch, adv_steps, adv_lr, adv_init_mag, adv_max_norm):
    model = tiny_model()
    emb = encoder.embedding_matrix(model)
    e0 = emb.numpy()
    ids = batch[0][0].numpy()
    noise = np.random.default_rng(3).uniform(-1, 1, size=ids.shape + (TINY.shape.hidden_size,)).astype(np.float32)
    real = (ids != 0)[..., None].astype(np.float32)
    delta0 = noise * real * adv_init_mag / np.sqrt(real.sum(axis=(1, 2), keepdims=True) * TINY.shape.hidden_size)
    expected_loss, expected, step_grads, projected = reference_freelb(
        model, batch, delta0, adv_steps, adv_lr, adv_max_norm
    )
    if adv_max_norm > 0:
        assert projected > 0
    # An average is neither the last step's gradients nor their sum: the check can tell.
    assert not np.allclose(expected[-2], step_grads[-1][-2], rtol=1e-2)

    method = FreeLB(model, adv_steps=adv_steps, adv_lr=adv_lr, adv_init_mag=adv_init_mag, adv_max_norm=adv_max_norm)
    method._noise = lambda shape: tf.constant(noise)  # the same U(-1, 1) draw as the reference
    loss, grads = traced(method)(*batch)
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)
    assert_grads_close(grads, expected)
    np.testing.assert_array_equal(emb.numpy(), e0)
    assert "call" not in vars(model.get_layer(encoder.EMBEDDING_LAYER))  # the hook is gone


def test_freelb_initial_delta_lies_on_real_tokens_within_init_mag(batch):
    model = tiny_model()
    ids = batch[0][0]
    real = tf.cast(tf.not_equal(ids, 0), tf.float32)[..., None]
    delta = FreeLB(model, adv_init_mag=0.4).initial_delta(real).numpy()
    assert delta.shape == tuple(ids.shape) + (TINY.shape.hidden_size,)
    assert not delta[ids.numpy() == 0].any() and delta[ids.numpy() != 0].all()
    norms = np.sqrt((delta**2).sum(axis=(1, 2)))
    assert (norms <= 0.4).all() and (norms > 0.1).all()  # U(-1,1): about 0.4 / sqrt(3)
    assert not FreeLB(model, adv_init_mag=0.0).initial_delta(real).numpy().any()


def test_freelb_with_one_step_and_no_init_is_plain_training(batch):
    model = tiny_model()
    clean, clean_grads = loss_and_grads(model, batch, model.trainable_variables)
    loss, grads = traced(FreeLB(model, adv_steps=1, adv_init_mag=0.0))(*batch)
    assert float(loss) == pytest.approx(clean, rel=1e-6)
    assert_grads_close(grads, clean_grads)
