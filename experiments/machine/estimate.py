"""How long training will take, before it starts: arithmetic on the model's shape, the task's
size and a measured rate. Used by the device guard (a run about to train on a CPU) and by
``make doctor`` (the default sweep grid). No TensorFlow here.

A train step of BERT costs about 3 forward passes of matrix products (forward, and a backward
that needs two products per forward one). Per token and layer a forward pass multiplies
4 h x h projections (Q, K, V, output) and 2 h x i feed-forward matrices, and attention adds
2 x seq x h for the scores and the weighted sum; each multiply-add is 2 FLOPs.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from omegaconf import OmegaConf

# Google's chinese_L-12_H-768_A-12 (its bert_config.json): the shape assumed for a model whose
# config and checkpoint do not say otherwise.
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072}

# Train-step cost of each method in baseline steps, as `make bench` measured it on this
# project's CPU (README, Speed: 2 layers; FGM 1.66 and GP 1.97 at 12 layers). Unknown: 2.
METHOD_COST = {"baseline": 1.0, "fgm": 1.68, "gp": 1.96, "pgd": 3.37, "freelb": 2.94}
FGM_CLEAN_COST = 1.93  # fgm with accumulate_clean=true

# Training examples of the official releases (train.json lines), for tasks not yet downloaded.
TRAIN_EXAMPLES = {"tnews": 53360, "iflytek": 12133}
DEV_EXAMPLES = {"tnews": 10000, "iflytek": 2599}

# A TensorFlow train step of BERT on a CPU runs its matrix products at about this multiple of
# the rate NumPy's float32 matmul reaches on the same CPU: on this project's 2-core Xeon,
# `make bench ARGS="--layers 12 --methods baseline ..."` took 9.03 s for a step of
# train_flops() = 2.15e12, i.e. 238 GFLOP/s, while NumPy's matmul ran at 185-202 GFLOP/s (quiet machine).
TF_OVER_NUMPY = 1.2


def model_shape(model_cfg) -> dict:
    """hidden/layers/intermediate sizes: the checkpoint's JSON config (model.files.config) if it
    is there, else the model config's ``shape``, else BERT-base's."""
    shape = dict(BERT_BASE)
    checkpoint = OmegaConf.select(model_cfg, "checkpoint_dir", default=None)
    name = OmegaConf.select(model_cfg, "files.config", default=None) or "bert_config.json"
    config_file = Path(checkpoint) / name if checkpoint else None
    source = {}
    if config_file is not None and config_file.is_file():
        try:
            source = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            source = {}
    for key in shape:
        value = source.get(key, OmegaConf.select(model_cfg, f"shape.{key}", default=None))
        if value is not None:
            shape[key] = int(value)
    return shape


def train_flops(shape: dict, batch: int, seq: int) -> float:
    """FLOPs of one baseline train step (forward + backward) on a batch x seq batch."""
    h, layers, inner = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    per_token = layers * 2 * (4 * h * h + 2 * h * inner + 2 * seq * h)
    return 3.0 * batch * seq * per_token


def method_cost(method_cfg) -> float:
    name = OmegaConf.select(method_cfg, "name", default="baseline")
    if name == "fgm" and OmegaConf.select(method_cfg, "accumulate_clean", default=False):
        return FGM_CLEAN_COST
    return METHOD_COST.get(name, 2.0)


def count_examples(task, clue_dir, split: str) -> int | None:
    """Examples of ``task``'s split: the file's lines if it is in ``clue_dir``, else the official
    count, capped by task.max_<split>_samples."""
    path = Path(clue_dir) / str(OmegaConf.select(task, "dir", default="")) / f"{split}.json"
    if path.is_file():
        with path.open("rb") as f:
            n = sum(1 for line in f if line.strip())
    else:
        n = (TRAIN_EXAMPLES if split == "train" else DEV_EXAMPLES).get(task.name)
    cap = OmegaConf.select(task, f"max_{split}_samples", default=None)
    return n if cap is None or n is None else min(n, int(cap))


def run_seconds(cfg, baseline_step_seconds: float, cost: float | None = None) -> tuple[float, int] | None:
    """(seconds, train steps) of the run ``cfg`` describes (the run's whole config: the estimate reads
    its task, paths.clue_dir, trainer and method), given a baseline step's seconds at
    batch trainer.batch_size and length task.max_length and the method's step in baseline steps
    (default: METHOD_COST); None if the task's size is unknown. Each epoch adds a forward pass
    over dev (a third of a train step per batch of tokens)."""
    train = count_examples(cfg.task, cfg.paths.clue_dir, "train")
    dev = count_examples(cfg.task, cfg.paths.clue_dir, "dev") or 0
    if train is None:
        return None
    epochs, batch = int(cfg.trainer.epochs), int(cfg.trainer.batch_size)
    steps = epochs * math.ceil(train / batch)
    seconds = steps * baseline_step_seconds * (method_cost(cfg.method) if cost is None else cost)
    seconds += epochs * (dev / batch) * baseline_step_seconds / 3
    return seconds, steps


def cpu_count() -> int:
    """CPUs this process may run on (respects taskset and Slurm/cgroup CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_flops_per_second(seconds: float = 0.3) -> float:
    """Float32 FLOP/s of this machine's CPUs for TensorFlow: NumPy's matmul of a BERT-base
    feed-forward-sized product, counted per CPU second of this process (so that other processes
    sharing the cores slow it less than wall time would) times the CPUs this process may use,
    best of three short rounds, scaled by TF_OVER_NUMPY."""
    import numpy as np

    a = np.full((512, 768), 0.5, np.float32)
    b = np.full((768, 3072), 0.5, np.float32)
    best = 0.0
    for _ in range(3):
        wall, cpu, n = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - wall < seconds / 3:
            a @ b
            n += 1
        best = max(best, 2 * 512 * 768 * 3072 * n / max(time.process_time() - cpu, 1e-9))
    return best * cpu_count() * TF_OVER_NUMPY


def duration(seconds: float) -> str:
    """3 min, 5.2 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
