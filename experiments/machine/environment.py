"""Seeding, determinism and a description of the software and device a run used."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata

from experiments import PROJECT_ROOT

PACKAGES = ["tensorflow", "tf-keras", "bert4keras", "numpy", "hydra-core"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; with ``deterministic`` also TF's op determinism."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def set_tf32(enabled: bool) -> None:
    """TensorFloat-32 for float32 matmuls and convolutions on Ampere and newer NVIDIA GPUs: on by
    default in TensorFlow; off, they keep float32's 23 mantissa bits instead of rounding inputs
    to 10 (tensorflow/python/framework/config.py, enable_tensor_float_32_execution). No effect
    on CPUs and older GPUs."""
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(bool(enabled))


def device_name() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return ", ".join(names)
    return f"CPU ({platform.processor() or platform.machine()})"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what ``platform`` knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def vector_extensions(flags: str | None = None) -> str:
    """The widest x86 vector extension this CPU has: "AVX-512" (avx512f), "AVX2", "AVX" or "none"
    (the flags line of /proc/cpuinfo, as lscpu shows it). On this project's machines it changed
    TensorFlow's step time about 3.7x, so every speed figure names it."""
    if flags is None:
        try:
            flags = next(line.split(":", 1)[1] for line in open("/proc/cpuinfo") if line.startswith("flags"))
        except (OSError, StopIteration):
            return "unknown"
    have = set(flags.split())
    return next(
        (name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in have), "none"
    )


@functools.cache
def git_commit() -> str | None:
    """HEAD ("-dirty" with uncommitted changes to tracked files) as it was when this process started:
    read once, at this module's import (below), so that a run that takes an hour records the code it
    loaded, not a commit made while it ran (a pretraining of 2026-12-02 recorded the latter)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


git_commit()  # at import: entry points import this module as they start


def describe(trainer=None) -> dict:
    """Software, device and numerics of this process; ``trainer`` (the run's trainer config) adds XLA.
    Precision, determinism and TF32 are read back from TensorFlow, as they are in effect."""
    import tensorflow as tf
    import tf_keras as keras

    from experiments.machine import devices

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    build = tf.sysconfig.get_build_info()
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "device": device_name(),
        "cpu": cpu_model(),
        "cpu_vector_extensions": vector_extensions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        # the CUDA and cuDNN this TensorFlow was compiled against (the wheels in .venv may be newer)
        "tf_build_cuda": build.get("cuda_version"),
        "tf_build_cudnn": build.get("cudnn_version"),
        "nvidia_driver": devices.driver_version(),
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "xla": None if trainer is None else bool(trainer.jit_compile),
        "precision": keras.mixed_precision.global_policy().name,
        "deterministic": _op_determinism_enabled(),
    }


def _op_determinism_enabled() -> bool:
    """Whether enable_op_determinism() is in effect (not exported as tf.config.experimental.*
    in TF 2.21: tensorflow/python/framework/config.py, is_op_determinism_enabled)."""
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())
