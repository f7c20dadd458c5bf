"""The speed options compute what the plain float32 step computes: rewrites.prepare_model's
layer rewrites, mixed precision (float16 with loss scaling, bfloat16) and XLA, each checked
on FGM and gradient penalty against the float32, non-XLA reference; and a short run under
each option learns. Correctness only: timings live in `make bench` (experiments/commands/bench.py)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from experiments.commands.run import run
from experiments.config import compose
from experiments.model import encoder, head, rewrites
from experiments.train import loop, optim
from experiments.train.methods.fgm import FGM, fgm_delta
from experiments.train.methods.gp import GradientPenalty
from experiments.train.methods.pgd import PGD
from tests.helpers.clue import CLASS_WORDS, tiny_overrides
from tests.helpers.tiny_bert import LABELS, TINY, VOCAB, repeated_token_batch

METHODS = {
    "fgm": lambda m, o: FGM(m, o, epsilon=0.5),
    "gp": lambda m, o: GradientPenalty(m, o, epsilon=1.0),
    "pgd": lambda m, o: PGD(m, o),
}


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    optim.set_precision("float32")  # the policy is global: leave it as the other tests expect


@pytest.fixture
def batch():
    return repeated_token_batch()


def build(precision="float32", prepared=True, weights=None):
    optim.set_precision(precision)
    model = head.build_classifier(TINY, encoder.bert_config(TINY, VOCAB), LABELS, seed=0)
    if weights is not None:
        model.set_weights(weights)
    if prepared:
        rewrites.prepare_model(model, precision)
    return model


def gradients(model, method, batch, precision="float32", jit_compile=False):
    """(loss, dense float64 gradients) of one call of ``method`` traced as the trainer traces it.

    Under mixed_float16 the method scales every gradient it takes by the optimizer's loss
    scale and unscales it. The scale is fixed at 2**8 here: a mistake in either direction
    is then off by 256x, and no gradient of this model overflows, as some do at the
    dynamic scale's first value 2**15 (training then skips the step and halves the scale)."""
    optimizer = optim.make_optimizer(1e-3, precision)
    if precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(
            keras.optimizers.Adam(1e-3), dynamic=False, initial_scale=2**8
        )
    step = tf.function(METHODS[method](model, optimizer), input_signature=loop.BATCH_SIGNATURE, jit_compile=jit_compile)
    loss, grads = step(*batch)
    return float(loss), [tf.convert_to_tensor(g).numpy().astype(np.float64) for g in grads]


def relative_error(got, expected):
    """||got - expected|| / ||expected|| over all gradients together (per-variable ratios are
    meaningless for the attention key biases, whose true gradient is 0)."""
    diff = sum(((a - b) ** 2).sum() for a, b in zip(got, expected))
    return float(np.sqrt(diff / sum((b**2).sum() for b in expected)))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fgm", "gp"])
def test_prepared_layers_compute_the_same_function(batch, method):
    plain, prepared = build(prepared=False), build()
    np.testing.assert_allclose(prepared(batch[0]).numpy(), plain(batch[0]).numpy(), rtol=0, atol=1e-6)
    plain_loss, plain_grads = gradients(plain, method, batch)
    loss, grads = gradients(prepared, method, batch)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert relative_error(grads, plain_grads) < 1e-5  # GP: second derivatives of the new layers too


# float32 + XLA is exact up to reordering; float16/bfloat16 keep 11/8 significant bits.
OPTIONS = [
    ("float32", True, 1e-5),
    ("mixed_float16", False, 1e-2),
    ("mixed_bfloat16", False, 4e-2),
    ("mixed_float16", True, 1e-2),
]


@pytest.mark.slow
@pytest.mark.parametrize("precision,jit_compile,tolerance", OPTIONS)
@pytest.mark.parametrize("method", ["fgm", "gp", "pgd"])
def test_step_under_each_option_matches_float32(batch, method, precision, jit_compile, tolerance):
    reference = build()
    ref_loss, ref_grads = gradients(reference, method, batch)
    model = build(precision, weights=reference.get_weights())
    loss, grads = gradients(model, method, batch, precision, jit_compile)
    assert loss == pytest.approx(ref_loss, rel=tolerance)
    assert relative_error(grads, ref_grads) < tolerance
    # The perturbation is undone: the embedding matrix (float32 under every policy) is back.
    emb = encoder.embedding_matrix(model)
    assert emb.dtype == tf.float32
    np.testing.assert_allclose(emb.numpy(), encoder.embedding_matrix(reference).numpy(), rtol=0, atol=1e-6)


def test_perturbation_is_float32_whatever_the_gradient_dtype():
    """Under a mixed policy the embedding gradient arrives in float32 already (the variable
    is float32, the cast to float16 comes after the lookup); fgm_delta casts anyway, so the
    perturbation is float32 and the dense formula even from float16 rows."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((6, 4)).astype(np.float16)
    grad = tf.IndexedSlices(tf.constant(values), tf.constant([3, 1, 3, 0, 1, 7]), tf.constant([9, 4]))
    delta = fgm_delta(grad, 0.5)
    assert delta.values.dtype == tf.float32
    dense = np.zeros((9, 4))
    np.add.at(dense, [3, 1, 3, 0, 1, 7], values.astype(np.float64))
    np.testing.assert_allclose(tf.convert_to_tensor(delta).numpy(), 0.5 * dense / np.linalg.norm(dense), rtol=1e-6)
    model = build("mixed_float16")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model((tf.constant([[2, 7, 3]]), tf.zeros((1, 3), tf.int32)), training=True))
    assert tape.gradient(loss, encoder.embedding_matrix(model)).values.dtype == tf.float32


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_padding_is_masked_under_mixed_precision(precision):
    """bert4keras masks attention with -inf (exact in float16, no large finite constant to
    overflow): appending padding must not change a sequence's logits."""
    model = build(precision)
    ids = np.array([[2, 7, 8, 9, 3]], np.int32)
    padded = np.concatenate([ids, np.zeros((1, 6), np.int32)], axis=1)
    short = model((ids, np.zeros_like(ids))).numpy()
    long = model((padded, np.zeros_like(padded))).numpy()
    assert np.isfinite(long).all()
    np.testing.assert_allclose(long, short, rtol=0, atol=5e-3)


@pytest.mark.slow
def test_layer_norm_runs_in_float32_under_float16(batch):
    """Pre-LayerNorm activations above 256 square to inf in float16. With embeddings scaled
    up so that they do, only the float32 LayerNorm of prepare_model keeps the gradients."""
    reference = build()
    weights = reference.get_weights()
    emb_index = [w.name for w in reference.weights].index(encoder.embedding_matrix(reference).name)
    weights[emb_index] = weights[emb_index] * 1e5
    reference.set_weights(weights)
    _, ref_grads = gradients(reference, "gp", batch)
    _, grads = gradients(build("mixed_float16", weights=weights), "gp", batch, "mixed_float16")
    assert relative_error(grads, ref_grads) < 1e-2
    _, broken = gradients(build("mixed_float16", prepared=False, weights=weights), "gp", batch, "mixed_float16")
    assert not relative_error(broken, ref_grads) < 1e-2  # without it (bert4keras as is): wrong


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,method",
    [
        ({"trainer.precision": "mixed_float16"}, "fgm"),
        ({"trainer.precision": "mixed_bfloat16"}, "gp"),
        ({"trainer.jit_compile": True, "trainer.pad_to_multiple_of": 16, "trainer.bucket_by_length": True}, "fgm"),
        ({"trainer.jit_compile": True, "trainer.pad_to_multiple_of": 16}, "gp"),
    ],
)
def test_short_run_learns_under_each_option(clue_dir, tmp_path, extra, method):
    overrides = {"method.epsilon": 0.05, "paths.cache_dir": str(tmp_path / "cache"), **extra}
    record = run(compose(tiny_overrides(clue_dir, tmp_path / "results", "tnews", method, overrides)))
    assert record["best_dev_acc"] > 1 / len(CLASS_WORDS) + 0.3, record["history"]
    assert all(np.isfinite(h["train_loss"]) for h in record["history"])
