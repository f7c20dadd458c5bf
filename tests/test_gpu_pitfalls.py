"""The GPU pitfalls of README "Running on a GPU", fixed by construction and checked on the CPU:
Adam's own XLA switch, scatter indices, token ids beyond the embedding, out-of-memory errors."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from omegaconf import OmegaConf

from experiments.commands.run import run
from experiments.config import compose
from experiments.errors import UserError
from experiments.model import dropout, encoder, head, rewrites
from experiments.train import loop, optim, run_state
from experiments.train.methods.baseline import Baseline
from experiments.train.methods.fgm import FGM
from experiments.train.methods.freelb import FreeLB
from experiments.train.methods.gp import GradientPenalty
from experiments.train.methods.pgd import PGD
from tests.helpers.clue import tiny_overrides
from tests.helpers.runs import numbers
from tests.helpers.tiny_bert import TINY, VOCAB, repeated_token_batch, tiny_model


@pytest.fixture
def gpu_visible(monkeypatch):
    """tf_keras's optimizer module sees a GPU (its check is ``tf.config.list_physical_devices("GPU")``)."""
    from tf_keras.src.optimizers import optimizer as keras_optimizer

    config = keras_optimizer.tf.config
    real = config.list_physical_devices
    monkeypatch.setattr(
        config, "list_physical_devices", lambda kind=None: ["/physical_device:GPU:0"] if kind == "GPU" else real(kind)
    )


def test_adam_compiles_with_xla_only_when_the_train_step_does(gpu_visible):
    assert keras.optimizers.Adam(1e-3).jit_compile  # tf_keras's own default with a GPU: the pitfall
    assert not optim.make_optimizer(1e-3, "float32").jit_compile
    assert not optim.make_optimizer(1e-3, "float32", jit_compile=False).jit_compile
    assert optim.make_optimizer(1e-3, "float32", jit_compile=True).jit_compile
    scaled = optim.make_optimizer(1e-3, "mixed_float16", jit_compile=False)
    assert isinstance(scaled, keras.mixed_precision.LossScaleOptimizer)
    assert not scaled.inner_optimizer.jit_compile  # the optimizer that runs the updates
    assert optim.make_optimizer(1e-3, "mixed_float16", jit_compile=True).inner_optimizer.jit_compile


METHODS = {
    "baseline": lambda m, o: Baseline(m, o),
    "fgm": lambda m, o: FGM(m, o, epsilon=0.5),
    "gp": lambda m, o: GradientPenalty(m, o),
    "pgd": lambda m, o: PGD(m, o),
    "freelb": lambda m, o: FreeLB(m, o),
}


# The scatters each step issues: Adam's (scatter_add into the moments of the embeddings' rows),
# FGM's add of the perturbation and its exact restore of the rows, PGD's row overwrites.
EXPECTED = {
    "baseline": {"resource_scatter_add"},
    "gp": {"resource_scatter_add"},
    "freelb": {"resource_scatter_add"},
    "fgm": {"resource_scatter_add", "resource_scatter_update"},
    "pgd": {"resource_scatter_add", "resource_scatter_update"},
}


def scatter_functions():
    """(module, name) of every op wrapper whose kernel scatters: resource, ref and tensor scatters."""
    from tensorflow.python.ops import gen_array_ops, gen_math_ops, gen_resource_variable_ops, gen_state_ops

    return [
        (m, name)
        for m in (gen_resource_variable_ops, gen_state_ops, gen_array_ops, gen_math_ops)
        for name in dir(m)
        if "scatter" in name and not name.startswith("_") and "eager" not in name
    ]


def graph_op_types(concrete) -> set[str]:
    """Every op type of a traced function, nested functions (the library) included."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {n.op for n in nodes}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_scatter_of_a_train_step_has_unique_indices(name, monkeypatch):
    """TF_DISABLE_SCATTER_OP_DETERMINISM=1 (experiments/__init__.py) is safe only because every
    scatter a train step issues, the methods' and Adam's, writes each row at most once."""
    model = tiny_model()
    optimizer = optim.make_optimizer(1e-3, "float32")
    trainer = loop.Trainer(model, METHODS[name](model, optimizer), optimizer, batch_size=3)
    inputs, labels = repeated_token_batch()  # many repeated tokens: raw embedding gradients repeat rows
    assert len(np.unique(inputs[0])) < inputs[0].numpy().size

    seen = []
    for module, fn in scatter_functions():
        real = getattr(module, fn)

        def record(*args, _fn=fn, _real=real, **kwargs):
            seen.append((_fn, np.asarray(inspect.signature(_real).bind(*args, **kwargs).arguments["indices"])))
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, fn, record)
    # The step's function run eagerly (the same ops as traced; on a CPU Adam does not use XLA): each
    # scatter's indices are values here. Adam scatters into the moments of both embeddings.
    trainer.train_step.python_function(inputs, labels)
    assert {fn for fn, _ in seen} == EXPECTED[name]
    for fn, indices in seen:
        rows = indices.reshape(len(indices), -1)
        assert len(np.unique(rows, axis=0)) == len(rows), (fn, indices)
    # The token embedding's rows are the batch's distinct tokens (the segment embedding's: row 0).
    assert sorted(np.unique(inputs[0]).tolist()) in [sorted(i.tolist()) for _, i in seen]
    if name == "fgm":  # traced, the step holds those scatters and no other
        monkeypatch.undo()
        ops = graph_op_types(trainer.train_step.get_concrete_function(inputs, labels))
        assert {op for op in ops if "Scatter" in op} == {"ResourceScatterAdd", "ResourceScatterUpdate"}


def test_scatter_determinism_is_switched_off_before_tensorflow_starts():
    import os

    assert os.environ["TF_DISABLE_SCATTER_OP_DETERMINISM"] == "1"
    assert int(os.environ["CUDA_CACHE_MAXSIZE"]) >= 2**31  # the driver's JIT cache keeps TF's kernels


def test_token_ids_beyond_the_embedding_stop_the_run(tmp_path):
    model = tiny_model()
    source = tmp_path / "train.json"
    fine = [np.array([2, 7, VOCAB - 1, 3], np.int32), np.array([2, 3], np.int32)]
    encoder.check_token_ids(model, fine, source, "vocab.txt")  # the largest valid id passes
    bad = fine + [np.array([2, 5, VOCAB, 3], np.int32)]
    with pytest.raises(UserError) as err:
        encoder.check_token_ids(model, bad, source, "/ckpt/vocab.txt")
    message = str(err.value)
    assert message.startswith(f"{source}: example 3 has token id {VOCAB}, but the model's embedding has {VOCAB} rows")
    assert "/ckpt/vocab.txt does not belong to this model" in message and "model.checkpoint_dir" in message
    assert "\n" not in message


def test_out_of_memory_is_one_line_naming_what_to_lower(tiny_cfg, monkeypatch):
    def oom(*args, **kwargs):  # what TensorFlow's GPU allocator raises
        raise tf.errors.ResourceExhaustedError(
            None,
            None,
            "OOM when allocating tensor with shape[16,2,64,64] and type float on "
            "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc\n\t [[{{node x}}]]",
        )

    monkeypatch.setattr(loop.Trainer, "train_epoch", oom)
    with pytest.raises(UserError) as err:
        run(tiny_cfg(extra={"trainer.epochs": 1}))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("out of memory (OOM when allocating tensor with shape[16,2,64,64]")
    for setting in (
        "trainer.batch_size=16",
        "task.max_length=64",
        "trainer.precision=float32",
        "trainer.precision=mixed_bfloat16",
    ):
        assert setting in message, message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback


# --- 3c: dropout keyed by (seed, epoch, step) ---------------------------------------------------

DROPOUT_BERT = OmegaConf.merge(TINY, {"shape": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}})
STATEFUL_RANDOM_OPS = {
    "RandomUniform",
    "RandomUniformInt",
    "RandomStandardNormal",
    "TruncatedNormal",
    "RandomShuffle",
    "Multinomial",
    "RandomGamma",
    "RandomPoisson",
    "RandomPoissonV2",
}


def test_dropout_draws_depend_on_seed_epoch_step_only_and_xla_draws_the_same():
    x = tf.ones([4, 50])

    def step(jit=None):
        def draw():
            with dropout.KEYS.step():
                return dropout.dropout(x, 0.3, training=True), dropout.uniform([3], -1.0, 1.0)

        return draw() if jit is None else tf.function(draw, jit_compile=jit)()

    dropout.KEYS.start_epoch(seed=1, epoch=0)
    first, second = step(), step()
    dropout.KEYS.start_epoch(seed=1, epoch=0)
    assert np.array_equal(step(False)[0], first[0]) and np.array_equal(step(True)[0], second[0])
    dropout.KEYS.start_epoch(seed=1, epoch=0)
    xla = step(True)
    np.testing.assert_array_equal(xla[0], first[0])  # XLA: the same mask (from Philox's raw bits)
    np.testing.assert_array_equal(xla[1], first[1])
    masks = [first[0].numpy()]
    for seed, epoch in ((1, 1), (2, 0)):
        dropout.KEYS.start_epoch(seed, epoch)
        masks.append(step()[0].numpy())
    masks.append(second[0].numpy())
    assert all(not np.array_equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :])
    for mask in masks:  # inverted dropout: kept elements scaled by 1 / (1 - rate)
        assert set(np.unique(mask)) == {0.0, np.float32(1 / 0.7)} and 0.15 < (mask == 0).mean() < 0.45
    assert -1 <= first[1].numpy().min() and first[1].numpy().max() < 1
    assert np.array_equal(dropout.dropout(x, 0.3, training=False), x)


@pytest.mark.slow
def test_prepared_model_draws_every_dropout_from_the_step_key():
    model = head.build_classifier(DROPOUT_BERT, encoder.bert_config(DROPOUT_BERT, VOCAB), 4, seed=0)
    rewrites.prepare_model(model)
    inputs, labels = repeated_token_batch()
    eval_out = model(inputs, training=False).numpy()

    def train_out():
        with dropout.KEYS.step():
            return model(inputs, training=True).numpy()

    dropout.KEYS.start_epoch(0, 0)
    a = train_out()
    dropout.KEYS.start_epoch(0, 0)
    assert np.array_equal(train_out(), a) and not np.allclose(a, eval_out)
    # The attention's dropout counts too: with only attention dropout, training differs from eval.
    attention_only = OmegaConf.merge(TINY, {"shape": {"attention_probs_dropout_prob": 0.5}})
    model2 = head.build_classifier(attention_only, encoder.bert_config(attention_only, VOCAB), 4, seed=0)
    rewrites.prepare_model(model2)
    with dropout.KEYS.step():
        assert not np.allclose(model2(inputs, training=True), model2(inputs, training=False))

    optimizer = optim.make_optimizer(1e-3, "float32")
    trainer = loop.Trainer(model, FreeLB(model, optimizer, adv_steps=1), optimizer, batch_size=3)
    ops = graph_op_types(trainer.train_step.get_concrete_function(inputs, labels))  # dropout + FreeLB's noise
    assert "StatelessRandomUniformFullIntV2" in ops
    assert not ops & STATEFUL_RANDOM_OPS, ops & STATEFUL_RANDOM_OPS  # nothing unkeyed is drawn


@pytest.mark.slow
def test_reruns_and_resumes_are_exact_under_xla_without_retracing(clue_dir, tmp_path, monkeypatch):
    """With trainer.jit_compile=true, a run interrupted after epoch 1 and resumed
    (trainer.resume=true) repeats an uninterrupted run: its epoch 1 (a rerun in the same process)
    and its epoch 2 (resumed) alike; tests/test_resume.py checks both without XLA. The step is
    not traced again per epoch."""
    # One padded length (32) for every batch and one layer: few, small XLA compiles.
    extra = {
        "trainer.epochs": 2,
        "trainer.jit_compile": True,
        "task.max_length": 32,
        "trainer.pad_to_multiple_of": 32,
        "method.epsilon": 0.05,
        "trainer.resume": True,
        "task.max_train_samples": 64,
        "task.max_dev_samples": 32,
        "model.shape.num_hidden_layers": 1,
    }

    def overrides(name):
        return tiny_overrides(clue_dir, tmp_path / name, method="fgm", extra=extra)

    traces = []
    real_fit = loop.Trainer.fit

    def fit(self, *args, **kwargs):
        try:
            return real_fit(self, *args, **kwargs)
        finally:
            traces.append(self.train_step.experimental_get_tracing_count())

    monkeypatch.setattr(loop.Trainer, "fit", fit)
    whole = run(compose(overrides("whole")))

    real_save = run_state.RunState.save_epoch

    def save_then_die(self, history):  # as if killed right after epoch 1 was saved
        real_save(self, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(run_state.RunState, "save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(compose(overrides("killed")))
    monkeypatch.setattr(run_state.RunState, "save_epoch", real_save)
    resumed = run(compose(overrides("killed")))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert numbers(resumed["history"]) == numbers(whole["history"])
    # Traced as often in two epochs as in one (when Adam creates its slots, tf.function traces
    # twice): no retrace per epoch, the dropout key is a variable of the step.
    assert traces[0] == traces[1] and traces[2] <= traces[0], traces
