"""Trusting a run: the learning-rate schedule (also across a resume), early stopping,
divergence, TensorBoard's event files (read back with TensorBoard's own reader), method
quantities, and evaluation in length order."""

import json

import numpy as np
import pytest
import tensorflow as tf

from experiments import records
from experiments.commands import predict
from experiments.commands.run import run, tensorboard_dir
from experiments.config import compose
from experiments.data import batching
from experiments.errors import UserError
from experiments.train import loop, monitor, optim
from experiments.train.methods import build, cross_entropy
from experiments.train.methods.baseline import Baseline
from tests.helpers.clue import tiny_overrides
from tests.helpers.tiny_bert import repeated_token_batch, tiny_model

TIMING_KEYS = {"seconds", "train_seconds", "eval_seconds", "samples_per_second", "input_wait_seconds"}
# 64 training examples in batches of 16: 4 steps per epoch
SMALL = {"task.max_train_samples": 64, "task.max_dev_samples": 40}


def numbers(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def bert_rate(step, peak, warmup, total):
    """google-research/bert optimization.py, written out: linear warm-up, then the linear
    decay that runs over all ``total`` steps."""
    return peak * step / warmup if step < warmup else peak * (1 - min(step, total) / total)


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_linear_schedule_across_a_resume_and_tensorboard(clue_dir, tmp_path, monkeypatch):
    """Killed during epoch 2 (after its steps were logged), then resumed: every step's rate is
    BERT's formula of the global step, each step is in the event files once, and the record
    equals an uninterrupted run's."""
    peak, epochs, steps = 2e-3, 2, 4
    extra = {
        **SMALL,
        "trainer.epochs": epochs,
        "trainer.schedule": "linear",
        "trainer.warmup_ratio": 0.25,
        "trainer.resume": True,
        "method.epsilon": 0.05,
    }
    evaluate = loop.Trainer.evaluate

    def die_in_epoch_2(self, dev):
        if len(self.history) == 1:
            raise KeyboardInterrupt
        return evaluate(self, dev)

    with monkeypatch.context() as patch:
        patch.setattr(loop.Trainer, "evaluate", die_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            run(compose(tiny_overrides(clue_dir, tmp_path / "killed", method="fgm", extra=extra)))
    [folder] = (tmp_path / "killed" / "tensorboard").iterdir()
    assert max(s for s, _ in monitor.read_scalars(folder)["train/loss"]) == epochs * steps  # epoch 2 logged

    resumed = run(compose(tiny_overrides(clue_dir, tmp_path / "killed", method="fgm", extra=extra)))
    whole = run(compose(tiny_overrides(clue_dir, tmp_path / "whole", method="fgm", extra=extra)))
    assert numbers(resumed["history"]) == numbers(whole["history"])
    assert resumed["status"] == records.COMPLETE and resumed["stopped_early"] is False

    board = monitor.read_scalars(
        tensorboard_dir(tmp_path / "killed", records.record_path(tmp_path / "killed", resumed["config"]))
    )
    assert set(board) == {
        "train/loss",
        "train/learning_rate",
        "train/embedding_grad_norm",
        "train/perturbation_norm",
        "dev/accuracy",
    }
    total, warmup = epochs * steps, 2  # int(0.25 * 8)
    rates = board["train/learning_rate"]
    assert [s for s, _ in rates] == list(range(1, total + 1))  # the killed attempt's epoch 2 was dropped
    # step n is the n-th update; it used the rate of the n-1 updates before it
    np.testing.assert_allclose(
        [r for _, r in rates], [bert_rate(n - 1, peak, warmup, total) for n in range(1, total + 1)], rtol=1e-6
    )
    assert rates[0][1] < rates[1][1] and rates[1][1] < peak and rates[2][1] > rates[-1][1] > 0  # up, then down
    whole_board = monitor.read_scalars(
        tensorboard_dir(tmp_path / "whole", records.record_path(tmp_path / "whole", whole["config"]))
    )
    assert board["train/loss"] == whole_board["train/loss"]
    assert board["dev/accuracy"] == [(steps * h["epoch"], pytest.approx(h["dev_acc"])) for h in resumed["history"]]
    for h in resumed["history"]:  # the history's per-epoch means are the means of the logged steps
        epoch = slice((h["epoch"] - 1) * steps, h["epoch"] * steps)
        for key in ("loss", "learning_rate", "embedding_grad_norm", "perturbation_norm"):
            logged = np.mean([v for _, v in board[f"train/{key}"][epoch]])
            assert h["train_loss" if key == "loss" else key] == pytest.approx(logged, rel=1e-6), key
        assert h["perturbation_norm"] == pytest.approx(0.05, rel=1e-4)  # FGM's ||delta|| is epsilon


@pytest.mark.slow
def test_early_stopping_stops_after_patience_epochs(clue_dir, tmp_path, monkeypatch):
    accuracies = [0.5, 0.6, 0.6, 0.55, 0.7]  # no better than 0.6 in epochs 3 and 4
    monkeypatch.setattr(loop.Trainer, "evaluate", lambda self, dev: accuracies[len(self.history)])
    record = run(
        compose(
            tiny_overrides(
                clue_dir,
                tmp_path / "r",
                extra={
                    **SMALL,
                    "task.max_train_samples": 16,
                    "trainer.epochs": 5,
                    "trainer.patience": 2,
                    "trainer.tensorboard": False,
                },
            )
        )
    )
    assert record["status"] == records.COMPLETE
    assert (record["stopped_early"], record["stopped_at_epoch"]) == (True, 4)
    assert [h["dev_acc"] for h in record["history"]] == accuracies[:4]
    assert (record["best_dev_acc"], record["best_epoch"]) == (0.6, 2)


@pytest.mark.slow
def test_planted_nan_ends_the_run_as_diverged_and_sweeps_skip_it(clue_dir, tmp_path, monkeypatch):
    """The 6th step's loss is NaN (epoch 2, step 2): the record says so, keeps epoch 1 and the
    one finite step of epoch 2, and a sweep's rerun (skip_completed) leaves it alone."""
    calls = tf.Variable(0)
    clean_call = Baseline.__call__

    def nan_at_step_6(self, inputs, labels):
        loss, grads = clean_call(self, inputs, labels)
        calls.assign_add(1)
        return loss + tf.where(tf.equal(calls, 6), float("nan"), 0.0), grads

    overrides = tiny_overrides(clue_dir, tmp_path / "r", extra={**SMALL, "trainer.epochs": 3})
    with monkeypatch.context() as patch:
        patch.setattr(Baseline, "__call__", nan_at_step_6)
        record = run(compose(overrides))
    path = records.record_path(tmp_path / "r", record["config"])
    assert strict_json(path) == json.loads(json.dumps(record, default=str))  # no NaN in the file
    assert record["status"] == records.DIVERGED
    assert record["diverged_at"] == {"epoch": 2, "step": 2, "global_step": 6, "loss": "nan"}
    assert [h["epoch"] for h in record["history"]] == [1] and record["best_epoch"] == 1
    board = monitor.read_scalars(tensorboard_dir(tmp_path / "r", path))
    assert [s for s, _ in board["train/loss"]] == [1, 2, 3, 4, 5]  # nothing from the NaN step on
    assert record["partial_epoch"] == {
        "epoch": 2,
        "steps": 1,
        "train_loss": pytest.approx(board["train/loss"][4][1]),
        "learning_rate": pytest.approx(2e-3),
    }
    assert not (tmp_path / "r" / "checkpoints" / path.stem / "state").exists()
    assert records.load_records(tmp_path / "r") == []  # tables average complete runs only
    assert records.load_records(tmp_path / "r", records.DONE) == [strict_json(path)]

    with pytest.raises(UserError, match=r"this run diverged \(a non-finite loss at epoch 2, step 2\)"):
        predict.find_record(path)

    before = (path.read_bytes(), path.stat().st_mtime_ns)
    again = run(compose(overrides + ["trainer.skip_completed=true"]))  # as `make sweep` runs it
    assert again["status"] == records.DIVERGED and (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_each_method_reports_its_quantities():
    """Each method's own quantities equal independent computations, and the train step returns
    them with the loss and the learning rate its update used."""
    (inputs, labels) = batch = repeated_token_batch()
    model = tiny_model()  # dropout-free: every pass below sees the same function
    emb = model.get_layer("Embedding-Token").embeddings
    with tf.GradientTape() as tape:
        clean = cross_entropy(labels, model(inputs, training=True))
    per_position = tape.gradient(clean, emb)
    grad_norm = float(np.linalg.norm(tf.convert_to_tensor(per_position).numpy()))  # dense: duplicates summed
    cases = {
        "fgm": ("FGM", {"epsilon": 0.3}),
        "pgd": ("PGD", {"epsilon": 0.2, "alpha": 0.3, "steps": 1}),
        "gp": ("GradientPenalty", {"epsilon": 0.5}),
        "freelb": ("FreeLB", {"adv_steps": 2, "adv_lr": 0.1, "adv_init_mag": 0.0}),
    }
    methods = {
        name: build({"_target_": f"experiments.train.methods.{name}.{cls}", "name": name, **options}, model, None)
        for name, (cls, options) in cases.items()
    }
    got = {}
    for name, method in methods.items():  # eagerly; none of them changes the weights
        total, _ = method(*batch)
        got[name] = {"loss": float(total), **{k: float(v) for k, v in method.quantities.items()}}
    assert (got["fgm"]["embedding_grad_norm"], got["fgm"]["perturbation_norm"]) == (
        pytest.approx(grad_norm, rel=1e-5),
        pytest.approx(0.3, rel=1e-5),
    )
    # PGD: one ascent step of 0.3, projected back onto the 0.2-ball
    assert (got["pgd"]["embedding_grad_norm"], got["pgd"]["perturbation_norm"]) == (
        pytest.approx(grad_norm, rel=1e-5),
        pytest.approx(0.2, rel=1e-5),
    )
    # GP: 0.5 * eps * the sum of squared per-position gradients, and its share of the loss
    gp = got["gp"]
    assert gp["gradient_penalty"] == pytest.approx(0.25 * float(tf.reduce_sum(per_position.values**2)), rel=1e-5)
    assert gp["loss"] == pytest.approx(float(clean) + gp["gradient_penalty"], rel=1e-6)
    assert gp["penalty_share"] == pytest.approx(gp["gradient_penalty"] / gp["loss"], rel=1e-6)
    # FreeLB: no initial noise, one ascent step of adv_lr per example: each example's delta has norm 0.1
    assert got["freelb"]["perturbation_norm"] == pytest.approx(0.1, rel=1e-5)

    optimizer = optim.make_optimizer(1e-3, "float32")
    fgm = build({"_target_": "experiments.train.methods.fgm.FGM", "name": "fgm", "epsilon": 0.3}, model, optimizer)
    out = {k: float(v) for k, v in loop.Trainer(model, fgm, optimizer, 3).train_step(*batch).items()}
    assert out == pytest.approx({**got["fgm"], "learning_rate": 1e-3}, rel=1e-5)  # computed before the update


def test_length_ordered_evaluation_scores_each_sequence_as_alone():
    """Dev batches go in length order: every prediction equals the sequence's own, unpadded one."""
    model = tiny_model()
    for weight in model.weights:  # std 0.5, not 0.02: else the logits barely depend on the input
        if len(weight.shape) >= 2:
            weight.assign(weight * 25.0)
    rng = np.random.default_rng(1)
    seqs = [np.concatenate([[2], rng.integers(5, 40, n - 2), [3]]).astype(np.int32) for n in rng.integers(3, 30, 40)]
    alone = [int(np.argmax(model((s[None], np.zeros_like(s)[None]), training=False)[0])) for s in seqs]
    trainer = loop.Trainer(model, None, None, 8, eval_batch_size=8)
    assert trainer.predict(seqs).tolist() == alone
    assert len(set(alone)) > 1  # the check can tell orders apart


def test_prefetch_keeps_order_and_errors():
    assert list(batching.prefetch(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad batch")

    got = batching.prefetch(broken())
    assert next(got) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(got)
