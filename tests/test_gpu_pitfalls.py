"""The GPU pitfalls of README "Running on a GPU", fixed by construction and checked on the CPU:
Adam's own XLA switch, scatter indices, token ids beyond the embedding, out-of-memory errors."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from experiments import models, training
from experiments.errors import UserError
from experiments.methods.baseline import Baseline
from experiments.methods.fgm import FGM
from experiments.methods.freelb import FreeLB
from experiments.methods.gp import GradientPenalty
from experiments.methods.pgd import PGD
from experiments.run import run
from tests.tiny_bert import VOCAB, repeated_token_batch, tiny_model


@pytest.fixture
def gpu_visible(monkeypatch):
    """tf_keras's optimizer module sees a GPU (its check is ``tf.config.list_physical_devices("GPU")``)."""
    from tf_keras.src.optimizers import optimizer as keras_optimizer

    config = keras_optimizer.tf.config
    real = config.list_physical_devices
    monkeypatch.setattr(config, "list_physical_devices",
                        lambda kind=None: ["/physical_device:GPU:0"] if kind == "GPU" else real(kind))


def test_adam_compiles_with_xla_only_when_the_train_step_does(gpu_visible):
    assert keras.optimizers.Adam(1e-3).jit_compile  # tf_keras's own default with a GPU: the pitfall
    assert not training.make_optimizer(1e-3, "float32").jit_compile
    assert not training.make_optimizer(1e-3, "float32", jit_compile=False).jit_compile
    assert training.make_optimizer(1e-3, "float32", jit_compile=True).jit_compile
    scaled = training.make_optimizer(1e-3, "mixed_float16", jit_compile=False)
    assert isinstance(scaled, keras.mixed_precision.LossScaleOptimizer)
    assert not scaled.inner_optimizer.jit_compile  # the optimizer that runs the updates
    assert training.make_optimizer(1e-3, "mixed_float16", jit_compile=True).inner_optimizer.jit_compile


METHODS = {
    "baseline": lambda m, o: Baseline(m, o),
    "fgm": lambda m, o: FGM(m, o, epsilon=0.5),
    "gp": lambda m, o: GradientPenalty(m, o),
    "pgd": lambda m, o: PGD(m, o),
    "freelb": lambda m, o: FreeLB(m, o),
}


# The scatters each step issues: Adam's (scatter_add into the moments of the embeddings' rows),
# FGM's add and subtract of the perturbation, PGD's row overwrites.
EXPECTED = {"baseline": {"resource_scatter_add"}, "gp": {"resource_scatter_add"},
            "freelb": {"resource_scatter_add"}, "fgm": {"resource_scatter_add", "resource_scatter_sub"},
            "pgd": {"resource_scatter_add", "resource_scatter_update"}}


def scatter_functions():
    """(module, name) of every op wrapper whose kernel scatters: resource, ref and tensor scatters."""
    from tensorflow.python.ops import gen_array_ops, gen_math_ops, gen_resource_variable_ops, gen_state_ops

    return [(m, name) for m in (gen_resource_variable_ops, gen_state_ops, gen_array_ops, gen_math_ops)
            for name in dir(m) if "scatter" in name and not name.startswith("_") and "eager" not in name]


def graph_op_types(concrete) -> set[str]:
    """Every op type of a traced function, nested functions (the library) included."""
    graph_def = concrete.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return {n.op for n in nodes}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_scatter_of_a_train_step_has_unique_indices(name, monkeypatch):
    """TF_DISABLE_SCATTER_OP_DETERMINISM=1 (experiments/__init__.py) is safe only because every
    scatter a train step issues, the methods' and Adam's, writes each row at most once."""
    model = tiny_model()
    optimizer = training.make_optimizer(1e-3, "float32")
    trainer = training.Trainer(model, METHODS[name](model, optimizer), optimizer, batch_size=3)
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
        assert {op for op in ops if "Scatter" in op} == {"ResourceScatterAdd", "ResourceScatterSub"}


def test_scatter_determinism_is_switched_off_before_tensorflow_starts():
    import os

    assert os.environ["TF_DISABLE_SCATTER_OP_DETERMINISM"] == "1"
    assert int(os.environ["CUDA_CACHE_MAXSIZE"]) >= 2**31  # the driver's JIT cache keeps TF's kernels


def test_token_ids_beyond_the_embedding_stop_the_run(tmp_path):
    model = tiny_model()
    source = tmp_path / "train.json"
    fine = [np.array([2, 7, VOCAB - 1, 3], np.int32), np.array([2, 3], np.int32)]
    models.check_token_ids(model, fine, source, "vocab.txt")  # the largest valid id passes
    bad = fine + [np.array([2, 5, VOCAB, 3], np.int32)]
    with pytest.raises(UserError) as err:
        models.check_token_ids(model, bad, source, "/ckpt/vocab.txt")
    message = str(err.value)
    assert message.startswith(f"{source}: example 3 has token id {VOCAB}, but the model's embedding has {VOCAB} rows")
    assert "/ckpt/vocab.txt does not belong to this model" in message and "model.checkpoint_dir" in message
    assert "\n" not in message


def test_out_of_memory_is_one_line_naming_what_to_lower(tiny_cfg, monkeypatch):
    def oom(*args, **kwargs):  # what TensorFlow's GPU allocator raises
        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[16,2,64,64] and type float on "
            "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc\n\t [[{{node x}}]]")

    monkeypatch.setattr(training.Trainer, "train_epoch", oom)
    with pytest.raises(UserError) as err:
        run(tiny_cfg(extra={"trainer.epochs": 1}))
    message = str(err.value)
    assert "\n" not in message and message.startswith("out of memory (OOM when allocating tensor with shape[16,2,64,64]")
    for setting in ("trainer.batch_size=16", "task.max_length=64", "trainer.precision=float32",
                    "trainer.precision=mixed_bfloat16"):
        assert setting in message, message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback
