"""Reproducible CLUE experiments for adversarial training of Chinese BERT.

bert4keras chooses its Keras at import time: TF_KERAS=1 makes it use ``tf.keras`` and
TF_USE_LEGACY_KERAS=1 makes ``tf.keras`` the Keras 2 API of the ``tf_keras`` package
(TensorFlow 2.16+ would otherwise hand it Keras 3, which bert4keras cannot use). Both
must be set before TensorFlow is first imported, so they are set here, on package import,
with the GPU settings below, which TensorFlow and the CUDA driver also read only once.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_KERAS", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# With op determinism on (trainer.deterministic, the default), TensorFlow runs every GPU resource
# scatter (ResourceScatterAdd/Sub/Update) by copying the WHOLE variable to the host, scattering on
# the CPU and copying it back: DoScatter -> DoScatterOnCpu in tensorflow/core/kernels/
# resource_variable_ops.cc, unless DisableScatterOpDeterminism() (tensorflow/core/kernels/
# scatter_nd_util.h, installed under tensorflow/include/) reads this variable as true. For BERT's
# 21128 x 768 float32 embedding matrix that is 65 MB down and 65 MB up per scatter, silently: FGM
# scatters twice per step (260 MB), PGD steps + 1 times, and Adam twice more (its two moment slots
# of that matrix get the embedding's sparse gradient) for every method. A scatter
# is non-deterministic only when indices repeat (two updates racing for one row); every scatter
# this project issues has unique indices: FGM's and PGD's rows come from tf.unique
# (methods/base.summed_rows) and tf_keras's Adam scatters only after _deduplicate_sparse_grad
# (tf_keras/src/optimizers/optimizer.py). tests/test_gpu_pitfalls.py checks that at run time for
# every method. So the fast GPU kernel is deterministic here, and we choose this flag over a dense
# delta + assign_add, which would form vocab x hidden tensors on every step and could not change
# Adam's own scatters anyway. The flag is read once, at the first scatter; set it to 0 to undo.
os.environ.setdefault("TF_DISABLE_SCATTER_OP_DETERMINISM", "1")

# The TensorFlow wheel's GPU kernels are compiled for sm_60, sm_70, sm_80 and sm_89 and shipped as
# PTX only for compute_90 (tensorflow/python/platform/build_info.py: cuda_compute_capabilities):
# on compute capability 9.0 and newer (H100, Blackwell) the CUDA driver JIT-compiles that PTX at
# the first start, which can take many minutes, and keeps the result in ~/.nv/ComputeCache only
# up to CUDA_CACHE_MAXSIZE bytes (256 MiB by default, too small for TensorFlow's kernels: they
# would be compiled again in every run). 4 GiB is the largest size CUDA accepts.
os.environ.setdefault("CUDA_CACHE_MAXSIZE", str(4 * 1024**3))

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
