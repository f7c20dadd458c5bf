"""Reproducible CLUE experiments for adversarial training of Chinese BERT.

bert4keras chooses its Keras at import time: TF_KERAS=1 makes it use ``tf.keras`` and
TF_USE_LEGACY_KERAS=1 makes ``tf.keras`` the Keras 2 API of the ``tf_keras`` package
(TensorFlow 2.16+ would otherwise hand it Keras 3, which bert4keras cannot use). Both
must be set before TensorFlow is first imported, so they are set here, on package import.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_KERAS", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
