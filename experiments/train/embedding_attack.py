"""Accuracy under attack: dev accuracy when each input is pushed in its worst direction.

The attack is PGD (Madry et al., 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks") in the l2 norm, white-box and untargeted, on the looked-up token embeddings: the same
place and geometry as FreeLB's delta (``experiments.train.perturb``). Per example i, with e its
looked-up token embeddings (the output of 'Embedding-Token', before the segment and position
embeddings and the LayerNorm) and m its mask (real tokens, by default without [CLS] and [SEP]):

    r_i      = eps * mean_norm * sqrt(n_i)        the absolute radius: n_i = tokens in m,
                                                  mean_norm = mean l2 norm of the embedding
                                                  matrix's rows, [PAD] (row 0) left out
    alpha_i  = step_size_ratio * r_i / K          (2.5 r / K, Madry et al.'s choice)
    delta_0  = 0 (or, random_start, a random point of the ball)
    K times:   g = d CE(true label) / d delta at e + delta_t, dropout off, zero outside m
               delta_{t+1} = Proj_{||.|| <= r_i}(delta_t + alpha_i * g / ||g||)

So ``eps`` is relative: the perturbation's root-mean-square size per perturbed token, as a
share of a typical token embedding's norm, and one eps list means the same for ``tiny``, a
self-pretrained model and BERT-base. An example counts as robust at eps when the model is right
at every point the attack visited inside the eps-ball: delta_0 ... delta_K, the clean input, and
every point of the attacks at the smaller eps of the list (their balls lie inside this one). So
robust accuracy never exceeds the clean one, never rises with eps, and eps = 0 (a ball of one
point) is the clean accuracy exactly. One eps costs K forward/backward passes and one forward
pass per example; the weights are never written (the hook adds delta to the lookup's output).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from experiments.data import batching
from experiments.errors import UserError
from experiments.model.encoder import embedding_matrix
from experiments.train.perturb import ascent_step, per_example_norm, project, token_embeddings_plus, token_mask

log = logging.getLogger(__name__)

KIND = "pgd_l2_token_embeddings"
RADIUS = "eps * embedding_norm * sqrt(perturbed tokens of the example)"


def embedding_norm(model) -> float:
    """Mean l2 norm of the token-embedding rows, [PAD] (row 0, never looked up as a token) left out."""
    rows = embedding_matrix(model).numpy()[1:].astype(np.float64)
    return float(np.sqrt((rows**2).sum(axis=1)).mean())


@dataclass
class Result:
    epsilons: list[float]  # sorted, unique
    robust: np.ndarray  # examples x epsilons: right at every point visited in the ball (cumulative)
    clean: np.ndarray  # examples: right on the clean input
    radii: np.ndarray  # examples x epsilons: the absolute radius
    perturbed_tokens: np.ndarray  # examples
    embedding_norm: float
    seconds: float

    def accuracy(self) -> dict[float, float]:
        return {eps: float(self.robust[:, j].mean()) for j, eps in enumerate(self.epsilons)}


class Attack:
    """PGD in the l2 ball of each example's looked-up token embeddings (see the module's docstring)."""

    def __init__(
        self,
        model,
        special_ids=(),
        *,
        steps: int = 10,
        step_size_ratio: float = 2.5,
        random_start: bool = False,
        perturb_special_tokens: bool = False,
        batch_size: int = 128,
        pad_to_multiple_of: int = 1,
        jit_compile: bool = False,
        seed: int = 0,
        progress: bool | None = None,
    ):
        if steps < 1 or step_size_ratio <= 0:
            raise UserError(
                f"eval.attack.steps={steps}, eval.attack.step_size_ratio={step_size_ratio}: "
                "the attack needs steps >= 1 and step_size_ratio > 0"
            )
        self.model, self.steps, self.step_size_ratio = model, steps, step_size_ratio
        self.random_start, self.seed, self.progress = random_start, seed, progress
        self.perturb_special_tokens = perturb_special_tokens
        self.exclude = () if perturb_special_tokens else tuple(int(i) for i in special_ids)
        self.batch_size, self.pad_to_multiple_of = batch_size, pad_to_multiple_of
        self.hidden = int(embedding_matrix(model).shape[-1])
        ids = tf.TensorSpec([None, None], tf.int32)
        points = tf.TensorSpec([None, None, self.hidden], tf.float32)
        column = tf.TensorSpec([None, 1, 1], tf.float32)
        self.ascend = tf.function(
            self._ascend,
            jit_compile=jit_compile,
            input_signature=(
                (ids, ids),
                tf.TensorSpec([None], tf.int32),
                points,
                tf.TensorSpec([None, None, 1], tf.float32),
                column,
                column,
            ),
        )
        self.correct_at = tf.function(
            self._correct_at,
            jit_compile=jit_compile,
            input_signature=((ids, ids), tf.TensorSpec([None], tf.int32), points),
        )

    def _logits(self, inputs, delta):
        with token_embeddings_plus(self.model, delta):
            return tf.cast(self.model(inputs, training=False), tf.float32)  # dropout off

    def _ascend(self, inputs, labels, delta, mask, radius, step_size):
        """One PGD step from ``delta``; and whether each example is classified right at ``delta``."""
        with tf.GradientTape() as tape:
            tape.watch(delta)
            logits = self._logits(inputs, delta)
            # The summed (not mean) cross-entropy of the true labels: each example's gradient is its own.
            loss = -tf.reduce_sum(tf.gather(tf.nn.log_softmax(logits), labels, batch_dims=1))
        grad = tape.gradient(loss, delta)
        right = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
        return project(delta + ascent_step(grad, mask, step_size), radius), right

    def _correct_at(self, inputs, labels, delta):
        return tf.equal(tf.argmax(self._logits(inputs, delta), -1, output_type=tf.int32), labels)

    def mask(self, token_ids):
        """batch x seq x 1: 1.0 where delta may act."""
        return token_mask(tf.convert_to_tensor(token_ids, tf.int32), self.exclude)

    def start(self, mask, radius, rng: np.random.Generator | None):
        """delta_0: zero, or with ``random_start`` a random direction on the mask with a norm uniform in [0, r]."""
        shape = (*mask.shape[:2], self.hidden)
        if not self.random_start:
            return tf.zeros(shape, tf.float32)
        noise = tf.constant(rng.standard_normal(shape), tf.float32) * mask
        size = tf.constant(rng.uniform(size=(shape[0], 1, 1)), tf.float32) * radius
        return noise * size / tf.maximum(per_example_norm(noise), 1e-12)

    def perturb(self, inputs, labels, radius, rng: np.random.Generator | None = None):
        """(delta_K, right at every point visited, right at delta_0) for one batch and per-example radii
        (batch x 1 x 1)."""
        mask = self.mask(inputs[0])
        radius = tf.convert_to_tensor(radius, tf.float32)
        step_size = radius * (self.step_size_ratio / self.steps)
        delta = self.start(mask, radius, rng)
        robust = first = None
        for _ in range(self.steps):
            delta, right = self.ascend(inputs, labels, delta, mask, radius, step_size)
            first = right if first is None else first
            robust = right if robust is None else robust & right
        robust &= self.correct_at(inputs, labels, delta)
        return delta, robust.numpy(), first.numpy()

    def evaluate(self, dev: batching.Dataset, epsilons) -> Result:
        """Attack every example of ``dev`` at each eps (relative; see the module's docstring)."""
        epsilons = sorted({float(e) for e in epsilons})
        if not epsilons or epsilons[0] < 0:
            raise UserError(f"eval.attack.epsilons={epsilons}: give one or more eps >= 0")
        start = time.perf_counter()
        norm = embedding_norm(self.model)
        n = len(dev)
        robust, radii = np.zeros((n, len(epsilons)), bool), np.zeros((n, len(epsilons)))
        clean, tokens = np.zeros(n, bool), np.zeros(n)
        rng = np.random.default_rng(self.seed)
        disable = None if self.progress is None else not self.progress
        batches = batching.prefetch(
            batching.batches(
                dev.token_ids,
                np.arange(n),
                self.batch_size,
                bucket_by_length=True,
                pad_to_multiple_of=self.pad_to_multiple_of,
                segment_ids=dev.segment_ids,
            )
        )
        with tqdm(
            total=n,
            desc=f"attack ({len(epsilons)} eps x {self.steps} steps)",
            unit="example",
            disable=disable,
            leave=False,
        ) as bar:
            for (ids, segments), rows in batches:
                inputs, labels = (tf.constant(ids), tf.constant(segments)), tf.constant(dev.labels[rows], tf.int32)
                tokens[rows] = self.mask(ids).numpy().sum(axis=(1, 2))
                clean_known = False
                for j, eps in enumerate(epsilons):
                    radii[rows, j] = eps * norm * np.sqrt(tokens[rows])
                    _, right, first = self.perturb(inputs, labels, radii[rows, j].reshape(-1, 1, 1), rng)
                    robust[rows, j] = right
                    if not self.random_start and not clean_known:  # delta_0 = 0: the first pass was the clean one
                        clean[rows], clean_known = first, True
                if not clean_known:
                    clean[rows] = self.correct_at(inputs, labels, tf.zeros((*ids.shape, self.hidden))).numpy()
                bar.update(len(rows))
        # Right at the clean input and everywhere the attacks of this eps and the smaller ones went.
        robust = np.logical_and.accumulate(robust & clean[:, None], axis=1)
        return Result(epsilons, robust, clean, radii, tokens, norm, time.perf_counter() - start)


def record_fields(
    model,
    tokenizer,
    dev: batching.Dataset,
    attack_cfg,
    weights: str,
    *,
    batch_size: int,
    pad_to_multiple_of: int = 1,
    jit_compile: bool = False,
    seed: int = 0,
    progress=None,
) -> dict:
    """``robust_dev_acc`` and ``attack`` for a run record: the attack ``eval.attack`` describes on ``dev``
    (its first ``max_samples`` examples if set), ``weights`` naming the weights attacked ("best" or "final")."""
    if attack_cfg.max_samples is not None:
        if attack_cfg.max_samples < 1:
            raise UserError(f"eval.attack.max_samples={attack_cfg.max_samples}: null (all) or a positive integer")
        k = min(int(attack_cfg.max_samples), len(dev))
        dev = batching.Dataset(
            dev.token_ids[:k], dev.labels[:k], None if dev.segment_ids is None else dev.segment_ids[:k]
        )
    special = [tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]")]
    attack = Attack(
        model,
        special,
        steps=attack_cfg.steps,
        step_size_ratio=attack_cfg.step_size_ratio,
        random_start=attack_cfg.random_start,
        perturb_special_tokens=attack_cfg.perturb_special_tokens,
        batch_size=batch_size,
        pad_to_multiple_of=pad_to_multiple_of,
        jit_compile=jit_compile,
        seed=seed,
        progress=progress,
    )
    result = attack.evaluate(dev, list(attack_cfg.epsilons))
    accuracy = result.accuracy()
    log.info(
        "accuracy under attack (%d examples, %s weights): clean %.4f, %s; %.0f s",
        len(dev),
        weights,
        result.clean.mean(),
        ", ".join(f"eps {e:g}: {a:.4f}" for e, a in accuracy.items()),
        result.seconds,
    )
    return {
        "robust_dev_acc": {str(e): a for e, a in accuracy.items()},
        "attack": {
            "kind": KIND,
            "epsilons": result.epsilons,
            "steps": attack.steps,
            "step_size_ratio": attack.step_size_ratio,
            "random_start": attack.random_start,
            "perturb_special_tokens": attack.perturb_special_tokens,
            "max_samples": attack_cfg.max_samples,
            "weights": weights,
            "examples": len(dev),
            "clean_dev_acc": float(result.clean.mean()),
            "radius": RADIUS,
            "embedding_norm": result.embedding_norm,
            "perturbed_tokens_mean": float(result.perturbed_tokens.mean()) if len(dev) else 0.0,
            "radii": {
                str(e): float(result.radii[:, j].mean()) if len(dev) else 0.0 for j, e in enumerate(result.epsilons)
            },
            "seconds": result.seconds,
        },
    }
