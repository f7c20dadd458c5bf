"""Reproducible CLUE experiments for adversarial training of Chinese BERT.

bert4keras chooses its Keras at import time: TF_KERAS=1 makes it use ``tf.keras`` and
TF_USE_LEGACY_KERAS=1 makes ``tf.keras`` the Keras 2 API of the ``tf_keras`` package
(TensorFlow 2.16+ would otherwise hand it Keras 3, which bert4keras cannot use). Both
must be set before TensorFlow is first imported, so they are set here, on package import,
with the GPU settings below, which TensorFlow and the CUDA driver also read only once
(why each: docs/gpu.md, "Sources").
"""

import os
from pathlib import Path

os.environ.setdefault("TF_KERAS", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# GPU scatters stay on the GPU under op determinism: ours never repeat an index, so the fast kernel is
# deterministic here (DoScatter in tensorflow/core/kernels/resource_variable_ops.cc, read through
# DisableScatterOpDeterminism() in tensorflow/core/kernels/scatter_nd_util.h; docs/gpu.md, "Sources").
os.environ.setdefault("TF_DISABLE_SCATTER_OP_DETERMINISM", "1")

# The CUDA driver's cache of kernels JIT-compiled from PTX (compute capability 9.0+: the wheel ships PTX
# only, tensorflow/python/platform/build_info.py) must hold TensorFlow's: 4 GiB (docs/gpu.md, "Sources").
os.environ.setdefault("CUDA_CACHE_MAXSIZE", str(4 * 1024**3))

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
