"""Accuracy under attack (experiments/train/embedding_attack.py, make attack): values against independent
computations on tiny models.

On the fixture of tests/helpers/clue.py a model trained with FGM (method.epsilon 0.05) did not hold
reliably more examples than the baseline at the same eps (seeds 0-3, 3 epochs, eps 0.1: FGM
0.77/0.89/0.77/0.81 against 0.72/0.82/0.71/0.85, and at eps 0.2 it lost on seed 2), so that is not
asserted; that a large eps flips nearly every prediction of a model that learned the fixture is."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from experiments import PROJECT_ROOT, records
from experiments.commands import attack as make_attack
from experiments.commands.run import run
from experiments.config import compose
from experiments.data import batching
from experiments.model import encoder
from experiments.train import loop, optim
from experiments.train.embedding_attack import Attack, embedding_norm, record_fields
from experiments.train.methods.baseline import Baseline
from tests.helpers.clue import tiny_overrides
from tests.helpers.tiny_bert import LABELS, TINY, VOCAB, repeated_token_batch, tiny_model

CLS, SEP = 2, 3


def synthetic(n: int, rng: np.random.Generator) -> batching.Dataset:
    """[CLS] random tokens with the class's token (5 + label) somewhere [SEP]: learnable in a few epochs."""
    labels = rng.integers(0, LABELS, n).astype(np.int32)
    ids = []
    for label in labels:
        body = list(rng.integers(9, VOCAB, rng.integers(3, 10)))
        body.insert(rng.integers(0, len(body) + 1), 5 + label)
        ids.append(np.array([CLS, *body, SEP], np.int32))
    return batching.Dataset(ids, labels)


@pytest.fixture(scope="module")
def trained():
    """A tiny BERT trained on ``synthetic`` data, and a dev set with a quarter of its labels wrong
    (so that clean accuracy is neither 0 nor 1)."""
    rng = np.random.default_rng(0)
    model = tiny_model()
    optimizer = optim.make_optimizer(1e-2, "float32", False)
    trainer = loop.Trainer(
        model, Baseline(model, optimizer), optimizer, batch_size=16, eval_batch_size=16, progress=False
    )
    trainer.fit(synthetic(320, rng), synthetic(40, rng), epochs=6, seed=0)
    dev = synthetic(64, rng)
    assert trainer.evaluate(dev) > 0.9
    wrong = rng.random(len(dev)) < 0.25
    dev.labels[wrong] = (dev.labels[wrong] + 1) % LABELS
    return model, trainer, dev


@pytest.mark.slow
def test_eps_zero_gives_exactly_the_clean_accuracy(trained):
    model, trainer, dev = trained
    clean = trainer.predict(dev.token_ids) == dev.labels
    assert 0.5 < clean.mean() < 0.95
    for random_start in (False, True):
        result = Attack(model, (CLS, SEP), steps=3, random_start=random_start, batch_size=8).evaluate(dev, [0.0])
        np.testing.assert_array_equal(result.robust[:, 0], clean)
        np.testing.assert_array_equal(result.clean, clean)
        assert result.accuracy() == {0.0: trainer.evaluate(dev)}


def batch_radii(attack, inputs, eps):
    n = attack.mask(inputs[0]).numpy().sum(axis=(1, 2))
    return (eps * embedding_norm(attack.model) * np.sqrt(n)).reshape(-1, 1, 1).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("perturb_special_tokens, random_start", [(False, False), (True, False), (False, True)])
def test_every_delta_is_within_its_ball_and_zero_where_it_must_be(trained, perturb_special_tokens, random_start):
    model, _, _ = trained
    inputs, labels = repeated_token_batch()  # repeated tokens, padding in row 2
    ids = inputs[0].numpy()
    attack = Attack(
        model, (CLS, SEP), steps=4, random_start=random_start, perturb_special_tokens=perturb_special_tokens
    )
    radius = batch_radii(attack, inputs, 0.5)
    delta, _, _ = attack.perturb(inputs, labels, radius, np.random.default_rng(0))
    delta = delta.numpy()
    norms = np.sqrt((delta.astype(np.float64) ** 2).sum(axis=(1, 2)))
    assert (norms <= radius.ravel() * (1 + 1e-5)).all()
    assert (norms >= radius.ravel() * (1 - 1e-5)).any()  # 2.5 r / K per step: the projection acts
    assert not delta[ids == 0].any()  # never on padding
    special = np.isin(ids, (CLS, SEP))
    assert delta[special].any() == perturb_special_tokens
    assert np.abs(delta[(ids != 0) & ~special]).min() > 0


def reference_step(model, batch, delta0, radius, step_size):
    """One PGD step with no hook: a copy of the model whose vocabulary has one extra row per position,
    position (b, i) reading row VOCAB + b*L + i = E[ids[b, i]] + delta0[b, i], so dense gradients w.r.t.
    those rows are the gradients w.r.t. delta; then the step and the projection in float64 NumPy.
    Returns delta_1, whether each example was right at delta0, and how many the projection scaled."""
    (ids, segments), labels = batch
    ids = ids.numpy()
    b, length = ids.shape
    ext = tiny_model(vocab=VOCAB + b * length)
    for layer in model.layers:
        if layer.name != encoder.EMBEDDING_LAYER:
            ext.get_layer(layer.name).set_weights(layer.get_weights())
    e = encoder.embedding_matrix(model).numpy()
    ext_emb = encoder.embedding_matrix(ext)
    ext_emb.assign(np.concatenate([e, (e[ids] + delta0).reshape(b * length, TINY.shape.hidden_size)]))
    ext_ids = np.where(ids != 0, VOCAB + np.arange(b * length).reshape(b, length), 0).astype(np.int32)
    with tf.GradientTape() as tape:
        logits = ext((tf.constant(ext_ids), segments), training=False)
        loss = -tf.reduce_sum(tf.gather(tf.nn.log_softmax(logits), labels, batch_dims=1))
    grad = tf.convert_to_tensor(tape.gradient(loss, ext_emb)).numpy()[VOCAB:].reshape(b, length, -1)
    mask = ((ids != 0) & (ids != CLS) & (ids != SEP))[..., None]
    d = grad.astype(np.float64) * mask
    moved = delta0 + step_size * d / np.sqrt((d**2).sum(axis=(1, 2), keepdims=True))
    norm = np.sqrt((moved**2).sum(axis=(1, 2), keepdims=True))
    projected = int((norm > radius).sum())
    delta1 = np.where(norm > radius, moved * radius / norm, moved)
    return delta1, np.argmax(logits.numpy(), -1) == labels.numpy(), projected


@pytest.mark.slow
def test_one_pgd_step_equals_an_independent_dense_reference(trained):
    model, _, _ = trained
    batch = repeated_token_batch()
    inputs, labels = batch
    attack = Attack(model, (CLS, SEP), steps=10)
    mask = attack.mask(inputs[0]).numpy()
    radius = batch_radii(attack, inputs, 0.4)
    noise = np.random.default_rng(1).standard_normal(mask.shape[:2] + (TINY.shape.hidden_size,)) * mask
    fill = np.array([0.3, 0.99, 0.6]).reshape(-1, 1, 1)  # how far into its ball each example starts
    delta0 = (noise * fill * radius / np.sqrt((noise**2).sum(axis=(1, 2), keepdims=True))).astype(np.float32)
    step_size = (radius * 2.5 / 10).astype(np.float32)
    expected, right, projected = reference_step(model, batch, delta0, radius.astype(np.float64), step_size)
    assert 0 < projected < len(radius)  # the projection acts on some examples, not all
    got, got_right = attack.ascend(
        inputs, labels, tf.constant(delta0), tf.constant(mask), tf.constant(radius), tf.constant(step_size)
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got_right.numpy(), right)


@pytest.mark.slow
def test_robust_accuracy_never_rises_with_eps_and_large_eps_flips_predictions(trained):
    model, trainer, dev = trained
    weights = [w.numpy().copy() for w in model.weights]
    epsilons = [0.3, 0.02, 0.1, 0.05, 0.2, 0.6]  # not in order
    result = Attack(model, (CLS, SEP), batch_size=16).evaluate(dev, epsilons)
    accuracy = result.accuracy()
    assert list(accuracy) == sorted(epsilons)
    values = [trainer.evaluate(dev), *accuracy.values()]
    assert all(a >= b for a, b in zip(values, values[1:])), values
    assert (result.robust[:, 1:] <= result.robust[:, :-1]).all()  # an example broken at eps stays broken above it
    assert accuracy[0.6] < 0.1 < values[0] - 0.5, values  # a large ball flips nearly every right answer
    # The radius of each example, against the formula computed here.
    rows = encoder.embedding_matrix(model).numpy()[1:].astype(np.float64)
    norm = np.sqrt((rows**2).sum(axis=1)).mean()
    tokens = np.array([np.isin(t, (0, CLS, SEP), invert=True).sum() for t in dev.token_ids])
    np.testing.assert_allclose(result.radii, np.outer(norm * np.sqrt(tokens), sorted(epsilons)), rtol=1e-6)
    # The weights after the attack equal those before, bit for bit.
    for before, after in zip(weights, model.weights):
        np.testing.assert_array_equal(before, after.numpy())


class CharTokenizer:
    def token_to_id(self, token):
        return {"[CLS]": CLS, "[SEP]": SEP}[token]


@pytest.mark.slow
def test_record_fields_follow_the_config_and_max_samples(trained):
    model, trainer, dev = trained
    attack_cfg = compose(
        ["eval.attack.epsilons=[0.1,0]", "eval.attack.steps=3", "eval.attack.max_samples=20"]
    ).eval.attack
    fields = record_fields(model, CharTokenizer(), dev, attack_cfg, "best", batch_size=8)
    first = batching.Dataset(dev.token_ids[:20], dev.labels[:20])
    assert list(fields["robust_dev_acc"]) == ["0.0", "0.1"]
    assert fields["robust_dev_acc"]["0.0"] == trainer.evaluate(first) == fields["attack"]["clean_dev_acc"]
    a = fields["attack"]
    assert (a["steps"], a["step_size_ratio"], a["examples"], a["weights"], a["epsilons"]) == (
        3,
        2.5,
        20,
        "best",
        [0.0, 0.1],
    )
    assert a["radii"]["0.0"] == 0 and a["radii"]["0.1"] > 0 and a["embedding_norm"] == embedding_norm(model)


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.slow
def test_make_attack_equals_the_attack_after_training_and_keeps_the_rest_of_the_record(clue_dir, tmp_path):
    extra = {"trainer.epochs": 2, "trainer.tensorboard": False, "eval.attack.steps": 5}
    plain = run(compose(tiny_overrides(clue_dir, tmp_path / "plain", extra=extra)))
    attacked = run(
        compose(tiny_overrides(clue_dir, tmp_path / "attacked", extra={**extra, "eval.attack.epsilons": "[0.05,0.5]"}))
    )
    # eval is no setting: the same settings id and file name with or without the attack
    assert plain["settings_id"] == attacked["settings_id"] and "robust_dev_acc" not in plain
    assert attacked["attack"]["weights"] == "best" and attacked["attack"]["examples"] == attacked["dev_samples"]
    assert attacked["attack"]["clean_dev_acc"] == attacked["best_dev_acc"]  # the best weights were restored
    robust = attacked["robust_dev_acc"]
    assert (
        robust["0.5"] <= robust["0.05"] <= attacked["best_dev_acc"] and robust["0.5"] < 0.5 * attacked["best_dev_acc"]
    ), (robust, attacked["best_dev_acc"])
    assert list(attacked)[list(attacked).index("final_dev_acc") + 1 :][:2] == ["robust_dev_acc", "attack"]

    path = records.record_path(tmp_path / "plain", plain["config"])
    before, weights = path.read_text(encoding="utf-8"), plain["best_weights"]
    digest = sha256(weights)
    make_attack.attack(path, ["eval.attack.epsilons=[0.05,0.5]"])
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["robust_dev_acc"] == attacked["robust_dev_acc"]  # the same run, the same attack, the same numbers
    assert {k: v for k, v in after["attack"].items() if k != "seconds"} == {
        k: v for k, v in attacked["attack"].items() if k != "seconds"
    }
    assert list(after)[list(after).index("final_dev_acc") + 1 :][:2] == ["robust_dev_acc", "attack"]
    rest = {k: v for k, v in after.items() if k not in ("robust_dev_acc", "attack")}
    assert json.dumps(rest, ensure_ascii=False, indent=2, default=str) == before  # byte for byte
    assert sha256(weights) == digest  # the weights are untouched


def test_make_attack_takes_only_attack_keys_and_some_eps(tmp_path):
    resolved = OmegaConf.to_container(compose(["model=tiny", f"paths.results_dir={tmp_path}"]), resolve=True)
    path = records.record_path(tmp_path, resolved)
    records.write_json_atomic(path, {"status": "complete", "config": resolved, "best_dev_acc": 0.5})
    for args, message in (
        (["trainer.epochs=3"], "only eval.attack.<key>=<value> can be set here"),
        ([], "no eps to attack with"),
        (["eval.attack.epsilons=[-0.1]"], "eval.attack.epsilons=[-0.1] is invalid"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "experiments.commands.attack", str(path), *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
        assert message in done.stderr
